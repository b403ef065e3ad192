"""Returning freed C-heap memory to the system between evaluation batches (glibc only)."""

from __future__ import annotations

import ctypes
import sys


def release_free_heap() -> None:
    """Return the C heap's free pages to the system: glibc's ``malloc_trim(0)``, else nothing.

    The chunks' transient tensors are large and glibc keeps what they free in its per-thread
    arenas; after a training run had raised its thresholds, the resident set of a K = 100
    evaluation of the 10,000 Fashion-MNIST test images grew by about 850 MB instead of 140
    (``benchmarks/train_memory.py``). Trimming once per batch of examples keeps the peak at
    the size of one batch's chunks; it releases only memory already freed.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        _MALLOC_TRIM = find_malloc_trim()
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


def find_malloc_trim():
    """glibc's ``malloc_trim`` as a callable, or False where there is none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the running process's own C library
        return libc.malloc_trim if hasattr(libc, "malloc_trim") else False
    except OSError:
        return False


_MALLOC_TRIM = None  # resolved on first use
