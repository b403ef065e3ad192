"""benchmarks/reproduce.py in its --smoke mode (digits, 2 epochs, K = 10): it trains every entry
into resumable run directories, writes the results JSON with every field issue 16 asks for, pairs
each entry with the VAE, and a second invocation reuses the finished runs instead of training.
The full reproduction (Fashion-MNIST, up to 2,000 epochs, K = 5000) is run by hand."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_vae.runfiles import PARTIAL_EVAL_FILE

NUMBER = (int, float)


@pytest.fixture(scope="module")
def smoke(bench, tmp_path_factory):
    """One --smoke invocation into a fresh runs directory, without figures (the results file is
    what is checked here; figures are tested elsewhere)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pyro_vae.plots.write_run_figures", lambda *args, **kwargs: [])
        root = tmp_path_factory.mktemp("reproduce")
        runs, path = root / "runs", root / "results.json"
        returned = bench.main(["--smoke", "--runs-dir", str(runs), "--results", str(path)])
    return {"runs": runs, "path": path, "returned": returned, "results": json.loads(path.read_text())}


def _mtimes(runs: Path) -> dict:
    return {str(p.relative_to(runs)): p.stat().st_mtime_ns for p in sorted(runs.rglob("*")) if p.is_file()}


def test_results_have_every_field(bench, smoke):
    results = smoke["results"]
    assert results == json.loads(json.dumps(smoke["returned"]))
    assert results["smoke"] is True and results["dataset"] == "digits"
    assert isinstance(results["commit"], str) and len(results["commit"]) == 40
    assert isinstance(results["commit_dirty"], bool)
    machine = results["machine"]
    assert isinstance(machine["description"], str) and machine["torch"] in machine["description"]
    assert machine["cpu_count"] >= 1 and machine["device"] == "cpu"
    assert all(isinstance(v["source"], str) and "value" in v for v in results["settings"].values())
    assert [e["name"] for e in results["entries"]] == list(bench.ENTRIES)
    for entry in results["entries"]:
        name = entry["name"]
        for key in ("nll", "nll_stderr", "elbo", "seconds"):
            assert isinstance(entry[key], NUMBER) and not isinstance(entry[key], bool), (name, key)
        assert entry["nll"] > 0 and entry["nll_stderr"] > 0 and entry["elbo"] <= -entry["nll"] + 1e-6
        assert entry["epochs"] == 2 and entry["best_epoch"] in (1, 2) and entry["seconds"] >= 0
        assert entry["samples"] == 10 and entry["test_examples"] == 359
        assert entry["stopped_early"] is False and entry["budget_limited"] is True
        published = entry["published"]
        assert set(published) >= {"nll", "source"}
        if name.startswith("iwae5"):
            assert published["nll"] is None and entry["gap_to_published"] is None and published["note"]
        else:
            assert isinstance(published["nll"], float) and "Exemplar VAE" in published["source"]
            assert entry["gap_to_published"] == pytest.approx(entry["nll"] - published["nll"])
        config = entry["config"]
        assert config["epoch_budget"] == 2 and config["run_config"]["eval_samples"] == 10
        gated = config["run_config"]["model_config"].get("activation") == "gated"
        assert gated == entry["name"].endswith("-gated")
        assert (bench.UNGATED_DIFFERENCE in config["known_differences"]) != gated
        train = config["run_config"]["train"]
        assert (train["batch_size"], train["lr"], train["patience"], train["eval_every"], train["kl_warmup"]) == (
            100, 5e-4, 50, 1, 100)
        assert config["run_config"]["data"]["val_fraction"] == pytest.approx(1 / 6)
        assert config["run_config"]["data"]["binarize"] == "dynamic"
    by_name = {e["name"]: e for e in results["entries"]}
    assert by_name["vamp"]["config"]["run_config"]["model_config"]["prior_components"] == 500
    assert by_name["iwae5"]["config"]["run_config"]["train"]["objective"] == "iwae"
    assert by_name["iwae5"]["config"]["run_config"]["train"]["particles"] == 5
    assert by_name["iwae5"]["config"]["run_config"]["train"]["select_on"] == "bound"
    assert by_name["vae"]["config"]["run_config"]["train"]["select_on"] == "elbo"
    assert by_name["hvae"]["config"]["run_config"]["model_config"]["latent_dims"] == [40, 40]
    assert by_name["conv"]["config"]["run_config"]["model_config"]["arch"] == "conv"
    assert results["not_run"] == []
    published = [e for e in bench.ENTRIES.values() if e["published"]["nll"] is not None]
    assert len(results["targets"]) == len(published) + 4 and all(isinstance(t["met"], bool) for t in results["targets"])
    for name in ("iwae5-gated", "hvae-gated", "hvae-vamp-gated", "vamp-gated"):
        gated, plain = by_name[name], by_name[name.removesuffix("-gated")]
        assert gated["config"]["run_config"]["model_config"] == {
            **plain["config"]["run_config"]["model_config"], "activation": "gated"}, name
        assert gated["config"]["run_config"]["train"] == plain["config"]["run_config"]["train"], name
        assert gated["published"] == plain["published"] and gated["baseline"] == "vae-gated", name
        assert "activation" in gated["config"]["settings"], name
        assert not any(d.startswith("layers:") for d in gated["config"]["known_differences"]), name
        assert any(d.startswith("layers:") for d in plain["config"]["known_differences"]), name


def test_every_entry_is_paired_with_the_vae_on_the_same_test_set(smoke):
    entries = {e["name"]: e for e in smoke["results"]["entries"]}
    assert entries["vae"]["paired_vs_vae"] is None
    assert len({e["test_set_sha256"] for e in entries.values()}) == 1
    vae = np.load(smoke["runs"] / "vae" / "test_per_example.npz")["log_likelihood"]
    for name, entry in entries.items():
        if name == "vae":
            continue
        paired = entry["paired_vs_vae"]
        assert isinstance(paired["difference"], float) and paired["stderr"] > 0, name
        values = np.load(smoke["runs"] / name / "test_per_example.npz")["log_likelihood"]
        assert paired["difference"] == pytest.approx(float((values - vae).mean()))
        # The VAE's NLL minus the entry's, up to the rounding of two means.
        assert paired["difference"] == pytest.approx(entries["vae"]["nll"] - entry["nll"], abs=1e-9)


def test_every_entry_is_paired_with_its_baseline_vae(smoke):
    entries = {e["name"]: e for e in smoke["results"]["entries"]}
    assert entries["vae"]["baseline"] is None and entries["vae"]["paired_vs_baseline"] is None
    assert entries["vae-gated"]["paired_vs_baseline"] == {"baseline": "vae", **entries["vae-gated"]["paired_vs_vae"]}
    gated = np.load(smoke["runs"] / "vae-gated" / "test_per_example.npz")["log_likelihood"]
    for name, entry in entries.items():
        if name in ("vae", "vae-gated"):
            continue
        expected = "vae-gated" if name.endswith("-gated") else "vae"
        paired = entry["paired_vs_baseline"]
        assert entry["baseline"] == paired["baseline"] == expected, name
        if expected == "vae":
            assert paired == {"baseline": "vae", **entry["paired_vs_vae"]}, name
        else:
            values = np.load(smoke["runs"] / name / "test_per_example.npz")["log_likelihood"]
            assert paired["difference"] == pytest.approx(float((values - gated).mean())), name
    by_target = {t["target"]: t for t in smoke["results"]["targets"]}
    vamp_gated = by_target["vamp-gated better than vae-gated by more than 2 paired standard errors"]
    paired = entries["vamp-gated"]["paired_vs_baseline"]
    assert vamp_gated["value"] == paired["difference"]
    assert vamp_gated["met"] == (paired["difference"] > 2 * paired["stderr"])
    iwae = by_target["iwae5-gated better than vae-gated"]
    assert iwae["met"] == (entries["iwae5-gated"]["paired_vs_baseline"]["difference"] > 0)


def test_a_second_invocation_reuses_the_finished_runs(bench, smoke, tmp_path, capsys):
    before = _mtimes(smoke["runs"])
    assert any(name.endswith("checkpoint.pt") for name in before)
    again = bench.main(["--smoke", "--runs-dir", str(smoke["runs"]), "--results", str(tmp_path / "again.json")])
    assert _mtimes(smoke["runs"]) == before  # nothing trained, evaluated or rewritten
    assert [e["action"] for e in again["entries"]] == ["reused"] * len(bench.ENTRIES)
    for first, second in zip(smoke["results"]["entries"], again["entries"]):
        assert second["nll"] == first["nll"] and second["paired_vs_vae"] == first["paired_vs_vae"]
    table = capsys.readouterr().out
    assert "published NLL" in table and "228.70" in table and "225.38" in table


def test_a_run_capped_by_a_smaller_budget_resumes_to_the_new_one(bench, smoke, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(smoke["runs"] / "vae", runs / "vae")
    shutil.copytree(smoke["runs"] / "vamp", runs / "vamp")
    checkpoint = (runs / "vae" / "checkpoint.pt").stat().st_mtime_ns
    result = bench.main(["--smoke", "--runs-dir", str(runs), "--results", str(tmp_path / "r.json"),
                         "--only", "vae", "--max-epochs", "3"])
    vae, vamp = result["entries"]
    assert (vae["action"], vae["epochs"], vae["config"]["epoch_budget"]) == ("resumed", 3, 3)
    assert (runs / "vae" / "checkpoint.pt").stat().st_mtime_ns != checkpoint
    # Not asked for: its finished run is read as it is, and paired with the new VAE.
    assert (vamp["action"], vamp["epochs"], vamp["config"]["epoch_budget"]) == ("read", 2, 2)
    assert vamp["paired_vs_vae"]["difference"] == pytest.approx(vae["nll"] - vamp["nll"], abs=1e-9)


def test_runs_of_other_settings_and_test_sets_are_refused(bench, smoke, tmp_path):
    with pytest.raises(ValueError, match=r"other settings than this entry's \(train.seed 0 \(run\) vs 1"):
        bench.main(["--smoke", "--runs-dir", str(smoke["runs"]), "--results", str(tmp_path / "r.json"),
                    "--only", "vae", "--seed", "1"])
    records = [dict(e) for e in smoke["results"]["entries"][:2]]
    records[1]["test_set_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="different test sets"):
        bench.add_pairing(records)


def test_status_reads_every_run_as_it_stands_and_writes_nothing(bench, smoke, tmp_path, capsys):
    import subprocess
    import textwrap

    runs = tmp_path / "runs"
    shutil.copytree(smoke["runs"] / "vae", runs / "vae")
    shutil.copytree(smoke["runs"] / "iwae5", runs / "iwae5")
    (runs / "iwae5" / "metrics.json").unlink()  # an interrupted run: config and checkpoint only
    np.savez(runs / "iwae5" / PARTIAL_EVAL_FILE, elbo=np.zeros(359), log_likelihood=np.zeros(200),
             rng=np.zeros(5056, dtype=np.uint8), key=np.zeros(32, dtype=np.uint8))  # killed while scored
    shutil.copytree(smoke["runs"] / "vamp", runs / "vamp")
    before = _mtimes(runs)
    lines = bench.main(["--status", "--smoke", "--runs-dir", str(runs)])["status"]
    assert capsys.readouterr().out.splitlines() == lines
    by_name = {line.split()[0]: line for line in lines}
    assert list(by_name) == list(bench.ENTRIES)
    assert by_name["vae"].startswith("vae             finished: 2 epochs (best ")
    assert "capped at 2; test NLL " in by_name["vae"] and "(K = 10)" in by_name["vae"]
    assert "iwae5           interrupted: epoch 2 of 2, best " in by_name["iwae5"]
    assert "(val_bound -" in by_name["iwae5"] and "of 50 evaluations since" in by_name["iwae5"]
    assert by_name["iwae5"].endswith("; its evaluation has 200 of 359 test images scored (saved)")
    assert by_name["hvae"] == f"hvae            not started ({runs / 'hvae'})"
    # A process writing a run is named (a child holds the vamp run's lock meanwhile).
    hold = textwrap.dedent(f"""
        import sys, time
        from pyro_vae.rundir_lock import RunDirLock
        with RunDirLock({str(runs / 'vamp')!r}):
            print("held", flush=True)
            sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        line = bench.main(["--status", "--smoke", "--only", "vamp", "--runs-dir", str(runs)])["status"][0]
        assert line.startswith("vamp            finished: 2 epochs (best ")
        assert f"; in use by process {child.pid} (on host " in line
    finally:
        child.communicate("")
    # Read with the literature's settings (no --smoke), the digits runs are named as foreign.
    line = bench.main(["--status", "--only", "vae", "--runs-dir", str(runs)])["status"][0]
    assert line.endswith("; written with other settings than this entry's (training refuses it)")
    after = _mtimes(runs)
    assert after.pop("vamp/.lock") != before.pop("vamp/.lock")  # the child's lock, not --status
    assert after == before  # nothing trained, scored or rewritten, lock files included
    assert sorted(p.name for p in runs.iterdir()) == ["iwae5", "vae", "vamp"]


def test_bad_options_are_refused(bench, tmp_path):
    for argv in (["--smoke"], ["--only", "vae,convnet"], ["--max-epochs", "0"], ["--max-epochs", "2001"],
                 ["--eval-samples", "-1"], ["--cost", "--smoke"], ["--cost", "--status"],
                 ["--cost", "--runs-dir", str(tmp_path)], ["--cost", "--max-epochs", "3"]):
        with pytest.raises(SystemExit):
            bench.main(argv)


def test_a_scored_run_resumed_and_stopped_again_keeps_the_budget_it_was_scored_at(bench, smoke, tmp_path):
    """A capped run scored at 2 epochs, then resumed towards 2,000 and stopped before finishing,
    still reports the budget of its score (2), not the cap its config.json now names."""
    import json  # noqa: PLC0415

    runs = tmp_path / "runs"
    shutil.copytree(smoke["runs"] / "vamp", runs / "vamp")
    config_path = runs / "vamp" / "config.json"
    config = json.loads(config_path.read_text())
    config["train"]["epochs"] = 2000  # what resume_run writes when it continues to a larger cap
    config_path.write_text(json.dumps(config))
    record = bench.entry_record("vamp", runs / "vamp", "read")
    assert (record["epochs"], record["config"]["epoch_budget"], record["budget_limited"]) == (2, 2, True)
    assert record["config"]["run_config"]["train"]["epochs"] == 2000  # the file as it is



def test_cost_measures_every_entry_and_scales_it_to_the_literatures_sizes(bench, tmp_path, monkeypatch, capsys):
    """--cost times each entry's own model and loop on a few batches and images, writes the
    scaled seconds per epoch and evaluation minutes with the machine, and trains nothing into
    a runs directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default runs directory must stay unmade
    path = tmp_path / "cost.json"
    returned = bench.main(["--cost", "--smoke", "--only", "vae,hvae-vamp,iwae5", "--results", str(path)])
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(returned))
    assert written["smoke"] is True and written["dataset"] == "digits" and written["machine"]["device"] == "cpu"
    assert [row["name"] for row in written["entries"]] == ["vae", "iwae5", "hvae-vamp"]
    sizes = bench.SMOKE_COST_SIZES
    for row in written["entries"]:
        m = row["measured"]
        assert m["steps"] == sizes["steps"] and m["train_images"] == sizes["steps"] * 100
        assert (m["val_images"], m["eval_images"]) == (sizes["val_images"], sizes["eval_images"])
        assert m["eval_samples"] == 10  # --smoke's K; the literature's 5000 otherwise
        assert m["step_seconds"] > 0 and m["val_seconds"] > 0 and m["eval_seconds"] > 0
        # Scaled linearly: 500 steps of 100 and 10,000 validation images an epoch, 10,000 test images.
        per_val_image = m["val_seconds"] / m["val_images"]
        assert row["epoch_seconds"] == pytest.approx(500 * m["step_seconds"] + 10000 * per_val_image)
        assert row["full_training_hours"] == pytest.approx(2000 * row["epoch_seconds"] / 3600)
        assert row["eval_minutes"] == pytest.approx(10000 * m["eval_seconds"] / m["eval_images"] / 60)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == bench.COST_HEADER and f"costs: {path}" in out
    assert not (tmp_path / "home").exists()


def test_cost_without_its_data_set_exits_with_one_line(bench, tmp_path, monkeypatch, capsys):
    def missing(name, **kwargs):
        raise ValueError("dataset 'fashion-mnist': no IDX files in /nowhere")

    monkeypatch.setattr(bench, "load_entry_data", missing)
    with pytest.raises(SystemExit) as caught:
        bench.main(["--cost", "--only", "vae", "--results", str(tmp_path / "cost.json")])
    assert caught.value.code == 2
    assert capsys.readouterr().err == "reproduce.py: error: dataset 'fashion-mnist': no IDX files in /nowhere\n"
    assert not (tmp_path / "cost.json").exists()


def test_entries_whose_runs_are_gone_are_carried_over_and_paired_from_the_kept_values(bench, smoke, tmp_path):
    """A later session on a reset machine: only the hvae run is here. The other entries come
    from the results file as they were, and the kept per-example values pair hvae with the vae
    image by image, as if its run were still here."""
    runs, path = tmp_path / "runs", tmp_path / "results.json"
    shutil.copytree(smoke["runs"] / "hvae", runs / "hvae")
    shutil.copy(smoke["path"], path)
    archive = bench.per_example_path(smoke["path"])
    assert sorted(np.load(archive)) == sorted(e["name"] for e in smoke["results"]["entries"])
    shutil.copy(archive, bench.per_example_path(path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pyro_vae.plots.write_run_figures", lambda *args, **kwargs: [])
        results = bench.main(["--smoke", "--only", "hvae", "--runs-dir", str(runs), "--results", str(path)])
    before = {e["name"]: e for e in smoke["results"]["entries"]}
    after = {e["name"]: e for e in json.loads(path.read_text())["entries"]}
    assert list(after) == list(before)
    assert after["hvae"]["action"] == "reused" and after["hvae"]["paired_vs_vae"] == before["hvae"]["paired_vs_vae"]
    for name in set(after) - {"hvae"}:
        assert after[name]["action"] == "carried over"
        assert after[name]["carried_from"] == smoke["results"]["commit"]
        assert after[name]["nll"] == before[name]["nll"]
    assert results["targets"] == smoke["results"]["targets"]
    assert sorted(np.load(bench.per_example_path(path))) == sorted(after)
    # Without the kept values the new entry cannot be paired: None, not a number from elsewhere.
    bench.per_example_path(path).unlink()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pyro_vae.plots.write_run_figures", lambda *args, **kwargs: [])
        bench.main(["--smoke", "--only", "hvae", "--runs-dir", str(runs), "--results", str(path)])
    after = {e["name"]: e for e in json.loads(path.read_text())["entries"]}
    assert after["hvae"]["paired_vs_vae"] is None and after["hvae"]["paired_vs_baseline"] is None
    assert after["vamp"]["paired_vs_vae"] == before["vamp"]["paired_vs_vae"]  # as it was written


@pytest.mark.parametrize("damage, message", [
    ("results", "results file .* could not be parsed|results file .* is not"),
    ("entry", r"entries\[0\] lacks a name, test_set_sha256"),
    ("archive", "not a readable .npz archive"),
    ("values", "'vae' is not a finite float64 vector"),
])
def test_damaged_previous_results_are_one_line_before_anything_trains(bench, smoke, tmp_path, capsys, damage,
                                                                      message):
    path, runs = tmp_path / "results.json", tmp_path / "runs"
    shutil.copy(smoke["path"], path)
    archive = bench.per_example_path(path)
    shutil.copy(bench.per_example_path(smoke["path"]), archive)
    if damage == "results":
        path.write_text(path.read_text()[:200])
    elif damage == "entry":
        results = json.loads(path.read_text())
        del results["entries"][0]["test_set_sha256"]
        path.write_text(json.dumps(results))
    elif damage == "archive":
        archive.write_bytes(archive.read_bytes()[:300])
    else:
        values = dict(np.load(archive))
        values["vae"] = values["vae"][:3].astype(np.float32)
        np.savez(archive, **values)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--smoke", "--only", "hvae", "--runs-dir", str(runs), "--results", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reproduce.py: error: ")
    assert re.search(message, err[0]), err[0]
    assert not runs.exists()  # refused before the runs directory was made
