"""The semi-supervised M2 model (Kingma, Rezende, Mohamed & Welling, "Semi-supervised learning
with deep generative models", NeurIPS 2014).

Generative story: ``z ~ p(z)`` (the prior plug-in, standard normal by default), ``y ~ Cat(1/C)``,
``x ~ p(x | decoder(z, onehot(y)))`` (the likelihood plug-in). Guide: a classifier
``q(y | x)`` and a Gaussian encoder ``q(z | x, y)`` on ``(x, onehot(y))``. Every site lies in
the data plate.

Labels: ``y`` is a LongTensor in which ``-1`` marks an unlabelled example (``y=None``: all
unlabelled). The model's label site uses ``obs_mask``, so Pyro splits it into ``y_observed``
(labelled rows, scored at their label) and ``y_unobserved`` (the others); the guide draws
``y_unobserved`` from ``q(y | x)`` with ``infer={"enumerate": "parallel"}``, masked to the
unlabelled rows. Under ``TraceEnum_ELBO(max_plate_nesting=1)`` the label of an unlabelled
example is summed out exactly; under the values enumerated (a leading dimension of size C) the
networks broadcast, as under the importance plate's leading sample dimension.

Classification term: in training mode (``self.training``) the model adds
``pyro.factor("classification", w * log q(y | x))`` on the labelled rows, with
``w = alpha * N / N_labelled``: summed over an epoch of uniform batches this is the paper's
``J^alpha = J + alpha' E_labelled[-log q(y | x)]`` with ``alpha' = alpha * N`` (``alpha = 0.1``
as in the paper). ``N`` and ``N_labelled`` are learned by :meth:`M2.init_from_data` and kept
as buffers, so a checkpoint carries them. In evaluation mode (``model.eval()``) there is no
factor: the evaluation scores the plain M2. (So under :func:`~pyro_vae.inference.fit` the
training curve includes that term; the validation/test ELBOs do not.) Batches are the
loop's uniform random slices of the training set, so labelled and unlabelled examples mix in
proportion; ``--labels-per-class N`` (:class:`~pyro_vae.data.DataConfig`) hides the rest.

Networks: with ``arch="conv"`` the classifier ``q(y | x)`` is the conv encoder
(:mod:`pyro_vae.models.conv`) ending in ``num_classes`` logits, ``q(z | x, y)`` reads ``x``
through conv features and a linear map (added to the label's), and the decoder's tail after
the sum of its code and label branches is the conv decoder.

Evaluation (:mod:`pyro_vae.inference.evaluate`): ``sums_out_labels`` tells it to score
``log p(x) = logsumexp_c [log p(y=c) + log p(x | y=c)]`` with the label summed exactly and ``z``
importance-sampled from ``q(z | x, c)``. Codes: ``encode(x)`` / ``posterior(x)`` use the
predicted label (argmax of ``q(y | x)``), never the true one, so the latent probe does not
read the label (``guide_reads_labels`` is False). ``decode(z, y)`` decodes with the labels
``y``; with ``y=None`` it returns ``E[x | z] = sum_c p(c) E[x | z, c]`` (z and y are
independent under the model).

Example
-------
>>> import pyro, torch
>>> from pyro.infer import SVI, TraceEnum_ELBO
>>> from pyro_vae.models.m2 import M2, M2Config
>>> m = M2(64, M2Config(latent_dim=2, hidden_dims=(32,)), num_classes=10)
>>> x = torch.bernoulli(torch.full((16, 64), 0.3))
>>> y = torch.tensor([3, -1] * 8)  # half the rows unlabelled
>>> m.init_from_data(x, y)
>>> svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-3}), TraceEnum_ELBO(max_plate_nesting=1))
>>> loss = svi.step(x, y)
>>> m.classify(x).shape  # log q(y | x)
torch.Size([16, 10])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from ..errors import check_positive_int
from .adapters import (
    DEFAULT_CONV_CHANNELS,
    conv_decoder,
    conv_encoder,
    conv_features,
    image_input,
    image_output,
)
from .base import GenerativeModel, data_plate
from .distributions import DiagonalNormal
from .likelihoods import build_likelihood
from .nets import MLP, activation_layer, pre_activation_width
from .priors import build_prior
from .settings import check_network_settings, set_up_network_model


@dataclass
class M2Config:
    """Settings of :class:`M2`.

    Parameters
    ----------
    latent_dim : int
        Size of the style code z.
    hidden_dims : tuple of int
        Hidden sizes of the classifier q(y | x) and the encoder q(z | x, y); the decoder
        p(x | z, y) mirrors them.
    likelihood : str
        A name in :data:`pyro_vae.models.likelihoods.LIKELIHOODS`.
    prior : str
        p(z), a name in :data:`pyro_vae.models.priors.PRIORS` (not a label-conditioned one).
    obs_scale : float or None
        Fixed standard deviation of a Gaussian likelihood (None: learned, where supported).
    prior_components : int
        Number of components of mixture-type priors.
    alpha : float
        Weight of the classification term, as a share of the number of training examples N:
        the paper's ``alpha = 0.1 N`` is ``alpha = 0.1``.
    arch : str
        ``mlp`` or ``conv``: the networks that read or write pixels (see the module docstring).
    conv_channels : tuple of int
        Channels of the stride-2 conv layers (read by ``arch="conv"`` only).
    activation : str
        Activation of the dense hidden layers, one of :data:`pyro_vae.models.nets.ACTIVATIONS`:
        ``relu`` (default), ``elu``, ``tanh``, or ``gated`` (gated linear units, the
        reference VampPrior code's dense layers).

    Example
    -------
    >>> M2Config(alpha=0.5, arch="conv", conv_channels=(16,)).conv_channels
    (16,)
    """

    latent_dim: int = 16
    hidden_dims: tuple[int, ...] = (256,)
    likelihood: str = "bernoulli"
    prior: str = "standard"
    obs_scale: float | None = None
    prior_components: int = 10
    alpha: float = 0.1
    arch: str = "mlp"
    conv_channels: tuple[int, ...] = DEFAULT_CONV_CHANNELS
    activation: str = "relu"

    def __post_init__(self):
        check_positive_int("latent_dim", self.latent_dim)
        check_network_settings(self)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        self.alpha = float(self.alpha)


class _LabelledNet(nn.Module):
    """An MLP on ``[u, onehot(y)]`` with its first layer split in two, so that ``u``
    ``(..., batch, d_u)`` and the one-hot labels ``(..., batch, C)`` (leading enumeration or
    importance-sample dimensions on either) are added by broadcasting.

    Conv variants: ``u_net(width)`` replaces the linear map of ``u`` (conv features of the
    pixels); ``tail(width, hidden_dims[1:])`` replaces the MLP after the sum (the conv decoder).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dims: tuple[int, ...], out_dim: int,
                 u_net=None, tail=None, activation: str = "relu"):
        super().__init__()
        width = hidden_dims[0] if hidden_dims else (out_dim if tail is None else in_dim)
        activated = bool(hidden_dims) or tail is not None  # an activation follows the split layer
        summed = pre_activation_width(width, activation) if activated else width  # the split layer's outputs
        self.from_u = nn.Linear(in_dim, summed) if u_net is None else u_net(summed)
        self.from_y = nn.Linear(num_classes, summed, bias=False)
        if tail is not None:
            self.net = nn.Sequential(activation_layer(activation), tail(width, hidden_dims[1:]))
        else:
            self.net = (nn.Sequential(activation_layer(activation), MLP(width, hidden_dims[1:], out_dim, activation))
                        if hidden_dims else nn.Identity())

    def forward(self, u: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.net(self.from_u(u) + self.from_y(onehot))  # (..., batch, out_dim)


class M2(GenerativeModel):
    """The M2 model: ``p(z) p(y) p(x | z, y)`` with guide ``q(y | x) q(z | x, y)``.

    Parameters
    ----------
    data_dim : int
        Number of pixels ``D``.
    config : M2Config
    num_classes : int
        Number of classes C; labels are integers in ``[0, C)``, ``-1`` for unlabelled rows.
    image_shape : tuple of int or None
        ``(C, H, W)`` of one example; None: ``(1, 1, D)``, which ``arch="conv"`` refuses.
    classifier, encoder, decoder : nn.Module or None
        Networks of your own in place of the built-in ones, under the VAE's contract
        (:class:`~pyro_vae.models.vae.VAE`; they never see leading enumeration or sample
        dimensions): ``classifier(images (N, C, H, W))`` returns the logits of q(y | x),
        ``(N, num_classes)``; ``encoder(images, onehot (N, num_classes))`` returns
        ``(N, 2 * latent_dim)``, q(z | x, y)'s location then raw scale;
        ``decoder(z (N, latent_dim), onehot)`` returns ``(N, C * P, H, W)`` or ``(N, P * D)``.

    Modules: ``classifier`` (logits of q(y | x)), ``encoder`` (q(z | x, y)), ``decoder``,
    ``prior``, ``likelihood``.
    """

    pyro_name = "m2"
    #: Labels are optional per example (-1: unlabelled); the loop passes them to model/guide.
    partial_labels = True
    #: The evaluation sums y out: log p(x) = logsumexp_c [log p(c) + log p(x | c)].
    sums_out_labels = True
    #: Training mode adds alpha * log q(y | x) of the labelled rows: the curve is not an ELBO.
    adds_training_terms = True

    def __init__(self, data_dim: int, config: M2Config | None = None, num_classes: int | None = None,
                 image_shape: tuple[int, int, int] | None = None, *, classifier: nn.Module | None = None,
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        super().__init__()
        if num_classes is None:
            raise ValueError(
                "model 'm2' learns from class labels but the data set has none (num_classes is "
                "None); use a labelled data set (unlabelled rows may have y = -1)")
        config = set_up_network_model(self, data_dim, config, M2Config, image_shape, classifier=classifier,
                                      encoder=encoder, decoder=decoder)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.latent_dim = config.latent_dim
        self.alpha = config.alpha
        conv = config.arch == "conv"
        hidden, c, shape, channels = config.hidden_dims, self.num_classes, self.image_shape, config.conv_channels
        act = config.activation
        if classifier is not None:
            self.classifier = image_input(classifier, shape, c, "classifier")
        elif conv:
            self.classifier = conv_encoder(shape, channels, hidden, c, name="classifier", activation=act)
        else:
            self.classifier = MLP(data_dim, hidden, c, act)
        u_net = (lambda width: conv_features(shape, channels, width)) if conv else None  # noqa: E731
        self.encoder = (image_input(encoder, shape, 2 * config.latent_dim, "encoder", (c,)) if encoder is not None
                        else _LabelledNet(data_dim, c, hidden, 2 * config.latent_dim, u_net=u_net, activation=act))
        self.likelihood = build_likelihood(config.likelihood, data_dim, obs_scale=config.obs_scale)
        p = self.likelihood.params_per_pixel

        def tail(width, rest):  # the conv decoder after the split layer
            return conv_decoder(width, rest, shape, p, channels, activation=act)

        self.decoder = (image_output(decoder, config.latent_dim, shape, p, "decoder", (c,)) if decoder is not None
                        else _LabelledNet(config.latent_dim, c, tuple(reversed(hidden)), data_dim * p,
                                          tail=tail if conv else None, activation=act))
        self.prior = build_prior(
            config.prior, config.latent_dim, num_components=config.prior_components,
            num_classes=num_classes, data_dim=data_dim, encoder=self._encode_predicted,
        )
        if self.prior.needs_labels:
            raise ValueError(f"prior {config.prior!r} is conditioned on the label; M2's p(z) is "
                             f"independent of y: choose an unconditional prior")
        self.register_buffer("class_logits", torch.zeros(c))  # p(y) uniform
        # N and N_labelled of the training data (init_from_data): the classification weight.
        # 0 until init_from_data: training with labels refuses to guess the weight.
        self.register_buffer("num_examples", torch.zeros(()))
        self.register_buffer("num_labelled", torch.zeros(()))

    # ------------------------------------------------------------------ pieces

    def _one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y.to(device=like.device, dtype=torch.long), self.num_classes).to(like.dtype)

    def _z_params(self, x, y):
        """``(loc, scale)`` of q(z | x, y), each ``(..., batch, latent_dim)``."""
        loc, raw = self.encoder(x, self._one_hot(y, x)).split(self.config.latent_dim, dim=-1)
        return loc, F.softplus(raw) + 1e-5

    def _labels(self, x, y):
        """``(observed mask (batch,), labels with -1 replaced by 0 (batch,))``."""
        if y is None:
            observed = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            return observed, torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        y = y.to(device=x.device, dtype=torch.long)
        observed = y >= 0
        return observed, y.clamp(min=0)

    @property
    def label_weight(self) -> torch.Tensor:
        """Weight of ``log q(y | x)`` per labelled example: ``alpha * N / N_labelled``.

        N and N_labelled are the training set's, recorded by :meth:`init_from_data` (which
        :func:`pyro_vae.runs.train_run` calls); without them the weight is refused, not guessed.
        """
        if not bool(self.num_examples > 0):
            raise ValueError("M2's classification weight alpha * N / N_labelled needs the training "
                             "set's counts: call model.init_from_data(x_train, y_train) before "
                             "training it (pyro_vae.runs.train_run does)")
        return self.alpha * self.num_examples / self.num_labelled.clamp(min=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """``log q(y | x)``, ``(..., batch, num_classes)``."""
        return F.log_softmax(self.classifier(x), dim=-1)

    def _encode_predicted(self, x, y=None):
        """q(z | x, argmax q(y | x))'s ``(loc, scale)`` (also the VampPrior's encoder)."""
        return self._z_params(x, self.classify(x).argmax(-1))

    # ------------------------------------------------------------------ model and guide

    def model(self, x, y=None):
        self._register()
        observed, labels = self._labels(x, y)
        prior = self.prior()
        with data_plate(x):
            z = pyro.sample("z", prior)  # (batch, d), (C, batch, d) enumerated, (K, batch, d)
            # Pyro splits the site into y_observed and y_unobserved and records the merged
            # value as a deterministic site "y": hidden, since Delta's log-density of integer
            # labels comes in the default dtype (float32 under a float64 model) and is 0 anyway.
            with poutine.block(hide=["y"]):
                label = pyro.sample("y", dist.Categorical(logits=self.class_logits), obs=labels,
                                    obs_mask=observed)  # (batch,), (C, batch) or (K, batch)
            pyro.sample("x", self.likelihood(self.decoder(z, self._one_hot(label, z))), obs=x)
            if self.training and y is not None:
                # The paper's classification term on labelled rows, training only.
                log_q = self.classify(x).gather(-1, labels[:, None]).squeeze(-1)  # (batch,)
                with poutine.mask(mask=observed):
                    pyro.factor("classification", self.label_weight.to(log_q.dtype) * log_q)

    def guide(self, x, y=None):
        self._register()
        observed, labels = self._labels(x, y)
        with data_plate(x):
            # Labelled rows get constant (uniform) logits: their enumerated y is masked out, and
            # with q's logits its score-function weights would still send gradient noise into
            # the classifier for rows where q(y|x) is no part of the ELBO.
            logits = self.classifier(x).masked_fill(observed[:, None], 0.0)  # (batch, C)
            with poutine.mask(mask=~observed):
                guess = pyro.sample("y_unobserved", dist.Categorical(logits=logits),
                                    infer={"enumerate": "parallel"})  # (batch,) or (C, 1)
            label = torch.where(observed, labels, guess)
            loc, scale = self._z_params(x, label)
            pyro.sample("z", DiagonalNormal(loc, scale))

    def init_from_data(self, x, y=None):
        """Record N and N_labelled (rows with ``y >= 0``) of the training data."""
        n = x.shape[0]
        n_labelled = 0 if y is None else int((y >= 0).sum())
        self.num_examples.fill_(float(n))
        self.num_labelled.fill_(float(n_labelled))

    def validate_data(self, x, y=None, name="x"):
        super().validate_data(x, y, name)
        if y is None:
            return
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"{name} labels must be integers, got dtype {y.dtype}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"{name}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < -1 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {self.num_classes - 1}] or be -1 (unlabelled), got "
                f"values in [{int(y.min())}, {int(y.max())}]")

    # ------------------------------------------------------------------ helpers

    def _label_tensor(self, n, y):
        y = torch.as_tensor(y, device=self.device)
        if y.dim() == 0:
            y = y.expand(n)
        if y.shape != (n,):
            raise ValueError(f"y must be an int or have shape ({n},), got shape {tuple(y.shape)}")
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"y labels must be integers, got dtype {y.dtype}")
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise ValueError(f"y labels must lie in [0, {self.num_classes - 1}], got values in "
                             f"[{int(y.min())}, {int(y.max())}]")
        return y

    @torch.no_grad()
    def sample(self, n, y=None, *, mean=True):
        """``n`` images; classes ``y`` (an int or ``(n,)``), or drawn from p(y) when None."""
        check_positive_int("n", n)
        z = self.prior().sample((n,))  # (n, d)
        if y is None:
            y = dist.Categorical(logits=self.class_logits).sample((n,))
        y = self._label_tensor(n, y)
        out = self.decoder(z, self._one_hot(y, z))
        return self.likelihood.mean(out) if mean else self.likelihood(out).sample()

    @torch.no_grad()
    def encode(self, x, y=None):
        """Mean of q(z | x, predicted label), ``(batch, latent_dim)``; ``y`` is not read."""
        return self._encode_predicted(x)[0]

    @torch.no_grad()
    def posterior(self, x, y=None):
        """q(z | x, predicted label), a diagonal Normal with batch shape ``(batch,)`` and event
        shape ``(latent_dim,)``; ``y`` is not read."""
        return DiagonalNormal(*self._encode_predicted(x))

    @torch.no_grad()
    def decode(self, z, y=None):
        """Mean image of p(x | z, y), ``(..., D)``; ``y=None``: ``sum_c p(c) E[x | z, c]``."""
        if y is not None:
            return self.likelihood.mean(self.decoder(z, self._one_hot(torch.as_tensor(y), z)))
        classes = torch.arange(self.num_classes, device=z.device)
        onehot = self._one_hot(classes, z).reshape(-1, *([1] * (z.dim() - 1)), self.num_classes)
        means = self.likelihood.mean(self.decoder(z, onehot))  # (C, ..., D)
        weights = self.class_logits.softmax(-1).to(z.dtype).reshape(-1, *([1] * z.dim()))
        return (weights * means).sum(0)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        """Decoded mean of q(z | x, predicted label) in the predicted class."""
        predicted = self.classify(x).argmax(-1)
        return self.likelihood.mean(self.decoder(self._z_params(x, predicted)[0],
                                                 self._one_hot(predicted, x)))

    @torch.no_grad()
    def analogies(self, x: torch.Tensor) -> torch.Tensor:
        """Each example's style (mean of q(z | x, predicted y)) rendered in every class:
        ``(batch, num_classes, D)`` (the paper's Figure 1)."""
        z = self.encode(x)  # (batch, d)
        classes = torch.arange(self.num_classes, device=z.device)
        onehot = self._one_hot(classes, z)[:, None, :]  # (C, 1, C)
        means = self.likelihood.mean(self.decoder(z, onehot))  # (C, batch, D)
        return means.transpose(0, 1)


__all__ = ["M2", "M2Config"]
