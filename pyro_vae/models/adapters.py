"""Between the models' flat pixels and image-shaped networks: architecture options, image
shapes, and the adapters that let built-in conv nets and users' networks see images.

Models keep the library's data contract: an example is a flat vector of ``D = C * H * W``
pixels in ``(C, H, W)`` order, and codes and pixels may carry leading sample dimensions
(importance samples, vectorized particles, enumerated labels). The adapters do the rest:

- :class:`ImageInput` wraps a network ``net(images (N, C, H, W), *extra (N, E)) -> (N, out)``:
  it takes flat ``(..., D)`` pixels, reshapes them to images, folds leading dimensions
  (:func:`~pyro_vae.models.folding.fold_leading`) and checks the output size;
- :class:`ImageOutput` wraps a network ``net(z (N, d), *extra) -> (N, C * P, H, W)`` or
  ``(N, D * P)`` (``P``: the likelihood's parameters per pixel, channels grouped by parameter:
  ``[p*C, (p+1)*C)`` hold parameter ``p``) and returns the likelihood's flat layout
  ``(..., P * D)``.

A user's network is checked when the model is built: one forward pass on a batch of two zero
inputs, in evaluation mode, without gradients, on the network's device and in its dtype. An
output of the wrong size (or a network that fails) is a one-line ``ValueError`` naming the
network, the shape received and the shape expected.

Example
-------
>>> import torch
>>> from torch import nn
>>> from pyro_vae.models.adapters import ImageInput
>>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))  # made for (N, 3, 2, 2)
>>> ImageInput(net, (3, 2, 2), out_dim=4)(torch.zeros(7, 5, 12)).shape  # (K, batch, D) in
torch.Size([7, 5, 4])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import check_choice, check_instance, check_int_tuple
from .conv import ConvDecoder, ConvEncoder, ConvFeatures
from .folding import fold_leading

#: Network architectures of the built-in encoders and decoders (the ``arch`` config field).
ARCHS = ("conv", "mlp")
#: The default ``conv_channels``: two stride-2 layers (a 28 x 28 image becomes a 7 x 7 grid).
DEFAULT_CONV_CHANNELS = (32, 64)


#: The most stride-2 conv layers: 2**8 = 256 pixels of padding granularity per side.
MAX_CONV_LAYERS = 8


def check_arch(arch, conv_channels) -> tuple[int, ...]:
    """Validate the ``arch``/``conv_channels`` fields of a model config; return the channels
    as a tuple (at least one: one stride-2 convolution each; read by ``arch="conv"`` only).

    Example
    -------
    >>> check_arch("conv", [16, 32])
    (16, 32)
    >>> check_arch("conv", ())
    Traceback (most recent call last):
    ...
    ValueError: conv_channels must hold at least one channel count (one stride-2 convolution each), got []
    """
    check_choice("arch", arch, ARCHS)
    channels = check_int_tuple("conv_channels", conv_channels)
    if not channels:
        raise ValueError("conv_channels must hold at least one channel count (one stride-2 "
                         "convolution each), got []")
    if len(channels) > MAX_CONV_LAYERS:  # each layer doubles the padded image side
        raise ValueError(f"conv_channels holds at most {MAX_CONV_LAYERS} layers (the image is padded to "
                         f"a multiple of 2**layers per side), got {len(channels)}")
    return channels


def resolve_image_shape(data_dim: int, image_shape, needs: str | None = None) -> tuple[int, int, int]:
    """``image_shape`` as a tuple ``(C, H, W)`` holding ``data_dim`` values.

    None means ``(1, 1, data_dim)`` (pixels in a row), unless ``needs`` names what requires a
    real shape (``"arch 'conv'"``): then it is a ``ValueError``.

    Example
    -------
    >>> resolve_image_shape(64, None), resolve_image_shape(64, [1, 8, 8])
    ((1, 1, 64), (1, 8, 8))
    """
    if image_shape is None:
        if needs is not None:
            raise ValueError(f"{needs} needs the image shape: pass image_shape=(C, H, W) with "
                             f"C * H * W = data_dim = {data_dim}, got None")
        return 1, 1, data_dim
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list, torch.Size)) else None
    if (shape is None or len(shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in shape)):
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}")
    if math.prod(shape) != data_dim:
        raise ValueError(f"image_shape {shape} holds {math.prod(shape)} values but data_dim is "
                         f"{data_dim}; give the shape of one example")
    return shape


def _float_of(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of ``net``'s first floating tensor (CPU and the default dtype if none)."""
    for t in (*net.parameters(), *net.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


class NetworkOutputError(ValueError):
    """A network of one's own returned an output of the wrong shape (raised by the adapters)."""


def _shape(out) -> str:
    return str(tuple(out.shape)) if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"


class ImageInput(nn.Module):
    """Flat pixels ``(..., D)`` (and extra inputs ``(..., E)``) -> ``net(images, *extra)``
    -> ``(..., out_dim)``.

    Parameters
    ----------
    net : nn.Module
        Called as ``net(images (N, C, H, W), *extra (N, E))``; returns ``(N, out_dim)``.
    image_shape : tuple of int
        ``(C, H, W)``.
    out_dim : int
        The output size the model needs.
    name : str
        Named in errors (``"encoder"``).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> ImageInput(nn.Flatten(), (1, 2, 3), out_dim=5)(torch.zeros(4, 6))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyro_vae.models.adapters.NetworkOutputError: network 'network' returned shape (4, 6) for images ...
    """

    def __init__(self, net: nn.Module, image_shape: tuple[int, int, int], out_dim: int,
                 name: str = "network"):
        super().__init__()
        self.net = net
        self.image_shape = tuple(image_shape)
        self.out_dim = out_dim
        self.name = name

    def _run(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        images = x.reshape(x.shape[0], *self.image_shape)  # (N, C, H, W)
        out = self.net(images, *extra)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0], self.out_dim):
            raise NetworkOutputError(f"network {self.name!r} returned shape {_shape(out)} for images of "
                                     f"shape {tuple(images.shape)}; expected {(x.shape[0], self.out_dim)}")
        return out

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return fold_leading(self._run, x, *extra, event_dims=1)


class ImageOutput(nn.Module):
    """Codes ``(..., d)`` (and extra inputs ``(..., E)``) -> ``net(z, *extra)`` -> the
    likelihood's flat parameters ``(..., P * D)``.

    Parameters
    ----------
    net : nn.Module
        Called as ``net(z (N, d), *extra (N, E))``; returns ``(N, C * P, H, W)`` (channels
        grouped by parameter) or ``(N, P * D)``.
    image_shape : tuple of int
        ``(C, H, W)``.
    params_per_pixel : int
        ``P``, the likelihood's ``params_per_pixel``.
    name : str
        Named in errors (``"decoder"``).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> dec = ImageOutput(nn.Sequential(nn.Linear(2, 8), nn.Unflatten(1, (2, 2, 2))), (1, 2, 2), 2)
    >>> dec(torch.zeros(3, 5, 2)).shape  # (K, batch, P * D)
    torch.Size([3, 5, 8])
    """

    def __init__(self, net: nn.Module, image_shape: tuple[int, int, int], params_per_pixel: int,
                 name: str = "network"):
        super().__init__()
        self.net = net
        self.image_shape = tuple(image_shape)
        self.params_per_pixel = params_per_pixel
        self.name = name

    def _run(self, z: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        n, (c, h, w), p = z.shape[0], self.image_shape, self.params_per_pixel
        out = self.net(z, *extra)
        images, flat = (n, c * p, h, w), (n, p * c * h * w)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) not in (images, flat):
            raise NetworkOutputError(f"network {self.name!r} returned shape {_shape(out)} for inputs of "
                                     f"shape {tuple(z.shape)}; expected {images} or {flat} ({p} parameter(s) "
                                     f"per pixel of {self.image_shape} images)")
        return out.reshape(n, -1)  # (N, P * D): [parameter 0 (D) | parameter 1 (D) | ...]

    def forward(self, z: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return fold_leading(self._run, z, *extra, event_dims=1)


def check_network(adapter: ImageInput | ImageOutput, in_dim: int, extra_dims: tuple[int, ...] = ()) -> None:
    """One forward pass of ``adapter`` on two zero examples (flat ``(2, in_dim)`` and extra
    ``(2, e)`` inputs), in evaluation mode and without gradients, on the wrapped network's device
    and dtype. A failure of the network's code, or an output of the wrong shape, dtype or
    device, is a one-line ``ValueError`` naming the network. Every submodule's training flag
    is restored afterwards (a frozen backbone stays in evaluation mode).

    Example
    -------
    >>> from torch import nn
    >>> check_network(ImageInput(nn.Flatten(), (1, 2, 2), out_dim=4, name="encoder"), in_dim=4)
    """
    net = adapter.net
    device, dtype = _float_of(net)
    inputs = [torch.zeros(2, d, device=device, dtype=dtype) for d in (in_dim, *extra_dims)]
    modes = [(module, module.training) for module in net.modules()]
    net.eval()  # no batch-norm statistics updated, no dropout drawn
    try:
        with torch.no_grad():
            out = adapter(*inputs)
    except NetworkOutputError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the user's code, in one line
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        kind = "images" if isinstance(adapter, ImageInput) else "codes"
        raise ValueError(f"network {adapter.name!r} failed on a test batch of {kind} "
                         f"({type(err).__name__}: {detail})") from err
    finally:
        for module, training in modes:
            module.training = training
    if out.dtype != dtype or out.device != device:  # the model's other networks would fail on it
        raise ValueError(f"network {adapter.name!r} returned a {out.dtype} tensor on {out.device} for "
                         f"{dtype} inputs on {device}; it must return {dtype} on {device}, like its "
                         f"parameters")


def given_networks(**networks) -> tuple[str, ...]:
    """Names of the networks of one's own among ``networks`` (None: the built-in one), in the
    order given; anything but an ``nn.Module`` or None is a one-line ``TypeError``.

    Example
    -------
    >>> from torch import nn
    >>> given_networks(encoder=nn.Identity(), decoder=None)
    ('encoder',)
    """
    for name, net in networks.items():
        if net is not None:
            check_instance(name, net, nn.Module, "pass a torch.nn.Module (or None for the built-in one)")
    return tuple(name for name, net in networks.items() if net is not None)


def image_input(net: nn.Module, image_shape, out_dim: int, name: str, extra_dims: tuple[int, ...] = ()) -> ImageInput:
    """A user's network on images, wrapped for flat pixels and tried once (:func:`check_network`)."""
    adapter = ImageInput(net, image_shape, out_dim, name)
    check_network(adapter, math.prod(image_shape), extra_dims)
    return adapter


def image_output(net: nn.Module, in_dim: int, image_shape, params_per_pixel: int, name: str,
                 extra_dims: tuple[int, ...] = ()) -> ImageOutput:
    """A user's network to images, wrapped to the likelihood's flat layout and tried once."""
    adapter = ImageOutput(net, image_shape, params_per_pixel, name)
    check_network(adapter, in_dim, extra_dims)
    return adapter


def conv_encoder(image_shape, conv_channels, hidden_dims, out_dim: int, extra_dim: int = 0,
                 name: str = "encoder", activation: str = "relu") -> ImageInput:
    """The built-in conv encoder on flat pixels: ``(..., D)`` (+ ``(..., extra_dim)``) -> ``(..., out_dim)``.

    Example
    -------
    >>> import torch
    >>> conv_encoder((1, 8, 8), (4,), (), 3)(torch.zeros(2, 64)).shape
    torch.Size([2, 3])
    """
    net = ConvEncoder(image_shape, conv_channels, hidden_dims, out_dim, extra_dim, activation)
    return ImageInput(net, image_shape, out_dim, name)


def conv_features(image_shape, conv_channels, out_dim: int, name: str = "encoder") -> nn.Sequential:
    """Conv features of flat pixels, then a linear map: ``(..., D)`` -> ``(..., out_dim)``
    (the pixel branch of the HVAE's and M2's two-input networks).

    Example
    -------
    >>> import torch
    >>> conv_features((1, 8, 8), (4,), 5)(torch.zeros(2, 64)).shape
    torch.Size([2, 5])
    """
    features = ConvFeatures(image_shape, conv_channels)
    return nn.Sequential(ImageInput(features, image_shape, features.out_dim, name),
                         nn.Linear(features.out_dim, out_dim))


def conv_decoder(in_dim: int, hidden_dims, image_shape, params_per_pixel: int, conv_channels,
                 extra_dim: int = 0, name: str = "decoder", activation: str = "relu") -> ImageOutput:
    """The built-in conv decoder: ``(..., in_dim)`` (+ extra) -> the likelihood's ``(..., P * D)``.

    Example
    -------
    >>> import torch
    >>> conv_decoder(2, (), (1, 5, 5), 2, (4,))(torch.zeros(3, 2)).shape
    torch.Size([3, 50])
    """
    c = image_shape[0]
    net = ConvDecoder(in_dim, hidden_dims, image_shape, c * params_per_pixel, conv_channels, extra_dim,
                      activation)
    return ImageOutput(net, image_shape, params_per_pixel, name)


__all__ = ["ARCHS", "DEFAULT_CONV_CHANNELS", "ImageInput", "ImageOutput", "check_arch", "check_network",
           "conv_decoder", "conv_encoder", "conv_features", "given_networks", "image_input", "image_output",
           "resolve_image_shape"]
