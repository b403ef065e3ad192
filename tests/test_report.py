"""The HTML report: one self-contained page per run, reusable for several runs."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import matplotlib.image
import pytest

from pyro_vae.cli import main
from pyro_vae.report import (
    MAX_HISTORY_ROWS,
    Section,
    _history_html,
    _metrics_html,
    png_data_uri,
    render_report,
    report_for_run,
    report_for_runs,
    table_html,
)

from .test_plots import DIGITS_SIZES, EXPECTED_KINDS, trained  # noqa: F401  (runs trained once per session)

DATA_PNG = "data:image/png;base64,"


class _Page(HTMLParser):
    """Collects what the tests look at: tags, image sources and alts, headings, table cells."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.images, self.headings, self.cells = [], [], [], []
        self._in = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("src", ""), attrs.get("alt", "")))
        if tag in ("h1", "h2", "td", "th"):
            self._in = tag
            (self.headings if tag.startswith("h") else self.cells).append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            (self.headings if self._in.startswith("h") else self.cells)[-1] += data


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_report_embeds_every_applicable_figure(trained, name):
    run = trained(name)
    path = report_for_run(run.directory)
    assert path == run.directory / "report.html"
    page = _Page(path.read_text(encoding="utf-8"))
    assert page.headings[0] == f"pyro-vae run {run.directory.name}"
    assert page.headings[1:] == ["Test metrics", "Training history", "Figures", "Configuration (config.json)"]
    assert [alt for _, alt in page.images] == EXPECTED_KINDS[name]
    for src, kind in page.images:
        assert src.startswith(DATA_PNG)  # self-contained: no file or network references
        png = base64.b64decode(src[len(DATA_PNG):], validate=True)
        assert matplotlib.image.imread(io.BytesIO(png), format="png").shape[:2] == DIGITS_SIZES[kind]
    assert "link" not in page.tags and "script" not in page.tags
    cells = page.cells
    assert cells[cells.index("model") + 1] == run.config.model  # the configuration table
    test = run.metrics()["test"]
    assert f"{test['elbo']:.4g}" in cells


def test_report_says_what_kind_of_number_it_shows(trained):
    text = _metrics_html(trained("cvae").metrics()["test"])
    assert "importance sampled, K=10" in text and "Conditional on the label: log p(x | y)" in text
    text = _metrics_html(trained("ppca").metrics()["test"])
    assert "log-likelihood (exact)" in text and "A density, not a probability of the pixels" in text
    test = trained("cvae").metrics()["test"]
    text = _metrics_html(test)
    assert f"its KL term E_q[log q(z | x) - log p(z)]</td><td class=\"num\">{test['kl']:.4g}" in text
    assert ">kl_stderr<" not in text  # in the table, not repeated among the details
    text = _metrics_html({"elbo": -80.0, "elbo_stderr": 0.5, "log_likelihood": None, "bound": False, "kl": 3.0,
                          "reconstruction": -77.0})
    assert "<td>log-likelihood" not in text and "KL term" not in text
    assert "not a bound on log p(x) (point-mass guide), so no log-likelihood" in text


def test_cli_report(trained, tmp_path, capsys):
    run = trained("vae")
    out = tmp_path / "pages" / "vae.html"
    assert main(["report", str(run.directory), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert len([s for s, _ in _Page(out.read_text()).images if s.startswith(DATA_PNG)]) == len(EXPECTED_KINDS["vae"])
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_for_several_runs(trained, tmp_path):
    names = ["mixture", "ppca"]
    runs = [trained(n) for n in names]
    out = report_for_runs([r.directory for r in runs], tmp_path / "compare.html", title="two models")
    page = _Page(out.read_text())
    assert page.headings[:2] == ["two models", "Summary"]
    assert len(page.images) == sum(len(EXPECTED_KINDS[n]) for n in names)
    for run in runs:
        assert run.directory.name in page.cells and f"{run.directory.name}: Figures" in page.headings
    with pytest.raises(ValueError, match="run_dirs must name at least one run directory"):
        report_for_runs([], tmp_path / "none.html")


def test_render_report_escapes_text():
    page = render_report("<script>alert(1)</script>", [
        Section("a & b", table_html(["x", "<y>"], [[1.23456789, None, True, "<b>", [0.5] * 10]]))])
    parsed = _Page(page)
    assert "script" not in parsed.tags and "b" not in parsed.tags
    assert parsed.headings == ["<script>alert(1)</script>", "a & b"]
    assert parsed.cells == ["x", "<y>", "1.235", "—", "true", "<b>",
                            "[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, … (10 values)]"]
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page


def test_long_histories_are_thinned_to_first_last_and_evenly_spaced():
    history = [{"epoch": e, "train_elbo": -100.0 + e, "test_elbo": -101.0 + e} for e in range(1, 31)]
    cells = _Page(_history_html(history)).cells
    assert cells[:3] == ["epoch", "train_elbo", "test_elbo"]
    epochs = [int(c) for c in cells[3::3]]
    assert len(epochs) == MAX_HISTORY_ROWS and epochs[0] == 1 and epochs[-1] == 30
    assert epochs == sorted(set(epochs))
    assert "12 of 30 epochs shown" in _history_html(history)
    assert "shown" not in _history_html(history[:5])


def test_png_data_uri_refuses_other_bytes():
    with pytest.raises(ValueError, match="png must hold PNG bytes"):
        png_data_uri(b"GIF89a")
