"""The ``pyro-vae`` command line: the only place that parses arguments.

Each sub-command turns its arguments into the library's config dataclasses and calls the
library. Errors in what the user asked for (``ValueError``/``TypeError`` from the library, or
argparse's own) print one line and exit with status 2; a training that diverges exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from .data import BINARIZE_CHOICES, DataConfig
from .inference.train import DTYPES, NonFiniteLossError, TrainConfig

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
}


class UsageError(Exception):
    """A bad command line; printed as one line, exit status 2."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 400,200, got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers such as 400,200, got {text!r}")
    return values


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model into a run directory")
    p.add_argument("--model", default="vae", help="model name (default: vae)")
    p.add_argument("--dataset", default="digits", help="data set name or npz:PATH (default: digits)")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (to --epochs in total)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--epochs", type=int, help="total epochs (default: 20)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument("--eval-every", type=int, help="test ELBO every N epochs (0: only at the end)")
    p.add_argument("--eval-samples", type=int, help="importance samples of the final log-likelihood")
    p.add_argument("--objective", help="training objective (default: elbo)")
    p.add_argument("--particles", type=int, help="samples of z per example in the objective")
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--hidden-dims", type=_int_list, help="comma-separated hidden sizes, e.g. 400,200")
    p.add_argument("--likelihood")
    p.add_argument("--prior")
    p.add_argument("--guide", help="normal or delta (a point mass: an autoencoder)")
    p.add_argument("--obs-scale", type=float, help="fixed scale of a Gaussian likelihood")
    p.add_argument("--prior-components", type=int, help="components of a mixture prior")
    p.add_argument("--binarize", choices=BINARIZE_CHOICES)
    p.add_argument("--data-dir", help="where file-based data sets are looked for")
    p.add_argument("--download", action="store_true", help="allow downloading MNIST/Fashion-MNIST")
    p.add_argument("--subset", type=int, help="use only the first N training examples")
    p.add_argument("--test-fraction", type=float)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _set(target: dict, **values) -> dict:
    target.update({k: v for k, v in values.items() if v is not None})
    return target


def _run_train(args) -> dict:
    from .runs import RunConfig, resume_run, train_run  # noqa: PLC0415

    if args.resume:
        conflicting = [f"--{k.replace('_', '-')}" for k in (
            *MODEL_OPTIONS, "batch_size", "lr", "seed", "dtype", "objective", "particles",
            "binarize", "data_dir", "subset", "test_fraction", "val_fraction", "eval_samples",
        ) if getattr(args, k) is not None] + (["--out"] if args.out else [])
        if conflicting:
            raise UsageError(f"--resume continues a run with its own settings; drop {', '.join(conflicting)}")
        return resume_run(args.resume, args.epochs, device=args.device)
    if not args.out:
        raise UsageError("train needs --out DIR (or --resume DIR)")
    model_config = _set({}, **{field: getattr(args, flag) for flag, field in MODEL_OPTIONS.items()})
    data = DataConfig(**_set(
        {"name": args.dataset, "download": args.download}, binarize=args.binarize,
        data_dir=args.data_dir, subset=args.subset, test_fraction=args.test_fraction,
        val_fraction=args.val_fraction))
    train = TrainConfig(**_set(
        {"progress": not args.no_progress}, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, device=args.device, dtype=args.dtype,
        eval_every=args.eval_every, objective=args.objective, particles=args.particles))
    config = RunConfig(**_set({"model": args.model, "model_config": model_config, "data": data,
                               "train": train}, eval_samples=args.eval_samples))
    return train_run(config, args.out, overwrite=args.overwrite)


def _run_evaluate(args) -> dict:
    from .runs import evaluate_run  # noqa: PLC0415

    return evaluate_run(args.run_dir, args.samples, device=args.device)


def _run_sample(args) -> str:
    import pyro  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from .plots import plot_samples  # noqa: PLC0415
    from .runs import load_run  # noqa: PLC0415

    run = load_run(args.run_dir, args.device)
    if args.n <= 0:
        raise ValueError(f"n must be a positive integer, got {args.n}")
    labels = None
    if args.label is not None:
        classes = run.data.num_classes
        if not run.model.needs_labels:
            raise ValueError(f"--label applies to label-conditioned models; model {run.config.model!r} is not one")
        if not 0 <= args.label < classes:
            raise ValueError(f"label must be in [0, {classes - 1}], got {args.label}")
        labels = torch.full((args.n,), args.label, dtype=torch.long, device=run.model.device)
    elif run.model.needs_labels:
        labels = torch.arange(args.n, device=run.model.device) % run.data.num_classes
    pyro.set_rng_seed(args.seed)
    return str(plot_samples(run.model, run.data.image_shape, args.out, n=args.n, y=labels))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Probabilistic generative models in Pyro.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    p = sub.add_parser("evaluate", help="score a trained run on its test set; print the test object")
    p.add_argument("run_dir")
    p.add_argument("--samples", type=int, help="importance samples for log p(x) (default: the run's)")
    p.add_argument("--device")
    p = sub.add_parser("sample", help="draw a grid of samples from a trained run")
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--label", type=int, help="class to generate (conditional models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            metrics = _run_train(args)
            print(json.dumps(metrics["test"], indent=2))
        elif args.command == "evaluate":
            print(json.dumps(_run_evaluate(args), indent=2))
        elif args.command == "sample":
            print(_run_sample(args))
    except (ValueError, TypeError, UsageError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"{PROG}: training stopped: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
