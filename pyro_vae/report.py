"""Self-contained HTML reports: ``pyro-vae report DIR`` writes ``DIR/report.html``.

A report is one page with no outside files: figures are embedded as base64 PNG data URIs, so
it can be mailed or archived as it is. It is assembled from :class:`Section` objects by
:func:`render_report`; :func:`run_sections` gives the sections of one run (configuration,
test metrics, training history, every applicable figure), so a page about several runs (a
comparison) is ``render_report(title, [summary, *run_sections(a), *run_sections(b)])``, as
:func:`report_for_runs` does.

Example
-------
>>> from pyro_vae.report import Section, render_report, table_html
>>> page = render_report("demo", [Section("numbers", table_html(["a", "b"], [[1, 2.5]]))])
>>> page.startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import atomic_write_text

REPORT_FILE = "report.html"

#: Longest history shown as a table; longer ones are thinned to this many rows (first, last,
#: evenly spaced between), the full curve being in the ``curves`` figure.
MAX_HISTORY_ROWS = 12

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } p.note { color: #666; font-size: 0.9em; }
p.error { color: #a00; }
"""


@dataclass
class Section:
    """One titled part of a report; ``html`` is its body, built with the helpers of this module
    (which escape every piece of text they are given)."""

    title: str
    html: str


def escape(value) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value), quote=True)


def format_value(value) -> str:
    """A number or setting as short text: floats to 4 significant digits, lists abbreviated."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "—"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(format_value(v) for v in value[:8])
        more = f", … ({len(value)} values)" if len(value) > 8 else ""
        return f"[{shown}{more}]"
    return str(value)


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    if not png.startswith(b"\x89PNG"):
        raise ValueError("png must hold PNG bytes (they start with b'\\x89PNG')")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(png: bytes, caption: str = "", alt: str = "") -> str:
    """An embedded figure with its caption."""
    caption_html = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(png)}" alt="{escape(alt or caption)}">{caption_html}</figure>'


def table_html(header, rows) -> str:
    """A table with a header row; cells are formatted with :func:`format_value` and escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{escape(format_value(cell))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    """``[(dotted key, value)]`` of a nested dict, in its order."""
    items = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items += flatten(value, name + ".")
        else:
            items.append((name, value))
    return items


def key_value_table(mapping: dict, header=("setting", "value")) -> str:
    """A two-column table of a (nested) dict, keys dotted."""
    return table_html(header, [[k, v] for k, v in flatten(mapping)])


def render_report(title: str, sections, *, subtitle: str = "") -> str:
    """The whole page: ``title``, an optional ``subtitle`` line and ``sections`` in order."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="subtitle">{escape(subtitle)}</p>')
    for section in sections:
        parts.append(f"<section><h2>{escape(section.title)}</h2>\n{section.html}</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- runs


def _metrics_html(test: dict) -> str:
    if not test:
        return '<p class="note">No test metrics: the run has no metrics.json (it did not finish).</p>'
    rows = [["ELBO (nats per example)", test.get("elbo"), test.get("elbo_stderr")]]
    has_parts = test.get("kl") is not None and test.get("reconstruction") is not None
    if has_parts and test.get("bound") is not False:  # a point mass has no KL term
        rows += [["its reconstruction term E_q[log p(x | z)]", test["reconstruction"],
                  test.get("reconstruction_stderr")],
                 ["its KL term E_q[log q(z | x) - log p(z)]", test["kl"], test.get("kl_stderr")]]
    if test.get("log_likelihood") is not None:
        how = "exact" if test.get("exact") else f"importance sampled, K={test.get('log_likelihood_samples')}"
        rows.append([f"log-likelihood ({how})", test["log_likelihood"], test.get("log_likelihood_stderr")])
    table = table_html(["quantity", "value", "std. error"], rows)
    what = []
    if test.get("conditional"):
        what.append("conditional on the label: log p(x | y)")
    if test.get("discrete") is False:
        what.append("a density, not a probability of the pixels")
    if test.get("bound") is False:
        what.append("the objective is not a bound on log p(x) (point-mass guide), so no log-likelihood")
    said = "; ".join(what)
    higher = "Higher is better for the ELBO and the log-likelihood." if "kl" in test else "Higher is better."
    note = f'<p class="note">{higher} {escape(said[:1].upper() + said[1:])}.</p>' if what else \
        f'<p class="note">{higher}</p>'
    rest = {k: v for k, v in test.items() if k not in {
        "elbo", "elbo_stderr", "log_likelihood", "log_likelihood_stderr", "reconstruction",
        "reconstruction_stderr", "kl", "kl_stderr"}}
    return table + note + key_value_table(rest, header=("detail", "value"))


def _history_html(history: list) -> str:
    if not history:
        return '<p class="note">No training history.</p>'
    shown = history
    if len(history) > MAX_HISTORY_ROWS:
        picks = {round(i * (len(history) - 1) / (MAX_HISTORY_ROWS - 1)) for i in range(MAX_HISTORY_ROWS)}
        shown = [history[i] for i in sorted(picks)]
    columns = [key for key in history[-1] if key != "epoch"]
    for record in history:
        columns += [key for key in record if key != "epoch" and key not in columns]
    rows = [[h.get("epoch")] + [h.get(c) for c in columns] for h in shown]
    note = (f'<p class="note">{len(shown)} of {len(history)} epochs shown; the curve below has all.</p>'
            if len(shown) < len(history) else "")
    return table_html(["epoch", *columns], rows) + note


def _figures_html(run, seed: int) -> str:
    from .plots import KINDS, applicable_kinds, plot_run  # noqa: PLC0415

    parts = []
    for kind in applicable_kinds(run.model, run.data):
        buffer = io.BytesIO()
        try:
            plot_run(run, kind, buffer, seed=seed)
        except Exception as err:  # noqa: BLE001  (one broken figure must not lose the page)
            warnings.warn(f"figure {kind!r} of {run.directory} failed: {err}", stacklevel=2)
            parts.append(f'<p class="error">Figure {escape(kind)} could not be drawn: '
                         f'{escape(type(err).__name__)}: {escape(err)}</p>')
            continue
        parts.append(figure_html(buffer.getvalue(), f"{kind}: {KINDS[kind]}", alt=kind))
    return "\n".join(parts)


def run_sections(run, *, seed: int = 0, prefix: str = "") -> list[Section]:
    """The sections of one loaded run (:func:`pyro_vae.runs.load_run`): configuration, test
    metrics, training history and every applicable figure; titles start with ``prefix``."""
    from .runs import CONFIG_FILE  # noqa: PLC0415

    metrics = run.metrics()
    config_path = Path(run.directory) / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.is_file() else run.config.to_dict()
    return [
        Section(f"{prefix}Test metrics", _metrics_html(metrics.get("test") or {})),
        Section(f"{prefix}Training history", _history_html(metrics.get("history") or [])),
        Section(f"{prefix}Figures", _figures_html(run, seed)),
        Section(f"{prefix}Configuration ({CONFIG_FILE})", key_value_table(config)),
    ]


def _subtitle(run) -> str:
    metrics = run.metrics()
    parts = [f"model {run.config.model}", f"data set {run.config.data.name}"]
    if metrics.get("epochs") is not None:
        parts.append(f"{metrics['epochs']} epochs")
    if metrics.get("seconds") is not None:
        parts.append(f"{metrics['seconds']:.1f} s of training")
    return ", ".join(parts)


def report_for_run(run_dir, out=None, *, device: str | None = None, seed: int = 0) -> Path:
    """Write the report of the run in ``run_dir`` to ``out`` (default ``run_dir/report.html``).

    Example
    -------
    >>> from pyro_vae.report import report_for_run
    >>> report_for_run("runs/vae-digits")                     # doctest: +SKIP
    PosixPath('runs/vae-digits/report.html')
    """
    from .runs import load_run  # noqa: PLC0415

    run = load_run(run_dir, device)
    out = Path(run_dir) / REPORT_FILE if out is None else Path(out)
    page = render_report(f"pyro-vae run {run.directory.name}", run_sections(run, seed=seed),
                         subtitle=_subtitle(run))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out


def summary_section(runs) -> Section:
    """One row per loaded run: model, data, epochs and the test figures, in nats per example."""
    rows = []
    for run in runs:
        metrics = run.metrics()
        test = metrics.get("test") or {}
        rows.append([run.directory.name, run.config.model, run.config.data.name, metrics.get("epochs"),
                     test.get("elbo"), test.get("log_likelihood"),
                     "exact" if test.get("exact") else test.get("log_likelihood_samples"),
                     test.get("conditional"), test.get("discrete")])
    header = ["run", "model", "data", "epochs", "test ELBO", "test log-likelihood", "K samples",
              "conditional", "discrete"]
    note = ('<p class="note">Nats per example, higher is better. Log-likelihoods are comparable only '
            'between runs with the same data and the same conditional/discrete flags.</p>')
    return Section("Summary", table_html(header, rows) + note)


def comparison_section(rows: list[dict]) -> Section:
    """The ranking of ``pyro-vae compare``: NLL, paired difference to the group's best, seeds."""
    from .compare.tables import group_of, paired_cell, ranked, seeds_cell  # noqa: PLC0415

    table = []
    for group in ("discrete", "conditional", "density"):
        for r in ranked([r for r in rows if group_of(r) == group]):
            nll = None if r["log_likelihood"] is None else -r["log_likelihood"]
            table.append([group, r["name"], r["model"], nll, r.get("log_likelihood_stderr"),
                          paired_cell(r), seeds_cell(r),
                          "exact" if r["exact"] else r.get("log_likelihood_samples"),
                          r["num_examples"], r["epochs"]])
    header = ["ranking", "entry", "model", "NLL", "s.e.", "vs best (paired, nats)",
              "NLL over seeds", "K", "test examples", "epochs"]
    note = ('<p class="note">Every row was scored on the same test set (one fingerprint). '
            '"vs best": the paired difference of NLL to the best row of the same ranking, per '
            'test example, ± its standard error; (n.s.): within two standard errors.</p>')
    return Section("Comparison", table_html(header, table) + note)


def report_for_runs(run_dirs, out, *, title: str = "pyro-vae comparison", device: str | None = None,
                    seed: int = 0, comparison: list[dict] | None = None) -> Path:
    """Write one page about several runs: a summary table, then each run's sections.

    ``comparison``: the rows of :func:`pyro_vae.compare.compare`, shown as its ranking with
    paired differences instead of the plain summary.
    """
    from .runs import load_run  # noqa: PLC0415

    runs = [load_run(d, device) for d in run_dirs]
    if not runs:
        raise ValueError("run_dirs must name at least one run directory")
    sections = [comparison_section(comparison) if comparison else summary_section(runs)]
    for run in runs:
        sections += run_sections(run, seed=seed, prefix=f"{run.directory.name}: ")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render_report(title, sections, subtitle=f"{len(runs)} runs"))
    return out


__all__ = [
    "MAX_HISTORY_ROWS", "REPORT_FILE", "Section", "escape", "figure_html", "flatten", "format_value",
    "comparison_section", "key_value_table", "png_data_uri", "render_report", "report_for_run", "report_for_runs",
    "run_sections", "summary_section", "table_html",
]
