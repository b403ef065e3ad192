"""The class-conditional VAE (Sohn, Lee & Yan, "Learning Structured Output Representation using
Deep Conditional Generative Models", 2015), conditioned on the class label.

Generative story: given the label ``c``, ``z ~ p(z | c)`` (standard normal by default, or the
registered ``conditional`` prior, a learned Gaussian per class), then
``x ~ p(x | decoder(z, c))``. The guide is ``q(z | x, c)``, so the model scores
``log p(x | c)``: its reported log-likelihoods are conditional (``conditional: true`` in the
metrics).

How the label enters the networks: MLPs see the one-hot label concatenated to their input
(``[x, onehot]``, ``[z, onehot]``); the conv encoder appends it to the flattened conv features
(before its dense layers) and the conv decoder to the code (``[z, onehot]`` into its first
dense layer); users' networks get it as a second argument, ``encoder(images, onehot)`` and
``decoder(z, onehot)``.

Example
-------
>>> import pyro, torch
>>> from pyro.infer import SVI, Trace_ELBO
>>> from pyro_vae.models import VAEConfig
>>> from pyro_vae.models.cvae import CVAE
>>> cvae = CVAE(64, VAEConfig(latent_dim=2, hidden_dims=(32,)), num_classes=10)
>>> x, y = torch.bernoulli(torch.full((16, 64), 0.3)), torch.randint(10, (16,))
>>> svi = SVI(cvae.model, cvae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
>>> loss = svi.step(x, y)
>>> cvae.sample(4, 3).shape  # four images of class 3
torch.Size([4, 64])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import check_positive_int
from .nets import MLP
from .vae import VAE, VAEConfig


class CVAE(VAE):
    """Variational autoencoder conditioned on a class label (one-hot into encoder and decoder).

    Parameters
    ----------
    data_dim : int
        Number of pixels ``D``.
    config : VAEConfig
        As for :class:`~pyro_vae.models.vae.VAE`; ``prior="conditional"`` learns p(z | c).
    num_classes : int
        Number of classes; labels are integers in ``[0, num_classes)``. Required: a CVAE
        cannot be built for data without labels.
    image_shape, encoder, decoder
        As for :class:`~pyro_vae.models.vae.VAE`; the networks also get the one-hot labels
        ``(N, num_classes)`` as a second argument.

    Example
    -------
    >>> import torch
    >>> from pyro_vae.models import VAEConfig
    >>> cvae = CVAE(64, VAEConfig(latent_dim=2, arch="conv", conv_channels=(8,)), num_classes=3,
    ...             image_shape=(1, 8, 8))
    >>> cvae.encode(torch.zeros(4, 64), torch.tensor([0, 1, 2, 0])).shape
    torch.Size([4, 2])
    """

    conditional = True
    needs_labels = True
    guide_reads_labels = True  # q(z | x, c)
    pyro_name = "cvae"

    def __init__(self, data_dim: int, config: VAEConfig | None = None, num_classes: int | None = None,
                 image_shape: tuple[int, int, int] | None = None, *,
                 encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        if num_classes is None:
            raise ValueError(
                "model 'cvae' conditions on class labels but the data set has none "
                "(num_classes is None); use a labelled data set or an unconditional model")
        check_positive_int("num_classes", num_classes)
        self._label_dim = num_classes  # before the networks are built
        super().__init__(data_dim, config, num_classes=num_classes, image_shape=image_shape,
                         encoder=encoder, decoder=decoder)

    def _one_hot(self, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """One-hot labels ``(batch, num_classes)`` in ``like``'s dtype and device."""
        if y is None:
            raise ValueError("model 'cvae' needs the labels y (shape (batch,)); got y=None")
        return F.one_hot(y.to(device=like.device, dtype=torch.long), self.num_classes).to(like.dtype)

    def _encode_params(self, x, y=None):
        c = self._one_hot(y, x)  # (batch, classes)
        if isinstance(self.encoder.net, MLP):  # the built-in MLP reads [x, onehot]
            return self.encoder(torch.cat([x, c], -1))
        return self.encoder(x, c)

    def _decode(self, z, y=None):
        # z is (batch, latent) in training, (K, batch, latent) under the importance-sample
        # plate: the (batch, classes) one-hot labels broadcast over the leading dimensions.
        c = self._one_hot(y, z).expand(*z.shape[:-1], self.num_classes)
        if isinstance(self.decoder, MLP):
            return self.decoder(torch.cat([z, c], -1))
        return self.decoder(z, c)

    @torch.no_grad()
    def sample(self, n, y=None, *, mean=True):
        """Draw ``n`` images of the classes ``y``: an int, or a tensor of shape ``()`` or ``(n,)``."""
        check_positive_int("n", n)
        if y is None:
            raise ValueError("model 'cvae' samples given labels: pass y (an int or a tensor of shape (n,))")
        y = torch.as_tensor(y, device=self.device)
        if y.dim() == 0:
            y = y.expand(n)
        if y.shape != (n,):
            raise ValueError(f"y must be an int or have shape ({n},), got shape {tuple(y.shape)}")
        self._check_labels(y, "y")
        return super().sample(n, y, mean=mean)

    def _check_labels(self, y, name):
        if y is None:
            raise ValueError(f"model 'cvae' needs labels for {name}; got none")
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"{name} labels must be integers, got dtype {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {self.num_classes - 1}], got values in "
                f"[{int(y.min())}, {int(y.max())}]")

    def validate_data(self, x, y=None, name="x"):
        super().validate_data(x, y, name)
        self._check_labels(y, name)
        if y.dim() != 1:
            raise ValueError(f"{name}: labels must have shape (batch,), got {tuple(y.shape)}")


__all__ = ["CVAE"]
