"""Reproduce the literature's Fashion-MNIST log-likelihoods (issue 16) as resumable runs.

    python benchmarks/reproduce.py [--only vae,vamp] [--runs-dir DIR] [--results PATH]
        [--max-epochs N] [--eval-samples K] [--device cpu|cuda] [--threads N]
        [--data-dir DIR] [--seed S] [--no-progress]
    python benchmarks/reproduce.py --smoke --results PATH [--runs-dir DIR]
    python benchmarks/reproduce.py --status [--only NAME] [--runs-dir DIR]
    python benchmarks/reproduce.py --cost [--only NAME] [--threads N] [--results PATH]

What it trains. Each entry of ``ENTRIES`` (benchmarks/reproduce_entries.py, which also
estimates each entry's cost) is the literature's configuration of one model
on dynamically binarized Fashion-MNIST, with the training protocol of the VampPrior code
(Tomczak & Welling 2018, github.com/jmtomczak/vae_vampprior) that the Exemplar VAE code
(Norouzi, Fleet & Norouzi 2020, github.com/sajadn/Exemplar-VAE, ``density_estimation.py``)
follows: every setting, with where it comes from, is in ``SETTINGS`` and in the entry's
own ``settings``. The entries:

- ``vae``: the VAE with a standard-normal prior;
- ``vae-gated``: the same with the reference code's gated dense layers (``activation="gated"``),
  which tests whether the ungated layers explain ``vae``'s gap to the published figure;
- ``vamp``: the VAE with a VampPrior of 500 pseudo-inputs; ``vamp-gated`` the same with gated
  layers;
- ``iwae5``: the VAE's model trained on the IWAE bound with K = 5 (Burda et al. 2015); no
  Fashion-MNIST figure is published, so it is judged against ``vae`` (paired difference);
- ``hvae``: the two-layer hierarchical VAE (z1, z2 of 40 units each) with a standard prior;
- ``hvae-vamp``: the same with a VampPrior on the top layer;
- ``iwae5-gated``, ``hvae-gated``, ``hvae-vamp-gated``: those three with gated layers;
- ``conv``, ``conv-vamp``: the two-layer HVAE with convolutional networks (``arch="conv"``),
  standard prior and VampPrior.

Where pyro-vae's networks or training loop differ from the reference code (ungated layers in
the entries without ``-gated``, and more) is in each entry's ``config.known_differences``: the
JSON states them, the numbers are what these runs reach. Each entry is also paired with its
``baseline`` VAE of the same layers (``vae``, or ``vae-gated`` for the gated entries), so "the
VampPrior (or IWAE) is better than the VAE" is judged with the networks held fixed.

Run directories. Each entry trains into ``--runs-dir/NAME`` (default
``~/pyro-vae-runs/reproduce``), a pyro-vae run directory: checkpointed after every epoch, with
``best.pt`` the best validation epoch. On every invocation an entry's directory is

- reused if it holds a finished run (``metrics.json``) that stopped early or ran at least the
  epochs asked for (re-scored with :func:`pyro_vae.runs.evaluate_run`, no training, when its
  K differs from the K asked for);
- resumed (:func:`pyro_vae.runs.resume_run`) if it holds a checkpoint: an interrupted run
  continues where it stopped, and a run capped by an earlier ``--max-epochs`` continues to
  the new cap;
- trained (:func:`pyro_vae.runs.train_run`) otherwise.

``--status`` prints, per entry, where its directory stands and writes nothing: finished (test
NLL), or its last checkpoint (epoch, best validation epoch and score, evaluations since the
best out of the patience, hours and seconds per epoch, wall time, pauses included) and the
process training it, if any.

Stopping and scoring a run early. A run checkpoints after every epoch (atomically), so it can
be stopped at any moment: Ctrl-C in a terminal, or ``kill PID`` (SIGTERM; a job started in the
background of a non-interactive shell ignores SIGINT) keeps its last finished epoch. To score
it as it stands, rerun the entry with ``--max-epochs N``, N its epochs (``--status``); a later
invocation with a larger cap resumes it. Never move a directory a process is still writing:
its lock moves with it, and the process goes on writing the old path.

A directory written with other settings (than these entries' at this commit) is refused,
naming what differs, never overwritten. ``--only NAME[,NAME]`` trains those entries; the
results still list every other entry whose directory holds a finished run (read, never
trained), so a reproduction can be done one entry per session.

Budget. ``--max-epochs N`` caps each entry's epochs below the literature's 2,000 (recorded as
``config.epoch_budget``; an entry that hit the cap before early stopping has
``budget_limited: true``). ``--eval-samples K`` replaces the literature's K = 5000 (recorded
as ``samples``). Early stopping counts validation evaluations, one per epoch
(``eval_every 1``), so ``patience 50`` is the papers' 50 epochs.

Results. ``--results PATH`` (default ``docs/results/fashion-mnist.json``) receives
``{"commit", "commit_dirty", "machine", "settings", "entries": [...], "not_run", "targets"}``;
each entry holds ``name, nll, nll_stderr, elbo, epochs, best_epoch, seconds,
paired_vs_vae, published, config, samples, test_examples`` and a few more (see
docs/results/README.md). Every number is read from the runs' ``metrics.json`` and
``test_per_example.npz``; ``paired_vs_vae`` is :func:`pyro_vae.compare.stats.paired_difference`
of the entry's per-example log-likelihoods against the VAE's (positive: the entry's NLL is
lower, in nats per test image), after every run's test-set fingerprint was checked to be the
same tensor. ``seconds`` is the training wall time (validation evaluations included, the final
K-sample evaluation not), summed over resumed sessions, on whatever machine trained it;
``machine`` describes the one that wrote the results. A table (published vs obtained) is
printed.

``--smoke``: the embedded 8x8 digits, 2 epochs, K = 10, every entry, into a temporary runs
directory (or ``--runs-dir``) and the ``--results`` path the caller gives (required: smoke
numbers never replace the committed results). Seconds; the numbers mean nothing. Used by
tests/test_reproduce.py.

``--cost`` measures what each entry costs on this machine (seconds per epoch, hours for 2,000
epochs, minutes for the K = 5000 evaluation) from a few timed batches and images, without
touching the runs directory; see benchmarks/reproduce_cost.py.

Modules: reproduce_entries.py (the entries and their sources), reproduce_runs.py (run
directories and ``--status``), reproduce_results.py (each entry's record, the pairing, the
targets, the table), reproduce_cost.py (``--cost``), this file (the command line).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pyro
import torch
from common import FASHION_DIR  # benchmarks/common.py (puts pyro_vae on the path)
from reproduce_cost import COST_HEADER, COST_SIZES, SMOKE_COST_SIZES, load_entry_data, measure_costs
from reproduce_entries import (  # noqa: F401  (baseline, UNGATED_DIFFERENCE: read by tests from this module)
    ENTRIES,
    NOT_RUN,
    SETTINGS,
    SHARED_DIFFERENCES,
    UNGATED_DIFFERENCE,
    baseline,
    run_config,
)
from reproduce_results import (
    add_pairing,
    carried_over,
    entry_record,
    per_example_path,
    print_table,
    read_previous,
    targets,
    write_archive,
)
from reproduce_runs import check_run_matches, ensure_run, run_status

from pyro_vae.checkpoint import atomic_write_text
from pyro_vae.jsonio import dumps_finite
from pyro_vae.runfiles import CONFIG_FILE
from pyro_vae.runs import read_metrics

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "docs" / "results" / "fashion-mnist.json"
DEFAULT_COST_RESULTS = ROOT / "docs" / "results" / "fashion-mnist-cost.json"
DEFAULT_RUNS_DIR = Path("~/pyro-vae-runs/reproduce")

#: What ``--smoke`` changes: the embedded digits, 2 epochs, K = 10.
SMOKE = {"dataset": "digits", "max_epochs": 2, "eval_samples": 10}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help=f"train only these entries (choices: {', '.join(ENTRIES)}; default: all); the "
                        f"results also list the others' finished runs")
    p.add_argument("--runs-dir", metavar="DIR",
                   help=f"where the run directories live (default {DEFAULT_RUNS_DIR}; with --smoke a new "
                        f"temporary directory)")
    p.add_argument("--results", metavar="PATH",
                   help="the results JSON (default docs/results/fashion-mnist.json; required with --smoke)")
    p.add_argument("--max-epochs", type=int, metavar="N",
                   help=f"cap each entry's epochs (default: the literature's {SETTINGS['max_epochs']['value']}; "
                        f"recorded as config.epoch_budget)")
    p.add_argument("--eval-samples", type=int, metavar="K",
                   help=f"importance samples of the test log-likelihood (default: the literature's "
                        f"{SETTINGS['eval_samples']['value']}; recorded as samples)")
    p.add_argument("--data-dir", metavar="DIR",
                   help=f"Fashion-MNIST's IDX files (default: pyro-vae's search, which includes {FASHION_DIR})")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, metavar="N", help="torch's intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=SETTINGS["seed"]["value"], help="training seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--status", action="store_true",
                   help="print each entry's run directory as it stands (epochs, best epoch and score, "
                        "patience used, a live process) and exit: nothing is trained or written")
    p.add_argument("--cost", action="store_true",
                   help="measure each entry's seconds per epoch and K = 5000 evaluation time on this machine "
                        "(a few batches and images, scaled to full size; benchmarks/reproduce_cost.py) and "
                        "write them to --results (default docs/results/fashion-mnist-cost.json): nothing is "
                        "trained into the runs directory")
    p.add_argument("--smoke", action="store_true",
                   help="digits, 2 epochs, K = 10, every entry, a temporary runs directory: seconds, for tests")
    return p


def parse_only(text: str | None, parser: argparse.ArgumentParser) -> list[str]:
    if text is None:
        return list(ENTRIES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENTRIES]
    if not names or unknown:
        parser.error(f"--only: unknown entry {', '.join(unknown) or repr(text)}; choose from: {', '.join(ENTRIES)}")
    return [n for n in ENTRIES if n in names]  # in the table's order, vae first


def git_commit() -> tuple[str | None, bool | None]:
    """HEAD's hash and whether tracked files differ from it (None, None outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head, bool(status.strip())


def machine_description(device: str | None) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(torch.device(target)) if target.startswith("cuda") else None
    threads = torch.get_num_threads()
    description = (f"{cpu or 'unknown CPU'}, {os.cpu_count()} logical CPUs, {platform.system()} "
                   f"{platform.release()}; torch {torch.__version__} ({threads} threads), pyro {pyro.__version__}, "
                   f"Python {platform.python_version()}; device {target}{f' ({gpu})' if gpu else ''}")
    return {"description": description, "platform": platform.platform(), "cpu": cpu or None,
            "cpu_count": os.cpu_count(), "torch": str(torch.__version__), "pyro": str(pyro.__version__),
            "python": platform.python_version(), "threads": threads, "device": target, "gpu": gpu}


def check_results_path(path: Path, parser: argparse.ArgumentParser) -> None:
    """Exit 2 naming ``--results`` unless ``path`` can be written (its folder is made here)."""
    if path.is_dir():
        parser.error(f"--results: {path} is a folder; give the path of a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"--results: cannot make the folder of {path} ({err.strerror or err})")
    if not os.access(path.parent, os.W_OK):
        parser.error(f"--results: the folder {path.parent} is not writable")


def write_costs(args, argv, names: list[str], *, dataset: str, eval_samples: int, path: Path) -> dict:
    """``--cost``: measure, print and write each entry's cost (benchmarks/reproduce_cost.py)."""
    try:  # a missing or damaged data set is the user's to fix: one line, exit 2
        data = load_entry_data(names[0], dataset=dataset, data_dir=args.data_dir)
    except (ValueError, OSError) as err:
        print(f"reproduce.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(COST_HEADER)
    rows = measure_costs(names, dataset=dataset, data_dir=args.data_dir, device=args.device, seed=args.seed,
                         sizes=SMOKE_COST_SIZES if args.smoke else COST_SIZES, eval_samples=eval_samples,
                         data=data, report=lambda line: print(line, flush=True))
    commit, dirty = git_commit()
    results = {"commit": commit, "commit_dirty": dirty, "command": _command(argv), "smoke": args.smoke,
               "dataset": dataset, "machine": machine_description(args.device), "entries": rows}
    atomic_write_text(path, dumps_finite(results, nonfinite="null") + "\n")
    print(f"costs: {path}")
    return results


def _command(argv) -> str:
    return " ".join(["python", "benchmarks/reproduce.py", *(argv if argv is not None else sys.argv[1:])])


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cost and (args.status or args.max_epochs or args.runs_dir):
        parser.error("--cost trains nothing into run directories: it takes --only, --eval-samples, --threads, "
                     "--device, --data-dir, --seed, --smoke and --results, not --status, --max-epochs or --runs-dir")
    if args.smoke and not args.results and not args.status:
        parser.error("--smoke needs --results PATH (smoke numbers never replace the committed results)")
    for option in ("max_epochs", "eval_samples", "threads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    names = parse_only(args.only, parser)
    if args.threads is not None:
        try:
            torch.set_num_threads(args.threads)
        except (RuntimeError, ValueError, OverflowError) as err:
            parser.error(f"--threads: torch refuses {args.threads} threads ({err})")

    s = {k: v["value"] for k, v in SETTINGS.items()}
    dataset = SMOKE["dataset"] if args.smoke else s["dataset"]
    epochs = args.max_epochs or (SMOKE["max_epochs"] if args.smoke else s["max_epochs"])
    if epochs > s["max_epochs"]:
        parser.error(f"--max-epochs caps the literature's {s['max_epochs']} epochs; got {epochs}")
    eval_samples = args.eval_samples or (SMOKE["eval_samples"] if args.smoke else s["eval_samples"])
    progress = not (args.no_progress or args.smoke)
    try:  # every setting checked (seed, device, K ...) before anything is measured or trained
        configs = {name: run_config(name, dataset=dataset, epochs=epochs, eval_samples=eval_samples, seed=args.seed,
                                    device=args.device, data_dir=args.data_dir, progress=progress)
                   for name in ENTRIES}
    except (ValueError, TypeError) as err:
        parser.error(str(err))
    if args.status:  # read only: before the runs directory is made
        runs_dir = Path(args.runs_dir).expanduser() if args.runs_dir else DEFAULT_RUNS_DIR.expanduser()
        lines = [run_status(name, runs_dir / name, configs[name]) for name in names]
        print("\n".join(lines))
        return {"status": lines}
    results_path = Path(args.results) if args.results else DEFAULT_COST_RESULTS if args.cost else DEFAULT_RESULTS
    check_results_path(results_path, parser)  # before hours of work, not after
    if args.cost:
        return write_costs(args, argv, names, dataset=dataset, eval_samples=eval_samples, path=results_path)
    try:  # the results already there, whose entries are carried over: checked before hours of work
        previous, archive = read_previous(results_path, dataset=dataset, smoke=args.smoke)
    except ValueError as err:
        print(f"reproduce.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.runs_dir:
        runs_dir = Path(args.runs_dir).expanduser()
    elif args.smoke:
        runs_dir = Path(tempfile.mkdtemp(prefix="pyro-vae-reproduce-smoke-"))
    else:
        runs_dir = DEFAULT_RUNS_DIR.expanduser()
    runs_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for name in ENTRIES:
        run_dir = runs_dir / name
        if name in names:
            print(f"[{name}] {run_dir}", file=sys.stderr, flush=True)
            try:
                action = ensure_run(run_dir, configs[name], device=args.device, progress=progress)
            except KeyboardInterrupt:  # Ctrl-C or SIGINT: the run keeps its last finished epoch
                print(f"[{name}] interrupted: {run_dir} keeps its last finished epoch; the same command "
                      f"resumes it (--max-epochs N, N the epochs done, scores it as it stands)", file=sys.stderr)
                raise SystemExit(130) from None
        else:  # not asked for: listed if it has finished, never trained
            if not (run_dir / CONFIG_FILE).is_file() or not read_metrics(run_dir).get("test"):
                continue
            try:
                check_run_matches(run_dir, configs[name])
            except ValueError as err:
                print(f"[{name}] left out: {err}", file=sys.stderr)
                continue
            action = "read"
        records.append(entry_record(name, run_dir, action))
    # Entries of the results file already there whose runs are not here (another session's
    # machine) are carried over, and their kept per-example values pair them with these.
    order = list(ENTRIES)
    records = sorted(records + carried_over(previous, records), key=lambda r: order.index(r["name"]))
    per_example = add_pairing(records, archive)

    commit, dirty = git_commit()
    results = {
        "commit": commit, "commit_dirty": dirty,
        "command": _command(argv),
        "smoke": args.smoke, "dataset": dataset, "runs_dir": str(runs_dir),
        "machine": machine_description(args.device),
        "settings": SETTINGS, "shared_known_differences": SHARED_DIFFERENCES,
        "entries": records, "not_run": NOT_RUN, "targets": targets(records),
    }
    print_table(records)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_path, dumps_finite(results, nonfinite="null") + "\n")
    write_archive(results_path, per_example)
    print(f"results: {results_path} (per-example values: {per_example_path(results_path)})")
    return results


if __name__ == "__main__":
    main()
