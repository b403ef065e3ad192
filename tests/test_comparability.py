"""Comparability: one test set per data definition, per-example results, named variants,
paired statistics, seeds, validation-based model selection and exact resume.

Every run here is tiny (digits, latent 2-4, hidden 16-32, K <= 50); runs that several tests
read are trained once per module.
"""

import json
import math

import numpy as np
import pytest
import torch

from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.compare.stats import paired_difference
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference.evaluate import fingerprint
from pyro_vae.runs import load_run, read_per_example

#: The smallest useful training run: one epoch of a tiny VAE on digits.
TINY = ["--epochs", "1", "--latent-dim", "2", "--hidden-dims", "16", "--eval-samples", "10",
        "--no-progress", "--device", "cpu"]
#: The same for ``compare`` (which calls the importance samples --samples).
TINY_COMPARE = ["--latent-dim", "2", "--hidden-dims", "16", "--samples", "10", "--no-progress",
                "--device", "cpu"]
#: Test examples of digits at the default test fraction 0.2 (1797 images).
DIGITS_TEST = 359


def _train(out, *argv):
    assert main(["train", "--out", str(out), *argv]) == 0
    return out


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def _summary(out):
    return {row["name"]: row for row in json.loads((out / "summary.json").read_text())}


def _one_line_error(capsys) -> str:
    """stderr of a refused command: exactly one line 'pyro-vae: error: ...', no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on the 2 shared cores, two threads per tiny step oversubscribe them
    (measured: 3 s instead of 0.7 s per tiny run under load). No figures: this module checks
    numbers and refusals (figures are tested elsewhere)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pyro_vae.plots.write_run_figures", lambda *args, **kwargs: [])
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs on digits under data settings that must, or must not, share one test set."""
    root = tmp_path_factory.mktemp("fingerprints")
    settings = {
        "default": [],
        "static": ["--binarize", "static"],
        "val": ["--val-fraction", "0.1"],
        "subset": ["--subset", "200"],
        "float64": ["--dtype", "float64"],
        "half_test": ["--test-fraction", "0.5"],
    }
    return {name: _train(root / name, *TINY, *extra) for name, extra in settings.items()}


@pytest.fixture(scope="module")
def seeds_comparison(tmp_path_factory):
    """vae (20 epochs, latent 4, hidden 32, K=50) and a 2-epoch mixture, each under seeds 0 and 1.

    At 20 epochs the two seeds' VAEs agree within about 0.6 paired standard errors on these
    359 test images (checked: 0.014 ± 0.025 nats), while the mixture is ahead of both by
    about 1.9 ± 0.12 nats.
    """
    out = tmp_path_factory.mktemp("seeds") / "cmp"
    argv = ["compare", "--models", "vae,mix=mixture:epochs=2", "--seeds", "0,1", "--epochs", "20",
            "--latent-dim", "4", "--hidden-dims", "32", "--samples", "50", "--eval-every", "0",
            "--no-progress", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    return out


EARLY = ["--epochs", "30", "--lr", "0.03", "--val-fraction", "0.1", "--patience", "2",
         "--latent-dim", "2", "--hidden-dims", "16", "--eval-samples", "10", "--no-progress",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory):
    """A run that stops early: lr 0.03, patience 2 (checked: best epoch 14, stops after 16 of 30)."""
    return _train(tmp_path_factory.mktemp("early") / "run", *EARLY)


# --------------------------------------------------------------------------- 1. fingerprints


def test_training_settings_do_not_change_the_test_set(runs):
    metrics = {name: _metrics(d)["test"] for name, d in runs.items()}
    same = ["default", "static", "val", "subset", "float64"]
    shas = {metrics[name]["test_set_sha256"] for name in same}
    assert len(shas) == 1 and len(shas.pop()) == 64
    assert all(metrics[name]["num_examples"] == DIGITS_TEST for name in same)
    # The fingerprint is that of the test tensor itself, labels included.
    x, y = load_dataset(DataConfig()).split("test")
    assert metrics["default"]["test_set_sha256"] == fingerprint(x, y)
    assert metrics["half_test"]["test_set_sha256"] != metrics["default"]["test_set_sha256"]
    assert metrics["half_test"]["num_examples"] == 898


def test_load_dataset_gives_one_binary_test_set_per_data_definition():
    reference = load_dataset(DataConfig())
    assert set(reference.x_test.unique().tolist()) == {0.0, 1.0}
    for changes in ({"binarize": "static"}, {"val_fraction": 0.1}, {"subset": 200},
                    {"binarize": "static", "val_fraction": 0.3, "subset": 50}):
        data = load_dataset(DataConfig(**changes))
        assert torch.equal(data.x_test, reference.x_test), changes
        assert torch.equal(data.y_test, reference.y_test), changes
    other = load_dataset(DataConfig(test_fraction=0.3))
    assert other.x_test.shape[0] == round(0.3 * 1797) != reference.x_test.shape[0]
    assert fingerprint(*other.split("test")) != fingerprint(*reference.split("test"))
    assert fingerprint(*load_dataset(DataConfig(split_seed=1)).split("test")) != \
        fingerprint(*reference.split("test"))


def test_fingerprint_is_dtype_independent_but_value_sensitive():
    x, y = load_dataset(DataConfig()).split("test")
    assert fingerprint(x, y) == fingerprint(x.double(), y) == fingerprint(x.half(), y.int())
    flipped = x.clone()
    flipped[0, 0] = 1 - flipped[0, 0]
    assert fingerprint(flipped, y) != fingerprint(x, y)
    assert fingerprint(x, (y + 1) % 10) != fingerprint(x, y)
    assert fingerprint(x) != fingerprint(x, y)


# --------------------------------------------------------------------------- 2. per-example file


@pytest.mark.parametrize("name", ["default", "val", "float64"])
def test_per_example_file_matches_the_reported_numbers(runs, name):
    test = _metrics(runs[name])["test"]
    values = read_per_example(runs[name], test["num_examples"])
    assert sorted(values) == ["elbo", "kl", "log_likelihood", "reconstruction"]
    # the ELBO's parts, image by image and on average
    np.testing.assert_allclose(values["reconstruction"] - values["kl"], values["elbo"], rtol=1e-6, atol=1e-4)
    for key in ("elbo", "log_likelihood", "reconstruction", "kl"):
        assert values[key].dtype == np.float64 and values[key].shape == (test["num_examples"],)
        # float32 runs average in float32: agreement to float32 rounding
        assert values[key].mean() == pytest.approx(test[key], rel=1e-6, abs=0)
    n = test["num_examples"]
    ll = values["log_likelihood"]
    assert ll.std(ddof=1) / math.sqrt(n) == pytest.approx(test["log_likelihood_stderr"], rel=1e-6)
    if name == "float64":  # every number computed in float64: exact to summation order
        assert abs(values["log_likelihood"].mean() - test["log_likelihood"]) < 1e-9
        assert abs(values["elbo"].mean() - test["elbo"]) < 1e-9


def test_per_example_mean_equals_reported_log_likelihood_to_1e9(runs):
    test = _metrics(runs["default"])["test"]
    values = read_per_example(runs["default"])
    assert abs(values["log_likelihood"].mean() - test["log_likelihood"]) < 1e-9
    assert abs(values["elbo"].mean() - test["elbo"]) < 1e-9


def test_damaged_per_example_file_is_refused_naming_it(runs, tmp_path, capsys):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(runs["static"], damaged)
    path = damaged / "test_per_example.npz"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    out = tmp_path / "cmp"
    assert main(["compare", "--runs", f"{runs['default']},{damaged}", "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert f"'{path}' is not a readable per-example file" in err
    assert not (out / "summary.json").exists()


# --------------------------------------------------------------------------- 3. refusal


def test_runs_on_different_test_sets_are_refused_before_training(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--runs", f"{runs['default']},{runs['half_test']}", "--out", str(out)]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert f"'{runs['default']}'" in err and f"'{runs['half_test']}'" in err
    assert f"test size {DIGITS_TEST} vs 898" in err and "test_fraction 0.2 vs 0.5" in err
    assert not out.exists() or not [p for p in out.iterdir() if p.is_dir()]
    # An entry to be trained is checked against the reused run before anything is trained.
    argv = ["compare", "--models", "vae", "--runs", f"old={runs['half_test']}", "--out", str(out),
            *TINY_COMPARE, "--epochs", "1"]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "(entry vae, to be trained)" in err and "test size 898 vs 359" in err
    assert not (out / "vae").exists()


# --------------------------------------------------------------------------- 4 & 5. entries


def test_named_variants_train_with_their_own_options_and_reuse_runs(runs, tmp_path):
    out = tmp_path / "cmp"
    models = "vae,vamp=vae:prior=vamp:prior_components=3,hidden_dims=32/16,beta4=vae:beta=4"
    argv = ["compare", "--models", models, "--runs", f"vae={runs['default']}", "--epochs", "2",
            "--out", str(out), *TINY_COMPARE]
    assert main(argv) == 0
    # vae has a run: reused, not trained; the others are trained into out/NAME
    assert not (out / "vae").exists()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["beta4", "vamp"]
    rows = _summary(out)
    assert list(rows) == ["vae", "vamp", "beta4"]
    assert rows["vae"]["run_dir"] == str(runs["default"]) and rows["vae"]["epochs"] == 1
    vamp = json.loads((out / "vamp" / "config.json").read_text())
    assert vamp["model"] == "vae" and vamp["model_config"]["prior"] == "vamp"
    assert vamp["model_config"]["prior_components"] == 3
    assert vamp["model_config"]["hidden_dims"] == [32, 16]
    assert vamp["model_config"]["latent_dim"] == 2 and vamp["train"]["beta"] == 1.0
    beta4 = json.loads((out / "beta4" / "config.json").read_text())
    assert beta4["train"]["beta"] == 4.0 and beta4["model_config"]["prior"] == "standard"
    assert beta4["model_config"]["hidden_dims"] == [16]
    assert _metrics(out / "beta4")["training_curve"] == "train_objective"
    assert "train_objective" in _metrics(out / "beta4")["history"][0]
    assert _metrics(out / "vamp")["training_curve"] == "train_elbo"
    assert all(r["epochs"] == 2 for r in (rows["vamp"], rows["beta4"]))


@pytest.mark.parametrize("models, message", [
    ("b=vae:foo=1", "entry 'b': unknown option 'foo' for model 'vae'; it accepts: "),
    ("a=vae,a=vae:beta=2", "models lists the entry name 'a' twice"),
    ("vae,vae", "models lists the entry name 'vae' twice"),
    ("vae,,ppca", "has an empty entry"),
    ("x=gan", "models entry 'x=gan': expected NAME=MODEL[:key=value...] with MODEL one of "
              "ae, cvae, hvae, m2, mixture, ppca, vae"),
    ("vae:beta=4", "models entry 'vae:beta=4' has options, so it needs a name"),
    ("b=vae:beta=abc", "entry 'b': option beta='abc' must be a number"),
    ("a/b=vae", "entry name 'a/b' must start with a letter or digit"),
    ("b=vae:beta", "entry 'b': option 'beta' must read key=value"),
    ("b=vae:beta=2:beta=3", "entry 'b': option 'beta' is given twice"),
], ids=["unknown-key", "duplicate-named", "duplicate", "empty", "unknown-model", "no-name",
        "bad-value", "slash", "no-value", "twice"])
def test_bad_entry_specs_are_one_line_errors(models, message, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--models", models, "--out", str(out), *TINY_COMPARE]) == 2
    err = _one_line_error(capsys)
    assert message in err
    if models == "b=vae:foo=1":
        accepted = err.split("it accepts: ")[1].strip().split(", ")
        assert {"beta", "prior", "latent_dim", "hidden_dims", "samples", "subset"} <= set(accepted)
        assert accepted == sorted(accepted)
    assert not out.exists()


def test_unnamed_variant_after_an_entry_is_blamed_on_itself(tmp_path, capsys):
    assert main(["compare", "--models", "vae,vae:beta=4", "--out", str(tmp_path / "cmp")]) == 2
    err = _one_line_error(capsys)
    assert "'vae:beta=4'" in err


def test_runs_alone_trains_nothing_and_names_rows(runs, tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--runs", f"{runs['default']},stat={runs['static']},{runs['subset']}",
            "--out", str(out)]
    assert main(argv) == 0
    assert not [p for p in out.iterdir() if p.is_dir()]
    rows = _summary(out)
    assert list(rows) == ["default", "stat", "subset"]
    assert rows["stat"]["run_dir"] == str(runs["static"])
    for name, key in (("default", "default"), ("stat", "static"), ("subset", "subset")):
        assert rows[name]["log_likelihood"] == _metrics(runs[key])["test"]["log_likelihood"]
    # exactly one best row; the others are paired against it
    best = [name for name, r in rows.items() if r["paired"] is None]
    assert len(best) == 1
    assert all(r["paired"]["vs"] == best[0] for name, r in rows.items() if name != best[0])


def test_the_same_run_under_two_names_is_not_significantly_different(runs, tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--runs", f"a={runs['default']},b={runs['default']}", "--out", str(out)]
    assert main(argv) == 0
    rows = _summary(out)
    assert rows["a"]["paired"] is None
    assert rows["b"]["paired"] == {"vs": "a", "difference": 0.0, "stderr": 0.0, "significant": False}
    assert "| b | vae |" in (out / "report.md").read_text()
    assert "+0.00 ± 0.00 (n.s.)" in (out / "report.md").read_text()


# --------------------------------------------------------------------------- 6. paired statistics


def test_paired_difference_against_a_hand_computation():
    best = np.array([-20.0, -31.0, -25.5, -40.0])
    row = np.array([-21.0, -30.5, -27.0, -44.0])
    # d = [1, -0.5, 1.5, 4]: mean 1.5, squared deviations 0.25 + 4 + 0 + 6.25 = 10.5,
    # sample variance 10.5 / 3 = 3.5, stderr sqrt(3.5) / sqrt(4) = sqrt(0.875)
    result = paired_difference(best, row)
    assert result["difference"] == pytest.approx(1.5, abs=1e-15)
    assert result["stderr"] == pytest.approx(math.sqrt(0.875), rel=1e-14)
    d = best - row
    assert result["stderr"] == pytest.approx(d.std(ddof=1) / math.sqrt(d.size), rel=1e-14)
    assert result["significant"] is False  # 1.5 < 2 * 0.935
    # shifting every example by the same amount moves the mean, not the stderr
    shifted = paired_difference(best, row - 2.0)
    assert shifted["difference"] == pytest.approx(3.5) and shifted["significant"] is True
    assert shifted["stderr"] == pytest.approx(result["stderr"], rel=1e-12)
    # the examples' own difficulty cancels: a huge common spread changes nothing
    spread = np.array([0.0, 100.0, -50.0, 300.0])
    assert paired_difference(best + spread, row + spread)["stderr"] == pytest.approx(result["stderr"], rel=1e-9)


def test_paired_difference_of_one_example_has_no_stderr():
    assert paired_difference(np.array([-3.0]), np.array([-5.5])) == {
        "difference": 2.5, "stderr": None, "significant": None}


@pytest.mark.parametrize("best, row", [([1.0, 2.0], [1.0]), ([], []), ([[1.0, 2.0]], [[1.0, 2.0]])])
def test_paired_difference_refuses_unpaired_values(best, row):
    with pytest.raises(ValueError, match="paired values must be two vectors of one length"):
        paired_difference(np.array(best), np.array(row))


# --------------------------------------------------------------------------- 7 & 8. seeds, significance


def test_seeds_train_one_run_per_seed_and_give_the_spread(seeds_comparison):
    out = seeds_comparison
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["mix", "mix-seed1", "vae", "vae-seed1"]
    rows = _summary(out)
    for name in ("vae", "mix"):
        seeds = rows[name]["seeds"]
        assert seeds["seeds"] == [0, 1]
        assert seeds["run_dirs"] == [str(out / name), str(out / f"{name}-seed1")]
        nll = [-_metrics(out / name)["test"]["log_likelihood"],
               -_metrics(out / f"{name}-seed1")["test"]["log_likelihood"]]
        assert seeds["nll"] == nll and len(seeds["nll"]) == 2
        assert seeds["nll_mean"] == pytest.approx(sum(nll) / 2, rel=1e-12)
        assert seeds["nll_std"] == pytest.approx(abs(nll[0] - nll[1]) / math.sqrt(2), rel=1e-9)
        assert rows[name]["seed"] == 0 and rows[name]["run_dir"] == str(out / name)
    assert json.loads((out / "vae-seed1" / "config.json").read_text())["train"]["seed"] == 1
    assert json.loads((out / "mix-seed1" / "config.json").read_text())["train"]["epochs"] == 2
    assert "(2 seeds)" in (out / "report.md").read_text()


def test_mixture_is_significantly_ahead_of_the_vae(seeds_comparison):
    rows = _summary(seeds_comparison)
    assert rows["mix"]["paired"] is None
    paired = rows["vae"]["paired"]
    assert paired["vs"] == "mix" and paired["significant"] is True
    assert paired["difference"] > 10 * paired["stderr"] > 0
    # the paired difference is the difference of the two means (same examples, same order)
    gap = rows["mix"]["log_likelihood"] - rows["vae"]["log_likelihood"]
    assert paired["difference"] == pytest.approx(gap, abs=1e-5)
    vae_line = next(line for line in (seeds_comparison / "report.md").read_text().splitlines()
                    if line.startswith("| 2 | vae |"))
    assert f"+{paired['difference']:.2f} ± {paired['stderr']:.2f} |" in vae_line
    assert "(n.s.)" not in vae_line


def test_two_seeds_of_one_model_are_not_significantly_different(seeds_comparison, tmp_path):
    out = tmp_path / "again"
    argv = ["compare", "--runs", f"{seeds_comparison / 'vae'},{seeds_comparison / 'vae-seed1'}",
            "--out", str(out)]
    assert main(argv) == 0
    rows = _summary(out)
    best, other = sorted(rows.values(), key=lambda r: r["paired"] is not None)
    assert best["paired"] is None and other["paired"]["vs"] == best["name"]
    assert other["paired"]["significant"] is False
    assert 0 <= other["paired"]["difference"] < other["paired"]["stderr"]
    assert "(n.s.)" in (out / "report.md").read_text()


@pytest.mark.parametrize("overwrite", [False, True], ids=["refused", "overwrite"])
def test_entry_names_cannot_collide_with_seed_directories(tmp_path, overwrite):
    out = tmp_path / "cmp"
    argv = ["compare", "--models", "vae,vae-seed1=vae:beta=2", "--seeds", "0,1", "--epochs", "1",
            "--out", str(out), *TINY_COMPARE] + (["--overwrite"] if overwrite else [])
    status = main(argv)
    if status == 2:  # refused: then before anything was trained
        assert not out.exists() or not [p for p in out.iterdir() if p.is_dir()]
    else:  # or each entry's seeds are its own runs
        assert status == 0
        rows = _summary(out)
        assert rows["vae"]["seeds"]["seeds"] == [0, 1]
        assert not set(rows["vae"]["seeds"]["run_dirs"]) & set(rows["vae-seed1"]["seeds"]["run_dirs"])


# --------------------------------------------------------------------------- 9. early stopping


def test_early_stopping_keeps_the_best_validation_epoch(early_stopped):
    metrics = _metrics(early_stopped)
    history = metrics["history"]
    assert metrics["stopped_early"] is True
    assert metrics["best_epoch"] < metrics["epochs"] < 30
    assert metrics["epochs"] == len(history) == metrics["best_epoch"] + 2  # patience 2
    assert all("val_elbo" in h and "test_elbo" not in h and "train_elbo" in h for h in history)
    scores = [h["val_elbo"] for h in history]
    assert scores.index(max(scores)) + 1 == metrics["best_epoch"]
    best = load_checkpoint(early_stopped / "best.pt")
    assert best["epoch"] == metrics["best_epoch"]
    last = load_checkpoint(early_stopped / "checkpoint.pt")
    assert last["train_state"]["epoch"] == metrics["epochs"]
    loaded = load_run(early_stopped, device="cpu")
    _assert_same_weights(loaded.model.state_dict(), best["model"])
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


def test_resume_inside_the_patience_window_ends_like_the_uninterrupted_run(early_stopped, tmp_path):
    full = _metrics(early_stopped)
    stop_at = full["best_epoch"] + 1  # one evaluation into the patience window
    assert stop_at < full["epochs"]
    run = _train(tmp_path / "run", *EARLY[:1], str(stop_at), *EARLY[2:])
    partial = _metrics(run)
    assert partial["stopped_early"] is False and partial["best_epoch"] == full["best_epoch"]
    assert main(["train", "--resume", str(run), "--epochs", "30", "--no-progress", "--device", "cpu"]) == 0
    resumed = _metrics(run)
    for key in ("history", "best_epoch", "stopped_early", "epochs", "steps", "test", "parameters"):
        assert resumed[key] == full[key], key
    _assert_same_weights(load_checkpoint(run / "best.pt")["model"],
                         load_checkpoint(early_stopped / "best.pt")["model"])
    _assert_same_weights(load_checkpoint(run / "checkpoint.pt")["model"],
                         load_checkpoint(early_stopped / "checkpoint.pt")["model"])
    np.testing.assert_array_equal(read_per_example(run)["log_likelihood"],
                                  read_per_example(early_stopped)["log_likelihood"])


def test_patience_needs_a_validation_split(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--patience", "2"]) == 2
    err = _one_line_error(capsys)
    assert "patience 2 needs a validation split" in err and "--val-fraction" in err
    assert not out.exists()


# --------------------------------------------------------------------------- 10. eval schedule


def test_resume_with_another_evaluation_schedule_trains_the_same(tmp_path):
    base = ["--eval-every", "3", "--latent-dim", "2", "--hidden-dims", "16", "--eval-samples", "10",
            "--no-progress", "--device", "cpu"]
    straight = _train(tmp_path / "straight", "--epochs", "6", *base)
    resumed = _train(tmp_path / "resumed", "--epochs", "4", *base)
    assert main(["train", "--resume", str(resumed), "--epochs", "6", "--no-progress", "--device", "cpu"]) == 0
    _assert_same_weights(load_checkpoint(resumed / "checkpoint.pt")["model"],
                         load_checkpoint(straight / "checkpoint.pt")["model"])
    a, b = _metrics(straight)["history"], _metrics(resumed)["history"]
    assert [h["train_elbo"] for h in a] == [h["train_elbo"] for h in b]
    assert [h["epoch"] for h in a if "test_elbo" in h] == [3, 6]
    assert [h["epoch"] for h in b if "test_elbo" in h] == [3, 4, 6]  # epoch 4 ended the first call
    assert a[5]["test_elbo"] == b[5]["test_elbo"]
    assert _metrics(straight)["test"] == _metrics(resumed)["test"]


# --------------------------------------------------------------------------- 11. latent probe


def test_latent_probe_skips_label_reading_guides_and_is_chance_on_noise(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.npz"
    np.savez(path, x=rng.integers(0, 2, size=(300, 64)).astype(np.float32),
             y=rng.integers(0, 10, size=300))
    argv = ["--dataset", f"npz:{path}", "--epochs", "2", "--latent-dim", "2", "--hidden-dims", "16",
            "--eval-samples", "10", "--no-progress", "--device", "cpu"]
    cvae = _metrics(_train(tmp_path / "cvae", "--model", "cvae", *argv))["test"]["latent"]
    assert cvae["classifier_accuracy"] is None
    assert "reads the label" in cvae["classifier_note"]
    vae = _metrics(_train(tmp_path / "vae", *argv))["test"]
    assert vae["num_examples"] == 60
    assert 0 <= vae["latent"]["classifier_accuracy"] < 0.25
    assert "classifier_note" not in vae["latent"]


def test_latent_probe_finds_classes_in_digits(seeds_comparison):
    # contrast with the noise above: the same probe on digits codes (20 epochs, latent 4) is
    # far above chance (checked: 0.46 and 0.49 for the two seeds)
    for run in ("vae", "vae-seed1"):
        assert _metrics(seeds_comparison / run)["test"]["latent"]["classifier_accuracy"] > 0.35


# --------------------------------------------------------------------------- 12. training curve


@pytest.mark.parametrize("extra, key", [
    (["--beta", "2"], "train_objective"),
    (["--kl-warmup", "2"], "train_objective"),
    (["--objective", "iwae", "--particles", "2"], "train_objective"),
    (["--objective", "meanfield"], "train_elbo"),
], ids=["beta", "warmup", "iwae", "meanfield"])
def test_training_curve_is_named_for_what_was_optimized(extra, key, tmp_path):
    metrics = _metrics(_train(tmp_path / "run", *TINY, *extra))
    assert metrics["training_curve"] == key
    curves = [sorted(k for k in h if "elbo" in k or "objective" in k) for h in metrics["history"]]
    assert curves == [sorted([key, "test_elbo"])]


def test_plain_elbo_curve_is_train_elbo(runs):
    metrics = _metrics(runs["default"])
    assert metrics["training_curve"] == "train_elbo"
    assert all("train_elbo" in h and "train_objective" not in h for h in metrics["history"])
