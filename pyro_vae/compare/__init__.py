"""Compare models on the same data, in the same units: ``pyro-vae compare``.

Each entry (a model, an alias or a named variant, :mod:`pyro_vae.compare.entries`) is
trained with the shared budget, or an existing run is reused, and every row is scored on
the same test tensor: runs whose test-set fingerprints differ are refused before anything
is trained. Rows are ranked within groups of the same kind of quantity (log p(x) of binary
pixels, log p(x | c), densities), each with its paired difference to the group's best row
on the same examples (:mod:`pyro_vae.compare.stats`) and, with several seeds, the spread
of its NLL across seeds.

Example
-------
>>> from pyro_vae.compare import CompareConfig, compare
>>> from pyro_vae.inference import TrainConfig
>>> summary = compare(CompareConfig(entries=("vae", "ae"), train=TrainConfig(epochs=1,
...     progress=False), eval_samples=10, model_options={"latent_dim": 2, "hidden_dims": (16,)}),
...     "/tmp/pyro-vae-doc-compare", overwrite=True)
>>> [row["name"] for row in summary]
['vae', 'ae']
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import atomic_write_text
from ..data import DataConfig, load_dataset
from ..errors import check_instance, check_positive_int, check_seed
from ..inference.config import TrainConfig
from ..inference.fingerprints import fingerprint
from ..jsonio import dumps_finite
from ..models import MODELS
from ..runfiles import check_out_dir
from ..runs import METRICS_FILE, RunConfig, load_run, read_config, read_metrics, read_per_example, train_run
from .entries import ALIASES, Entry, check_unique, entry_choices, parse_entries, parse_entry
from .stats import check_comparable, paired_difference, seed_spread
from .tables import GROUP_NOTES, group_of, ranked, render_markdown

DEFAULT_ENTRIES = ("vae", "ae", "cvae", "mixture", "ppca")


@dataclass
class CompareConfig:
    """Which entries to compare, on which data, with which shared budget.

    ``entries`` are :class:`~pyro_vae.compare.entries.Entry` objects or spec strings
    (``"vae"``, ``"vamp=vae:prior=vamp"``). ``model_options`` (e.g. ``{"latent_dim": 16}``)
    apply to every entry whose model config has that field; an entry's own options win.
    ``seeds``: each entry is trained once per seed (default: ``train.seed`` alone); the
    first seed's runs are ranked and paired, the others give each row its spread.
    """

    entries: tuple = DEFAULT_ENTRIES
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_samples: int = 1000
    model_options: dict = field(default_factory=dict)
    seeds: tuple | None = None

    def __post_init__(self):
        if isinstance(self.entries, str):
            raise TypeError("entries must be a sequence of entries, e.g. ('vae', 'vamp=vae:prior=vamp'); "
                            "parse a comma-separated string with parse_entries")
        check_instance("data", self.data, DataConfig, "build one with DataConfig(...)")
        check_instance("train", self.train, TrainConfig, "build one with TrainConfig(...)")
        parsed = []
        for entry in self.entries:
            if isinstance(entry, str):
                name, sep, spec = entry.partition("=")
                parsed.append(parse_entry(name, spec) if sep else parse_entry(None, entry))
            elif isinstance(entry, Entry):
                parsed.append(entry)
            else:
                raise TypeError(f"entries must hold spec strings or Entry objects, got {entry!r}")
        self.entries = tuple(parsed)
        check_unique([e.name for e in self.entries], "models")
        check_positive_int("samples", self.eval_samples)
        self.seeds = (self.train.seed,) if self.seeds is None else tuple(self.seeds)
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed, e.g. 0,1,2")
        for seed in self.seeds:
            check_seed("seeds", seed)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds lists a seed twice: {', '.join(map(str, self.seeds))}")
        check_instance("model_options", self.model_options, dict, "e.g. {'latent_dim': 16}")

    def run_config(self, entry: Entry, seed: int | None = None) -> RunConfig:
        """The run of ``entry`` (under ``seed``, default the first): shared settings plus its own."""
        fields = _field_names(entry.model)
        shared = {k: v for k, v in self.model_options.items() if k in fields}
        try:
            return RunConfig(
                model=entry.model, model_config={**shared, **entry.model_options},
                data=dataclasses.replace(self.data, **entry.data_options),
                train=dataclasses.replace(self.train, seed=self.seeds[0] if seed is None else seed,
                                          **entry.train_options),
                eval_samples=entry.samples or self.eval_samples)
        except (ValueError, TypeError) as err:
            raise type(err)(f"entry {entry.name!r}: {err}") from err


def _field_names(model: str) -> set[str]:
    return {f.name for f in dataclasses.fields(MODELS[model][0])}


def unapplied_options(entries, model_options: dict) -> dict[str, dict[str, str]]:
    """Where each shared model option does not reach one of ``entries`` (parsed Entry objects).

    Returns ``{option: {entry name: why}}`` for the options that skip some entry, ``why``
    being ``"no such field"`` or the entry's own value that wins (``"its own guide='delta'"``:
    the ``ae`` alias); an option with no entries at all maps to ``{}``. Such an option is
    skipped for those entries; one that reaches none of them changes nothing and is refused
    (:func:`check_model_options`; the CLI says so with its flags, and names the skipped ones).
    """
    out = {}
    for option in model_options:
        skipped = {}
        for e in entries:
            if option not in _field_names(e.model):
                skipped[e.name] = "no such field"
            elif option in e.model_options and e.model_options[option] != model_options[option]:
                skipped[e.name] = f"its own {option}={e.model_options[option]!r}"
        if skipped or not entries:
            out[option] = skipped
    return out


def check_model_options(entries, model_options: dict) -> None:
    """Refuse a shared model option that reaches none of ``entries`` (those to train)."""
    for option, skipped in unapplied_options(entries, model_options).items():
        if len(skipped) == len(entries):
            names = ", ".join(f"{n} ({why})" for n, why in skipped.items()) or "none: every entry reuses a run"
            raise ValueError(f"model_options[{option!r}] reaches none of the entries to train ({names}); "
                             f"models with that field: {', '.join(models_with_field(option)) or 'none'}")


def models_with_field(option: str) -> list[str]:
    """The registered models whose config has the field ``option``."""
    return [name for name in MODELS if option in _field_names(name)]


def run_directory(out_dir: Path, name: str, seed_index: int, seed: int) -> Path:
    """``out_dir/NAME`` for the first seed, ``out_dir/NAME-seedS`` for the others."""
    return out_dir / (name if seed_index == 0 else f"{name}-seed{seed}")


def compare(config: CompareConfig, out_dir, *, runs: dict | None = None, overwrite: bool = False) -> list[dict]:
    """Train what has no run, check every row is comparable, rank, pair and report.

    ``runs`` maps entry names to finished run directories to reuse: an entry of that name is
    not trained, and a run with a name no entry has becomes a row of its own. Writes
    ``out_dir/<entry>/`` (one run directory per trained entry and seed),
    ``out_dir/summary.json``, ``out_dir/report.md`` and the self-contained
    ``out_dir/report.html``; returns the summary rows (each with its ``paired`` difference
    to its group's best row, and ``seeds`` where there are several).
    """
    out_dir = Path(out_dir)
    runs = {name: Path(d) for name, d in (runs or {}).items()}
    to_train = [e for e in config.entries if e.name not in runs]
    names = [e.name for e in config.entries] + [n for n in runs if n not in {e.name for e in config.entries}]
    if not names:
        raise ValueError(f"nothing to compare: name entries with --models (from "
                         f"{', '.join(entry_choices())}) or finished runs with --runs")
    # Everything is checked before anything is trained: options, and one test set for all.
    check_model_options(to_train, config.model_options)
    plans = {e.name: [(run_directory(out_dir, e.name, i, s), config.run_config(e, s))
                      for i, s in enumerate(config.seeds)] for e in to_train}
    _check_distinct_directories(plans, runs)
    _check_report_files(out_dir, overwrite)
    for plan in plans.values():  # an occupied run directory is refused now, not after hours
        for run_dir, _ in plan:
            check_out_dir(run_dir, overwrite)
    reused = {name: _summary_row(name, d) for name, d in runs.items()}
    for run_dir in runs.values():  # weights that load and belong to the metrics, or refused now
        load_run(run_dir, device="cpu")
    check_comparable([*reused.values(), *_planned_rows(plans)])

    for plan in plans.values():
        for run_dir, run_config in plan:
            train_run(run_config, run_dir, overwrite=overwrite)
    rows = []
    for name in names:
        if name in reused:
            rows.append(reused[name])
            continue
        seed_rows = [_summary_row(name, run_dir) for run_dir, _ in plans[name]]
        check_comparable(seed_rows)
        row = seed_rows[0]
        if len(seed_rows) > 1 and row["log_likelihood"] is not None:
            row["seeds"] = {"seeds": [r["seed"] for r in seed_rows],
                            "run_dirs": [r["run_dir"] for r in seed_rows],
                            **seed_spread([-r["log_likelihood"] for r in seed_rows])}
        rows.append(row)
    check_comparable(rows)
    add_paired_differences(rows)
    from ..report import report_for_runs  # noqa: PLC0415  (figures are drawn only here)

    # The HTML report loads every run (its weights checked against its metrics) before the
    # summary is written: a run refused there leaves no summary ranking it.
    summary, markdown = dumps_finite(rows), render_markdown(rows, out_dir)  # before any file
    report_for_runs([row["run_dir"] for row in rows], out_dir / "report.html", comparison=rows)
    atomic_write_text(out_dir / "summary.json", summary)
    atomic_write_text(out_dir / "report.md", markdown)
    return rows


def add_paired_differences(rows: list[dict]) -> None:
    """Set each row's ``paired``: its difference to its group's best row, per example.

    ``{"vs": NAME, "difference": d, "stderr": s, "significant": bool}``, ``d`` in nats of NLL
    the row is behind the best; None for the best row and rows without a log-likelihood.
    """
    for group in ("discrete", "conditional", "density"):
        members = [r for r in ranked([r for r in rows if group_of(r) == group])
                   if r["log_likelihood"] is not None]
        for r in rows:
            if group_of(r) == group:
                r["paired"] = None
        if len(members) < 2:
            continue
        best = members[0]
        best_values = _per_example(best)["log_likelihood"]
        for r in members[1:]:
            values = _per_example(r)
            if "log_likelihood" not in values:
                raise ValueError(f"{r['run_dir']!r}: its per-example file has no log-likelihoods; "
                                 f"run `pyro-vae evaluate {r['run_dir']}` to rewrite it")
            r["paired"] = {"vs": best["name"], **paired_difference(best_values, values["log_likelihood"])}


def _per_example(row: dict) -> dict:
    """A row's per-example test values, checked against the means its metrics.json reports."""
    return read_per_example(row["run_dir"], row["num_examples"],
                            means={"elbo": row["elbo"], "log_likelihood": row["log_likelihood"]})


def reuse_runs(run_dirs) -> dict:
    """Map entry names to existing run directories: ``NAME=DIR``, or named by the directory.

    Refuses a directory without finished metrics and a name given twice.
    """
    mapping = {}
    for item in run_dirs:
        name, sep, path = str(item).partition("=")
        if sep and Path(str(item)).is_dir():  # a directory whose own name holds '='
            name, sep = str(item), ""
        run_dir = Path(path if sep else name)
        name = name if sep else run_dir.name
        if not (run_dir / METRICS_FILE).is_file():
            raise ValueError(f"--runs: {str(run_dir)!r} is not a finished run (no {METRICS_FILE})")
        if name in mapping:
            raise ValueError(f"--runs names the entry {name!r} twice ({str(mapping[name])!r} and "
                             f"{str(run_dir)!r}); rename one with NAME=DIR")
        mapping[name] = run_dir
    return mapping


REPORT_FILES = ("summary.json", "report.md", "report.html")


def _check_report_files(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace an earlier comparison's (or anyone's) report files without ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} exists and is not a directory")
    present = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if present and not overwrite:
        raise ValueError(f"--out {str(out_dir)!r} already holds {', '.join(present)}; pass --overwrite "
                         f"to replace them (and the runs of the entries it trains)")


def _check_distinct_directories(plans: dict, runs: dict) -> None:
    """Refuse two planned runs in one directory (an entry named like another's seed run), and a
    planned run in the directory of a run being reused (training would replace it)."""
    reused = {Path(d).resolve(): name for name, d in runs.items()}
    for name, plan in plans.items():
        for run_dir, _ in plan:
            if run_dir.resolve() in reused:
                raise ValueError(f"entry {name!r} would train into {str(run_dir)!r}, the run reused as "
                                 f"{reused[run_dir.resolve()]!r}; choose another --out or entry name")
    owner = {}
    for name, plan in plans.items():
        for run_dir, _ in plan:
            if run_dir in owner:
                raise ValueError(f"entries {owner[run_dir]!r} and {name!r} would both train into "
                                 f"{str(run_dir)!r} (seed runs are NAME-seedS); rename {name!r}")
            owner[run_dir] = name


def _planned_rows(plans: dict) -> list[dict]:
    """What :func:`check_comparable` needs of the runs about to be trained: their test set."""
    rows, cache = [], {}
    for name, plan in plans.items():
        data_config = plan[0][1].data
        key = json.dumps(dataclasses.asdict(data_config), sort_keys=True)
        if key not in cache:
            data = load_dataset(data_config)
            x, y = data.split("test")
            cache[key] = (fingerprint(x, y), x.shape[0])
        sha, n = cache[key]
        rows.append({"run_dir": f"(entry {name}, to be trained)", "test_set_sha256": sha,
                     "num_examples": n, "data": dataclasses.asdict(data_config)})
    return rows


def _summary_row(name: str, run_dir: Path) -> dict:
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    test = metrics.get("test")
    if not isinstance(test, dict) or not test:
        raise ValueError(f"run {str(run_dir)!r} has no test metrics; run `pyro-vae evaluate` on it")
    parameters = metrics.get("parameters")
    if parameters is None:  # a run written before metrics.json recorded it: count them
        parameters = sum(p.numel() for p in load_run(run_dir, device="cpu").model.parameters())
    return {
        "name": name,
        "model": config.model,
        "run_dir": str(run_dir),
        "seed": config.train.seed,
        "parameters": parameters,
        "seconds": metrics.get("seconds"),
        "epochs": metrics.get("epochs"),
        "best_epoch": metrics.get("best_epoch"),
        "stopped_early": metrics.get("stopped_early", False),
        "dataset": metrics.get("dataset"),
        "data": dataclasses.asdict(config.data),
        **test,
    }


__all__ = ["ALIASES", "CompareConfig", "DEFAULT_ENTRIES", "Entry", "GROUP_NOTES", "add_paired_differences",
           "check_model_options", "compare", "entry_choices", "models_with_field", "parse_entries",
           "render_markdown", "reuse_runs", "unapplied_options"]
