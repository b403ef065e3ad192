"""The ``pyro-vae`` command line: the only place that parses arguments.

Each sub-command turns its arguments into the library's config dataclasses and calls the
library. Errors in what the user asked for (``ValueError``/``TypeError`` from the library,
argparse's own, or a file that cannot be read or written) print one line
``pyro-vae: error: ...`` and exit with status 2; a training that diverges exits 1; Ctrl-C
exits 130 (a run keeps its last checkpoint).

``train`` also runs data-parallel under ``torchrun`` (``torchrun --nproc-per-node N -m
pyro_vae train ...``); see :mod:`pyro_vae.inference.distributed`.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .data import BINARIZE_CHOICES, DataConfig
from .errors import allocation_message, check_non_negative_int, check_positive_int, check_seed, is_allocation_error
from .inference import distributed
from .inference.config import DTYPES, TrainConfig
from .inference.state import NonFiniteLossError

PROG = "pyro-vae"

# Model options: CLI flag -> model config field. Only the flags a user gives are passed on,
# so a flag that does not apply to the chosen model is refused by name.
MODEL_OPTIONS = {
    "latent_dim": "latent_dim",
    "hidden_dims": "hidden_dims",
    "likelihood": "likelihood",
    "prior": "prior",
    "guide": "guide",
    "obs_scale": "obs_scale",
    "prior_components": "prior_components",
    "components": "num_components",
    "levels": "levels",
    "alpha": "alpha",
    "arch": "arch",
    "conv_channels": "conv_channels",
}


class UsageError(Exception):
    """A bad command line; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of exiting, so every bad input reads the same."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    return values


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))  # an empty item (8,,4) is refused
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 400,200, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers such as 400,200, got {text!r}")
    return values


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model into a run directory")
    from .models import MODELS  # noqa: PLC0415

    p.add_argument("--model", help=f"{_names(MODELS)} (default: vae)")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (to --epochs in total)")
    _add_shared_options(p)


def _add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="train and evaluate several models on the same data, same budget")
    p.add_argument("--models",
                   help="comma-separated entries: a model (vae, cvae, mixture, ppca), ae (the VAE "
                        "with a point-mass guide), or a named variant NAME=MODEL:key=value[:...], "
                        "e.g. vamp=vae:prior=vamp,beta4=vae:beta=4 (default without --runs: "
                        "vae,ae,cvae,mixture,ppca)")
    p.add_argument("--out", required=True, help="directory for the runs, summary.json and report.md")
    p.add_argument("--runs", help="comma-separated finished run directories to reuse, DIR or NAME=DIR "
                                  "(named by their directory); entries with a run are not trained")
    p.add_argument("--seeds", type=_seed_list,
                   help="train each entry once per seed, e.g. 0,1,2: rows show the NLL's mean and "
                        "standard deviation over seeds (default: --seed)")
    p.add_argument("--samples", type=int, dest="eval_samples",
                   help="importance samples of each log-likelihood (default: 1000)")
    _add_shared_options(p, eval_samples=False)


def _names(registry) -> str:
    """The registered names of a kind, plug-ins included (loaded before the parser is built)."""
    return ", ".join(sorted(registry))


def _add_shared_options(p, eval_samples: bool = True) -> None:
    from .data import DATASETS  # noqa: PLC0415
    from .inference.objectives import OBJECTIVES  # noqa: PLC0415
    from .models import GUIDES, LIKELIHOODS, PRIORS, VAEConfig  # noqa: PLC0415

    train, data, vae = TrainConfig(), DataConfig(), VAEConfig()
    p.add_argument("--dataset", help=f"{_names(DATASETS)}, npz:PATH (arrays) or folder:PATH (images in "
                                     f"class subfolders) (default: {data.name})")
    p.add_argument("--image-size", type=_int_list, metavar="H[,W]",
                   help="folder: data sets: resize every image to H x W (default: keep; all the same size)")
    p.add_argument("--channels", type=int, help="folder: data sets: 1 (grey) or 3 (RGB) (default: "
                                                "1 if every image is grey, else 3)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--epochs", type=int, help=f"total epochs (default: {train.epochs})")
    p.add_argument("--batch-size", type=int, help=f"examples per step (default: {train.batch_size})")
    p.add_argument("--lr", type=float, help=f"learning rate (default: {train.lr:g})")
    p.add_argument("--seed", type=int, help=f"seed of every random draw (default: {train.seed})")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help=f"default: {train.dtype}")
    p.add_argument("--eval-every", type=int,
                   help="ELBO of the validation split (else the test split) every N epochs and at "
                        "the last (default: 1; 0: never during training, so no model selection)")
    p.add_argument("--patience", type=int,
                   help="with --val-fraction: stop after N evaluations without a better validation "
                        "ELBO (default: 0, never); the best epoch's parameters are kept (best.pt)")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="locate the operation behind a NaN loss (torch anomaly mode; slow)")
    if eval_samples:
        p.add_argument("--eval-samples", type=int,
                       help="importance samples of the final log-likelihood (default: 1000)")
    p.add_argument("--objective", help=f"training objective: {_names(OBJECTIVES)} (default: {train.objective})")
    p.add_argument("--particles", type=int,
                   help=f"samples of z per example in the objective; the K of --objective iwae "
                        f"(default: {train.particles})")
    p.add_argument("--beta", type=float, help="weight of the KL term (default: 1; beta-VAE)")
    p.add_argument("--kl-warmup", type=int, metavar="EPOCHS",
                   help="raise the KL weight linearly to --beta over EPOCHS epochs (default: 0)")
    p.add_argument("--latent-dim", type=int, help=f"size of z (default: {vae.latent_dim})")
    p.add_argument("--hidden-dims", type=_int_list,
                   help=f"comma-separated hidden sizes, e.g. 400,200 (default: "
                        f"{','.join(map(str, vae.hidden_dims))})")
    p.add_argument("--likelihood", help=f"{_names(LIKELIHOODS)} (default: {vae.likelihood})")
    p.add_argument("--prior", help=f"prior over z: {_names(PRIORS)} (conditional: for label-"
                                   f"conditioned models; default: {vae.prior})")
    p.add_argument("--guide", help=f"guide family: {_names(GUIDES)} (delta: a point mass, an "
                                   f"autoencoder; default: {vae.guide})")
    p.add_argument("--obs-scale", type=float,
                   help="fixed scale of a Gaussian likelihood (default: learned per pixel)")
    p.add_argument("--prior-components", type=int,
                   help=f"components of the mog prior, pseudo-inputs of the vamp prior "
                        f"(default: {vae.prior_components})")
    p.add_argument("--components", type=int,
                   help="components K of the mixture model (--model mixture; default: 10)")
    p.add_argument("--levels", type=int,
                   help="stochastic layers of the hierarchical VAE (--model hvae; default: 2)")
    p.add_argument("--arch", help="networks of vae, cvae, hvae, m2: mlp or conv (convolutions sized "
                                  "from the image shape; default: mlp)")
    p.add_argument("--conv-channels", type=_int_list,
                   help=f"comma-separated channels of the stride-2 conv layers with --arch conv "
                        f"(default: {','.join(map(str, vae.conv_channels))})")
    p.add_argument("--binarize", choices=BINARIZE_CHOICES,
                   help="dynamic (default for the bernoulli likelihood) | static | none (default for "
                        "densities: continuous-bernoulli, gaussian, ppca)")
    p.add_argument("--data-dir", help="where file-based data sets are looked for (default: "
                                      "~/.cache/pyro-vae; Fashion-MNIST also in "
                                      "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--download", action="store_true", help="allow downloading MNIST/Fashion-MNIST")
    p.add_argument("--subset", type=int, help="use only the first N training examples (default: all)")
    p.add_argument("--labels-per-class", type=int, metavar="N",
                   help="--model m2: keep N training labels per class (balanced, seeded by the split), "
                        "the others unlabelled (default: every label)")
    p.add_argument("--alpha", type=float,
                   help="--model m2: weight of the classification term as a share of the training "
                        "examples N (the paper's 0.1 N; default: 0.1)")
    p.add_argument("--test-fraction", type=float,
                   help=f"share held out for testing where the source has no test split "
                        f"(default: {data.test_fraction})")
    p.add_argument("--val-fraction", type=float,
                   help=f"share of the training part held out for validation and model selection "
                        f"(default: {data.val_fraction}: none)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--optimizer", help="adam (default; torch's fused Adam), adamw or sgd")
    p.add_argument("--momentum", type=float, help="momentum of --optimizer sgd (default: 0.9)")
    p.add_argument("--weight-decay", type=float,
                   help="L2 penalty (adam, sgd) or decoupled weight decay (adamw); default: 0")
    p.add_argument("--clip-grad", type=float, metavar="NORM",
                   help="rescale each step's gradient to this global L2 norm when larger (default: off)")
    p.add_argument("--lr-schedule",
                   help="constant (default), cosine (to --lr-min over --epochs), step (times "
                        "--lr-gamma every --lr-step-epochs) or plateau (times --lr-gamma after "
                        "--lr-patience scores without improvement: validation ELBO, else training curve)")
    p.add_argument("--lr-min", type=float, help="floor of the cosine and plateau schedules (default: 0)")
    p.add_argument("--lr-step-epochs", type=int, help="epochs between reductions of --lr-schedule step")
    p.add_argument("--lr-gamma", type=float, help="factor of the step and plateau schedules (default: 0.1)")
    p.add_argument("--lr-patience", type=int, help="scores without improvement before plateau "
                                                   "reduces the rate (default: 5)")
    p.add_argument("--log", metavar="LOGGERS",
                   help="comma-separated loggers: csv (RUN/log.csv), tensorboard (RUN/tensorboard/; "
                        "pip install 'pyro-vae[tensorboard]')")


def _set(target: dict, **values) -> dict:
    target.update({k: v for k, v in values.items() if v is not None})
    return target


def _data_config(args, binarize_default: str | None = None) -> DataConfig:
    return DataConfig(**_set(
        {"download": args.download}, name=args.dataset, binarize=args.binarize or binarize_default,
        data_dir=args.data_dir, subset=args.subset, test_fraction=args.test_fraction,
        val_fraction=args.val_fraction, labels_per_class=args.labels_per_class,
        image_size=args.image_size, channels=args.channels))


def _train_config(args) -> TrainConfig:
    log = None if args.log is None else tuple(name.strip() for name in args.log.split(","))
    if log and "tensorboard" in log:  # checked now, before anything of a run is written
        from .inference.loggers import check_tensorboard  # noqa: PLC0415

        check_tensorboard()
    return TrainConfig(**_set(
        {"progress": not args.no_progress}, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, device=args.device, dtype=args.dtype,
        eval_every=args.eval_every, patience=args.patience, objective=args.objective,
        particles=args.particles,
        beta=args.beta, kl_warmup=args.kl_warmup, detect_anomaly=args.detect_anomaly or None,
        optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
        clip_grad=args.clip_grad, lr_schedule=args.lr_schedule, lr_min=args.lr_min,
        lr_step_epochs=args.lr_step_epochs, lr_gamma=args.lr_gamma, lr_patience=args.lr_patience,
        log=log))


def _run_train(args) -> dict:
    from .runs import RunConfig, resume_run, train_run  # noqa: PLC0415

    if args.resume:
        conflicting = [f"--{k.replace('_', '-')}" for k in (
            *MODEL_OPTIONS, "batch_size", "lr", "seed", "dtype", "objective", "particles",
            "beta", "kl_warmup", "patience", "optimizer", "momentum", "weight_decay", "clip_grad",
            "lr_schedule", "lr_min", "lr_step_epochs", "lr_gamma", "lr_patience", "log",
            "binarize", "data_dir", "subset", "labels_per_class", "test_fraction", "val_fraction", "eval_samples",
            "model", "dataset", "eval_every", "out",
        ) if getattr(args, k) is not None] + [f"--{k}" for k in ("overwrite", "download") if getattr(args, k)]
        if conflicting:
            raise UsageError(f"--resume continues a run with its own settings; drop {', '.join(conflicting)}")
        # --detect-anomaly and --no-progress apply to this invocation only (not settings).
        return resume_run(args.resume, args.epochs, device=args.device,
                          detect_anomaly=args.detect_anomaly, progress=not args.no_progress)
    if not args.out:
        raise UsageError("train needs --out DIR (or --resume DIR)")
    model_config = _set({}, **{field: getattr(args, flag) for flag, field in MODEL_OPTIONS.items()})
    _check_model_flags(args.model or "vae", model_config)
    from .runs import default_binarize  # noqa: PLC0415

    binarize = default_binarize(args.model or "vae", model_config)
    config = RunConfig(**_set({"model_config": model_config, "data": _data_config(args, binarize),
                               "train": _train_config(args)},
                              model=args.model, eval_samples=args.eval_samples))
    return train_run(config, args.out, overwrite=args.overwrite)


def _check_model_flags(model: str, model_config: dict) -> None:
    """Refuse model flags the model's config has no field for, naming the flags."""
    import dataclasses  # noqa: PLC0415

    from .models import MODELS  # noqa: PLC0415

    if model not in MODELS:
        return  # RunConfig names the unknown model and the choices
    fields = {f.name for f in dataclasses.fields(MODELS.get(model)[0])}
    flag_of = {field: "--" + flag.replace("_", "-") for flag, field in MODEL_OPTIONS.items()}
    unknown = [flag_of[k] for k in model_config if k not in fields]
    if unknown:
        accepted = sorted(flag_of[f] for f in fields if f in flag_of)
        raise UsageError(f"{', '.join(unknown)} {'does' if len(unknown) == 1 else 'do'} not apply to "
                         f"--model {model}; its model options are: {', '.join(accepted)}")


def _run_compare(args) -> list:
    from .compare import DEFAULT_ENTRIES, CompareConfig, compare, parse_entries, reuse_runs  # noqa: PLC0415

    runs = {}
    if args.runs is not None:
        pieces = args.runs.split(",")
        if any(not p.strip() for p in pieces):
            raise UsageError(f"--runs {args.runs!r} has an empty item; give DIR[,DIR...] or NAME=DIR")
        runs = reuse_runs(p.strip() for p in pieces)
    if args.models is not None:
        entries = tuple(parse_entries(args.models))
    else:
        entries = () if runs else DEFAULT_ENTRIES
    options = _set({}, **{field: getattr(args, flag) for flag, field in MODEL_OPTIONS.items()})
    config = CompareConfig(**_set({"entries": entries, "data": _data_config(args),
                                   "train": _train_config(args), "model_options": options},
                                  eval_samples=args.eval_samples, seeds=args.seeds))
    return compare(config, args.out, runs=runs, overwrite=args.overwrite)


def _run_evaluate(args) -> dict:
    from .runs import evaluate_run  # noqa: PLC0415

    return evaluate_run(args.run_dir, args.samples, device=args.device)


def _check_out_file(path: str) -> None:
    """Refuse an output file whose directory cannot exist (a file stands in its path)."""
    from pathlib import Path  # noqa: PLC0415

    for ancestor in Path(path).absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"cannot write --out {path!r}: {str(ancestor)!r} is a file, not a directory")
            return


def _run_sample(args) -> str:
    """A figure (.png, .pdf, .svg; replaced as before) or the samples themselves (.npy, .npz,
    .pt; an existing file only with --overwrite), from the model alone: no data is loaded."""
    from pathlib import Path  # noqa: PLC0415

    import pyro  # noqa: PLC0415

    from .exports import FIGURE_FORMATS, SAMPLE_FORMATS, check_out_file, sample_labels, sample_run, write_samples  # noqa: PLC0415
    from .runs import load_run  # noqa: PLC0415

    check_positive_int("--n", args.n)
    figure = Path(args.out).suffix.lower() in FIGURE_FORMATS
    check_out_file(args.out, FIGURE_FORMATS + SAMPLE_FORMATS, overwrite=args.overwrite or figure)
    if figure and args.draw is not None:
        raise UsageError(f"--{args.draw} applies to raw samples ({', '.join(SAMPLE_FORMATS)}); a figure "
                         f"({', '.join(FIGURE_FORMATS)}) shows decoder means beside pixel samples")
    run = load_run(args.run_dir, args.device, data=False)
    if not figure:
        x, y = sample_run(run, args.n, label=args.label, mean=args.draw != "pixels", seed=args.seed)
        return str(write_samples(args.out, x, y, overwrite=args.overwrite))
    from .plots import plot_samples  # noqa: PLC0415

    labels = sample_labels(run, args.n, args.label)
    pyro.set_rng_seed(args.seed)
    return str(plot_samples(run.model, run.spec.image_shape, args.out, n=args.n, y=labels))


def _run_encode(args) -> str:
    from .exports import CODE_FORMATS, check_out_file, encode_run, write_codes  # noqa: PLC0415

    check_out_file(args.out, CODE_FORMATS, overwrite=args.overwrite)  # before the work
    if args.batch_size is not None:
        check_positive_int("--batch-size", args.batch_size)
    codes = encode_run(args.run_dir, args.split, device=args.device,
                       batch_size=args.batch_size if args.batch_size is not None else 1000)
    return str(write_codes(args.out, codes, overwrite=args.overwrite))


def _run_plot(args) -> str:
    from .errors import check_choice  # noqa: PLC0415
    from .plots import KINDS, plot_run  # noqa: PLC0415
    from .runs import load_run  # noqa: PLC0415

    check_choice("--kind", args.kind, KINDS)
    if args.n is not None:
        check_positive_int("--n", args.n)
    for flag in ("from_label", "to_label", "label"):
        if getattr(args, flag) is not None:
            check_non_negative_int("--" + flag.replace("_", "-"), getattr(args, flag))
    if args.out is not None:
        _check_out_file(args.out)
    # Figures drawn from the model alone load no data (they read run.spec).
    run = load_run(args.run_dir, args.device, data=args.kind not in FIGURES_WITHOUT_DATA)
    other = load_run(args.compare, args.device) if args.compare else None
    # Only the options given are passed on, so one that does not fit the kind is refused by name.
    options = _set({}, method=args.method, from_label=args.from_label, to_label=args.to_label,
                   label=args.label, n=args.n)
    return str(plot_run(run, args.kind, args.out, compare=other, seed=args.seed, **options))


def _run_report(args) -> str:
    from .report import report_for_run  # noqa: PLC0415

    if args.out is not None:
        _check_out_file(args.out)
    return str(report_for_run(args.run_dir, args.out, device=args.device, seed=args.seed))


# The figure kinds of pyro_vae.plots.KINDS, named here so that building the parser does not
# import matplotlib (tests check the two lists agree).
FIGURE_KINDS = ("curves", "reconstructions", "samples", "manifold", "latent", "interpolation",
                "arithmetic", "classes", "analogies", "components", "pca", "kl")
#: The kinds drawn from the model alone: `plot` loads no data for them.
FIGURES_WITHOUT_DATA = ("samples", "manifold", "interpolation", "components", "pca")


def _add_figure_parsers(sub) -> None:
    p = sub.add_parser("plot", help="draw one figure of a trained run")
    p.add_argument("run_dir")
    p.add_argument("--kind", required=True,
                   help=f"one of: {', '.join(FIGURE_KINDS)} (those that apply to the run's model)")
    p.add_argument("--out", help="PNG file to write (default: RUN_DIR/figures/KIND.png)")
    p.add_argument("--compare", metavar="DIR2", help="a second run shown beside the first (--kind latent)")
    p.add_argument("--method", help="pca (default) or tsne: how --kind latent shows more than 2 dimensions")
    p.add_argument("--from-label", type=int, help="--kind arithmetic: the label the codes start from (default 0)")
    p.add_argument("--to-label", type=int, help="--kind arithmetic: the label they move toward (default 1)")
    p.add_argument("--label", type=int, help="--kind manifold of a conditional model: the class decoded (default 0)")
    p.add_argument("--n", type=int, help="how many images, rows or grid cells the figure shows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p = sub.add_parser("report", help="write RUN_DIR/report.html: configuration, metrics and every figure")
    p.add_argument("run_dir")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")


def _add_plugin_options(p) -> None:
    p.add_argument("--plugin", action="append", metavar="FILE.py|MODULE",
                   help="import a plug-in (a .py file or a module) that registers models, priors, "
                        "likelihoods, guides or objectives; it runs that code (repeatable)")
    p.add_argument("--trust-run", action="store_true",
                   help="load the plug-in files the run(s) recorded, even if you never named them")


def _load_plugins(args) -> None:
    """Import ``--plugin``s, then (``--trust-run``) the plug-ins of the runs this command reads."""
    from .registry import load_plugin  # noqa: PLC0415

    for spec in args.plugin or ():
        for item in spec.split(","):
            load_plugin(item.strip())
    if not args.trust_run:
        return
    from .runs import trust_run_plugins  # noqa: PLC0415

    runs = [getattr(args, "run_dir", None), getattr(args, "resume", None), getattr(args, "compare", None)]
    if getattr(args, "runs", None):
        runs += [item.partition("=")[2] or item for item in args.runs.split(",") if item.strip()]
    for run_dir in filter(None, runs):
        trust_run_plugins(run_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Probabilistic generative models in Pyro.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_compare_parser(sub)
    p = sub.add_parser("evaluate", help="score a trained run on its test set; print the test object")
    p.add_argument("run_dir")
    p.add_argument("--samples", type=int, help="importance samples for log p(x) (default: the run's)")
    p.add_argument("--device")
    p = sub.add_parser("sample", help="draw samples from a trained run: a figure or the arrays (no data needed)")
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", required=True,
                   help="a figure (.png, .pdf, .svg) or the samples, (N, C, H, W) float32: .npy, .npz "
                        "(x, and y where labels were used) or .pt (a plain tensor)")
    draw = p.add_mutually_exclusive_group()
    draw.add_argument("--mean", dest="draw", action="store_const", const="mean",
                      help="raw samples are the decoder's mean images (default)")
    draw.add_argument("--pixels", dest="draw", action="store_const", const="pixels",
                      help="raw samples are pixel draws from the likelihood")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .npy/.npz/.pt --out")
    p.add_argument("--label", type=int, help="class to generate (conditional models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p = sub.add_parser("encode", help="write the latent codes of a split of a run's data (.npz)")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True,
                   help=".npz to write: z_loc (posterior means), z_scale (diagonal posteriors), y (labels)")
    p.add_argument("--split", default="test", help="test (default), train or val")
    p.add_argument("--batch-size", type=int, help="examples per forward pass (default: 1000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--device")
    _add_figure_parsers(sub)
    for command in sub.choices.values():
        _add_plugin_options(command)
    return parser


def _preload_plugins(argv) -> None:
    """Import ``--plugin``s before the parser is built, so that --help lists their names."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--plugin" and i + 1 < len(argv) else (
            arg.partition("=")[2] if arg.startswith("--plugin=") else None)
        if value:
            from .registry import load_plugin  # noqa: PLC0415

            for item in str(value).split(","):
                load_plugin(item.strip())


def main(argv=None) -> int:
    args = None
    try:
        _preload_plugins(argv)
    except ValueError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in ("sample", "plot", "report"):  # the same rule as train's --seed
            check_seed("--seed", args.seed)
        if args.command != "train" and distributed.launched_by_torchrun():
            raise UsageError(f"only 'train' runs under torchrun (data-parallel training); run "
                             f"'{args.command}' as a single process")
        _load_plugins(args)
        if args.command == "train":
            metrics = _run_train(args)
            if distributed.is_main_process():  # under torchrun rank 0 alone reports
                print(json.dumps(metrics["test"], indent=2))
        elif args.command == "compare":
            rows = _run_compare(args)
            print(f"{len(rows)} models compared; see {args.out}/report.md and {args.out}/summary.json")
        elif args.command == "evaluate":
            print(json.dumps(_run_evaluate(args), indent=2))
        elif args.command == "sample":
            print(_run_sample(args))
        elif args.command == "encode":
            print(_run_encode(args))
        elif args.command == "plot":
            print(_run_plot(args))
        elif args.command == "report":
            print(_run_report(args))
    except (ValueError, TypeError, UsageError, OverflowError) as err:
        # One line, whatever the message: a library's multi-line text keeps its first line.
        lines = str(err).strip().splitlines() or [type(err).__name__]
        print(f"{PROG}: error: {lines[0]}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or directory the user named cannot be read or written
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as err:
        if not is_allocation_error(err):
            raise
        command = args.command if args is not None else PROG
        print(f"{PROG}: error: not enough memory for '{command}' with these sizes: "
              f"{allocation_message(err)}; choose smaller sizes (--n, --batch-size, --samples, "
              f"--latent-dim, --hidden-dims)", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"{PROG}: training stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; a run keeps its last checkpoint (continue it with "
              f"'{PROG} train --resume DIR')", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()  # leave the torchrun process group, if train joined one
    return 0


if __name__ == "__main__":
    sys.exit(main())
