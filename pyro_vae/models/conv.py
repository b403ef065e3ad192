"""Convolutional encoder and decoder networks, sized from the image shape ``(C, H, W)``.

Any height and width works, by one padding/cropping rule. With ``n = len(conv_channels)``
stride-2 layers, the encoder pads the image with zeros at the bottom and on the right to
``H' x W'``, the next multiples of ``2 ** n`` (``28 x 20`` stays ``28 x 20`` for n = 2,
``8 x 8`` stays, ``7 x 7`` becomes ``8 x 8``); each convolution (kernel 4, stride 2, padding 1)
halves the size exactly, down to ``(conv_channels[-1], H' / 2**n, W' / 2**n)``. The decoder
runs the mirror image: a dense map to that grid, ``n`` transposed convolutions (kernel 4,
stride 2, padding 1) that double it back to ``H' x W'``, then a crop of the top-left
``H x W``.

Between the convolutional stack and the code sit dense layers of sizes ``hidden_dims`` (none
when it is empty: then one linear map), as in the MLP networks, so ``hidden_dims`` keeps its
meaning under ``arch="conv"``.

Networks here take image batches ``(N, C, H, W)`` (or codes ``(N, d)``) with no leading
sample dimensions; the models wrap them with
:class:`~pyro_vae.models.adapters.ImageInput` / :class:`~pyro_vae.models.adapters.ImageOutput`,
which reshape flat pixels and fold leading dimensions.

Example
-------
>>> import torch
>>> from pyro_vae.models.conv import ConvDecoder, ConvEncoder
>>> enc = ConvEncoder((1, 28, 20), conv_channels=(8, 16), hidden_dims=(32,), out_dim=4)
>>> enc(torch.zeros(5, 1, 28, 20)).shape
torch.Size([5, 4])
>>> dec = ConvDecoder(2, (32,), (1, 28, 20), out_channels=1, conv_channels=(8, 16))
>>> dec(torch.zeros(5, 2)).shape
torch.Size([5, 1, 28, 20])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .nets import MLP


def padded_size(size: int, num_layers: int) -> int:
    """``size`` rounded up to a multiple of ``2 ** num_layers`` (what the encoder pads to).

    Example
    -------
    >>> padded_size(28, 2), padded_size(7, 2), padded_size(8, 3)
    (28, 8, 8)
    """
    step = 2 ** num_layers
    return math.ceil(size / step) * step


def grid_shape(image_shape: tuple[int, int, int], conv_channels: tuple[int, ...]) -> tuple[int, int, int]:
    """The shape ``(conv_channels[-1], H' / 2**n, W' / 2**n)`` at the bottom of the conv stack.

    Example
    -------
    >>> grid_shape((1, 28, 20), (32, 64))
    (64, 7, 5)
    """
    _, h, w = image_shape
    n = len(conv_channels)
    return conv_channels[-1], padded_size(h, n) // 2 ** n, padded_size(w, n) // 2 ** n


class ConvFeatures(nn.Module):
    """Images ``(N, C, H, W)`` -> features ``(N, out_dim)``: zero padding, ``len(conv_channels)``
    stride-2 convolutions with ReLUs, flattened.

    Example
    -------
    >>> import torch
    >>> ConvFeatures((3, 12, 12), (8,)).out_dim  # 8 channels on a 6 x 6 grid
    288
    """

    def __init__(self, image_shape: tuple[int, int, int], conv_channels: tuple[int, ...]):
        super().__init__()
        c, h, w = image_shape
        n = len(conv_channels)
        self.image_shape = tuple(image_shape)
        # F.pad order: (left, right, top, bottom)
        self.padding = (0, padded_size(w, n) - w, 0, padded_size(h, n) - h)
        layers: list[nn.Module] = []
        for c_in, c_out in zip((c, *conv_channels[:-1]), conv_channels):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.out_dim = math.prod(grid_shape(image_shape, conv_channels))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            images = F.pad(images, self.padding)  # (N, C, H', W')
        return self.convs(images).flatten(1)  # (N, out_dim)


class ConvEncoder(nn.Module):
    """Images ``(N, C, H, W)`` (and optional extra inputs ``(N, extra_dim)``) -> ``(N, out_dim)``.

    :class:`ConvFeatures`, then the extra inputs (a CVAE's one-hot labels) appended to the
    flattened features, then an :class:`~pyro_vae.models.nets.MLP` with ``hidden_dims`` (its
    hidden layers' ``activation``; the convolutions are followed by ReLUs).

    Example
    -------
    >>> import torch
    >>> enc = ConvEncoder((1, 8, 8), (16, 32), (), out_dim=6, extra_dim=10)
    >>> enc(torch.zeros(2, 1, 8, 8), torch.zeros(2, 10)).shape
    torch.Size([2, 6])
    """

    def __init__(self, image_shape: tuple[int, int, int], conv_channels: tuple[int, ...],
                 hidden_dims: tuple[int, ...], out_dim: int, extra_dim: int = 0, activation: str = "relu"):
        super().__init__()
        self.features = ConvFeatures(image_shape, conv_channels)
        self.head = MLP(self.features.out_dim + extra_dim, hidden_dims, out_dim, activation)
        self.extra_dim = extra_dim

    def forward(self, images: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(images)  # (N, F)
        if extra is not None:
            h = torch.cat([h, extra.to(h.dtype)], -1)  # (N, F + extra_dim)
        return self.head(h)


#: Output channels up to which a transposed convolution on the CPU runs torch's own kernel
#: instead of oneDNN's, which is slower there in evaluation: the conv decoders' last layer
#: (1 channel for grey Bernoulli images, 3 for RGB) forward on 2,000 maps of 32 x 14 x 14 took
#: 90 ms with oneDNN and 23 ms with torch's kernel (3 channels: 118 and 79 ms), while from 6
#: channels out oneDNN is ahead. The conv HVAE's importance-sampled evaluation is 1.27x faster
#: end to end (benchmarks/conv_kernels.py, idle machine, one thread).
NATIVE_KERNEL_MAX_CHANNELS = 3


class ConvTranspose2d(nn.ConvTranspose2d):
    """:class:`torch.nn.ConvTranspose2d` (same parameters, same state dict) that runs torch's
    own kernel on the CPU when it has at most :data:`NATIVE_KERNEL_MAX_CHANNELS` output
    channels (measured faster there), and :func:`torch.nn.functional.conv_transpose2d`
    (oneDNN's kernel on the CPU) otherwise: on other devices, under autocast, and when it is
    scripted or traced (TorchScript, ``torch.jit.trace``, ``torch.fx``), so that a traced
    graph holds no choice made for one device or batch."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:  # noqa: A002
        if not torch.jit.is_scripting():  # TorchScript compiles none of this block
            if not torch.jit.is_tracing() and _native_kernel_applies(self, input, output_size):
                return torch.ops.aten.slow_conv_transpose2d(input, self.weight, self.kernel_size, self.bias,
                                                            self.stride, self.padding, self.output_padding,
                                                            self.dilation)
        if self.padding_mode != "zeros":
            raise ValueError("ConvTranspose2d supports padding_mode 'zeros' only")
        if output_size is None:
            return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                      self.output_padding, self.groups, self.dilation)
        padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                       self.dilation)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, padding, self.groups,
                                  self.dilation)


def _native_kernel_applies(layer: ConvTranspose2d, input, output_size) -> bool:  # noqa: A002
    """Whether ``layer`` runs torch's own kernel on ``input``: a non-empty float32/float64 batch
    of maps on the CPU, no autocast, no FX proxy, few output channels."""
    return (isinstance(input, torch.Tensor) and input.device.type == "cpu" and input.dim() == 4
            and input.shape[0] > 0 and output_size is None and input.dtype in (torch.float32, torch.float64)
            and layer.groups == 1 and layer.padding_mode == "zeros"
            and layer.out_channels <= NATIVE_KERNEL_MAX_CHANNELS and not torch.is_autocast_enabled("cpu"))


class ConvDecoder(nn.Module):
    """Codes ``(N, in_dim)`` (and optional extra inputs ``(N, extra_dim)``) -> images
    ``(N, out_channels, H, W)``.

    An MLP (``hidden_dims``) to the grid of :func:`grid_shape`, a ReLU, ``len(conv_channels)``
    transposed convolutions (channels ``conv_channels`` in reverse, then ``out_channels``;
    ReLUs between them, none after the last), cropped to ``H x W``. For a likelihood with
    ``P`` parameters per pixel, ``out_channels = C * P`` and channels ``[p*C, (p+1)*C)`` hold
    parameter ``p``, which is the layout the likelihoods read once flattened
    (``[loc (D) | scale (D)]``).

    Example
    -------
    >>> import torch
    >>> ConvDecoder(4, (), (3, 7, 9), out_channels=6, conv_channels=(8,))(torch.zeros(2, 4)).shape
    torch.Size([2, 6, 7, 9])
    """

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], image_shape: tuple[int, int, int],
                 out_channels: int, conv_channels: tuple[int, ...], extra_dim: int = 0,
                 activation: str = "relu"):
        super().__init__()
        self.grid = grid_shape(image_shape, conv_channels)
        self.image_size = tuple(image_shape[1:])
        self.head = MLP(in_dim + extra_dim, hidden_dims, math.prod(self.grid), activation)
        channels = (*reversed(conv_channels), out_channels)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            if i < len(channels) - 2:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        if extra is not None:
            z = torch.cat([z, extra.to(z.dtype)], -1)  # (N, in_dim + extra_dim)
        grid = F.relu(self.head(z)).reshape(-1, *self.grid)  # (N, c_last, h0, w0)
        height, width = self.image_size
        return self.deconvs(grid)[..., :height, :width]  # (N, out_channels, H, W)


__all__ = ["ConvDecoder", "ConvEncoder", "ConvFeatures", "ConvTranspose2d", "grid_shape", "padded_size"]
