"""A run's final evaluation kept as it goes, so that a killed one continues where it stood.

The importance-sampled log-likelihood of a large model at the literature's K = 5000 takes
hours on a CPU (two for the reproduction's conv HVAE on 10,000 test images). While it runs,
:class:`EvaluationProgress` writes the finished batches, the ELBO before them and torch's
random state after them to ``RUN/evaluation.partial.npz`` (atomically, at most every
:data:`SAVE_EVERY_S` seconds). The next evaluation of that run with the same parameters, test
set and settings (``pyro-vae train --resume`` of a run killed while it was being scored,
``pyro-vae evaluate``) starts from the file; because the random stream continues where it
stood, its numbers are the ones an uninterrupted evaluation gives. A file for other
parameters or settings (training went on, another K) is ignored and replaced; a damaged one
is ignored with a warning. The run's writer removes it once metrics.json is written.

Example
-------
>>> import tempfile, torch
>>> from pyro_vae.models import VAE, VAEConfig
>>> vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)))
>>> x = torch.zeros(3, 64)
>>> store = EvaluationProgress(tempfile.mkdtemp(), evaluation_key(vae, x, None, {"num_samples": 10}))
>>> store.load() is None  # nothing saved yet
True
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write_bytes
from .data.npz import read_npz_arrays
from .inference.fingerprints import fingerprint
from .runfiles import PARTIAL_EVAL_FILE

#: Seconds between two saves of the progress (the batch that ends after them is saved).
SAVE_EVERY_S = 30.0


def evaluation_key(model, x: torch.Tensor, y: torch.Tensor | None, settings: dict) -> bytes:
    """SHA-256 of what an evaluation's numbers depend on: the model's parameters and buffers,
    the test inputs (and labels), ``settings`` (K, batch sizes, seed ...: JSON values), the
    dtype, the device type and torch's version."""
    digest = hashlib.sha256()
    context = {"settings": settings, "dtype": str(x.dtype), "device": x.device.type, "torch": torch.__version__,
               "data": fingerprint(x, y)}
    digest.update(json.dumps(context, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


class EvaluationProgress:
    """Saves and restores the state of one evaluation (see the module docstring).

    Parameters
    ----------
    run_dir : path
        The run directory (locked by the caller, who writes it).
    key : bytes
        :func:`evaluation_key` of the evaluation.
    batch_size : int
        Examples per batch of the log-likelihood: a saved state ends on a batch boundary.
    """

    def __init__(self, run_dir, key: bytes, batch_size: int = 100):
        self.path = Path(run_dir) / PARTIAL_EVAL_FILE
        self.key = key
        self.batch_size = batch_size
        self._last_save = time.monotonic()
        self._unsaved = False  # a save failed: the rest of the evaluation goes unsaved

    def load(self) -> dict | None:
        """The saved state of this evaluation (tensors, as ``evaluate_per_example`` takes them
        as ``resume``), or None: no file, a file of another evaluation, or a damaged one."""
        if not self.path.is_file():
            return None
        try:
            arrays = read_npz_arrays(self.path)
            if _key_of(arrays) != self.key:
                return None  # another evaluation's (training went on, other settings): replaced later
            return _checked_state(arrays, self.batch_size)
        except ValueError as err:
            warnings.warn(f"ignoring {str(self.path)!r} ({err}); the evaluation starts over", stacklevel=2)
            return None

    def save(self, state: dict) -> None:
        """Write ``state`` (an ``on_batch`` state) if :data:`SAVE_EVERY_S` seconds have passed."""
        now = time.monotonic()
        if self._unsaved or now - self._last_save < SAVE_EVERY_S:
            return
        arrays = {name: value.numpy() for name, value in state.items()}
        arrays["key"] = np.frombuffer(self.key, dtype=np.uint8)

        def write(handle):
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            handle.write(buffer.getvalue())

        try:
            atomic_write_bytes(self.path, write)
        except OSError as err:  # a full disk (DiskFullError) too: the evaluation itself can still finish
            warnings.warn(f"could not save the evaluation's progress to {str(self.path)!r} ({err}); it "
                          f"goes on unsaved", stacklevel=2)
            self._unsaved = True  # one warning, not one per batch
        self._last_save = time.monotonic()

    def discard(self) -> None:
        """Remove the file (the evaluation's results are written)."""
        self.path.unlink(missing_ok=True)


def saved_progress(run_dir) -> tuple[int, int] | None:
    """``(examples scored, test examples)`` of ``run_dir``'s saved evaluation, whatever it
    was for; None without one (``ValueError`` naming the file if it is damaged)."""
    path = Path(run_dir) / PARTIAL_EVAL_FILE
    if not path.is_file():
        return None
    arrays = read_npz_arrays(path)
    if "log_likelihood" not in arrays or "elbo" not in arrays:
        raise ValueError(f"{str(path)!r} holds the arrays {sorted(arrays)}")
    return int(arrays["log_likelihood"].shape[0]), int(arrays["elbo"].shape[0])


def discard_partial_evaluation(run_dir) -> None:
    """Remove ``run_dir``'s saved evaluation progress, if any."""
    (Path(run_dir) / PARTIAL_EVAL_FILE).unlink(missing_ok=True)


def _key_of(arrays: dict) -> bytes | None:
    key = arrays.get("key")
    if key is None or key.dtype != np.uint8 or key.shape != (32,):
        raise ValueError("its 'key' is not 32 bytes")
    return key.tobytes()


def _checked_state(arrays: dict, batch_size: int) -> dict:
    """The state in ``arrays`` as tensors, checked against what :meth:`EvaluationProgress.save` writes."""
    known = {"key", "elbo", "reconstruction", "kl", "log_likelihood", "rng", "cuda_rng"}
    unknown = sorted(set(arrays) - known)
    paired = ("kl" in arrays) == ("reconstruction" in arrays)
    if unknown or not {"elbo", "log_likelihood", "rng"} <= set(arrays) or not paired:
        raise ValueError(f"it holds the arrays {sorted(arrays)}")
    n = arrays["elbo"].shape[0] if arrays["elbo"].ndim == 1 else -1
    for name in ("elbo", "reconstruction", "kl", "log_likelihood"):
        values = arrays.get(name)
        if values is None:
            continue
        length_ok = values.shape[0] <= n if name == "log_likelihood" else values.shape[0] == n
        if values.dtype != np.float64 or values.ndim != 1 or not length_ok or not np.isfinite(values).all():
            raise ValueError(f"its {name!r} is not a finite float64 vector of the test set's length")
    done = arrays["log_likelihood"].shape[0]
    if done % batch_size and done != n:
        raise ValueError(f"its {done} log-likelihoods end inside a batch of {batch_size}")
    if arrays["rng"].dtype != np.uint8 or arrays["rng"].shape != tuple(torch.get_rng_state().shape):
        raise ValueError("its 'rng' is not torch's random state")
    if "cuda_rng" in arrays and (arrays["cuda_rng"].dtype != np.uint8 or arrays["cuda_rng"].ndim != 1):
        raise ValueError("its 'cuda_rng' is not a byte vector")
    return {name: torch.from_numpy(np.ascontiguousarray(values)) for name, values in arrays.items() if name != "key"}


__all__ = ["SAVE_EVERY_S", "EvaluationProgress", "discard_partial_evaluation", "evaluation_key", "saved_progress"]
