"""Red-team checks of the shared network-model settings (pyro_vae/models/settings.py, used by
VAEConfig/HVAEConfig/M2Config and the VAE, CVAE, HVAE and M2 constructors) and of
benchmarks/reproduce.py --cost (benchmarks/reproduce_cost.py). Tiny models on the embedded
digits; every --cost run is --smoke and writes under tmp_path."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from pyro_vae import load_model
from pyro_vae.cli import main as cli_main
from pyro_vae.models import CVAE, HVAE, M2, VAE, HVAEConfig, M2Config, VAEConfig
from pyro_vae.models.settings import check_network_settings, set_up_network_model

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [VAEConfig, HVAEConfig, M2Config]
CONFIG_IDS = [c.__name__ for c in CONFIGS]

# ---------------------------------------------------------------------------------------------
# The shared settings: one line naming the field, the value and what is accepted
# ---------------------------------------------------------------------------------------------

#: (fields, error type, pattern the message must match): the value and the choices are named.
BAD_SETTINGS = [
    ({"hidden_dims": "8"}, TypeError, r"^hidden_dims must be a sequence of positive integers, got '8'$"),
    ({"hidden_dims": 8}, TypeError, r"^hidden_dims must be a sequence of positive integers, got 8$"),
    ({"hidden_dims": [16, 0]}, ValueError, r"^hidden_dims must contain positive integers only, got \[16, 0\]$"),
    ({"hidden_dims": (2.5,)}, ValueError, r"^hidden_dims must contain positive integers only, got \[2\.5\]$"),
    ({"likelihood": "poisson"}, ValueError,
     r"^unknown likelihood 'poisson'; choose from: bernoulli, continuous-bernoulli, gaussian, "),
    ({"likelihood": None}, ValueError, r"^unknown likelihood None; choose from: bernoulli"),
    ({"prior": "laplace"}, ValueError, r"^unknown prior 'laplace'; choose from: .*standard.*vamp"),
    ({"obs_scale": 0.1}, ValueError,
     r"^obs_scale=0\.1 does not apply to the bernoulli likelihood \(it applies to: gaussian\)"),
    ({"likelihood": "gaussian", "obs_scale": 0}, ValueError, r"^obs_scale must be a finite positive number, got 0$"),
    ({"likelihood": "gaussian", "obs_scale": float("inf")}, ValueError,
     r"^obs_scale must be a finite positive number, got inf$"),
    ({"likelihood": "gaussian", "obs_scale": "0.1"}, TypeError, r"^obs_scale must be a positive number, got '0\.1'"),
    ({"prior_components": 0}, ValueError, r"^prior_components must be a positive integer, got 0$"),
    ({"prior_components": 2.0}, TypeError, r"^prior_components must be a positive integer, got 2\.0 \(float\)$"),
    ({"arch": "cnn"}, ValueError, r"^unknown arch 'cnn'; choose from: conv, mlp$"),
    ({"conv_channels": []}, ValueError, r"^conv_channels must hold at least one channel count"),
    ({"conv_channels": (4,) * 9}, ValueError, r"^conv_channels holds at most 8 layers .*got 9$"),
    ({"conv_channels": "16"}, TypeError, r"^conv_channels must be a sequence of positive integers, got '16'$"),
    ({"activation": "swish"}, ValueError, r"^unknown activation 'swish'; choose from: elu, gated, relu, tanh$"),
    ({"activation": "ReLU"}, ValueError, r"^unknown activation 'ReLU'; choose from: elu, gated, relu, tanh$"),
]


@pytest.mark.parametrize("config_cls", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize(("fields", "error", "pattern"), BAD_SETTINGS,
                         ids=[f"{'+'.join(f)}={list(f.values())[-1]!r}" for f, _, _ in BAD_SETTINGS])
def test_a_bad_shared_setting_is_one_line_naming_field_value_and_choices(config_cls, fields, error, pattern):
    with pytest.raises(error, match=pattern) as caught:
        config_cls(**fields)
    assert type(caught.value) is error and "\n" not in str(caught.value)


def test_the_shared_settings_give_the_same_message_in_every_config():
    """One check for all: VAE, HVAE and M2 configs word every shared error alike."""
    for fields, _, _ in BAD_SETTINGS:
        messages = set()
        for config_cls in CONFIGS:
            with pytest.raises((TypeError, ValueError)) as caught:
                config_cls(**fields)
            messages.add(str(caught.value))
        assert len(messages) == 1, (fields, messages)


@pytest.mark.parametrize("config_cls", CONFIGS, ids=CONFIG_IDS)
def test_configs_normalize_lists_and_other_iterables_to_tuples(config_cls):
    config = config_cls(hidden_dims=[8, 4], conv_channels=[4, 8])
    assert config.hidden_dims == (8, 4) and type(config.hidden_dims) is tuple
    assert config.conv_channels == (4, 8) and type(config.conv_channels) is tuple
    again = config_cls(hidden_dims=(n for n in (3, 2)), conv_channels=range(2, 4))
    assert (again.hidden_dims, again.conv_channels) == ((3, 2), (2, 3))
    replaced = dataclasses.replace(config, hidden_dims=[5], conv_channels=[6])  # __post_init__ runs again
    assert (replaced.hidden_dims, replaced.conv_channels) == ((5,), (6,))
    with pytest.raises(ValueError, match=r"^unknown activation 'swish'"):
        dataclasses.replace(config, activation="swish")


def test_config_specific_fields_keep_their_own_checks():
    assert HVAEConfig(levels=2, latent_dims=[6, 3]).latent_dims == (6, 3)
    assert M2Config(alpha=2).alpha == 2.0 and type(M2Config(alpha=2).alpha) is float
    with pytest.raises(ValueError, match=r"^unknown guide 'gauss'; choose from: delta, normal, studentt$"):
        VAEConfig(guide="gauss")
    with pytest.raises(ValueError, match=r"^alpha must be a finite number >= 0, got -1$"):
        M2Config(alpha=-1)
    with pytest.raises(TypeError, match=r"^latent_dim must be a positive integer, got 2\.0 \(float\)$"):
        M2Config(latent_dim=2.0)


def test_check_network_settings_checks_and_normalizes_any_config_in_place():
    config = SimpleNamespace(hidden_dims=[8], likelihood="gaussian", prior="standard", obs_scale=0.5,
                             prior_components=3, arch="conv", conv_channels=[4, 4], activation="elu")
    assert check_network_settings(config) is None
    assert (config.hidden_dims, config.conv_channels) == ((8,), (4, 4))
    config.activation = "swish"
    with pytest.raises(ValueError, match=r"^unknown activation 'swish'"):
        check_network_settings(config)


@pytest.mark.parametrize(("field", "value"), [("likelihood", np.array("bernoulli")), ("arch", np.array("mlp")),
                                              ("activation", np.array(["relu", "tanh"]))])
def test_a_numpy_array_as_a_named_setting_is_refused_naming_the_field(field, value):
    with pytest.raises((TypeError, ValueError), match=rf"\b{field}\b"):
        VAE(16, VAEConfig(latent_dim=2, hidden_dims=(4,), **{field: value}))


# ---------------------------------------------------------------------------------------------
# The constructors: config type, data_dim, user networks, image shape
# ---------------------------------------------------------------------------------------------

BUILD = {
    "vae": (VAE, VAEConfig, {}),
    "cvae": (CVAE, VAEConfig, {"num_classes": 3}),
    "hvae": (HVAE, HVAEConfig, {}),
    "m2": (M2, M2Config, {"num_classes": 3}),
}


def _small(config_cls, **fields):
    sizes = {"latent_dims": (2, 2)} if config_cls is HVAEConfig else {"latent_dim": 2}
    return config_cls(**{"hidden_dims": (4,), **sizes, **fields})


@pytest.mark.parametrize("name", list(BUILD))
def test_a_config_of_the_wrong_type_is_one_type_error_naming_what_to_build(name):
    model_cls, config_cls, extra = BUILD[name]
    wrong = [VAEConfig(), HVAEConfig(), M2Config(), {"latent_dim": 2}, "vae", 3, config_cls]
    for config in wrong:
        if type(config) is config_cls:
            continue
        got = type(config).__name__
        with pytest.raises(TypeError) as caught:
            model_cls(16, config, **extra)
        assert str(caught.value) == (f"config must be a {config_cls.__name__}, got {got}; build one with "
                                     f"{config_cls.__name__}(...)")
    default = model_cls(16, None, **extra)
    assert type(default.config) is config_cls and default.config == config_cls()
    assert default.user_networks == () and default.image_shape == (1, 1, 16) and default.data_dim == 16


@pytest.mark.parametrize("name", list(BUILD))
def test_bad_data_dim_network_and_image_shape_are_one_line_naming_them(name):
    model_cls, config_cls, extra = BUILD[name]
    config = _small(config_cls)
    cases = [({"data_dim": 0}, ValueError, r"^data_dim must be a positive integer, got 0$"),
             ({"data_dim": 16.0}, TypeError, r"^data_dim must be a positive integer, got 16\.0 \(float\)$"),
             ({"data_dim": True}, TypeError, r"^data_dim must be a positive integer, got True \(bool\)$"),
             ({"encoder": "net"}, TypeError, r"^encoder must be a Module, got str; pass a torch\.nn\.Module"),
             ({"decoder": 3}, TypeError, r"^decoder must be a Module, got int; pass a torch\.nn\.Module"),
             ({"image_shape": (1, 4, 5)}, ValueError, r"^image_shape \(1, 4, 5\) holds 20 values but data_dim is 16"),
             ({"image_shape": "1,4,4"}, ValueError,
              r"^image_shape must be three positive ints \(C, H, W\), got '1,4,4'$")]
    if name == "m2":
        cases.append(({"classifier": [1]}, TypeError, r"^classifier must be a Module, got list"))
    for kwargs, error, pattern in cases:
        kwargs = {"data_dim": 16, **kwargs}
        with pytest.raises(error, match=pattern) as caught:
            model_cls(kwargs.pop("data_dim"), config, **extra, **kwargs)
        assert type(caught.value) is error and "\n" not in str(caught.value)
    conv = _small(config_cls, arch="conv", conv_channels=[4])
    with pytest.raises(ValueError, match=r"^arch 'conv' needs the image shape: pass image_shape=\(C, H, W\) "
                                         r"with C \* H \* W = data_dim = 16, got None$"):
        model_cls(16, conv, **extra)
    built = model_cls(16, conv, image_shape=[1, 4, 4], **extra)
    assert built.image_shape == (1, 4, 4) and built.config.conv_channels == (4,)


def test_set_up_network_model_sets_what_every_network_model_holds():
    holder = nn.Module()
    config = set_up_network_model(holder, 16, None, VAEConfig, [1, 4, 4], encoder=nn.Identity(), decoder=None,
                                  classifier=nn.Identity())
    assert type(config) is VAEConfig and holder.config is config
    assert (holder.data_dim, holder.user_networks, holder.image_shape) == (16, ("encoder", "classifier"), (1, 4, 4))
    with pytest.raises(TypeError, match=r"^config must be a M2Config, got VAEConfig; build one with M2Config"):
        set_up_network_model(nn.Module(), 16, VAEConfig(), M2Config, None)


class _Images(nn.Module):
    """Images (N, 1, 4, 4) [+ one-hot labels] -> (N, out)."""

    def __init__(self, out: int, labels: int = 0):
        super().__init__()
        self.lin = nn.Linear(16 + labels, out)

    def forward(self, images, onehot=None):
        h = images.flatten(1)
        return self.lin(h if onehot is None else torch.cat([h, onehot], -1))


class _Codes(nn.Module):
    """Codes (N, 2) [+ one-hot labels] -> flat pixels (N, 16)."""

    def __init__(self, labels: int = 0):
        super().__init__()
        self.lin = nn.Linear(2 + labels, 16)

    def forward(self, z, onehot=None):
        return self.lin(z if onehot is None else torch.cat([z, onehot], -1))


def _networks(name):
    labels = 3 if name in ("cvae", "m2") else 0
    nets = {"encoder": lambda: _Images(4, labels), "decoder": lambda: _Codes(labels)}
    if name == "m2":
        nets = {"classifier": lambda: _Images(3), **nets}
    return nets


@pytest.mark.parametrize("name", list(BUILD))
def test_user_networks_are_recorded_saved_and_asked_for_again(name, tmp_path):
    model_cls, config_cls, extra = BUILD[name]
    builders = _networks(name)
    config = _small(config_cls, hidden_dims=[4])  # a list: saved and loaded as the tuple
    torch.manual_seed(0)
    model = model_cls(16, config, image_shape=(1, 4, 4), **extra, **{k: b() for k, b in builders.items()})
    assert model.user_networks == tuple(builders)  # in the constructor's order
    path = tmp_path / f"{name}.pt"
    model.save(path)
    first = next(iter(builders))
    with pytest.raises(ValueError, match=rf"built with your own {first} \(_\w+\); pass {first}="):
        load_model(path, **{k: b() for k, b in builders.items() if k != first})
    again = load_model(path, **{k: b() for k, b in builders.items()})
    assert type(again) is model_cls and again.config == model.config and again.config.hidden_dims == (4,)
    assert again.user_networks == model.user_networks and again.image_shape == (1, 4, 4)
    state, loaded = model.state_dict(), again.state_dict()
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)


@pytest.mark.parametrize("name", list(BUILD))
def test_built_in_networks_with_list_settings_save_and_load(name, tmp_path):
    model_cls, config_cls, extra = BUILD[name]
    config = _small(config_cls, hidden_dims=[6, 4], arch="conv", conv_channels=[2, 3], activation="gated")
    model = model_cls(16, config, image_shape=[1, 4, 4], **extra)
    path = tmp_path / f"{name}.pt"
    model.save(path)
    again = load_model(path)
    assert again.config == model.config and again.config.conv_channels == (2, 3) and again.user_networks == ()
    state, loaded = model.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], loaded[k]) for k in state)
    with pytest.raises(ValueError, match=r"uses the built-in encoder; pass no encoder to load_model"):
        load_model(path, encoder=_Images(4))


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

TINY = ["--epochs", "1", "--no-progress", "--hidden-dims", "8", "--latent-dim", "2", "--eval-samples", "2",
        "--device", "cpu"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "hvae", "--activation", "swish"], "unknown activation 'swish'; choose from: elu, gated, relu, tanh"),
    (["--model", "m2", "--arch", "cnn"], "unknown arch 'cnn'; choose from: conv, mlp"),
    (["--model", "cvae", "--prior-components", "0"], "prior_components must be a positive integer, got 0"),
    (["--model", "vae", "--obs-scale", "0.1"], "obs_scale=0.1 does not apply to the bernoulli likelihood"),
    (["--model", "hvae", "--likelihood", "gaussian", "--obs-scale", "nan"],
     "obs_scale must be a finite positive number, got nan"),
    (["--model", "m2", "--likelihood", "poisson"], "unknown likelihood 'poisson'"),
    (["--model", "vae", "--arch", "conv", "--conv-channels", "1,1,1,1,1,1,1,1,1"],
     "conv_channels holds at most 8 layers"),
])
def test_cli_bad_model_settings_exit_2_with_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "--out", str(out), *TINY, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-vae: error: ") and message in err
    assert not out.exists()


@pytest.mark.parametrize("model", ["vae", "cvae", "hvae", "m2"])
def test_cli_trains_each_network_model_for_one_epoch(model, tmp_path, capsys):
    out = tmp_path / model
    assert cli_main(["train", "--model", model, "--out", str(out), *TINY, "--activation", "tanh"]) == 0
    assert json.loads((out / "config.json").read_text())["model_config"]["hidden_dims"] == [8]
    capsys.readouterr()


def test_cli_help_and_a_bad_setting_in_a_fresh_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shown = subprocess.run([sys.executable, "-m", "pyro_vae", "train", "--help"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and shown.stderr == ""
    for option in ("--activation", "--arch", "--conv-channels", "--prior-components", "--obs-scale"):
        assert option in shown.stdout
    bad = subprocess.run([sys.executable, "-m", "pyro_vae", "train", "--model", "m2", "--activation", "swish",
                          "--out", str(tmp_path / "run"), *TINY], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr == "pyro-vae: error: unknown activation 'swish'; choose from: elu, gated, relu, tanh\n"


# ---------------------------------------------------------------------------------------------
# benchmarks/reproduce.py --cost
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A private temporary folder for tempfile (what --smoke's mkdtemp would leave in /tmp)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def fake_measure(bench, monkeypatch, scratch):
    """Replace the measurement with a recorder (parse and write paths only: no training)."""
    calls = []

    def measure(names, **kwargs):
        calls.append({"names": names, **kwargs})
        return [{"name": n} for n in names]

    monkeypatch.setattr(bench, "measure_costs", measure)
    return calls


def _refused(bench, argv, capsys) -> str:
    with pytest.raises(SystemExit) as caught:
        bench.main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("argv", "message"), [
    (["--cost", "--smoke"], "--smoke needs --results PATH"),
    (["--cost", "--status", "--results", "R"], "--cost trains nothing into run directories"),
    (["--cost", "--max-epochs", "3", "--smoke", "--results", "R"], "--cost trains nothing into run directories"),
    (["--cost", "--runs-dir", "D", "--smoke", "--results", "R"], "--cost trains nothing into run directories"),
    (["--cost", "--smoke", "--results", "R", "--only", ""], "--only: unknown entry ''"),
    (["--cost", "--smoke", "--results", "R", "--only", " , "], "--only: unknown entry ' , '"),
    (["--cost", "--smoke", "--results", "R", "--only", "vae,VAMP"], "--only: unknown entry VAMP; choose from: vae,"),
    (["--cost", "--smoke", "--results", "R", "--eval-samples", "0"], "--eval-samples must be >= 1, got 0"),
    (["--cost", "--smoke", "--results", "R", "--threads", "-2"], "--threads must be >= 1, got -2"),
    (["--cost", "--smoke", "--results", "R", "--threads", "two"], "argument --threads: invalid int value: 'two'"),
    (["--cost", "--smoke", "--results", "R", "--eval-samples", "1e3"], "argument --eval-samples: invalid int"),
])
def test_cost_bad_options_exit_2_with_one_line_before_measuring(bench, fake_measure, scratch, argv, message,
                                                                 tmp_path, capsys):
    argv = [str(tmp_path / a) if a in ("R", "D") else a for a in argv]
    assert message in _refused(bench, argv, capsys)
    assert fake_measure == [] and [p.name for p in tmp_path.iterdir()] == ["scratch"]
    assert not any(scratch.iterdir())


def test_cost_passes_only_eval_samples_seed_and_threads_through(bench, fake_measure, tmp_path, capsys):
    path = tmp_path / "missing" / "deeper" / "cost.json"  # folders made as needed
    returned = bench.main(["--cost", "--smoke", "--only", " hvae , vae,,vae", "--eval-samples", "3", "--seed", "7",
                           "--threads", "1", "--device", "cpu", "--results", str(path)])
    (call,) = fake_measure
    assert call["names"] == ["vae", "hvae"]  # the table's order, once each
    assert (call["eval_samples"], call["seed"], call["dataset"], call["device"]) == (3, 7, "digits", "cpu")
    assert call["sizes"] == bench.SMOKE_COST_SIZES
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(returned))
    assert written["smoke"] is True and written["machine"]["threads"] == torch.get_num_threads() == 1
    assert "--eval-samples 3" in written["command"] and [e["name"] for e in written["entries"]] == ["vae", "hvae"]
    assert f"costs: {path}" in capsys.readouterr().out


def test_cost_measures_the_asked_k_and_entries_on_digits(bench, scratch, tmp_path, capsys):
    path = tmp_path / "cost.json"
    bench.main(["--cost", "--smoke", "--only", "iwae5,vae", "--eval-samples", "3", "--threads", "1",
                "--results", str(path)])
    rows = json.loads(path.read_text())["entries"]
    assert [r["name"] for r in rows] == ["vae", "iwae5"]
    for row in rows:
        m = row["measured"]
        assert m["eval_samples"] == 3 and m["eval_images"] == bench.SMOKE_COST_SIZES["eval_images"]
        assert all(v > 0 for v in (m["step_seconds"], m["val_seconds"], m["eval_seconds"], row["epoch_seconds"]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == bench.COST_HEADER and lines[1].startswith("vae ") and lines[2].startswith("iwae5 ")
    assert "at K = 3 in" in lines[1]


def test_cost_smoke_leaves_no_temporary_runs_directory(bench, fake_measure, scratch, tmp_path):
    bench.main(["--cost", "--smoke", "--only", "vae", "--results", str(tmp_path / "cost.json")])
    assert fake_measure and list(scratch.iterdir()) == []


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_cost_results_that_cannot_be_written_exit_2_before_measuring(bench, fake_measure, where, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    results = tmp_path / "file" / "cost.json" if where == "under_a_file" else tmp_path
    line = _refused(bench, ["--cost", "--smoke", "--only", "vae", "--results", str(results)], capsys)
    assert str(results) in line and fake_measure == []


@pytest.mark.parametrize(("option", "value", "names"), [
    ("--seed", "-1", "seed"), ("--device", "tpu", "device"), ("--eval-samples", str(2**64), "eval_samples"),
    ("--threads", str(10**11), "threads"),
])
def test_cost_out_of_range_values_exit_2_with_one_line(bench, scratch, option, value, names, tmp_path, capsys):
    line = _refused(bench, ["--cost", "--smoke", "--only", "vae", option, value, "--results",
                            str(tmp_path / "cost.json")], capsys)
    assert names.replace("_", "-") in line or names in line
    assert not (tmp_path / "cost.json").exists()
