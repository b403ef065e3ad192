"""Fold leading sample dimensions into the batch, so that a network written for ``(N, *event)``
inputs works under the importance-sampling plate and vectorized particles.

Pyro adds dimensions to the left of the batch: ``K`` importance samples give codes of shape
``(K, batch, latent_dim)``, enumeration of M2's labels gives ``(C, 1, C)`` one-hot tensors. A
linear layer broadcasts over them; a convolution, a reshape to an image or a user's network
does not. :func:`fold_leading` reshapes every input to ``(prod(leading), *event)``, calls the
network once and reshapes its output back to ``(*leading, *out_event)``. Inputs whose leading
dimensions differ are broadcast to a common shape first (``(K, batch, d)`` codes with
``(batch, C)`` labels).

Example
-------
>>> import torch
>>> from torch import nn
>>> from pyro_vae.models.folding import FoldLeading, fold_leading
>>> conv = nn.Conv2d(1, 4, 3, padding=1)  # made for (N, 1, H, W)
>>> fold_leading(conv, torch.zeros(5, 2, 1, 8, 8), event_dims=3).shape  # (K, batch, C, H, W)
torch.Size([5, 2, 4, 8, 8])
>>> FoldLeading(nn.Linear(3, 2))(torch.zeros(7, 5, 3)).shape
torch.Size([7, 5, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


def _event_dims(event_dims, count: int) -> tuple[int, ...]:
    dims = (event_dims,) * count if isinstance(event_dims, int) else tuple(event_dims)
    if len(dims) != count or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dims):
        raise ValueError(f"event_dims must be a non-negative int or one per input ({count}), got {event_dims!r}")
    return dims


def fold_leading(net: Callable, *inputs: torch.Tensor, event_dims: int | Sequence[int] = 1) -> torch.Tensor:
    """``net`` applied to ``inputs`` whose leading dimensions are folded into one batch dimension.

    Parameters
    ----------
    net : callable
        Maps tensors ``(N, *event_i)`` (one per input) to one tensor ``(N, *out_event)``.
    *inputs : torch.Tensor
        Tensors ``(*leading_i, *event_i)``; the ``leading_i`` broadcast to one shape ``L``.
    event_dims : int or sequence of int
        How many trailing dimensions of each input form its event (one number for all, or one
        per input): 1 for vectors ``(..., D)``, 3 for images ``(..., C, H, W)``.

    Returns
    -------
    torch.Tensor
        ``(*L, *out_event)``. With no leading dimension (``L = ()``) the network sees a batch
        of one and its batch dimension is dropped again.

    Example
    -------
    >>> import torch
    >>> fold_leading(lambda z: z.sum(-1, keepdim=True), torch.ones(4, 3, 2)).shape
    torch.Size([4, 3, 1])
    """
    if not inputs:
        raise ValueError("fold_leading needs at least one input tensor")
    dims = _event_dims(event_dims, len(inputs))
    for i, (t, d) in enumerate(zip(inputs, dims)):
        if t.dim() < d:
            raise ValueError(f"input {i} of shape {tuple(t.shape)} has fewer than event_dims={d} dimensions")
    leading = torch.broadcast_shapes(*(t.shape[: t.dim() - d] for t, d in zip(inputs, dims)))
    n = math.prod(leading)
    # expand is free; reshape copies only where an input had to be broadcast
    flat = [t.expand(*leading, *t.shape[t.dim() - d:]).reshape(n, *t.shape[t.dim() - d:])
            for t, d in zip(inputs, dims)]
    out = net(*flat)  # (N, *out_event)
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != n:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"a folded network must return one tensor with the batch dimension first "
                         f"(size {n}), got {got}")
    return out.reshape(*leading, *out.shape[1:])


class FoldLeading(nn.Module):
    """Wrap ``net`` (made for ``(N, *event)``) so that it accepts ``(*leading, *event)`` inputs.

    The wrapped network is the submodule ``net`` (its parameters are ``net.*`` in the
    ``state_dict``).

    Parameters
    ----------
    net : nn.Module
    event_dims : int or sequence of int
        As in :func:`fold_leading`.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> FoldLeading(nn.Conv2d(3, 8, 3), event_dims=3)(torch.zeros(2, 4, 3, 5, 5)).shape
    torch.Size([2, 4, 8, 3, 3])
    """

    def __init__(self, net: nn.Module, event_dims: int | Sequence[int] = 1):
        super().__init__()
        self.net = net
        self.event_dims = event_dims

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return fold_leading(self.net, *inputs, event_dims=self.event_dims)


__all__ = ["FoldLeading", "fold_leading"]
