"""Convolutional networks, the folding of leading sample dimensions, and conv models scored by
every objective and by the importance-sampled log-likelihood (against a per-sample loop)."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.data import DataSplits
from pyro_vae.inference import TrainConfig, evaluate, fit, log_importance_weights
from pyro_vae.inference.importance import _log_weights_and_sites
from pyro_vae.inference.objectives import OBJECTIVES, build_objective
from pyro_vae.models import CVAE, HVAE, M2, VAE, FoldLeading, HVAEConfig, M2Config, VAEConfig, fold_leading
from pyro_vae.models.adapters import ImageOutput, conv_decoder
from pyro_vae.models.conv import ConvDecoder, ConvEncoder, ConvTranspose2d, grid_shape, padded_size

SMALL = {"latent_dim": 3, "hidden_dims": (16,), "arch": "conv", "conv_channels": (4, 8)}


def conv_vae(image_shape=(1, 8, 8), **options):
    return VAE(math.prod(image_shape), VAEConfig(**{**SMALL, **options}), image_shape=image_shape)


# ------------------------------------------------------------------ folding


def test_fold_leading_equals_a_loop_over_the_leading_dims():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 5, 6)).double()
    x = torch.randn(3, 7, 2, 4, 5, dtype=torch.float64)  # (K, batch, C, H, W)
    out = fold_leading(net, x, event_dims=3)
    assert out.shape == (3, 7, 6)
    for k in range(3):
        torch.testing.assert_close(out[k], net(x[k]), rtol=0, atol=1e-12)


def test_fold_leading_broadcasts_inputs_and_takes_unbatched_ones():
    seen = []

    def net(z, c):
        seen.append((tuple(z.shape), tuple(c.shape)))
        return torch.cat([z, c], -1)

    z, c = torch.randn(5, 4, 2), torch.randn(4, 3)  # (K, batch, d) codes, (batch, C) labels
    out = fold_leading(net, z, c)
    assert out.shape == (5, 4, 5) and seen == [((20, 2), (20, 3))]
    torch.testing.assert_close(out[2, :, 2:], c)
    assert fold_leading(nn.Linear(3, 2), torch.zeros(3)).shape == (2,)  # no leading dims at all
    assert FoldLeading(nn.Linear(3, 2))(torch.zeros(6, 5, 3)).shape == (6, 5, 2)


def test_fold_leading_refuses_a_network_that_drops_the_batch():
    with pytest.raises(ValueError, match="batch dimension first"):
        fold_leading(lambda x: x.sum(), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="event_dims"):
        fold_leading(nn.Identity(), torch.zeros(2, 3), event_dims=(1, 1))


# ------------------------------------------------------------------ conv networks and their sizes


def test_padding_rule():
    assert [padded_size(s, 2) for s in (8, 7, 28, 20, 1, 33)] == [8, 8, 28, 20, 4, 36]
    assert grid_shape((1, 28, 20), (32, 64)) == (64, 7, 5)
    assert grid_shape((3, 32, 32), (8, 16, 32)) == (32, 4, 4)


@pytest.mark.parametrize("image_shape", [(1, 8, 8), (1, 28, 28), (1, 28, 20), (3, 32, 32), (2, 7, 9),
                                         (1, 1, 5), (3, 12, 12)])
@pytest.mark.parametrize("channels", [(4,), (4, 8), (2, 4, 8)])
def test_conv_networks_fit_any_image_size(image_shape, channels):
    c, h, w = image_shape
    enc = ConvEncoder(image_shape, channels, (8,), out_dim=6, extra_dim=3)
    assert enc(torch.zeros(2, c, h, w), torch.zeros(2, 3)).shape == (2, 6)
    for p in (1, 2):
        dec = ConvDecoder(4, (8,), image_shape, out_channels=c * p, conv_channels=channels)
        assert dec(torch.zeros(2, 4)).shape == (2, c * p, h, w)
        assert conv_decoder(4, (), image_shape, p, channels)(torch.zeros(5, 2, 4)).shape == (5, 2, p * c * h * w)


def test_decoder_channels_are_grouped_by_parameter():
    """Channels [0, C) become the first D flat outputs (the location), [C, 2C) the next D."""
    out = torch.arange(2 * 2 * 3 * 3, dtype=torch.float64).reshape(1, 4, 3, 3)  # C=2, P=2

    class Fixed(nn.Module):  # a decoder that draws the same (C * P, H, W) image for every code
        def forward(self, z):
            return out.expand(z.shape[0], -1, -1, -1)

    flat = ImageOutput(Fixed(), (2, 3, 3), 2)(torch.zeros(1, 5))
    torch.testing.assert_close(flat[0, :18], out[0, :2].reshape(-1))
    torch.testing.assert_close(flat[0, 18:], out[0, 2:].reshape(-1))


def test_conv_vae_of_a_heteroscedastic_likelihood_decodes_means():
    vae = conv_vae((3, 12, 12), likelihood="gaussian-heteroscedastic").double()
    assert vae.decode(torch.zeros(4, 3, dtype=torch.float64)).shape == (4, 432)
    assert vae.decoder(torch.zeros(4, 3, dtype=torch.float64)).shape == (4, 864)


# ------------------------------------------------------------------ configuration


def test_config_errors_name_the_field_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown arch 'cnn'; choose from: conv, mlp"):
        VAEConfig(arch="cnn")
    with pytest.raises(ValueError, match=r"conv_channels must hold at least one"):
        HVAEConfig(arch="conv", conv_channels=())
    with pytest.raises(ValueError, match=r"conv_channels must contain positive integers only, got \[8, 0\]"):
        M2Config(arch="conv", conv_channels=(8, 0))
    with pytest.raises(ValueError, match=r"arch 'conv' needs the image shape.*got None"):
        VAE(64, VAEConfig(arch="conv"))
    with pytest.raises(ValueError, match=r"image_shape \(1, 8, 9\) holds 72 values but data_dim is 64"):
        VAE(64, VAEConfig(arch="conv"), image_shape=(1, 8, 9))
    with pytest.raises(ValueError, match=r"image_shape must be three positive ints"):
        VAE(64, image_shape=(8, 8))
    assert VAE(64).image_shape == (1, 1, 64)  # MLPs need no shape
    assert VAEConfig(arch="conv", conv_channels=[16]).conv_channels == (16,)


# ------------------------------------------------------------------ training and scoring


def test_conv_vae_elbo_is_finite_and_decreases_on_digits(digits):
    pyro.set_rng_seed(0)
    vae = conv_vae().double()
    x = digits.x_train[:64].double()
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    objective = build_objective("elbo")
    losses = []
    with vae.optimized_by_torch():
        for _ in range(25):
            optimizer.zero_grad()
            loss = objective.loss(vae, x, None) / x.shape[0]
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, losses  # nats per example


def test_conv_vae_on_three_channel_images():
    pyro.set_rng_seed(1)
    x = torch.bernoulli(torch.rand(40, 3 * 12 * 12))  # 3-channel 12 x 12 binary images

    data = DataSplits(name="rgb", image_shape=(3, 12, 12), x_train=x, y_train=None, x_val=x[:0], y_val=None,
                   x_test=x[:8], y_test=None, num_classes=None, binarize="none")
    vae = conv_vae((3, 12, 12))
    result = fit(vae, data, TrainConfig(epochs=2, batch_size=20, progress=False, eval_every=0))
    assert len(result.history) == 2 and all(math.isfinite(h["train_elbo"]) for h in result.history)
    scores = evaluate(vae, x[:8], num_samples=4)
    assert math.isfinite(scores["log_likelihood"]) and math.isfinite(scores["elbo"])
    assert -432 * math.log(2) - 50 < scores["elbo"] < 0  # about a coin flip per pixel after two epochs
    assert vae.sample(5).shape == (5, 432) and vae.reconstruct(x[:3]).shape == (3, 432)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_every_objective_scores_a_conv_vae(objective):
    vae = conv_vae().double()
    x = torch.bernoulli(torch.full((6, 64), 0.3, dtype=torch.float64))
    loss = build_objective(objective, particles=3).loss(vae, x, None)
    loss.backward()
    assert math.isfinite(loss.item())
    assert vae.encoder.net.net.features.convs[0].weight.grad.abs().sum() > 0  # gradient reaches the convs


def test_importance_sampled_log_likelihood_equals_a_per_sample_loop():
    """log w from the vectorized plate (codes (K, batch, d) folded through the conv decoder)
    equals log p(z_k) + log p(x | z_k) - log q(z_k | x) computed one sample at a time."""
    vae = conv_vae((1, 7, 9), conv_channels=(4,)).double()
    x = torch.bernoulli(torch.full((5, 63), 0.4, dtype=torch.float64))
    k = 6
    log_w, (guide_sites, _) = _log_weights_and_sites(vae, x, None, k)
    z = guide_sites["z"]["value"]
    assert z.shape == (k, 5, 3) and log_w.shape == (k, 5)
    loc, scale = vae.encoder(x)
    normal = torch.distributions.Normal
    for i in range(k):
        zi = z[i]  # (batch, d): one code per example, no leading dimension
        logits = vae.decoder.net(zi).reshape(5, -1)  # the raw conv decoder, unfolded
        direct = (normal(0.0, 1.0).log_prob(zi).sum(-1)
                  + torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
                  - normal(loc, scale).log_prob(zi).sum(-1))
        torch.testing.assert_close(log_w[i], direct, rtol=1e-10, atol=1e-10)


def test_conv_models_score_with_leading_sample_dims():
    x = torch.bernoulli(torch.full((6, 64), 0.3))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    cvae = CVAE(64, VAEConfig(**SMALL, prior="vamp", prior_components=4), num_classes=3, image_shape=(1, 8, 8))
    assert log_importance_weights(cvae, x, y, num_samples=5).isfinite().all()
    assert cvae.sample(4, 2).shape == (4, 64)
    hvae = HVAE(64, HVAEConfig(levels=2, latent_dim=2, hidden_dims=(16,), arch="conv", conv_channels=(4,)),
                image_shape=(1, 8, 8))
    assert log_importance_weights(hvae, x, num_samples=5).shape == (5, 6)
    assert hvae.reconstruct(x).shape == (6, 64) and hvae.decode(torch.zeros(2, 3, 2)).shape == (2, 3, 64)
    m2 = M2(64, M2Config(latent_dim=2, hidden_dims=(16,), arch="conv", conv_channels=(4,)), num_classes=3,
            image_shape=(1, 8, 8))
    m2.eval()
    scores = evaluate(m2, x, num_samples=4)
    assert math.isfinite(scores["log_likelihood"])
    assert m2.analogies(x).shape == (6, 3, 64) and m2.classify(x).shape == (6, 3)


def test_conv_hvae_with_one_level_is_the_conv_vae():
    options = {"latent_dim": 3, "hidden_dims": (16,), "arch": "conv", "conv_channels": (4,)}
    pyro.set_rng_seed(3)
    vae = VAE(64, VAEConfig(**options), image_shape=(1, 8, 8)).double()
    pyro.set_rng_seed(3)
    hvae = HVAE(64, HVAEConfig(levels=1, **options), image_shape=(1, 8, 8)).double()
    x = torch.bernoulli(torch.full((4, 64), 0.5, dtype=torch.float64))
    torch.testing.assert_close(hvae.encode(x), vae.encode(x))
    torch.testing.assert_close(hvae.decode(vae.encode(x)), vae.decode(vae.encode(x)))


def test_cli_trains_a_conv_vae_on_digits(tmp_path):
    from pyro_vae.cli import main
    from pyro_vae.runs import load_run

    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--arch", "conv", "--conv-channels", "4,8", "--epochs", "1",
                 "--hidden-dims", "16", "--latent-dim", "2", "--eval-samples", "2", "--no-progress",
                 "--device", "cpu", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["arch"] == "conv" and config["model_config"]["conv_channels"] == [4, 8]
    run = load_run(out, "cpu")
    assert run.model.image_shape == (1, 8, 8)
    assert isinstance(run.model.decoder, ImageOutput)
    assert math.isfinite(json.loads((out / "metrics.json").read_text())["test"]["log_likelihood"])


@pytest.mark.parametrize("out_channels", [1, 3, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_transposed_convolution_is_torchs_whichever_kernel_runs(out_channels, dtype, monkeypatch):
    """The decoder's ConvTranspose2d (torch's own kernel for few output channels on the CPU,
    oneDNN's otherwise) against torch's functional one: values, gradients, the state dict."""
    import pyro_vae.models.conv as conv  # noqa: PLC0415

    torch.manual_seed(0)
    layer = conv.ConvTranspose2d(5, out_channels, kernel_size=4, stride=2, padding=1).to(dtype)
    assert set(layer.state_dict()) == {"weight", "bias"}  # checkpoints of either class load in the other
    kernels = []
    real = torch.ops.aten.slow_conv_transpose2d
    monkeypatch.setattr(torch.ops.aten, "slow_conv_transpose2d", lambda *a: kernels.append(1) or real(*a),
                        raising=False)
    x = torch.randn(3, 5, 7, 6, dtype=dtype, requires_grad=True)
    out = layer(x)
    assert bool(kernels) == (out_channels <= conv.NATIVE_KERNEL_MAX_CHANNELS)
    x_ref = x.detach().clone().requires_grad_()
    ref = F.conv_transpose2d(x_ref, layer.weight, layer.bias, stride=2, padding=1)
    torch.testing.assert_close(out, ref)
    grads = torch.autograd.grad(out.square().sum(), (x, layer.weight, layer.bias))
    ref_grads = torch.autograd.grad(ref.square().sum(), (x_ref, layer.weight, layer.bias))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    assert layer(torch.zeros(0, 5, 7, 6, dtype=dtype)).shape == (0, out_channels, 14, 12)  # empty: oneDNN's


def test_conv_decoders_use_the_layer_that_picks_its_kernel():
    dec = ConvDecoder(2, (8,), (1, 28, 28), out_channels=1, conv_channels=(4, 8))
    deconvs = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 2 and all(isinstance(m, ConvTranspose2d) for m in deconvs)


def test_the_transposed_convolution_scripts_traces_and_autocasts_as_torchs_does():
    """The kernel choice stays out of TorchScript, traced graphs and autocast: those see
    torch's functional transposed convolution."""
    import warnings  # noqa: PLC0415

    torch.manual_seed(0)
    layer, x = ConvTranspose2d(5, 1, kernel_size=4, stride=2, padding=1), torch.randn(2, 5, 7, 7)
    expected = F.conv_transpose2d(x, layer.weight, layer.bias, stride=2, padding=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still used
        torch.testing.assert_close(torch.jit.script(layer)(x), expected)
        torch.jit.script(ConvDecoder(2, (8,), (1, 28, 28), out_channels=1, conv_channels=(4, 8)))
        traced = torch.jit.trace(layer, x)
    assert traced(torch.zeros(0, 5, 7, 7)).shape == (0, 1, 14, 14)  # no choice baked in for non-empty input
    graph = torch.fx.symbolic_trace(ConvDecoder(2, (8,), (1, 28, 28), out_channels=1, conv_channels=(4, 8)),
                                    concrete_args={"extra": None})
    assert graph(torch.zeros(3, 2)).shape == (3, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    assert layer(x, output_size=[15, 15]).shape == nn.ConvTranspose2d.forward(layer, x, output_size=[15, 15]).shape
