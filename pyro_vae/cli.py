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

import json
import sys

from .cli_parser import (  # noqa: F401  (build_parser, FIGURE_KINDS: importable from here as before)
    FIGURE_KINDS,
    FIGURES_WITHOUT_DATA,
    MODEL_OPTIONS,
    PROG,
    UsageError,
    build_parser,
)
from .data import DataConfig
from .errors import allocation_message, check_non_negative_int, check_positive_int, check_seed, is_allocation_error
from .inference import distributed
from .inference.config import TrainConfig
from .inference.state import NonFiniteLossError


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
        eval_every=args.eval_every, patience=args.patience, select_on=args.select_on, objective=args.objective,
        particles=args.particles,
        beta=args.beta, kl_warmup=args.kl_warmup, detect_anomaly=args.detect_anomaly or None,
        flush_denormal=None if args.keep_denormals is None else False,
        optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
        clip_grad=args.clip_grad, lr_schedule=args.lr_schedule, lr_min=args.lr_min,
        lr_step_epochs=args.lr_step_epochs, lr_gamma=args.lr_gamma, lr_patience=args.lr_patience,
        log=log))


def _run_train(args) -> dict:
    from .runs import RunConfig, resume_run, train_run  # noqa: PLC0415

    if args.resume:
        conflicting = [f"--{k.replace('_', '-')}" for k in (
            *MODEL_OPTIONS, "batch_size", "lr", "seed", "dtype", "objective", "particles",
            "beta", "kl_warmup", "keep_denormals", "patience", "select_on", "optimizer", "momentum", "weight_decay",
            "clip_grad",
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
    import dataclasses  # noqa: PLC0415

    from .compare import (  # noqa: PLC0415
        DEFAULT_ENTRIES,
        CompareConfig,
        compare,
        models_with_field,
        parse_entries,
        reuse_runs,
        unapplied_options,
    )

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
    config = CompareConfig(**_set({"entries": entries, "data": _data_config(args), "train": _train_config(args)},
                                  eval_samples=args.eval_samples, seeds=args.seeds))
    flag_of = {field: "--" + flag.replace("_", "-") for flag, field in MODEL_OPTIONS.items()}
    to_train = [e for e in config.entries if e.name not in runs]  # entries given a run are reused
    for option, skipped in unapplied_options(to_train, options).items():
        where = ", ".join(f"{name} ({why})" for name, why in skipped.items())
        if len(skipped) == len(to_train):
            raise UsageError(f"{flag_of[option]} reaches none of the models to train "
                             f"({where or 'none: the entries reuse runs'}); models it applies to: "
                             f"{', '.join(models_with_field(option)) or 'none'}")
        print(f"note: {flag_of[option]} does not reach {where}: trained without it", file=sys.stderr)
    config = dataclasses.replace(config, model_options=options)
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
