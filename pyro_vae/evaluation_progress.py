"""A run's final evaluation kept as it goes, so that a killed one continues where it stood.

The importance-sampled log-likelihood of a large model at the literature's K = 5000 takes
hours on a CPU (two for the reproduction's conv HVAE on 10,000 test images). While it runs,
:class:`EvaluationProgress` writes the finished batches, the ELBO before them and torch's
random state after them to ``RUN/evaluation.partial.npz`` (atomically, at most every
:data:`SAVE_EVERY_S` seconds). The next evaluation of that run with the same parameters, test
set and settings (``pyro-vae train --resume`` of a run killed while it was being scored,
``pyro-vae evaluate``) starts from the file; because the random stream continues where it
stood, its numbers are the ones an uninterrupted evaluation gives. A file of other
parameters (training went on) is ignored and replaced; one of the same parameters but other
settings (another K) is kept, and the evaluation at hand goes unsaved, with a warning; a
damaged one is ignored with a warning. The run's writer removes its own file once
metrics.json is written.

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
import pyro
import torch

from .checkpoint import atomic_write_bytes
from .data.npz import read_npz_arrays
from .inference.fingerprints import fingerprint
from .runfiles import PARTIAL_EVAL_FILE

#: Seconds between two saves of the progress (the batch that ends after them is saved).
SAVE_EVERY_S = 30.0


def parameters_key(model) -> bytes:
    """SHA-256 of the model's state (parameters and buffers: names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):  # a module's extra state: its repr stands for it
            digest.update(f"{name}:{value!r}".encode())
            continue
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


def evaluation_key(model, x: torch.Tensor, y: torch.Tensor | None, settings: dict, *,
                   parameters: bytes | None = None) -> bytes:
    """SHA-256 of what an evaluation's numbers depend on: the model's state
    (:func:`parameters_key`; ``parameters`` where the caller has it already), the test inputs
    (and labels), ``settings`` (K, batch sizes, seed ...: JSON values), the dtype, the device
    type and the versions of torch, Pyro and pyro-vae."""
    from . import __version__  # noqa: PLC0415  (the package imports this module's users)

    context = {"settings": settings, "dtype": str(x.dtype), "device": x.device.type, "torch": torch.__version__,
               "pyro": pyro.__version__, "pyro_vae": __version__, "data": fingerprint(x, y)}
    digest = hashlib.sha256(parameters_key(model) if parameters is None else parameters)
    digest.update(json.dumps(context, sort_keys=True).encode())
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
    num_examples : int, optional
        Test examples: a saved state's ELBO covers them all.
    parameters : bytes, optional
        :func:`parameters_key` of the model. A file of *another* evaluation of the same
        parameters (another K, say) is then kept: this evaluation goes unsaved, with a
        warning, rather than replace or remove hours of someone's progress. Without it (or
        for other parameters: training went on) another evaluation's file is replaced.
    """

    def __init__(self, run_dir, key: bytes, batch_size: int = 100, *, num_examples: int | None = None,
                 parameters: bytes | None = None):
        self.path = Path(run_dir) / PARTIAL_EVAL_FILE
        self.key = key
        self.batch_size = batch_size
        self.num_examples = num_examples
        self.parameters = parameters
        self._last_save = time.monotonic()
        self._unsaved = False  # a save failed, or the file is another evaluation's to keep
        self._keep_file = False  # the file is another evaluation's of these parameters

    def load(self) -> dict | None:
        """The saved state of this evaluation (tensors, as ``evaluate_per_example`` takes them
        as ``resume``), or None: no file, a file of another evaluation, or a damaged one."""
        if not self.path.is_file():
            return None
        try:
            arrays = read_npz_arrays(self.path)
            if _key_of(arrays, "key") == self.key:
                return _checked_state(arrays, self.batch_size, self.num_examples)
            if self.parameters is not None and _key_of(arrays, "parameters") == self.parameters:
                self._unsaved = self._keep_file = True
                done, total = _progress_of(arrays)
                warnings.warn(f"{str(self.path)!r} holds the progress of another evaluation of these "
                              f"parameters ({done:,} of {total:,} test examples scored; another K or "
                              f"device): kept, and this evaluation goes unsaved; delete the file to "
                              f"save this one's progress instead", stacklevel=2)
            return None  # otherwise a file of other parameters (training went on): replaced
        except Exception as err:  # noqa: BLE001  (a progress file never stops an evaluation)
            warnings.warn(f"ignoring {str(self.path)!r} ({' '.join(str(err).split()) or type(err).__name__}); "
                          f"the evaluation starts over", stacklevel=2)
            return None

    def save(self, state: dict) -> None:
        """Write ``state`` (an ``on_batch`` state) if :data:`SAVE_EVERY_S` seconds have passed."""
        now = time.monotonic()
        if self._unsaved or now - self._last_save < SAVE_EVERY_S:
            return
        arrays = {name: value.numpy() for name, value in state.items()}
        arrays["key"] = np.frombuffer(self.key, dtype=np.uint8)
        if self.parameters is not None:
            arrays["parameters"] = np.frombuffer(self.parameters, dtype=np.uint8)

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
        """Remove the file (the evaluation's results are written), unless it is another
        evaluation's progress that :meth:`load` kept."""
        if not self._keep_file:
            self.path.unlink(missing_ok=True)


def saved_progress(run_dir) -> tuple[int, int] | None:
    """``(examples scored, test examples)`` of ``run_dir``'s saved evaluation, whatever it
    was for; None without one (``ValueError`` naming the file if it is damaged)."""
    path = Path(run_dir) / PARTIAL_EVAL_FILE
    if not path.is_file():
        return None
    try:
        return _progress_of(read_npz_arrays(path))
    except ValueError as err:
        raise ValueError(f"{str(path)!r}: {err}") from err


def _progress_of(arrays: dict) -> tuple[int, int]:
    """``(examples scored, test examples)`` of a progress file's arrays."""
    if any(name not in arrays or arrays[name].ndim != 1 for name in ("log_likelihood", "elbo")):
        raise ValueError(f"it holds no 'elbo' and 'log_likelihood' vectors (arrays {sorted(arrays)})")
    return int(arrays["log_likelihood"].shape[0]), int(arrays["elbo"].shape[0])


def _key_of(arrays: dict, name: str) -> bytes | None:
    """The 32-byte key ``name`` of a progress file (None where it has none)."""
    key = arrays.get(name)
    if key is None:
        return None
    if key.dtype != np.uint8 or key.shape != (32,):
        raise ValueError(f"its {name!r} is not 32 bytes")
    return key.tobytes()


def _checked_state(arrays: dict, batch_size: int, num_examples: int | None) -> dict:
    """The state in ``arrays`` as tensors, checked against what :meth:`EvaluationProgress.save` writes."""
    known = {"key", "parameters", "elbo", "reconstruction", "kl", "log_likelihood", "rng", "cuda_rng"}
    unknown = sorted(set(arrays) - known)
    paired = ("kl" in arrays) == ("reconstruction" in arrays)
    if unknown or not {"elbo", "log_likelihood", "rng"} <= set(arrays) or not paired:
        raise ValueError(f"it holds the arrays {sorted(arrays)}")
    for name in ("elbo", "reconstruction", "kl", "log_likelihood", "rng", "cuda_rng"):
        if name in arrays and arrays[name].ndim != 1:
            raise ValueError(f"its {name!r} is not a vector")
    n = arrays["elbo"].shape[0]
    if num_examples is not None and n != num_examples:
        raise ValueError(f"its ELBO covers {n} examples, the test set has {num_examples}")
    for name in ("elbo", "reconstruction", "kl", "log_likelihood"):
        values = arrays.get(name)
        if values is None:
            continue
        length_ok = values.shape[0] <= n if name == "log_likelihood" else values.shape[0] == n
        if values.dtype != np.float64 or not length_ok or not np.isfinite(values).all():
            raise ValueError(f"its {name!r} is not a finite float64 vector of the test set's length")
    done = arrays["log_likelihood"].shape[0]
    if done % batch_size and done != n:
        raise ValueError(f"its {done} log-likelihoods end inside a batch of {batch_size}")
    rng = torch.from_numpy(np.ascontiguousarray(arrays["rng"]))
    if rng.dtype != torch.uint8:
        raise ValueError("its 'rng' is not torch's random state")
    try:  # torch checks a state when it is set: try it on a stream of its own
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(rng)
    except RuntimeError as err:
        raise ValueError(f"its 'rng' is not torch's random state ({err})") from err
    if "cuda_rng" in arrays and arrays["cuda_rng"].dtype != np.uint8:
        raise ValueError("its 'cuda_rng' is not a byte vector")
    return {name: torch.from_numpy(np.ascontiguousarray(values)) for name, values in arrays.items()
            if name not in ("key", "parameters")}


__all__ = ["SAVE_EVERY_S", "EvaluationProgress", "evaluation_key", "parameters_key", "saved_progress"]
