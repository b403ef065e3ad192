"""Networks of the user's own passed to VAE/CVAE: the contract (images in, no leading dims),
the checks at construction, training, scoring and saving like the built-ins."""

from __future__ import annotations

import copy
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


# --------------------------------------------------------------------------- HVAE and M2


class Flat(nn.Module):
    """A built-in network on flat inputs, seen through the images contract: flattens the images
    (and appends the one-hot labels) before calling it, so its outputs equal the built-in's."""

    def __init__(self, net: nn.Module, split: bool = False, images: bool = True):
        super().__init__()
        self.net, self.split, self.images = net, split, images
        self.seen = []

    def forward(self, inputs, onehot=None):
        self.seen.append((tuple(inputs.shape), None if onehot is None else tuple(onehot.shape)))
        flat = inputs.flatten(1) if self.images else inputs
        if onehot is None:
            return self.net(flat)
        return self.net(flat, onehot) if self.split else self.net(torch.cat([flat, onehot], -1))


def _copy_the_rest(source, target, user: tuple[str, ...]) -> None:
    """Load ``source``'s weights into ``target`` for every module but the user's networks."""
    state = {k: v for k, v in source.state_dict().items() if k.split(".")[0] not in user}
    missing, unexpected = target.load_state_dict(state, strict=False)
    assert not unexpected and all(k.split(".")[0] in user for k in missing)


def test_hvae_with_its_own_networks_as_copies_of_the_built_ins_scores_the_same():
    from pyro_vae.models import HVAE, HVAEConfig

    config = HVAEConfig(levels=2, latent_dim=2, hidden_dims=(8,))
    torch.manual_seed(0)
    built_in = HVAE(64, config, image_shape=(1, 8, 8)).double()
    encoder = Flat(copy.deepcopy(built_in.encoder.net))
    decoder = Flat(copy.deepcopy(built_in.decoder), images=False)
    mine = HVAE(64, config, image_shape=(1, 8, 8), encoder=encoder, decoder=decoder).double()
    assert mine.user_networks == ("encoder", "decoder")
    _copy_the_rest(built_in, mine, ("encoder", "decoder"))
    x = torch.bernoulli(torch.full((5, 64), 0.3, dtype=torch.float64))
    encoder.seen.clear(), decoder.seen.clear()
    torch.manual_seed(1)
    expected = log_importance_weights(built_in, x, num_samples=4)
    torch.manual_seed(1)
    torch.testing.assert_close(log_importance_weights(mine, x, num_samples=4), expected, rtol=0, atol=1e-10)
    assert encoder.seen == [((5, 1, 8, 8), None)]
    assert decoder.seen == [((20, 4), None)]  # z_1 of the 4 x 5 samples, folded; 4 = 2 * latent_dim


def test_m2_with_its_own_networks_as_copies_of_the_built_ins_scores_the_same():
    from pyro_vae.inference.evaluate import elbo, log_likelihood
    from pyro_vae.models import M2, M2Config

    config = M2Config(latent_dim=2, hidden_dims=(8,))
    torch.manual_seed(0)
    built_in = M2(64, config, num_classes=3, image_shape=(1, 8, 8)).double()
    nets = {"classifier": Flat(copy.deepcopy(built_in.classifier)),
            "encoder": Flat(copy.deepcopy(built_in.encoder), split=True),
            "decoder": Flat(copy.deepcopy(built_in.decoder), split=True, images=False)}
    mine = M2(64, config, num_classes=3, image_shape=(1, 8, 8), **nets).double()
    assert mine.user_networks == ("classifier", "encoder", "decoder")
    _copy_the_rest(built_in, mine, tuple(nets))
    x = torch.bernoulli(torch.full((5, 64), 0.3, dtype=torch.float64))
    for score in (lambda m: elbo(m, x, num_samples=3).per_example,
                  lambda m: log_likelihood(m, x, num_samples=6).per_example):
        torch.manual_seed(2)
        expected = score(built_in)
        torch.manual_seed(2)
        torch.testing.assert_close(score(mine), expected, rtol=0, atol=1e-10)
    for name, net in nets.items():  # never a leading enumeration or sample dimension
        assert all(len(images) in (2, 4) and (onehot is None or len(onehot) == 2) for images, onehot in net.seen), name
    assert all(images[0] == onehot[0] for images, onehot in nets["encoder"].seen)  # one label per image


def test_m2_and_hvae_networks_train_save_and_are_asked_for_again(digits, tmp_path):
    from pyro_vae.models import HVAE, M2, HVAEConfig, M2Config

    hvae = HVAE(64, HVAEConfig(levels=2, latent_dims=(LATENT, LATENT)), image_shape=(1, 8, 8),
                encoder=Encoder(), decoder=Decoder(flat=True))
    with pytest.raises(ValueError, match=r"network 'decoder' failed on a test batch of codes"):
        HVAE(64, HVAEConfig(levels=2, latent_dim=LATENT), image_shape=(1, 8, 8), decoder=Decoder())  # z_1: 6 wide
    m2 = M2(64, M2Config(latent_dim=LATENT, hidden_dims=(16,)), num_classes=10, image_shape=(1, 8, 8),
            classifier=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), encoder=Encoder(num_classes=10),
            decoder=Decoder(num_classes=10))
    m2.init_from_data(digits.x_train, digits.y_train)
    for model, builders in ((hvae, {"encoder": Encoder, "decoder": lambda: Decoder(flat=True)}),
                            (m2, {"classifier": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
                                  "encoder": lambda: Encoder(num_classes=10),
                                  "decoder": lambda: Decoder(num_classes=10)})):
        result = fit(model, digits, TrainConfig(epochs=2, batch_size=128, progress=False, eval_every=0))
        assert all(math.isfinite(v) for h in result.history for k, v in h.items() if k.startswith("train_"))
        path = tmp_path / f"{type(model).__name__}.pt"
        model.save(path)
        missing = next(iter(builders))
        with pytest.raises(ValueError, match=rf"built with your own {missing} .*; pass {missing}="):
            load_model(path, **{k: b() for k, b in builders.items() if k != missing})
        again = load_model(path, **{k: b() for k, b in builders.items()})
        model.eval()
        x = digits.x_test[:7]
        assert torch.equal(again.encode(x), model.encode(x))
