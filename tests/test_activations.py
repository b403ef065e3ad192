"""The ``activation`` option of the built-in networks: gated linear units against a hand
computation, the split first layers of HVAE and M2 against the same network on concatenated
inputs, ReLU networks unchanged by the option, and every model trained, saved and reloaded
with each activation, from the API and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from pyro_vae import TrainConfig, fit, load_model
from pyro_vae.cli import main
from pyro_vae.data import DataSplits
from pyro_vae.models import CVAE, HVAE, M2, VAE, HVAEConfig, M2Config, VAEConfig
from pyro_vae.models.hvae import _JointEncoder
from pyro_vae.models.m2 import _LabelledNet
from pyro_vae.models.nets import ACTIVATIONS, MLP
from tests.conftest import TINY_TRAIN_ARGS

SHAPE = (1, 8, 8)
CONV = {"arch": "conv", "conv_channels": (4,)}


def test_a_gated_mlp_is_values_times_sigmoid_gates_layer_by_layer():
    torch.manual_seed(0)
    net = MLP(5, (4, 3), 2, activation="gated").double()
    x = torch.randn(7, 5, dtype=torch.float64)
    h = x
    for layer, width in ((net[0], 4), (net[2], 3)):
        pre = h @ layer.weight.T + layer.bias  # (7, 2 * width): values, then gates
        assert pre.shape[-1] == 2 * width
        h = pre[:, :width] * torch.sigmoid(pre[:, width:])
    expected = h @ net[4].weight.T + net[4].bias
    torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation, function", [("relu", torch.relu), ("elu", nn.functional.elu),
                                                  ("tanh", torch.tanh)])
def test_elementwise_activations_sit_between_the_linear_maps(activation, function):
    net = MLP(5, (4,), 2, activation=activation).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.testing.assert_close(net(x), net[2](function(net[0](x))), rtol=0, atol=0)


def test_relu_networks_draw_the_weights_they_drew_before_the_option():
    torch.manual_seed(3)
    old = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    torch.manual_seed(3)
    new = MLP(6, (5, 4), 2)
    assert [type(m) for m in new] == [type(m) for m in old]
    for (key, value), (old_key, old_value) in zip(new.state_dict().items(), old.state_dict().items()):
        assert key == old_key and torch.equal(value, old_value)


def test_an_unknown_activation_is_one_line_naming_the_choices():
    for config in (VAEConfig, HVAEConfig, M2Config):
        with pytest.raises(ValueError, match=r"unknown activation 'sigmoid'; choose from: elu, gated, relu, tanh"):
            config(activation="sigmoid")
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(3, (2,), 1, activation="swish")


def _copy_split_into_concatenated(split_x: nn.Linear, split_other: nn.Linear, rest: nn.Module, joint: MLP):
    """Load the split first layer (x part with bias, other part without) and the layers after
    it (``rest``: the activation, then the MLP's layers) into ``joint``."""
    with torch.no_grad():
        joint[0].weight.copy_(torch.cat([split_x.weight, split_other.weight], dim=1))
        joint[0].bias.copy_(split_x.bias)
        assert len(joint) == 1 + len(rest)
        for target, source in zip(list(joint)[1:], list(rest)):
            assert type(target) is type(source)
            target.load_state_dict(source.state_dict())


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_hvae_split_layer_equals_the_network_on_concatenated_inputs(activation):
    torch.manual_seed(1)
    split = _JointEncoder(6, 3, (5, 4), 2, activation=activation).double()
    joint = MLP(9, (5, 4), 4, activation=activation).double()
    flat_rest = nn.Sequential(split.net[0], *split.net[1])
    _copy_split_into_concatenated(split.from_x, split.from_z, flat_rest, joint)
    x, z = torch.randn(7, 6, dtype=torch.float64), torch.randn(2, 7, 3, dtype=torch.float64)  # z: (K, batch, d)
    loc, scale = split(x, z)
    expected = joint(torch.cat([x.expand(2, 7, 6), z], -1))
    torch.testing.assert_close(loc, expected[..., :2], rtol=0, atol=1e-12)
    torch.testing.assert_close(scale, nn.functional.softplus(expected[..., 2:]) + 1e-5, rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", ["gated", "tanh"])
def test_m2_split_layer_equals_the_network_on_concatenated_inputs(activation):
    torch.manual_seed(2)
    split = _LabelledNet(6, 3, (5,), 4, activation=activation).double()
    joint = MLP(9, (5,), 4, activation=activation).double()
    flat_rest = nn.Sequential(split.net[0], *split.net[1])
    _copy_split_into_concatenated(split.from_u, split.from_y, flat_rest, joint)
    u = torch.randn(7, 6, dtype=torch.float64)
    onehot = nn.functional.one_hot(torch.arange(7) % 3, 3).double()
    torch.testing.assert_close(split(u, onehot), joint(torch.cat([u, onehot], -1)), rtol=0, atol=1e-12)


BUILDERS = {
    "vae": lambda act, **kw: VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8, 6), activation=act, **kw),
                                  image_shape=SHAPE),
    "cvae": lambda act, **kw: CVAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,), activation=act, **kw),
                                    num_classes=3, image_shape=SHAPE),
    "hvae": lambda act, **kw: HVAE(64, HVAEConfig(levels=2, latent_dim=2, hidden_dims=(8,), activation=act, **kw),
                                    image_shape=SHAPE),
    "m2": lambda act, **kw: M2(64, M2Config(latent_dim=2, hidden_dims=(8,), activation=act, **kw),
                                num_classes=3, image_shape=SHAPE),
}


def _data(n=24):
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((n, 64), 0.3, dtype=torch.float64), generator=g)
    y = torch.arange(n) % 3
    return DataSplits(name="toy", image_shape=SHAPE, x_train=x, y_train=y, x_val=x[:6], y_val=y[:6],
                   x_test=x[6:12], y_test=y[6:12], num_classes=3, binarize="none")


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_model_trains_and_round_trips_with_gated_layers(name, arch, tmp_path):
    options = CONV if arch == "conv" else {}
    model = BUILDERS[name]("gated", **options).double()
    relu_size = sum(p.numel() for p in BUILDERS[name]("relu", **options).parameters())
    assert sum(p.numel() for p in model.parameters()) > relu_size  # the gates are there
    assert any(isinstance(m, nn.GLU) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules() if arch == "mlp")
    if name == "m2":
        model.init_from_data(_data().x_train, _data().y_train)
    history = fit(model, _data(), TrainConfig(epochs=2, batch_size=8, seed=0, progress=False, dtype="float64")).history
    assert len(history) == 2 and all(math.isfinite(h["val_elbo"]) for h in history)
    model.eval()
    path = tmp_path / "model.pt"
    model.save(path)
    again = load_model(path)
    assert again.config.activation == "gated"
    x, y = _data().x_test, _data().y_test
    labels = y if getattr(model, "needs_labels", False) else None
    assert torch.equal(again.encode(x, labels), model.encode(x, labels))


def test_cli_trains_gated_networks_and_records_the_activation(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--activation", "gated", "--out", str(out), *TINY_TRAIN_ARGS]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["activation"] == "gated"
    from pyro_vae.runs import load_run
    assert any(isinstance(m, nn.GLU) for m in load_run(out, "cpu").model.modules())


@pytest.mark.parametrize("argv, message", [
    (["--activation", "sigmoid"], "unknown activation 'sigmoid'; choose from: elu, gated, relu, tanh"),
    (["--model", "ppca", "--activation", "gated"], "activation"),
])
def test_cli_refuses_a_bad_activation_in_one_line(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path / "run"), *TINY_TRAIN_ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_a_run_written_before_the_option_reads_as_relu():
    from pyro_vae.runconfig import RunConfig

    config = RunConfig.from_dict({"model": "vae", "model_config": {"latent_dim": 4, "hidden_dims": [8]}})
    assert config.model_config["activation"] == "relu"
    assert set(ACTIVATIONS) == {"elu", "gated", "relu", "tanh"}
