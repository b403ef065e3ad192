"""`pyro-vae compare`: same data, same budget, one table in nats, honest groupings."""

import json
from pathlib import Path

import pytest

from pyro_vae.cli import main

TINY = ["--epochs", "2", "--latent-dim", "4", "--hidden-dims", "32", "--samples", "20",
        "--no-progress"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    assert main(["compare", "--models", "vae,ae,mixture,ppca", "--out", str(out), *TINY]) == 0
    return out


def test_summary_has_one_row_per_entry_in_the_same_units(comparison):
    rows = json.loads((comparison / "summary.json").read_text())
    assert [r["name"] for r in rows] == ["vae", "ae", "mixture", "ppca"]
    by_name = {r["name"]: r for r in rows}
    assert all(r["num_examples"] == 359 and r["dataset"] == "digits" and r["epochs"] == 2 for r in rows)
    assert all(r["parameters"] > 0 and r["seconds"] > 0 for r in rows)
    assert by_name["vae"]["log_likelihood_samples"] == 20 and not by_name["vae"]["exact"]
    assert by_name["ae"]["log_likelihood"] is None and by_name["ae"]["bound"] is False
    assert by_name["mixture"]["exact"] and by_name["mixture"]["discrete"]
    assert by_name["ppca"]["exact"] and not by_name["ppca"]["discrete"]
    # --latent-dim reached the models that have one, and only those
    vae_config = json.loads((comparison / "vae" / "config.json").read_text())
    assert vae_config["model_config"]["latent_dim"] == 4
    mixture_config = json.loads((comparison / "mixture" / "config.json").read_text())
    assert "latent_dim" not in mixture_config["model_config"]


def test_report_ranks_only_comparable_models(comparison):
    report = (comparison / "report.md").read_text()
    discrete, density = report.split("## Density")
    assert "| vae |" in discrete and "| mixture |" in discrete and "| ppca |" not in discrete
    assert "| ppca |" in density and "not comparable with the discrete likelihoods" in density
    assert "objective is not a bound on log p(x): no NLL" in discrete
    rows = json.loads((comparison / "summary.json").read_text())
    ranked = sorted((r for r in rows if r["discrete"] and r["bound"]), key=lambda r: -r["log_likelihood"])
    lines = [line for line in discrete.splitlines() if line.startswith("| 1 |")]
    assert lines and f"| {ranked[0]['name']} |" in lines[0]
    assert "![vae samples](vae/figures/samples.png)" in report
    assert (comparison / "report.html").read_text().count("data:image/png;base64") >= 8


def test_runs_are_reused_not_retrained(comparison, tmp_path):
    before = (comparison / "vae" / "checkpoint.pt").stat().st_mtime_ns
    out = tmp_path / "again"
    argv = ["compare", "--models", "vae,ppca", "--runs", f"{comparison / 'vae'},{comparison / 'ppca'}",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert (comparison / "vae" / "checkpoint.pt").stat().st_mtime_ns == before
    assert not (out / "vae").exists()
    rows = json.loads((out / "summary.json").read_text())
    old = {r["name"]: r for r in json.loads((comparison / "summary.json").read_text())}
    assert [r["log_likelihood"] for r in rows] == [old["vae"]["log_likelihood"], old["ppca"]["log_likelihood"]]


@pytest.mark.parametrize("argv, message", [
    (["--models", "vae,gan"], "unknown model 'gan'; choose from: ae, cvae, hvae, m2, mixture, ppca, vae"),
    (["--models", "vae,vae"], "models lists the entry name 'vae' twice"),
    (["--models", "vae", "--samples", "0"], "samples must be a positive integer"),
    (["--runs", "nowhere"], "is not a finished run"),
    (["--models", "ppca,mixture", "--activation", "gated"],
     "--activation reaches none of the models to train (ppca (no such field), mixture (no such field)); "
     "models it applies to: "),
    (["--models", "ppca", "--components", "3"], "--components reaches none of the models to train (ppca (no such"),
    (["--models", "ae", "--guide", "studentt"],
     "--guide reaches none of the models to train (ae (its own guide='delta')); models it applies to: "),
])
def test_bad_compare_input(argv, message, tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_shared_option_some_models_lack_is_named_on_stderr(monkeypatch, tmp_path, capsys):
    import pyro_vae.compare as compare_module

    seen = {}
    monkeypatch.setattr(compare_module, "compare", lambda config, out, **kw: seen.setdefault("config", config) and [])
    argv = ["compare", "--models", "vae,ppca,hvae", "--activation", "gated", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert "note: --activation does not reach ppca (no such field): trained without it" in capsys.readouterr().err
    config = seen["config"]
    assert config.model_options == {"activation": "gated"}
    activations = {e.name: config.run_config(e).model_config_object().__dict__.get("activation")
                   for e in config.entries}
    assert activations == {"vae": "gated", "ppca": None, "hvae": "gated"}


def test_the_api_refuses_a_shared_option_no_entry_to_train_has(tmp_path):
    from pyro_vae.compare import CompareConfig, compare, models_with_field, unapplied_options

    with pytest.raises(ValueError, match=r"model_options\['activation'\] reaches none of the entries to train "
                                         r"\(ppca \(no such field\)\); models with that field: .*vae"):
        compare(CompareConfig(entries=("ppca",), model_options={"activation": "gated"}), tmp_path / "o")
    with pytest.raises(ValueError, match=r"reaches none of the entries to train \(none: every entry reuses"):
        compare(CompareConfig(entries=("vae",), model_options={"latent_dim": 4}), tmp_path / "o",
                runs={"vae": tmp_path / "nowhere"})
    assert not (tmp_path / "o").exists()  # refused before anything was written
    with pytest.raises(TypeError, match="model_options must be"):
        CompareConfig(entries=("vae",), model_options="latent_dim")
    config = CompareConfig(entries=("vae", "mixture", "ae"), model_options={"latent_dim": 4, "num_components": 3,
                                                                          "guide": "normal"})
    assert unapplied_options(config.entries, config.model_options) == {
        "latent_dim": {"mixture": "no such field"}, "num_components": {"vae": "no such field", "ae": "no such field"},
        "guide": {"mixture": "no such field", "ae": "its own guide='delta'"}}
    assert "ppca" not in models_with_field("activation") and "vae" in models_with_field("activation")


def test_cvae_is_marked_conditional_in_its_own_group():
    from pyro_vae.compare import render_markdown

    row = {"name": "cvae", "model": "cvae", "run_dir": "/nowhere", "parameters": 10, "seconds": 1.0, "epochs": 1,
           "dataset": "digits", "num_examples": 5, "log_likelihood": -20.0, "log_likelihood_stderr": 0.1,
           "log_likelihood_samples": 10, "elbo": -21.0, "elbo_stderr": 0.1, "exact": False, "bound": True,
           "conditional": True, "discrete": True}
    text = render_markdown([row], Path("/"))
    assert "## Conditional" in text and "conditional: log p(x|c)" in text


def test_report_shows_each_rows_kl_term_and_none_for_the_point_mass(comparison):
    rows = {r["name"]: r for r in json.loads((comparison / "summary.json").read_text())}
    assert rows["vae"]["reconstruction"] - rows["vae"]["kl"] == pytest.approx(rows["vae"]["elbo"], rel=1e-9)
    assert "kl" not in rows["ppca"] and "kl" not in rows["mixture"]  # latents summed out: exact, no KL
    report = (comparison / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| rank |")).split(" | ")
    column = header.index("KL")
    cells = {line.split(" | ")[1]: line.split(" | ")[column] for line in report.splitlines()
             if line.startswith("| ") and line.split(" | ")[1] in ("vae", "ae", "mixture")}
    assert cells["vae"] == f"{rows['vae']['kl']:.2f} ± {rows['vae']['kl_stderr']:.2f}"
    assert cells["ae"] == cells["mixture"] == "n/a"
