"""Every registered model's helpers take inputs on any device and in any floating dtype: a
float64 model encodes float32 images, and integer labels of any width are accepted."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pyro_vae.models import MODELS, GenerativeModel
from pyro_vae.models.base import INPUT_METHODS

SMALL = {"latent_dim": 2, "hidden_dims": (8,), "num_components": 3, "conv_channels": (4,)}


def build(name: str, arch: str | None = None, dtype=torch.float64):
    config_cls, model_cls = MODELS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    options = {k: v for k, v in SMALL.items() if k in fields}
    if arch is not None:
        options["arch"] = arch
    return model_cls(64, config_cls(**options), num_classes=3, image_shape=(1, 8, 8)).to(dtype).eval()


CASES = [(name, arch) for name in sorted(MODELS)
         for arch in (("mlp", "conv") if "arch" in {f.name for f in dataclasses.fields(MODELS[name][0])} else (None,))]


def defines(model, method: str) -> bool:
    """Whether ``model`` has ``method`` beyond the base class's default (which raises)."""
    return callable(getattr(model, method, None)) and getattr(type(model), method) is not getattr(
        GenerativeModel, method, None)


@pytest.mark.parametrize(("name", "arch"), CASES)
def test_helpers_move_inputs_to_the_models_dtype(name, arch):
    model = build(name, arch)
    x = torch.bernoulli(torch.full((4, 64), 0.5))  # float32
    labels = torch.tensor([0, 1, 2, 1], dtype=torch.int32)
    y = labels if model.needs_labels else None
    code = model.encode(x, y)
    assert code.dtype == torch.float64
    assert model.reconstruct(x, y).dtype == torch.float64
    if defines(model, "posterior"):
        q = model.posterior(x, y)
        assert q.mean.dtype == torch.float64 and q.batch_shape == (4,)
    if defines(model, "decode"):
        assert model.decode(code.float(), y).dtype == torch.float64
    sample_labels = labels if (model.needs_labels or model.sums_out_labels) else None
    assert model.sample(4, sample_labels).dtype == torch.float64
    if hasattr(model, "classify"):
        assert model.classify(x).dtype == torch.float64
        assert model.analogies(x).dtype == torch.float64
    if hasattr(model, "layer_posteriors"):
        assert model.layer_posteriors(x)[0]["loc"].dtype == torch.float64


def test_the_wrapped_helpers_keep_their_names_and_docs():
    from pyro_vae.models import HVAE, VAE

    assert VAE.encode.__name__ == "encode" and "The guide" in (VAE.posterior.__doc__ or "")
    assert getattr(HVAE.layer_posteriors, "moves_inputs", False)
    assert set(INPUT_METHODS) >= {"encode", "decode", "reconstruct", "posterior", "sample"}


def test_long_int_and_cpu_labels_give_the_same_codes():
    model = build("cvae", "conv")
    x = torch.bernoulli(torch.full((3, 64), 0.5, dtype=torch.float64))
    y = torch.tensor([2, 0, 1])
    assert torch.equal(model.encode(x, y.int()), model.encode(x, y.long()))
    assert torch.equal(model.encode(x.float(), y.to(torch.int16)), model.encode(x, y))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("name", "arch"), CASES)
def test_a_cuda_model_takes_cpu_inputs(name, arch):
    model = build(name, arch, dtype=torch.float32).to("cuda")
    x = torch.bernoulli(torch.full((4, 64), 0.5))
    labels = torch.tensor([0, 1, 2, 1])
    y = labels if model.needs_labels else None
    assert model.encode(x, y).device.type == "cuda"
    assert model.reconstruct(x, y).device.type == "cuda"
    sample_labels = labels if (model.needs_labels or model.sums_out_labels) else None
    assert model.sample(3 if sample_labels is None else 4, sample_labels).device.type == "cuda"
