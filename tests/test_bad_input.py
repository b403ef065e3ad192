"""The bad-input catalogue: every wrong thing a user can hand the CLI or the API gets one clear line.

CLI cases check the contract of :func:`pyro_vae.cli.main`: exit status 2, one line on stderr
starting ``pyro-vae: error:`` that names the argument, the value received and, where there
is a list, the values accepted; never a traceback. API cases check that the library raises
``ValueError``/``TypeError`` with such a message. No case is skipped for a missing
registration: a broken registry fails here.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import pyro_vae.models
from pyro_vae.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from pyro_vae.cli import build_parser, main
from pyro_vae.data import DataConfig, iterate_batches, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.evaluate import evaluate, log_likelihood
from pyro_vae.models import VAE, VAEConfig
from pyro_vae.runs import RunConfig, evaluate_run, load_run, read_config, resume_run
from tests.conftest import TINY_TRAIN_ARGS as TINY

MODELS = pyro_vae.models.MODELS


def _train_options() -> set[str]:
    """Option strings the ``train`` sub-command accepts (flags land as colleagues add them)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices["train"]._option_string_actions)


TRAIN_FLAGS = _train_options()


def cli_error(capsys, argv, *fragments) -> str:
    """Run the CLI, assert the bad-input contract, and return the error line."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert status == 2, captured.err
    assert "Traceback" not in captured.err
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error:"), captured.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def grey(n=40, d=16, seed=0):
    return np.random.default_rng(seed).random((n, d)).astype(np.float32)


# ------------------------------------------------------------------ CLI: options and names

CLI_OPTION_CASES = [
    # (extra argv, fragments the error line must contain)
    (["--model", "nope"], ["unknown model 'nope'", "choose from", "vae"]),
    (["--dataset", "nope"], ["unknown dataset 'nope'", "digits", "npz:PATH"]),
    (["--likelihood", "nope"], ["unknown likelihood 'nope'", "bernoulli"]),
    (["--prior", "nope"], ["unknown prior 'nope'", "standard"]),
    (["--objective", "nope"], ["unknown objective 'nope'", "elbo"]),
    (["--guide", "nope"], ["unknown guide 'nope'", "delta", "normal"]),
    (["--device", "tpu"], ["unknown device 'tpu'", "cpu", "cuda"]),
    (["--binarize", "sometimes"], ["--binarize", "'sometimes'", "dynamic", "static", "none"]),
    (["--dtype", "float16"], ["--dtype", "'float16'", "float32", "float64"]),
    (["--epochs", "0"], ["epochs must be a positive integer, got 0"]),
    (["--epochs", "-3"], ["epochs must be a positive integer, got -3"]),
    (["--epochs", "two"], ["--epochs", "invalid int value: 'two'"]),
    (["--batch-size", "0"], ["batch_size must be a positive integer, got 0"]),
    (["--lr", "0"], ["lr must be a finite positive number, got 0.0"]),
    (["--lr", "-0.1"], ["lr must be a finite positive number, got -0.1"]),
    (["--lr", "nan"], ["lr must be a finite positive number, got nan"]),
    (["--lr", "inf"], ["lr must be a finite positive number, got inf"]),
    (["--latent-dim", "0"], ["latent_dim must be a positive integer, got 0"]),
    (["--hidden-dims", "0,16"], ["--hidden-dims", "positive integers", "'0,16'"]),
    (["--hidden-dims", "wide"], ["--hidden-dims", "'wide'"]),
    (["--particles", "0"], ["particles must be a positive integer, got 0"]),
    (["--eval-samples", "0"], ["eval_samples must be a positive integer, got 0"]),
    (["--eval-every", "-1"], ["eval_every must be a non-negative integer, got -1"]),
    (["--subset", "0"], ["subset must be a positive integer, got 0"]),
    (["--test-fraction", "0"], ["test_fraction must be in (0, 1), got 0.0"]),
    (["--test-fraction", "1.5"], ["test_fraction must be in (0, 1), got 1.5"]),
    (["--val-fraction", "1"], ["val_fraction must be in [0, 1), got 1.0"]),
    (["--seed", "-1"], ["seed must be a non-negative integer, got -1"]),
    (["--seed", str(2**40)], ["seed must be an integer in [0, 2147483647]", str(2**40)]),
    (["--obs-scale", "0"], ["obs_scale must be a finite positive number, got 0.0"]),
    (["--prior-components", "0"], ["prior_components must be a positive integer, got 0"]),
    (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
]


@pytest.mark.parametrize("extra, fragments", CLI_OPTION_CASES,
                         ids=[" ".join(c[0]) for c in CLI_OPTION_CASES])
def test_cli_refuses_bad_option(tmp_path, capsys, extra, fragments):
    cli_error(capsys, ["train", "--out", tmp_path / "run", *TINY, *extra], *fragments)
    assert not (tmp_path / "run").exists()  # nothing written for a refused command


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cli_refuses_cuda_without_cuda(tmp_path, capsys):
    cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, "--device", "cuda"],
              "device 'cuda'", "CUDA is not available", "--device cpu")


@pytest.mark.parametrize("argv, fragments", [
    ([], ["required", "command"]),
    (["fit"], ["invalid choice: 'fit'", "train", "evaluate"]),
    (["train"], ["train needs --out DIR"]),
    (["evaluate"], ["required", "run_dir"]),
])
def test_cli_refuses_incomplete_command(capsys, argv, fragments):
    cli_error(capsys, argv, *fragments)


@pytest.mark.parametrize("extra, fragment", [
    (["--beta", "-1"], "beta"), (["--beta", "nan"], "beta"), (["--kl-warmup", "-2"], "kl_warmup"),
])
def test_cli_refuses_bad_kl_weighting(tmp_path, capsys, extra, fragment):
    cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, *extra], fragment, extra[1])


def test_cli_refuses_delta_guide_with_iwae(tmp_path, capsys):
    cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, "--guide", "delta",
                       "--objective", "iwae"], "--guide delta", "iwae")


def test_cli_refuses_option_that_does_not_apply_to_the_model(tmp_path, capsys):
    cli_error(capsys, ["train", "--out", tmp_path / "r", "--model", "mixture", "--epochs", "1",
                       "--prior", "vamp", "--no-progress"], "--prior", "does not apply to --model mixture",
              "its model options are: --components, --likelihood")


# ------------------------------------------------------------------ CLI: data


def test_cli_refuses_grey_levels_for_bernoulli(tmp_path, capsys):
    cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, "--binarize", "none"],
              "bernoulli likelihood needs binary pixels", "--binarize")
    assert not (tmp_path / "r").exists()  # refused before the run directory was created


NPZ_CASES = {
    # name: (arrays, fragments of the error)
    "nan": (lambda: {"x": np.where(np.eye(40, 16) > 0, np.nan, grey())}, ["NaN"]),
    "inf": (lambda: {"x": np.where(np.eye(40, 16) > 0, np.inf, grey())}, ["Inf"]),
    "above-one": (lambda: {"x": grey() * 3}, ["float x must lie in [0, 1]", "2.999"]),
    "negative": (lambda: {"x": grey() - 0.5}, ["float x must lie in [0, 1]", "-0.4997"]),
    "one-dimensional": (lambda: {"x": grey().ravel()}, ["x must have shape (n, D)", "got (640,)"]),
    "five-dimensional": (lambda: {"x": grey().reshape(40, 1, 1, 4, 4)},
                         ["x must have shape (n, D)", "got (40, 1, 1, 4, 4)"]),
    "no-x": (lambda: {"images": grey()}, ["no array 'x'", "images"]),
    "empty": (lambda: {"x": np.zeros((0, 16), np.float32)}, ["x is empty (shape (0, 16))"]),
    "single-example": (lambda: {"x": grey(n=1)}, ["empty"]),
    "label-count-mismatch": (lambda: {"x": grey(), "y": np.arange(39)}, ["y must have shape (40,)", "got (39,)"]),
    "negative-labels": (lambda: {"x": grey(), "y": -2 * np.ones(40, np.int64)}, ["y labels must be >= 0", "found -2"]),
    "float-labels": (lambda: {"x": grey(), "y": np.full(40, 0.5)}, ["y must hold integer class labels"]),
    "string-pixels": (lambda: {"x": np.array([["a"] * 16] * 40)}, ["x has dtype <U1"]),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_cli_refuses_bad_npz(tmp_path, capsys, case):
    arrays, fragments = NPZ_CASES[case]
    dataset = write_npz(tmp_path / "data.npz", **arrays())
    line = cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, "--binarize", "static",
                              "--dataset", dataset], *fragments)
    assert "data.npz" in line  # names the file


def test_cli_refuses_missing_and_unreadable_data_files(tmp_path, capsys):
    cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, "--dataset",
                       f"npz:{tmp_path / 'absent.npz'}"], "absent.npz", "not found")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(300))
    cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, "--dataset", f"npz:{garbage}"],
              "garbage.npz", "not a readable .npz archive")


def test_cli_refuses_pickled_npz_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(str(marker))
    np.savez(tmp_path / "evil.npz", x=evil)
    cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, "--dataset",
                       f"npz:{tmp_path / 'evil.npz'}"], "evil.npz", "without unpickling")
    assert not marker.exists()


class _Payload:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):
    open(path, "w").close()


def test_cli_refuses_cvae_without_labels(tmp_path, capsys):
    dataset = write_npz(tmp_path / "unlabelled.npz", x=(grey() > 0.5).astype(np.float32))
    cli_error(capsys, ["train", "--out", tmp_path / "r", *TINY, "--model", "cvae",
                       "--dataset", dataset], "labels")


# ------------------------------------------------------------------ CLI: output directories


def test_cli_refuses_out_under_a_regular_file(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    cli_error(capsys, ["train", "--out", tmp_path / "file" / "sub", *TINY],
              "output directory", "file/sub", "not writable")
    cli_error(capsys, ["train", "--out", tmp_path / "file", *TINY], "is not a directory")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_cli_refuses_unwritable_out(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        cli_error(capsys, ["train", "--out", locked / "run", *TINY], "not writable")
    finally:
        locked.chmod(0o700)


def test_cli_refuses_to_replace_a_run_without_overwrite(run_copy, capsys):
    before = (run_copy / "checkpoint.pt").read_bytes()
    cli_error(capsys, ["train", "--out", run_copy, *TINY], "already holds a run", "--overwrite",
              "--resume")
    assert (run_copy / "checkpoint.pt").read_bytes() == before


def test_overwrite_with_bad_data_keeps_the_old_run(run_copy, capsys):
    """A refused configuration must not destroy the run it was asked to replace."""
    before = (run_copy / "checkpoint.pt").read_bytes()
    cli_error(capsys, ["train", "--out", run_copy, *TINY, "--overwrite", "--binarize", "none"],
              "binary pixels")
    assert (run_copy / "checkpoint.pt").read_bytes() == before
    assert (run_copy / "metrics.json").is_file()


# ------------------------------------------------------------------ CLI: resume, evaluate, sample


def test_cli_resume_refuses_conflicting_options(run_copy, capsys):
    cli_error(capsys, ["train", "--resume", run_copy, "--epochs", "2", "--latent-dim", "8",
                       "--lr", "0.1"], "--resume", "--latent-dim", "--lr")
    cli_error(capsys, ["train", "--resume", run_copy, "--out", run_copy], "--out")
    # options with defaults are refused too when given: they would otherwise be ignored silently
    cli_error(capsys, ["train", "--resume", run_copy, "--epochs", "2", "--model", "vae", "--dataset",
                       "digits", "--eval-every", "2", "--overwrite"],
              "--model", "--dataset", "--eval-every", "--overwrite")


def test_cli_resume_refuses_fewer_epochs_than_done(run_copy, capsys):
    cli_error(capsys, ["train", "--resume", run_copy, "--epochs", "1", "--no-progress"],
              "epochs must exceed the 1 epochs", "got 1")


def test_cli_resume_without_checkpoint_says_there_is_nothing_to_resume(run_copy, capsys):
    (run_copy / "checkpoint.pt").unlink()
    (run_copy / "metrics.json").unlink()
    cli_error(capsys, ["train", "--resume", run_copy, "--epochs", "2"],
              "no checkpoint yet", "nothing to resume", "--overwrite")


@pytest.mark.parametrize("command", ["evaluate", "sample", "resume"])
def test_cli_refuses_missing_or_foreign_run_dir(tmp_path, capsys, command):
    def argv(run_dir):
        return {"evaluate": ["evaluate", run_dir],
                "sample": ["sample", run_dir, "--out", tmp_path / "s.png"],
                "resume": ["train", "--resume", run_dir, "--epochs", "2"]}[command]

    cli_error(capsys, argv(tmp_path / "absent"), "absent", "does not exist")
    (tmp_path / "empty").mkdir()
    cli_error(capsys, argv(tmp_path / "empty"), "no config.json")


CONFIG_DAMAGE = {
    "not-json": ("{ this is not json", ["config.json", "not valid JSON"]),
    "a-list": ("[1, 2, 3]", ["must be a JSON object"]),
    "no-model-key": (lambda c: {k: v for k, v in c.items() if k != "model"}, ["lacks the key", "model"]),
    "unknown-field": (lambda c: {**c, "train": {**c["train"], "warp": 9}}, ["warp"]),
    "bad-value": (lambda c: {**c, "train": {**c["train"], "epochs": -4}}, ["epochs", "-4"]),
    "other-architecture": (lambda c: {**c, "model_config": {**c["model_config"], "latent_dim": 3}},
                           ["different configuration", "latent_dim"]),
    "unknown-model": (lambda c: {**c, "model": "gan"}, ["unknown model 'gan'"]),
    "binary-garbage": (b"\xff\xfe\x00garbage", ["config.json"]),
}


@pytest.mark.parametrize("damage", sorted(CONFIG_DAMAGE))
def test_cli_refuses_damaged_config(run_copy, capsys, damage):
    change, fragments = CONFIG_DAMAGE[damage]
    path = run_copy / "config.json"
    if isinstance(change, bytes):
        path.write_bytes(change)
    elif isinstance(change, str):
        path.write_text(change)
    else:
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    cli_error(capsys, ["evaluate", run_copy, "--samples", "2"], *fragments)


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])


CHECKPOINT_DAMAGE = {
    "empty": (lambda p: p.write_bytes(b""), ["truncated or corrupt"]),
    "truncated-head": (lambda p: _truncate(p, lambda n: 100), ["truncated or corrupt"]),
    "truncated-half": (lambda p: _truncate(p, lambda n: n // 2), ["truncated or corrupt"]),
    "truncated-tail": (lambda p: _truncate(p, lambda n: n - 1), ["truncated or corrupt"]),
    "garbage": (lambda p: p.write_bytes(os.urandom(5000)), ["truncated or corrupt"]),
    "a-directory": (lambda p: (p.unlink(), p.mkdir()), ["is not a file"]),
}


@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_cli_refuses_damaged_checkpoint(run_copy, capsys, damage, command):
    change, fragments = CHECKPOINT_DAMAGE[damage]
    change(run_copy / "checkpoint.pt")
    argv = (["evaluate", run_copy, "--samples", "2"] if command == "evaluate"
            else ["train", "--resume", run_copy, "--epochs", "2", "--no-progress"])
    cli_error(capsys, argv, "checkpoint.pt", *fragments)


def _rewrite_checkpoint(path, change):
    """Load a good checkpoint, change it, and save it with a valid checksum."""
    checkpoint = load_checkpoint(path)
    checkpoint.pop("format_version")
    save_checkpoint(path, change(checkpoint))


def test_cli_refuses_checkpoint_of_other_format_version(run_copy, capsys):
    raw = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    torch.save({**raw, "format_version": FORMAT_VERSION + 1}, run_copy / "checkpoint.pt")
    cli_error(capsys, ["evaluate", run_copy], "format version", str(FORMAT_VERSION + 1))
    torch.save(torch.zeros(3), run_copy / "checkpoint.pt")  # not even a dict
    cli_error(capsys, ["evaluate", run_copy], "not a pyro-vae checkpoint", "Tensor")


def test_cli_refuses_bit_flipped_checkpoint(run_copy, capsys):
    """The zip container does not check its contents; the checksum does."""
    raw = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    name = next(iter(raw["model"]))
    raw["model"][name] = raw["model"][name].clone()
    raw["model"][name].view(-1)[0] += 1e-3  # a silent change in one weight
    torch.save(raw, run_copy / "checkpoint.pt")
    cli_error(capsys, ["evaluate", run_copy], "corrupt", "checksum")


def test_cli_refuses_checkpoint_written_for_another_run(run_copy, capsys):
    """A checkpoint records the configuration it was trained with (here: another latent size)."""

    def other_run(checkpoint):
        config = json.loads(checkpoint["config"])
        config["model_config"]["latent_dim"] = 3
        return {**checkpoint, "config": json.dumps(config, sort_keys=True)}

    _rewrite_checkpoint(run_copy / "checkpoint.pt", other_run)
    line = cli_error(capsys, ["evaluate", run_copy], "different configuration", "latent_dim")
    assert "checkpoint 3 vs config 2" in line


def test_cli_refuses_checkpoint_with_wrong_weights_or_entries(run_copy, capsys):
    path = run_copy / "checkpoint.pt"
    original = path.read_bytes()
    _rewrite_checkpoint(path, lambda c: {**c, "model": {k: v[..., :1] for k, v in c["model"].items()}})
    cli_error(capsys, ["evaluate", run_copy], "does not fit the model", "size mismatch")
    path.write_bytes(original)
    _rewrite_checkpoint(path, lambda c: {k: v for k, v in c.items() if k != "train_state"})
    cli_error(capsys, ["train", "--resume", run_copy, "--epochs", "2"], "lacks the entries", "train_state")
    path.write_bytes(original)
    _rewrite_checkpoint(path, lambda c: {**c, "config": 42})
    cli_error(capsys, ["evaluate", run_copy], "no readable configuration")


def test_cli_refuses_damaged_metrics_before_evaluating(run_copy, capsys):
    (run_copy / "metrics.json").write_text('{"history": [1, 2')
    cli_error(capsys, ["evaluate", run_copy, "--samples", "2"], "metrics.json", "is not valid JSON")
    (run_copy / "metrics.json").write_text("[]")
    cli_error(capsys, ["evaluate", run_copy, "--samples", "2"], "metrics.json", "JSON object")


def test_cli_refuses_unreadable_run_files(run_copy, capsys, monkeypatch):
    """Permission denied on config.json or checkpoint.pt (simulated: root reads anything)."""
    import pathlib

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "read_text", denied)
        cli_error(capsys, ["evaluate", run_copy], "config.json", "could not be read", "Permission denied")
    monkeypatch.setattr(torch, "load", denied)
    cli_error(capsys, ["evaluate", run_copy], "checkpoint.pt", "could not be read", "Permission denied")


def test_cli_evaluate_and_sample_refuse_bad_numbers(trained_run, tmp_path, capsys):
    cli_error(capsys, ["evaluate", trained_run, "--samples", "0"], "samples", "got 0")
    cli_error(capsys, ["evaluate", trained_run, "--samples", "many"], "--samples", "'many'")
    cli_error(capsys, ["sample", trained_run, "--out", tmp_path / "s.png", "--n", "0"], "n must be", "got 0")
    cli_error(capsys, ["sample", trained_run, "--out", tmp_path / "s.png", "--label", "3"],
              "--label", "'vae'")
    (tmp_path / "file").write_text("")
    cli_error(capsys, ["sample", trained_run, "--out", tmp_path / "file" / "s.png"],
              "cannot write --out", "not a directory")
    cli_error(capsys, ["sample", trained_run], "--out")


# ------------------------------------------------------------------ API


@pytest.mark.parametrize("build, error, match", [
    (lambda: VAEConfig(latent_dim=0), ValueError, "latent_dim must be a positive integer, got 0"),
    (lambda: VAEConfig(latent_dim=2.5), TypeError, r"latent_dim must be a positive integer, got 2.5"),
    (lambda: VAEConfig(hidden_dims="32"), TypeError, "hidden_dims must be a sequence"),
    (lambda: VAEConfig(hidden_dims=(32, -1)), ValueError, r"hidden_dims must contain positive integers"),
    (lambda: VAEConfig(likelihood="poisson"), ValueError, "unknown likelihood 'poisson'"),
    (lambda: VAE(0, VAEConfig()), ValueError, "data_dim must be a positive integer, got 0"),
    (lambda: TrainConfig(epochs=True), TypeError, "epochs must be a positive integer, got True"),
    (lambda: TrainConfig(lr="1e-3"), TypeError, "lr must be a positive number, got '1e-3'"),
    (lambda: TrainConfig(device="tpu"), ValueError, "unknown device 'tpu'"),
    (lambda: TrainConfig(dtype="half"), ValueError, "unknown dtype 'half'; choose from: float32, float64"),
    (lambda: TrainConfig(detect_anomaly="yes"), TypeError, "detect_anomaly must be True or False"),
    (lambda: DataConfig(name=None), TypeError, "dataset must be a non-empty string"),
    (lambda: DataConfig(name="cifar"), ValueError, "unknown dataset 'cifar'"),
    (lambda: DataConfig(binarize=True), ValueError, "unknown binarize True"),
    (lambda: DataConfig(split_seed=2**64), ValueError, "split_seed must be an integer in"),
    (lambda: DataConfig(download="no"), TypeError, "download must be True or False"),
    (lambda: RunConfig(model="gan"), ValueError, "unknown model 'gan'"),
    (lambda: RunConfig(model_config={"latent_dim": 2, "depth": 3}), ValueError,
     "option.*depth do not apply to model 'vae'"),
    (lambda: RunConfig(eval_samples=0), ValueError, "eval_samples must be a positive integer"),
])
def test_api_refuses_bad_config(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.fixture
def small_vae():
    return VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))


def _with(data, **changes):
    return dataclasses.replace(data, **changes)


@pytest.mark.parametrize("change, match", [
    (lambda d: {"x_train": d.x_train[:, :32]}, "has 32 features per example; this model expects 64"),
    (lambda d: {"x_train": d.x_train.reshape(-1, 8, 8)}, r"must have shape \(batch, D\)"),
    (lambda d: {"x_test": torch.full_like(d.x_test, float("nan"))}, "test data contains NaN or Inf"),
    (lambda d: {"x_train": d.x_train * 2}, r"dynamic binarization needs grey levels in \[0, 1\]"),
    (lambda d: {"x_train": d.x_train - 0.5, "binarize": "static"}, "bernoulli likelihood needs binary"),
])
def test_fit_refuses_bad_data(digits, small_vae, change, match):
    with pytest.raises(ValueError, match=match):
        fit(small_vae, _with(digits, **change(digits)), TrainConfig(epochs=1, progress=False))


def test_fit_accepts_integer_pixels_and_a_batch_larger_than_the_data(digits, small_vae):
    """Decided behaviour: integer 0/1 pixels are cast; a batch larger than the data set is one
    batch holding all of it (like ``DataLoader``), so every epoch takes exactly one step."""
    data = _with(digits, x_train=torch.bernoulli(digits.x_train).long(), binarize="static")
    result = fit(small_vae, data, TrainConfig(epochs=2, batch_size=10**6, progress=False))
    assert result.steps == 2 and len(result.history) == 2
    assert all(np.isfinite(h["train_elbo"]) for h in result.history)


def test_fit_refuses_missing_or_out_of_range_labels(digits):
    config_cls, cvae_cls = MODELS["cvae"]
    cvae = cvae_cls(64, config_cls(latent_dim=2, hidden_dims=(16,)), num_classes=10)
    with pytest.raises(ValueError, match="needs labels"):
        fit(cvae, _with(digits, y_train=None), TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        fit(cvae, _with(digits, y_train=digits.y_train + 5), TrainConfig(epochs=1, progress=False))
    with pytest.raises(TypeError, match="labels must be integers"):
        fit(cvae, _with(digits, y_train=digits.y_train.float()), TrainConfig(epochs=1, progress=False))


def test_load_dataset_refuses_bad_npz(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        load_dataset(DataConfig(write_npz(tmp_path / "a.npz", x=np.full((9, 4), np.nan))))
    with pytest.raises(ValueError, match="not found"):
        load_dataset(DataConfig(f"npz:{tmp_path / 'missing.npz'}"))


def test_evaluation_and_batching_refuse_bad_numbers(small_vae):
    x = torch.bernoulli(torch.full((4, 64), 0.5))
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        log_likelihood(small_vae, x, num_samples=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        next(iterate_batches(x, None, 0))
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        small_vae.sample(0)


@pytest.mark.parametrize("x", [torch.zeros(4, 32), torch.zeros(4, 4, 4), torch.zeros(4, 1, 1, 8, 8)],
                         ids=["32-features", "3-d-16-pixels", "5-d"])
def test_evaluate_refuses_wrong_shapes(small_vae, x):
    with pytest.raises(ValueError, match="features|shape"):
        evaluate(small_vae, x, num_samples=2)


def test_api_run_functions_refuse_missing_or_damaged_runs(run_copy, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_run(tmp_path / "absent")
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "absent")
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        resume_run(run_copy, epochs=0)
    (run_copy / "config.json").write_text('{"model": "vae", "train": {"epochs": "many"}}')
    with pytest.raises(ValueError, match="invalid field"):
        read_config(run_copy)


@pytest.mark.parametrize("damage", ["missing", "truncated", "not-a-dict", "reserved-key"])
def test_checkpoint_api_refuses_bad_files_and_payloads(tmp_path, damage):
    path = tmp_path / "c.pt"
    if damage == "reserved-key":
        with pytest.raises(ValueError, match="reserved"):
            save_checkpoint(path, {"checksum": "x"})
        with pytest.raises(TypeError, match="checkpoint must be a dict"):
            save_checkpoint(path, [1, 2])
        return
    if damage != "missing":
        save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    if damage == "truncated":
        _truncate(path, lambda n: n - 20)
    if damage == "not-a-dict":
        torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match={"missing": "does not exist", "truncated": "truncated or corrupt",
                                          "not-a-dict": "not a pyro-vae checkpoint"}[damage]):
        load_checkpoint(path)
