"""``report.md`` of a comparison: one ranking per comparable group, paired differences, figures."""

from __future__ import annotations

import os
from pathlib import Path


def group_of(row: dict) -> str:
    """The ranking a row belongs to: log p(x) of binary pixels, log p(x | c), or a density."""
    if not row["discrete"]:
        return "density"
    return "conditional" if row["conditional"] else "discrete"


GROUP_NOTES = {
    "discrete": "log p(x) of the binary pixels, a probability (nats per example)",
    "conditional": "log p(x | label), conditional on the class, so not ranked against log p(x)",
    "density": "a density over pixel values, not a probability: not comparable with the "
               "discrete likelihoods above",
}


def ranked(rows: list[dict]) -> list[dict]:
    """Rows with a log-likelihood first, best first; then the others in their given order."""
    return sorted(rows, key=lambda r: (r["log_likelihood"] is None, -(r["log_likelihood"] or 0)))


def _pm(value, stderr, digits=2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f} ± {stderr:.{digits}f}" if stderr is not None else f"{value:.{digits}f}"


def _shared(rows, key):
    values = {r.get(key) for r in rows}
    return values.pop() if len(values) == 1 else None


def paired_cell(row: dict) -> str:
    """``best``, ``+d ± s`` (nats behind the best, paired), ``n.s.`` when within 2 s.e."""
    paired = row.get("paired")
    if row["log_likelihood"] is None:
        return "n/a"
    if paired is None:
        return "best"
    text = f"+{_pm(paired['difference'], paired['stderr'])}"
    return text if paired["significant"] else f"{text} (n.s.)"


def seeds_cell(row: dict) -> str:
    seeds = row.get("seeds")
    if not seeds or seeds.get("nll_mean") is None:
        return "–"
    return f"{_pm(seeds['nll_mean'], seeds['nll_std'])} ({len(seeds['nll'])} seeds)"


def render_markdown(rows: list[dict], out_dir: Path) -> str:
    """The comparison tables (one ranking per comparable group) and a figure row per entry."""
    lines = ["# pyro-vae comparison", ""]
    if rows:
        n, epochs = _shared(rows, "num_examples"), _shared(rows, "epochs")
        facts = [f"Data set `{rows[0]['dataset']}`",
                 f"{n} test examples" if n is not None else None,
                 f"one test set (fingerprint `{rows[0]['test_set_sha256'][:12]}…`)"
                 if rows[0].get("test_set_sha256") else None,
                 f"{epochs} epochs each" if epochs is not None else "epochs per row"]
        lines += [", ".join(f for f in facts if f) + ". Lower NLL and -ELBO are better (nats per "
                  "example, ± one standard error). \"vs best\" is the paired difference to the "
                  "group's best row on the same test examples, ± its standard error; (n.s.): "
                  "within two standard errors, not significant at this test size. KL is the test "
                  "ELBO's KL term E_q[log q(z|x) - log p(z)] (-ELBO = KL - reconstruction).", ""]
    with_seeds = any(r.get("seeds") for r in rows)
    for group in ("discrete", "conditional", "density"):
        members = ranked([r for r in rows if group_of(r) == group])
        if not members:
            continue
        header = ["rank", "entry", "model", "NLL", "vs best", "-ELBO", "KL", "K", "epochs", "parameters",
                  "train s", "note"]
        if with_seeds:
            header.insert(5, "NLL over seeds")
        lines += [f"## {group.capitalize()}: {GROUP_NOTES[group]}", "",
                  "| " + " | ".join(header) + " |",
                  "|" + "|".join("---:" if h not in ("entry", "model", "note") else "---"
                                 for h in header) + "|"]
        for rank, r in enumerate(members, 1):
            nll = None if r["log_likelihood"] is None else -r["log_likelihood"]
            note = []
            neg_elbo = _pm(-r["elbo"], r["elbo_stderr"])
            kl = _pm(r.get("kl"), r.get("kl_stderr"))  # n/a: M2, or a run written before the parts existed
            if not r["bound"]:
                note.append(f"objective is not a bound on log p(x): no NLL; "
                            f"-log p(x, z*) at the encoded point = {-r['elbo']:.2f}")
                neg_elbo = kl = "n/a"  # a point mass has no KL term (log q is 0)
            if r["conditional"]:
                note.append("conditional: log p(x|c)")
            if "bits_per_dim" in r:
                note.append(f"{r['bits_per_dim']:.3f} bits/dim")
            if r.get("best_epoch") is not None:
                note.append(f"best validation epoch {r['best_epoch']}"
                            + (", stopped early" if r.get("stopped_early") else ""))
            k = "exact" if r["exact"] else (r["log_likelihood_samples"] or "n/a")
            cells = [str(rank) if nll is not None else "-", r["name"], r["model"],
                     _pm(nll, r["log_likelihood_stderr"]), paired_cell(r), neg_elbo, kl, str(k),
                     str(r["epochs"]), f"{r['parameters']:,}",
                     "n/a" if r.get("seconds") is None else f"{r['seconds']:.1f}", "; ".join(note)]
            if with_seeds:
                cells.insert(5, seeds_cell(r))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Figures", ""]
    for r in rows:
        figures = Path(r["run_dir"]) / "figures"
        cells = []
        for kind in ("samples", "reconstructions"):
            path = figures / f"{kind}.png"
            if path.is_file():
                cells.append(f"![{r['name']} {kind}]({_relative(path, out_dir)})")
        lines += [f"**{r['name']}**", "", " ".join(cells) if cells else "(no figures)", ""]
    return "\n".join(lines)


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())
