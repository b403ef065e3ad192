"""Networks of the user's own passed to VAE/CVAE: the contract (images in, no leading dims),
the checks at construction, training, scoring and saving like the built-ins."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pyro_vae import load_model
from pyro_vae.inference import TrainConfig, evaluate, fit, log_importance_weights
from pyro_vae.models import CVAE, VAE, VAEConfig

LATENT = 3


class Encoder(nn.Module):
    """Images (N, 1, 8, 8) -> (N, 2 * LATENT), recording the shapes it was given."""

    def __init__(self, num_classes: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)  # (N, 4, 4, 4)
        self.norm = nn.BatchNorm2d(4)
        self.out = nn.Linear(64 + num_classes, 2 * LATENT)
        self.seen = []

    def forward(self, images, onehot=None):
        self.seen.append((tuple(images.shape), None if onehot is None else tuple(onehot.shape)))
        h = torch.relu(self.norm(self.conv(images))).flatten(1)
        return self.out(h if onehot is None else torch.cat([h, onehot], -1))


class Decoder(nn.Module):
    """Codes (N, LATENT) -> images (N, 1, 8, 8) (or flat (N, 64) with ``flat=True``)."""

    def __init__(self, num_classes: int = 0, flat: bool = False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(LATENT + num_classes, 32), nn.ReLU(), nn.Linear(32, 64))
        self.flat = flat
        self.seen = []

    def forward(self, z, onehot=None):
        self.seen.append(tuple(z.shape))
        out = self.net(z if onehot is None else torch.cat([z, onehot], -1))
        return out if self.flat else out.reshape(-1, 1, 8, 8)


def user_vae(**nets):
    return VAE(64, VAEConfig(latent_dim=LATENT, hidden_dims=(16,)), image_shape=(1, 8, 8), **nets)


def test_user_networks_see_images_and_codes_without_leading_dims():
    enc, dec = Encoder(), Decoder()
    vae = user_vae(encoder=enc, decoder=dec)
    assert vae.user_networks == ("encoder", "decoder")
    enc.seen.clear(), dec.seen.clear()
    x = torch.bernoulli(torch.full((5, 64), 0.3))
    log_w = log_importance_weights(vae, x, num_samples=7)  # codes (7, 5, 3) in the model
    assert log_w.shape == (7, 5) and log_w.isfinite().all()
    assert enc.seen == [((5, 1, 8, 8), None)]
    assert dec.seen == [(35, LATENT)]  # the 7 x 5 codes folded into one batch


def test_a_flat_decoder_output_is_accepted_too():
    vae = user_vae(decoder=Decoder(flat=True))
    assert vae.user_networks == ("decoder",)
    assert vae.decode(torch.zeros(2, 4, LATENT)).shape == (2, 4, 64)


def test_user_networks_train_with_fit_score_and_save(digits, tmp_path):
    vae = user_vae(encoder=Encoder(), decoder=Decoder())
    result = fit(vae, digits, TrainConfig(epochs=2, batch_size=128, progress=False, eval_every=0))
    first, last = (h["train_elbo"] for h in (result.history[0], result.history[-1]))
    assert math.isfinite(last) and last > first  # the ELBO went up
    scores = evaluate(vae, digits.x_test[:50], num_samples=5)
    assert math.isfinite(scores["log_likelihood"])
    path = tmp_path / "model.pt"
    vae.save(path)
    with pytest.raises(ValueError, match=r"built with your own encoder \(Encoder\); pass encoder="):
        load_model(path, decoder=Decoder())
    again = load_model(path, encoder=Encoder(), decoder=Decoder())
    vae.eval()
    x = digits.x_test[:9]
    assert torch.equal(again.encode(x), vae.encode(x))
    assert torch.equal(again.decode(vae.encode(x)), vae.decode(vae.encode(x)))


def test_cvae_networks_get_the_one_hot_labels():
    enc, dec = Encoder(num_classes=4), Decoder(num_classes=4)
    cvae = CVAE(64, VAEConfig(latent_dim=LATENT), num_classes=4, image_shape=(1, 8, 8), encoder=enc, decoder=dec)
    enc.seen.clear(), dec.seen.clear()
    x, y = torch.bernoulli(torch.full((6, 64), 0.3)), torch.tensor([0, 1, 2, 3, 0, 1])
    assert log_importance_weights(cvae, x, y, num_samples=3).isfinite().all()
    assert enc.seen == [((6, 1, 8, 8), (6, 4))]
    assert cvae.sample(2, 3).shape == (2, 64)


def test_wrong_output_sizes_are_one_line_errors_naming_the_network():
    with pytest.raises(ValueError, match=r"network 'encoder' returned shape \(2, 5\) for images of shape "
                                         r"\(2, 1, 8, 8\); expected \(2, 6\)"):
        user_vae(encoder=nn.Sequential(nn.Flatten(), nn.Linear(64, 5)))
    with pytest.raises(ValueError, match=r"network 'decoder' returned shape \(2, 1, 7, 8\) for inputs of shape "
                                         r"\(2, 3\); expected \(2, 1, 8, 8\) or \(2, 64\)"):
        user_vae(decoder=nn.Sequential(nn.Linear(LATENT, 56), nn.Unflatten(1, (1, 7, 8))))
    with pytest.raises(ValueError, match=r"expected \(2, 2, 8, 8\) or \(2, 128\) \(2 parameter"):
        VAE(64, VAEConfig(latent_dim=LATENT, likelihood="gaussian-heteroscedastic"), image_shape=(1, 8, 8),
            decoder=Decoder())
    with pytest.raises(ValueError, match=r"network 'encoder' failed on a test batch of images \(RuntimeError: "):
        user_vae(encoder=nn.Sequential(nn.Flatten(), nn.Linear(10, 6)))
    with pytest.raises(TypeError, match=r"encoder must be a Module, got function"):
        user_vae(encoder=lambda images: images)


def test_the_construction_check_leaves_the_network_as_it_was():
    enc = Encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    user_vae(encoder=enc)
    assert enc.training
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # no batch-norm update


def test_float64_user_networks():
    vae = user_vae(encoder=Encoder().double(), decoder=Decoder().double())
    assert vae.dtype == torch.float64  # built-in parts left in float32 would mix: call .double() on the model
    vae.double()
    x = torch.bernoulli(torch.full((3, 64), 0.5))  # float32 input, moved to the model's dtype
    assert vae.reconstruct(x).dtype == torch.float64
