"""Compare models on the same data, in the same units: ``pyro-vae compare``.

Each entry is trained (or reused) with the same data split and the same training budget,
evaluated by :func:`pyro_vae.inference.evaluate.evaluate` on the same test set, and reported
in the literature's units: negative log-likelihood and negative ELBO in nats per example,
with standard errors and the number of importance samples. Only models whose figures are the
same kind of quantity are ranked together: discrete likelihoods of x, conditional ones
log p(x | c), and densities each get their own ranking, and the report says why.

Example
-------
>>> from pyro_vae.compare import CompareConfig, compare
>>> from pyro_vae.inference import TrainConfig
>>> summary = compare(CompareConfig(entries=("vae", "ae"), train=TrainConfig(epochs=1,
...     progress=False), eval_samples=10), "/tmp/pyro-vae-doc-compare", overwrite=True)
>>> [row["name"] for row in summary]
['vae', 'ae']
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import atomic_write_text
from .data import DataConfig
from .errors import check_choice, check_positive_int
from .inference.train import TrainConfig
from .models import MODELS
from .runs import METRICS_FILE, RunConfig, load_run, read_config, read_metrics, train_run

#: Comparison entries beyond the registered model names: name -> (model, model options).
ALIASES = {"ae": ("vae", {"guide": "delta"})}


def entry_choices() -> list[str]:
    return sorted(set(MODELS) | set(ALIASES))


def _entry_spec(name: str) -> tuple[str, dict]:
    check_choice("model", name, entry_choices())
    return ALIASES.get(name, (name, {}))


@dataclass
class CompareConfig:
    """Which entries to compare, on which data, with which shared budget.

    ``model_options`` (e.g. ``{"latent_dim": 16}``) are applied to every entry whose model
    config has that field; entries are model names or aliases (``ae``: the VAE with a
    point-mass guide).
    """

    entries: tuple[str, ...] = ("vae", "ae", "cvae", "mixture", "ppca")
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_samples: int = 1000
    model_options: dict = field(default_factory=dict)

    def __post_init__(self):
        self.entries = tuple(self.entries)
        if not self.entries:
            raise ValueError(f"models must name at least one of: {', '.join(entry_choices())}")
        for name in self.entries:
            _entry_spec(name)
        if len(set(self.entries)) != len(self.entries):
            raise ValueError(f"models lists an entry twice: {', '.join(self.entries)}")
        check_positive_int("samples", self.eval_samples)

    def run_config(self, name: str) -> RunConfig:
        model, options = _entry_spec(name)
        fields = {f.name for f in dataclasses.fields(MODELS[model][0])}
        shared = {k: v for k, v in self.model_options.items() if k in fields}
        return RunConfig(model=model, model_config={**shared, **options}, data=self.data,
                         train=self.train, eval_samples=self.eval_samples)


def compare(config: CompareConfig, out_dir, *, runs: dict | None = None, overwrite: bool = False) -> list[dict]:
    """Train (or reuse ``runs``: entry name -> run directory) and evaluate every entry.

    Writes ``out_dir/<entry>/`` (one run directory per trained entry), ``out_dir/summary.json``,
    ``out_dir/report.md`` and the self-contained ``out_dir/report.html``; returns the summary rows.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = dict(runs or {})
    rows = []
    for name in config.entries:
        run_dir = Path(runs[name]) if name in runs else out_dir / name
        if name not in runs:
            train_run(config.run_config(name), run_dir, overwrite=overwrite)
        rows.append(_summary_row(name, run_dir))
    atomic_write_text(out_dir / "summary.json", json.dumps(rows, indent=2))
    atomic_write_text(out_dir / "report.md", render_markdown(rows, out_dir))
    from .report import report_for_runs  # noqa: PLC0415  (figures are drawn only here)

    report_for_runs([row["run_dir"] for row in rows], out_dir / "report.html")
    return rows


def reuse_runs(run_dirs) -> dict:
    """Map entry names to existing run directories (names from each run's directory name)."""
    mapping = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not (run_dir / METRICS_FILE).is_file():
            raise ValueError(f"--runs: {str(run_dir)!r} is not a finished run (no {METRICS_FILE})")
        mapping[run_dir.name] = run_dir
    return mapping


def _summary_row(name: str, run_dir: Path) -> dict:
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)
    if not metrics.get("test"):
        raise ValueError(f"run {str(run_dir)!r} has no test metrics; run `pyro-vae evaluate` on it")
    parameters = metrics.get("parameters")
    if parameters is None:  # a run written before metrics.json recorded it: count them
        parameters = sum(p.numel() for p in load_run(run_dir, device="cpu").model.parameters())
    return {
        "name": name,
        "model": config.model,
        "run_dir": str(run_dir),
        "parameters": parameters,
        "seconds": metrics.get("seconds"),
        "epochs": metrics.get("epochs"),
        "dataset": metrics.get("dataset"),
        **metrics["test"],
    }


def _group(row: dict) -> str:
    if not row["discrete"]:
        return "density"
    return "conditional" if row["conditional"] else "discrete"


GROUP_NOTES = {
    "discrete": "log p(x) of the binary pixels, a probability (nats per example)",
    "conditional": "log p(x | label), conditional on the class, so not ranked against log p(x)",
    "density": "a density over pixel values, not a probability: not comparable with the "
               "discrete likelihoods above",
}


def _pm(value, stderr) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} ± {stderr:.2f}" if stderr is not None else f"{value:.2f}"


def render_markdown(rows: list[dict], out_dir: Path) -> str:
    """The comparison table (one ranking per comparable group) and a figure row per entry."""
    lines = ["# pyro-vae comparison", ""]
    if rows:
        first = rows[0]
        lines += [f"Data set `{first['dataset']}`, {first['num_examples']} test examples, "
                  f"{first['epochs']} epochs each. Lower NLL and -ELBO are better "
                  f"(nats per example, ± one standard error).", ""]
    for group in ("discrete", "conditional", "density"):
        members = [r for r in rows if _group(r) == group]
        if not members:
            continue
        members.sort(key=lambda r: (r["log_likelihood"] is None, -(r["log_likelihood"] or 0)))
        lines += [f"## {group.capitalize()}: {GROUP_NOTES[group]}", "",
                  "| rank | model | NLL | -ELBO | K | exact | parameters | train s | note |",
                  "|---:|---|---:|---:|---:|:-:|---:|---:|---|"]
        for rank, r in enumerate(members, 1):
            nll = None if r["log_likelihood"] is None else -r["log_likelihood"]
            note = []
            neg_elbo = _pm(-r["elbo"], r["elbo_stderr"])
            if not r["bound"]:
                note.append(f"objective is not a bound on log p(x): no NLL; "
                            f"-log p(x, z*) at the encoded point = {-r['elbo']:.2f}")
                neg_elbo = "n/a"
            if r["conditional"]:
                note.append("conditional: log p(x|c)")
            if "bits_per_dim" in r:
                note.append(f"{r['bits_per_dim']:.3f} bits/dim")
            k = "exact" if r["exact"] else (r["log_likelihood_samples"] or "n/a")
            lines.append(
                f"| {rank if nll is not None else '-'} | {r['name']} | {_pm(nll, r['log_likelihood_stderr'])} "
                f"| {neg_elbo} | {k} | {'yes' if r['exact'] else 'no'} "
                f"| {r['parameters']:,} | {r['seconds']:.1f} | {'; '.join(note)} |")
        lines.append("")
    lines += ["## Figures", ""]
    for r in rows:
        figures = Path(r["run_dir"]) / "figures"
        cells = []
        for kind in ("samples", "reconstructions"):
            path = figures / f"{kind}.png"
            if path.is_file():
                rel = _relative(path, out_dir)
                cells.append(f"![{r['name']} {kind}]({rel})")
        lines += [f"**{r['name']}**", "", " ".join(cells) if cells else "(no figures)", ""]
    return "\n".join(lines)


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())
