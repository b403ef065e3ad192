"""Training controls: optimizers, gradient clipping, learning-rate schedules, step callbacks and
stop requests, loggers (CSV, TensorBoard), per-epoch progress lines, and their CLI errors.

Every schedule and stop keeps resume exact: a run interrupted and resumed ends with the
parameters and history of the uninterrupted one. Tiny models on the embedded digits; figures
are not drawn (they are tested elsewhere).
"""

import dataclasses
import json
import math
import sys

import pytest
import torch

from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.data import DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.loggers import CSVLogger, read_csv_log
from pyro_vae.inference.optim import PlateauLR, build_schedule
from pyro_vae.inference.train import Callback, progress_line
from pyro_vae.models import VAE, VAEConfig
from pyro_vae.runs import RunConfig, resume_run, train_run

#: One tiny run's command-line options (the epochs are given by each test).
TINY = ["--latent-dim", "2", "--hidden-dims", "16", "--eval-samples", "5", "--device", "cpu"]
#: Optimizer steps per epoch on digits' training split (1437 images, batch 128).
STEPS_PER_EPOCH = 12


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    """One torch thread (2 shared cores) and no figures: they are not what these tests check."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr("pyro_vae.plots.write_run_figures", lambda *args, **kwargs: [])
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return load_dataset(DataConfig("digits"))


def _vae(data):
    return VAE(data.data_dim, VAEConfig(latent_dim=2, hidden_dims=(16,)))


def _config(**changes):
    return TrainConfig(**{"epochs": 2, "progress": False, "device": "cpu", "eval_every": 0, **changes})


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("pyro-vae: error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("name, cls, extra", [
    ("adam", torch.optim.Adam, {}),
    ("adamw", torch.optim.AdamW, {}),
    ("sgd", torch.optim.SGD, {"momentum": 0.8}),
])
def test_each_optimizer_trains_with_its_settings(data, name, cls, extra):
    vae = _vae(data)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    result = fit(vae, data, _config(optimizer=name, lr=0.02, weight_decay=1e-4, **extra))
    optimizer = result.state.optimizer
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.02 and group["weight_decay"] == 1e-4
    if name == "sgd":
        assert group["momentum"] == 0.8
    else:
        assert group["fused"] is True  # torch's fused kernel on CPU
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(vae.parameters()))
    history = result.history
    assert [h["lr"] for h in history] == [0.02, 0.02]
    assert history[1]["train_elbo"] > history[0]["train_elbo"]  # it learns
    assert any(not torch.equal(before[k], v) for k, v in vae.state_dict().items())


def test_sgd_momentum_defaults_to_0_9_and_settings_survive_json():
    config = TrainConfig(optimizer="sgd", lr_schedule="plateau")
    assert (config.momentum, config.lr_gamma, config.lr_patience, config.lr_min) == (0.9, 0.1, 5, 0.0)
    raw = json.loads(json.dumps(dataclasses.asdict(config)))
    assert TrainConfig(**raw) == config
    assert TrainConfig(log="csv,tensorboard,csv").log == ("csv", "tensorboard")


# --------------------------------------------------------------------------- clipping, step hooks


class _UpdateRecorder(Callback):
    """Per step: the size of the parameter update, the step info; the parameters before each step."""

    def __init__(self):
        self.updates, self.infos, self.previous = [], [], None

    def _flat(self, model):
        return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])

    def on_train_start(self, model, state):
        self.previous = self._flat(model)

    def on_step_end(self, model, state, info):
        now = self._flat(model)
        self.updates.append(torch.linalg.vector_norm(now - self.previous).item())
        self.previous = now
        self.infos.append(info)


def test_clip_grad_bounds_every_update(data):
    # Plain SGD (no momentum, no decay): each update is exactly lr * the clipped gradient.
    lr, clip = 0.5, 0.25
    recorder = _UpdateRecorder()
    result = fit(_vae(data), data, _config(optimizer="sgd", momentum=0.0, lr=lr, clip_grad=clip),
                 callbacks=[recorder])
    assert len(recorder.updates) == 2 * STEPS_PER_EPOCH
    assert max(recorder.updates) <= lr * clip * (1 + 1e-4)
    assert max(recorder.updates) >= lr * clip * 0.99  # the limit was reached ...
    assert all(h["grad_norm"] > clip for h in result.history)  # ... by gradients above it
    # Step information: global steps 1..N, the epoch, the lr, the loss as a detached () tensor.
    assert [i.step for i in recorder.infos] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert [i.epoch for i in recorder.infos] == [1] * STEPS_PER_EPOCH + [2] * STEPS_PER_EPOCH
    assert all(i.lr == lr and isinstance(i.loss, torch.Tensor) and i.loss.dim() == 0
               and not i.loss.requires_grad for i in recorder.infos)


def test_grad_norm_is_the_mean_unclipped_norm(data):
    norms = []

    class Norms(Callback):
        def on_step_end(self, model, state, info):
            norms.append(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()])).item())

    result = fit(_vae(data), data, _config(epochs=1), callbacks=[Norms()])
    assert result.history[0]["grad_norm"] == pytest.approx(sum(norms) / len(norms), rel=1e-5)


# --------------------------------------------------------------------------- schedules


def test_cosine_and_step_schedules_follow_their_closed_forms(data):
    lr, lr_min, epochs = 0.01, 0.001, 4
    result = fit(_vae(data), data, _config(epochs=epochs, lr=lr, lr_schedule="cosine", lr_min=lr_min))
    expected = [lr_min + (lr - lr_min) * (1 + math.cos(math.pi * (e - 1) / epochs)) / 2
                for e in range(1, epochs + 1)]
    assert [h["lr"] for h in result.history] == pytest.approx(expected, rel=1e-12)
    assert result.history[0]["lr"] == lr and result.history[2]["lr"] == pytest.approx((lr + lr_min) / 2)
    # An independent implementation: torch's CosineAnnealingLR stepped once per epoch.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    torch_cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr_min)
    torch_lrs = []
    for _ in range(epochs):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_cosine.step()
    assert [h["lr"] for h in result.history] == pytest.approx(torch_lrs, rel=1e-12)

    step = build_schedule("step", 0.1, step_epochs=2, gamma=0.5)
    assert [step.lr(e) for e in range(1, 7)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_plateau_reduces_after_patience_and_round_trips_its_state():
    plateau = PlateauLR(1.0, patience=1, gamma=0.5, lr_min=0.2)
    lrs = []
    for score in [1, 2, 2, 1.5, 3, 3, 3, 3, 3, 3]:  # improvements at 1, 2, 3
        plateau.observe(score)
        lrs.append(plateau.lr(0))
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2]
    again = PlateauLR(1.0, patience=1, gamma=0.5, lr_min=0.2)
    again.load_state_dict(plateau.state_dict())
    assert again.state_dict() == plateau.state_dict() == {"lr": 0.2, "best": 3.0, "bad": 1}
    with pytest.raises(ValueError, match=r"train_state\['schedule'\]\['lr'\] must be a finite positive"):
        again.load_state_dict({"lr": float("nan"), "best": None, "bad": 0})


# --------------------------------------------------------------------------- exact resume


class StopAtStep(Callback):
    """Asks for a stop at a global step: fit finishes that epoch, then returns."""

    def __init__(self, step):
        self.stop_step = step

    def on_step_end(self, model, state, info):
        if info.step == self.stop_step:
            state.should_stop = True


class Killed(Exception):
    pass


class KillAfterEpoch(Callback):
    """Raises after the checkpoint of ``epoch`` (callbacks run after the checkpoint): a kill."""

    def __init__(self, epoch):
        self.epoch, self.seen = epoch, []

    def on_epoch_end(self, model, state):
        if state.epoch == self.epoch:
            raise Killed

    def on_exception(self, model, state, error):
        self.seen.append(type(error))


def _run_config(**train):
    return RunConfig(model="vae", model_config={"latent_dim": 2, "hidden_dims": [16]},
                     train=TrainConfig(progress=False, device="cpu", **train), eval_samples=5)


def _assert_same_run(a, b):
    ma, mb = _metrics(a), _metrics(b)
    for key in ("history", "epochs", "steps", "best_epoch", "test"):
        assert ma[key] == mb[key], key
    _assert_same_weights(load_checkpoint(a / "checkpoint.pt")["model"],
                         load_checkpoint(b / "checkpoint.pt")["model"])


def test_stop_request_ends_the_epoch_then_resume_across_cosine_is_exact(tmp_path):
    config = _run_config(epochs=4, lr=0.01, lr_schedule="cosine", eval_every=2)
    straight = tmp_path / "straight"
    train_run(config, straight)
    stopped = tmp_path / "stopped"
    # A stop asked for mid-epoch 2 takes effect when epoch 2 ends (checkpointed, run complete).
    metrics = train_run(config, stopped, callbacks=[StopAtStep(STEPS_PER_EPOCH + 3)])
    assert metrics["epochs"] == 2 and metrics["steps"] == 2 * STEPS_PER_EPOCH
    assert metrics["test"] is not None and _metrics(stopped)["epochs"] == 2
    assert load_checkpoint(stopped / "checkpoint.pt")["train_state"]["epoch"] == 2
    resume_run(stopped)  # on to the configured 4 epochs; the rate recomputed from the epoch
    history = _metrics(stopped)["history"]
    assert len({h["lr"] for h in history}) == 4
    _assert_same_run(stopped, straight)


def test_resume_across_a_plateau_schedule_is_exact(tmp_path):
    # lr 0.1 on a validation split: the validation ELBO stalls and the rate is halved
    # (checked: at epochs 5, 8, 9 and 10).
    config = _run_config(epochs=10, lr=0.1, lr_schedule="plateau", lr_patience=0, lr_gamma=0.5)
    config = dataclasses.replace(config, data=DataConfig("digits", val_fraction=0.1))
    straight = tmp_path / "straight"
    train_run(config, straight)
    lrs = [h["lr"] for h in _metrics(straight)["history"]]
    cut = 6
    assert len(set(lrs[:cut])) > 1 and len(set(lrs[cut - 1:])) > 1, lrs  # reductions on both sides
    killed = tmp_path / "killed"
    kill = KillAfterEpoch(cut)
    with pytest.raises(Killed):
        train_run(config, killed, callbacks=[kill])
    assert kill.seen == [Killed]  # on_exception saw it
    saved = load_checkpoint(killed / "checkpoint.pt")["train_state"]
    assert saved["epoch"] == cut and saved["schedule"]["lr"] == lrs[cut]  # the next epoch's rate
    resume_run(killed)
    _assert_same_run(killed, straight)


# --------------------------------------------------------------------------- loggers


def test_tensorboard_logs_scalars_and_a_sample_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--epochs", "2", "--no-progress", "--kl-warmup", "2",
                 "--log", "tensorboard"]) == 0
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train_objective", "test_elbo", "lr", "grad_norm", "kl_weight"} <= set(tags["scalars"])
    assert tags["images"] == ["samples"]
    assert [s.step for s in events.Scalars("train_objective")] == [1, 2]
    assert [s.value for s in events.Scalars("kl_weight")] == [0.5, 1.0]
    history = _metrics(run)["history"]
    assert [s.value for s in events.Scalars("grad_norm")] == pytest.approx(
        [h["grad_norm"] for h in history], rel=1e-6)
    image = events.Images("samples")[-1]
    assert image.step == 2 and image.width == image.height == 8 * 8 + 9  # 8 x 8 digits, padded


def test_csv_has_one_row_per_epoch_after_a_resume(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--epochs", "2", "--no-progress", "--eval-every", "2",
                 "--log", "csv"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress", "--device", "cpu"]) == 0
    fields, rows = read_csv_log(run / "log.csv")
    history = _metrics(run)["history"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert fields[:2] == ["epoch", "train_elbo"] and {"test_elbo", "lr", "grad_norm", "seconds"} <= set(fields)
    for row, record in zip(rows, history):
        for key, value in record.items():
            assert float(row[key]) == value, key  # full precision
    assert rows[0]["test_elbo"] == "" and float(rows[1]["test_elbo"]) == history[1]["test_elbo"]


def test_csv_resume_drops_rows_past_the_checkpoint_and_a_torn_line(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,train_elbo\n1,-50.5\n2,-49.5\n3,-48.5\n4,-4")  # killed while writing row 4
    logger = CSVLogger(tmp_path)
    logger.start(2)  # resumed from the checkpoint of epoch 2
    logger.log_metrics(3, {"epoch": 3, "train_elbo": -48.25, "lr": 0.001})
    fields, rows = read_csv_log(path)
    assert fields == ["epoch", "train_elbo", "lr"]
    assert [(r["epoch"], r["train_elbo"], r["lr"]) for r in rows] == [
        ("1", "-50.5", ""), ("2", "-49.5", ""), ("3", "-48.25", "0.001")]


def test_overwrite_replaces_a_run_with_logs(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), *TINY, "--epochs", "1", "--no-progress", "--log", "csv,tensorboard"]
    assert main(argv) == 0
    assert main([*argv[:-2], "--overwrite"]) == 0  # log.csv and tensorboard/ are the run's own
    assert not (run / "log.csv").exists() and not (run / "tensorboard").exists()


def test_missing_tensorboard_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # find_spec then says: not installed
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--epochs", "1", "--log", "tensorboard"]) == 2
    assert "pip install 'pyro-vae[tensorboard]'" in _one_line_error(capsys)
    assert not run.exists()


# --------------------------------------------------------------------------- progress


def _epoch_lines(err: str) -> list:
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("epoch ")]


def test_progress_without_a_terminal_is_one_line_per_epoch(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--epochs", "3", "--eval-every", "2"]) == 0
    lines = _epoch_lines(capsys.readouterr().err)
    history = _metrics(run)["history"]
    assert len(lines) == 3
    for line, record in zip(lines, history):
        assert line.startswith(f"epoch {record['epoch']}/3 train_elbo {record['train_elbo']:.2f} ")
        assert f" lr {record['lr']:.4g} " in line and line.endswith(" s")
    assert "test_elbo" in lines[1] and "test_elbo" not in lines[0]
    # --no-progress on resume is this invocation's choice, whatever the run stored.
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 0
    assert _epoch_lines(capsys.readouterr().err) == []
    assert json.loads((run / "config.json").read_text())["train"]["progress"] is False


def test_progress_line_format():
    line = progress_line({"epoch": 2, "train_objective": -40.0, "val_elbo": -41.5, "lr": 5e-4,
                          "grad_norm": 3.25, "kl_weight": 0.5}, 10, 0.5)
    assert line == ("epoch 2/10 train_objective -40.00 val_elbo -41.50 lr 0.0005 grad_norm 3.25 "
                    "kl_weight 0.5 0.50 s")


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("argv, fragments", [
    (["--optimizer", "foo"], ["unknown optimizer 'foo'; choose from: adam, adamw, sgd"]),
    (["--clip-grad", "-1"], ["clip_grad must be a finite positive number, got -1.0"]),
    (["--lr-schedule", "step"], ["lr_schedule 'step' needs lr_step_epochs", "--lr-step-epochs"]),
    (["--lr-schedule", "step", "--lr-step-epochs", "0"], ["lr_step_epochs must be a positive integer, got 0"]),
    (["--weight-decay", "nan"], ["weight_decay must be a finite non-negative number, got nan"]),
    (["--lr-schedule", "warp"], ["unknown lr_schedule 'warp'; choose from: constant, cosine, plateau, step"]),
    (["--momentum", "0.5"], ["momentum 0.5 applies to optimizer 'sgd', not 'adam'"]),
    (["--optimizer", "sgd", "--momentum", "1"], ["momentum must be in [0, 1), got 1.0"]),
    (["--lr-gamma", "0.5"], ["lr_gamma 0.5 applies to lr_schedule 'step' or 'plateau', not 'constant'"]),
    (["--lr-schedule", "plateau", "--lr-gamma", "1.5"], ["lr_gamma must be in (0, 1), got 1.5"]),
    (["--lr-schedule", "plateau", "--lr-patience", "-1"], ["lr_patience must be a non-negative integer"]),
    (["--lr-schedule", "cosine", "--lr-min", "0.01"], ["lr_min 0.01 must be below lr 0.001"]),
    (["--log", "csv,foo"], ["unknown log 'foo'; choose from: csv, tensorboard"]),
])
def test_bad_training_controls_are_one_line_errors(tmp_path, capsys, argv, fragments):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--epochs", "1", *argv]) == 2
    err = _one_line_error(capsys)
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not run.exists()


def test_resume_refuses_new_training_controls(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--optimizer", "sgd", "--log", "csv"]) == 2
    assert "drop --optimizer, --log" in _one_line_error(capsys)


@pytest.mark.parametrize("content", [bytes(range(128, 256)), b"a,b\n1,2\n"], ids=["not-utf8", "foreign"])
def test_resume_refuses_a_log_csv_it_did_not_write(tmp_path, capsys, content):
    run = tmp_path / "run"
    tiny = ["--latent-dim", "2", "--hidden-dims", "16", "--eval-samples", "2", "--no-progress"]
    assert main(["train", "--out", str(run), "--epochs", "1", "--log", "csv", *tiny]) == 0
    (run / "log.csv").write_bytes(content)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "log.csv' is not a training log pyro-vae wrote" in err
    assert (run / "log.csv").read_bytes() == content


# --------------------------------------------------------------------------- subnormal floats


def _is_flushed() -> bool:
    """Whether this thread's CPU treats subnormal floats as zero now."""
    return (torch.tensor([1e-39], dtype=torch.float32) * 2).item() == 0.0


class _FlushProbe(Callback):
    def __init__(self):
        self.during = []

    def on_step_end(self, model, state, info):
        self.during.append(_is_flushed())


@pytest.mark.parametrize("flush", [True, False])
def test_subnormals_are_flushed_while_training_on_the_cpu_and_not_after(flush):
    supported = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    if flush and not supported:
        pytest.skip("this CPU cannot flush subnormals")
    x = torch.bernoulli(torch.full((32, 16), 0.3), generator=torch.Generator().manual_seed(0))
    probe = _FlushProbe()
    fit(VAE(16, VAEConfig(latent_dim=2, hidden_dims=(8,))), x,
        TrainConfig(epochs=2, batch_size=16, progress=False, flush_denormal=flush), callbacks=[probe])
    assert probe.during == [flush] * 4
    assert not _is_flushed()  # IEEE arithmetic again once fit returns


def test_flush_denormal_must_be_a_bool_and_the_cli_can_keep_them(tmp_path):
    with pytest.raises(TypeError, match="flush_denormal"):
        TrainConfig(flush_denormal="no")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--hidden-dims", "8", "--latent-dim", "2",
                     "--eval-samples", "2", "--no-progress", "--keep-denormals"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["flush_denormal"] is False
    assert main(["train", "--resume", str(out), "--epochs", "2", "--keep-denormals"]) == 2
