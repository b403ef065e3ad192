"""SHA-256 fingerprints of tensors by value: the test set a number was scored on
(:func:`fingerprint`), and the chunked hashing the data fingerprints of run directories share
(:func:`hash_values`, used by :mod:`pyro_vae.rundata`)."""

from __future__ import annotations

import hashlib

import torch


def fingerprint(x: torch.Tensor, y: torch.Tensor | None = None) -> str:
    """SHA-256 (hex) of a test set: the values of ``x`` (and labels ``y``), whatever their dtype.

    ``x`` is hashed as float64 (exact for float32 and float16 values), ``y`` as int64, with
    their shapes, so the same test tensor gives the same fingerprint on any device and in any
    floating dtype, and two runs scored on the same data definition carry the same one.

    Example
    -------
    >>> import torch
    >>> x = torch.tensor([[0.0, 1.0]])
    >>> fingerprint(x) == fingerprint(x.double()) != fingerprint(1 - x)
    True
    """
    digest = hashlib.sha256(b"pyro-vae test set v1;")
    digest.update(f"x{tuple(x.shape)};".encode())
    hash_values(digest, x, torch.float64)
    if y is not None:
        digest.update(f"y{tuple(y.shape)};".encode())
        hash_values(digest, y, torch.int64)
    return digest.hexdigest()


def hash_values(digest, t: torch.Tensor, dtype: torch.dtype, chunk_bytes: int = 2**23) -> None:
    """Feed the values of ``t`` (rows first, at least 1-D), as ``dtype`` on the CPU, to ``digest``
    about ``chunk_bytes`` at a time: the bytes, hence the hash, do not depend on the chunking."""
    t = t.detach()
    row_bytes = t[0].numel() * torch.empty((), dtype=dtype).element_size() if t.shape[0] else 1
    rows = max(1, chunk_bytes // max(1, row_bytes))
    for start in range(0, t.shape[0], rows):
        digest.update(t[start:start + rows].to(device="cpu", dtype=dtype).contiguous().numpy().tobytes())
