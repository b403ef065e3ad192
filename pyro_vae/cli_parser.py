"""The ``pyro-vae`` command line's parser: every sub-command and option, nothing run.

:func:`build_parser` builds it (plug-ins named by ``--plugin`` are loaded before, so its help
lists their names); :mod:`pyro_vae.cli` runs what it parses.
"""

from __future__ import annotations

import argparse

from . import __version__
from .data import BINARIZE_CHOICES, DataConfig
from .inference.config import DTYPES, SELECT_ON, TrainConfig

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
    "activation": "activation",
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
                        "score (--select-on; default: 0, never); the best epoch's parameters are kept (best.pt)")
    p.add_argument("--select-on", choices=SELECT_ON,
                   help="validation score of model selection, --patience and the plateau schedule: elbo "
                        "(default), or bound: the objective's own bound (--objective iwae: its K-sample "
                        "bound, logged as val_bound)")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="locate the operation behind a NaN loss (torch anomaly mode; slow)")
    p.add_argument("--keep-denormals", action="store_true", default=None,
                   help="compute with subnormal floats on the CPU (IEEE arithmetic; slower) instead of "
                        "flushing them to zero while training (the default)")
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
    p.add_argument("--activation",
                   help="activation of the dense hidden layers of vae, cvae, hvae, m2: relu, elu, tanh, or "
                        "gated (gated linear units, as in the VampPrior reference code; default: relu)")
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
                        "--lr-patience scores without improvement: the --select-on validation score, "
                        "else training curve)")
    p.add_argument("--lr-min", type=float, help="floor of the cosine and plateau schedules (default: 0)")
    p.add_argument("--lr-step-epochs", type=int, help="epochs between reductions of --lr-schedule step")
    p.add_argument("--lr-gamma", type=float, help="factor of the step and plateau schedules (default: 0.1)")
    p.add_argument("--lr-patience", type=int, help="scores without improvement before plateau "
                                                   "reduces the rate (default: 5)")
    p.add_argument("--log", metavar="LOGGERS",
                   help="comma-separated loggers: csv (RUN/log.csv), tensorboard (RUN/tensorboard/; "
                        "pip install 'pyro-vae[tensorboard]')")


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
