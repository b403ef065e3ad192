"""model.save / pyro_vae.load_model: exact round trips for every registered model, weights-only
files, and one-line refusals of damaged, foreign and incomplete files."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pyro_vae import load_model
from pyro_vae.checkpoint import save_checkpoint
from pyro_vae.model_io import MODEL_FILE_KIND, MODEL_FORMAT, save_model
from pyro_vae.models import (
    CVAE,
    HVAE,
    M2,
    PPCA,
    VAE,
    HVAEConfig,
    M2Config,
    Mixture,
    MixtureConfig,
    PPCAConfig,
    VAEConfig,
)

SHAPE = (1, 8, 8)
CONV = {"arch": "conv", "conv_channels": (4,)}

# name -> a small model built in float64 (labels: the number of classes, or None)
BUILDERS = {
    "vae-mlp": lambda: VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,), prior="vamp", prior_components=3),
                           image_shape=SHAPE),
    "vae-conv": lambda: VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,), likelihood="gaussian", **CONV),
                            image_shape=SHAPE),
    "ae-conv": lambda: VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,), guide="delta", **CONV), image_shape=SHAPE),
    "cvae": lambda: CVAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,), prior="conditional", **CONV),
                         num_classes=3, image_shape=SHAPE),
    "hvae": lambda: HVAE(64, HVAEConfig(levels=2, latent_dim=2, hidden_dims=(8,), **CONV), image_shape=SHAPE),
    "m2": lambda: M2(64, M2Config(latent_dim=2, hidden_dims=(8,), **CONV), num_classes=3, image_shape=SHAPE),
    "mixture": lambda: Mixture(64, MixtureConfig(num_components=3)),
    "ppca": lambda: PPCA(64, PPCAConfig(latent_dim=2)),
}


def batch(n=5, dtype=torch.float64):
    return torch.bernoulli(torch.full((n, 64), 0.4, dtype=dtype)), torch.tensor([0, 1, 2, 0, 1][:n])


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_round_trip_reproduces_the_model_exactly(name, tmp_path):
    model = BUILDERS[name]().double()
    with torch.no_grad():  # move every weight off its initial value, so a fresh build would differ
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    x, y = batch()
    path = tmp_path / "model.pt"
    model.save(path)
    again = load_model(path)
    assert type(again) is type(model) and not again.training
    assert again.dtype == torch.float64 and again.image_shape == model.image_shape
    assert again.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    labels = y if getattr(model, "needs_labels", False) else None
    codes = model.encode(x, labels)
    assert torch.equal(again.encode(x, labels), codes)
    if hasattr(model, "decode"):
        assert torch.equal(again.decode(codes, labels), model.decode(codes, labels))


def test_the_file_is_weights_only_and_describes_the_model(tmp_path):
    path = tmp_path / "model.pt"
    BUILDERS["m2"]().save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == MODEL_FILE_KIND and raw["model_format"] == MODEL_FORMAT
    assert isinstance(raw["checksum"], str) and isinstance(raw["meta"], str)
    meta = json.loads(raw["meta"])
    assert meta["model"] == "m2" and meta["data_dim"] == 64 and meta["image_shape"] == [1, 8, 8]
    assert meta["num_classes"] == 3 and meta["dtype"] == "float32" and meta["user_networks"] == {}
    assert meta["model_config"]["conv_channels"] == [4] and set(meta["versions"]) >= {"pyro_vae", "torch"}
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, renamed


def test_loading_leaves_the_callers_random_state_alone(tmp_path):
    path = tmp_path / "model.pt"
    BUILDERS["vae-conv"]().save(path)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_model(path, device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_a_damaged_file_is_refused_in_one_line_naming_it(tmp_path):
    path = tmp_path / "model.pt"
    BUILDERS["vae-mlp"]().save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt.*truncated or corrupt") as err:
        load_model(truncated)
    assert "\n" not in str(err.value)
    # flip one bit of a weight where the file stores it: the zip reads, the checksum differs
    weight = next(iter(torch.load(path, weights_only=True)["state_dict"].values()))
    at = data.index(weight.numpy().tobytes()[:64]) + 5
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:])
    with pytest.raises(ValueError, match=r"flipped\.pt.* corrupt"):
        load_model(flipped)
    with pytest.raises(ValueError, match=r"missing\.pt.* does not exist"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"device 'tpu' is not a torch device"):
        load_model(path, device="tpu")


def test_foreign_files_are_refused(tmp_path):
    other = tmp_path / "checkpoint.pt"
    save_checkpoint(other, {"model": {"w": torch.ones(2)}})  # a run's checkpoint, say
    with pytest.raises(ValueError, match=r"checkpoint\.pt' is not a saved pyro-vae model"):
        load_model(other)
    plain = tmp_path / "plain.pt"
    torch.save({"a": 1}, plain)
    with pytest.raises(ValueError, match=r"plain\.pt"):
        load_model(plain)
    unknown = tmp_path / "unknown.pt"
    meta = {"model": "nope", "model_config": {}, "data_dim": 4, "image_shape": [1, 2, 2], "num_classes": None,
            "dtype": "float32", "versions": {}, "plugins": [{"module": "my_models"}], "user_networks": {}}
    save_checkpoint(unknown, {"kind": MODEL_FILE_KIND, "model_format": MODEL_FORMAT, "meta": json.dumps(meta),
                              "state_dict": {}})
    with pytest.raises(ValueError, match=r"'nope', which is not registered; .*plug-in\(s\) my_models: load them"):
        load_model(unknown)
    meta.update(model="vae", data_dim=-4)
    save_checkpoint(unknown, {"kind": MODEL_FILE_KIND, "model_format": MODEL_FORMAT, "meta": json.dumps(meta),
                              "state_dict": {}})
    with pytest.raises(ValueError, match=r"malformed meta entry"):
        load_model(unknown)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    model = BUILDERS["vae-conv"]()
    save_model(model, path)
    raw = torch.load(path, weights_only=True)
    state = raw["state_dict"]
    state.pop(next(iter(state)))
    save_checkpoint(path, {k: v for k, v in raw.items() if k not in ("format_version", "checksum")})
    with pytest.raises(ValueError, match=r"weights do not fit the model built from it \(.*Missing key"):
        load_model(path)


def test_networks_of_ones_own_are_asked_for_and_only_those(tmp_path):
    decoder = nn.Sequential(nn.Linear(2, 64), nn.Unflatten(1, (1, 8, 8)))
    model = VAE(64, VAEConfig(latent_dim=2), image_shape=SHAPE, decoder=decoder)
    path = tmp_path / "model.pt"
    model.save(path)
    with pytest.raises(ValueError, match=r"was built with your own decoder \(Sequential\); pass decoder="):
        load_model(path)
    with pytest.raises(ValueError, match=r"uses the built-in encoder; pass no encoder"):
        load_model(path, encoder=nn.Flatten(), decoder=decoder)
    with pytest.raises(ValueError, match=r"network 'decoder' returned shape"):
        load_model(path, decoder=nn.Linear(2, 3))
    fresh = nn.Sequential(nn.Linear(2, 64), nn.Unflatten(1, (1, 8, 8)))
    again = load_model(path, decoder=fresh)
    assert torch.equal(fresh[0].weight, decoder[0].weight)  # the saved weights, in the module given
    z = torch.randn(3, 2)
    assert torch.equal(again.decode(z), model.decode(z))


def test_an_unregistered_model_class_is_not_saved(tmp_path):
    class Mine(VAE):
        pass

    with pytest.raises(TypeError, match=r"model class Mine is not registered"):
        Mine(4).save(tmp_path / "m.pt")
