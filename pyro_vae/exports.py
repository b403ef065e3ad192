"""Raw exports of a trained run: drawn samples and latent codes as array files.

- :func:`sample_run` draws ``n`` examples from a run's model as ``(n, C, H, W)`` float32 CPU
  tensors (decoder means, or pixel samples from the likelihood), without its data;
  :func:`write_samples` writes them as ``.npy``, ``.npz`` (``x``, and ``y`` where labels were
  given) or ``.pt`` (a plain tensor, ``torch.load(path, weights_only=True)`` reads it).
- :func:`encode_run` encodes a split of a run's data in batches: ``z_loc`` (the model's
  ``encode``: posterior means), ``z_scale`` (where the posterior has a diagonal scale) and
  ``y`` (where the data has labels); :func:`write_codes` writes them as an ``.npz`` that
  ``np.load`` reads without pickle.

Every write is atomic (a temporary file renamed into place), creates missing directories, and
never replaces an existing file unless asked (``overwrite=True``, the CLI's ``--overwrite``).

Example
-------
>>> from pyro_vae.exports import encode_run, sample_run, write_codes, write_samples
>>> x, y = sample_run("runs/vae", 16)                               # doctest: +SKIP
>>> write_samples("samples.npz", x, y)                              # doctest: +SKIP
>>> write_codes("codes.npz", encode_run("runs/vae", split="test"))  # doctest: +SKIP
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyro
import torch

from .checkpoint import atomic_write_bytes
from .data import split_generator
from .errors import check_bool, check_choice, check_non_negative_int, check_positive_int, check_seed
from .models.base import labels_for
from .models.distributions import normal_marginals

#: File types of raw samples, and of figures (written by :func:`pyro_vae.plots.plot_samples`).
SAMPLE_FORMATS = (".npy", ".npz", ".pt")
FIGURE_FORMATS = (".png", ".pdf", ".svg")
#: Splits :func:`encode_run` encodes, and the one file type of codes.
CODE_SPLITS = ("test", "train", "val")
CODE_FORMATS = (".npz",)
_SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def check_out_file(path, formats, *, overwrite: bool = False, argument: str = "--out") -> Path:
    """``path`` as a Path if a file of one of ``formats`` may be written there, else ``ValueError``.

    Refused, in one line naming ``argument`` and the path: another file type (the accepted
    ones are listed), a parent that is a file, a directory at ``path``, and an existing file
    unless ``overwrite``.

    Example
    -------
    >>> check_out_file("codes.csv", CODE_FORMATS)
    Traceback (most recent call last):
    ...
    ValueError: --out 'codes.csv': unknown file type '.csv'; accepted: .npz
    """
    text = str(path)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise ValueError(f"{argument} {text!r}: unknown file type {suffix or '(none)'!r}; "
                         f"accepted: {', '.join(formats)}")
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"cannot write {argument} {text!r}: {str(ancestor)!r} is a file, "
                                 f"not a directory")
            break
    if path.is_dir():
        raise ValueError(f"cannot write {argument} {text!r}: it is a directory")
    if path.exists() and not overwrite:
        raise ValueError(f"{argument} {text!r} exists; pass --overwrite to replace it")
    return path


def sample_labels(run, n: int, label: int | None = None) -> torch.Tensor | None:
    """The labels ``n`` samples of ``run`` are drawn with, ``(n,)`` on the model's device, or None.

    ``label`` (a class of a label-conditioned model or M2) for every sample; else classes in
    turn (``0, 1, ..., K-1, 0, ...``) for a model that needs labels, and None otherwise.
    """
    model, classes = run.model, run.spec.num_classes
    if label is not None:
        check_non_negative_int("label", label)
        if not (model.needs_labels or getattr(model, "sums_out_labels", False)):
            raise ValueError(f"--label applies to label-conditioned models (and m2); model "
                             f"{run.config.model!r} is not one")
        if not 0 <= label < classes:
            raise ValueError(f"label must be in [0, {classes - 1}], got {label}")
        return torch.full((n,), label, dtype=torch.long, device=model.device)
    if model.needs_labels:
        return torch.arange(n, device=model.device) % classes
    return None


def sample_run(run, n: int, *, label: int | None = None, mean: bool = True,
               seed: int | None = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Draw ``n`` examples from a run's model: ``(x, y)``.

    Parameters
    ----------
    run : LoadedRun or str or Path
        A loaded run (:func:`pyro_vae.runs.load_run`) or a run directory (loaded without
        its data).
    n : int
        How many examples.
    label : int or None
        The class of every example (label-conditioned models, M2); see :func:`sample_labels`.
    mean : bool
        True: the decoder's mean image (in [0, 1] for Bernoulli and continuous Bernoulli
        likelihoods, on the likelihood's scale otherwise); False: pixel samples from the
        likelihood (0s and 1s for a Bernoulli likelihood).
    seed : int or None
        Seeds Pyro's and torch's generators first (None: draw from their current state).

    Returns
    -------
    x : torch.Tensor
        ``(n, C, H, W)`` float32 on the CPU.
    y : torch.Tensor or None
        ``(n,)`` int64 labels the examples were drawn with, or None.

    Example
    -------
    >>> x, y = sample_run("runs/vae", 8, mean=False)   # doctest: +SKIP
    >>> x.shape, y                                     # doctest: +SKIP
    (torch.Size([8, 1, 8, 8]), None)
    """
    if not hasattr(run, "model"):
        from .runs import load_run  # noqa: PLC0415

        run = load_run(run, data=False)
    check_positive_int("n", n)
    check_bool("mean", mean)
    labels = sample_labels(run, n, label)
    if seed is not None:
        pyro.set_rng_seed(check_seed("seed", seed))
    with torch.no_grad():
        x = run.model.sample(n, labels, mean=mean)  # (n, D)
    x = x.detach().to(device="cpu", dtype=torch.float32).reshape(n, *run.spec.image_shape)
    return x, None if labels is None else labels.cpu()


def write_samples(path, x: torch.Tensor, y: torch.Tensor | None = None, *, overwrite: bool = False) -> Path:
    """Write samples ``x`` (and labels ``y``) to ``path`` atomically: ``.npy``, ``.npz`` or ``.pt``.

    ``.npy`` and ``.pt`` hold ``x`` alone (a numpy array; a plain tensor for
    ``torch.load(path, weights_only=True)``); ``.npz`` holds ``x`` and, where given, ``y``.
    An existing file is replaced only with ``overwrite``.
    """
    path = check_out_file(path, SAMPLE_FORMATS, overwrite=overwrite)
    x = torch.as_tensor(x).detach().cpu().contiguous()
    arrays = {"x": x.numpy()}
    if y is not None:
        arrays["y"] = torch.as_tensor(y).detach().cpu().to(torch.int64).numpy()
    suffix = path.suffix.lower()
    if suffix == ".pt":
        _write_atomic(path, lambda buffer: torch.save(x.clone(), buffer), overwrite)
    elif suffix == ".npy":
        _write_atomic(path, lambda buffer: np.save(buffer, arrays["x"], allow_pickle=False), overwrite)
    else:
        _write_atomic(path, lambda buffer: np.savez(buffer, **arrays), overwrite)
    return path


def encode_run(run_dir, split: str = "test", *, device: str | None = None,
               batch_size: int = 1000) -> dict[str, np.ndarray]:
    """Encode the ``split`` examples of a run's data with its model, in batches.

    Parameters
    ----------
    run_dir : str or Path
        A run directory; its data is loaded and checked against the fingerprint the run
        recorded (``ValueError`` if it changed or is gone, naming the file looked for).
    split : str
        ``test`` (default), ``train`` or ``val`` (refused for a run without validation data).
        Inputs are those the model is scored on: binarized once for binary models (the
        training split, under dynamic binarization, by the same fixed draw the latent probe
        of the evaluation uses).
    device : str or None
        Where the model runs (default: the run's device).
    batch_size : int
        Examples per forward pass (memory is bounded by one batch, no gradients kept).

    Returns
    -------
    dict of numpy arrays
        ``z_loc`` ``(n, latent_dim)``: the model's ``encode`` (posterior means; the top
        layer's for the hierarchical VAE; the responsibilities for the mixture), in the
        model's dtype; ``z_scale`` (same shape) where the guide is a diagonal Normal
        (zeros for a point-mass guide; none for PPCA, whose exact posterior has one full
        covariance, or the mixture); ``y`` ``(n,)`` int64 where the data has labels
        (``-1`` marks a training example whose label was dropped).

    Example
    -------
    >>> codes = encode_run("runs/vae", split="test")   # doctest: +SKIP
    >>> sorted(codes), codes["z_loc"].shape            # doctest: +SKIP
    (['y', 'z_loc', 'z_scale'], (359, 16))
    """
    from .runs import load_run  # noqa: PLC0415

    check_choice("split", split, CODE_SPLITS)
    check_positive_int("batch_size", batch_size)
    run = load_run(run_dir, device)
    model, data = run.model, run.data
    x, y = data.split(split)
    if x.shape[0] == 0:
        raise ValueError(f"split {split!r} of run {str(run_dir)!r} is empty (its val_fraction is "
                         f"{run.config.data.val_fraction}); choose from: "
                         f"{', '.join(s for s in CODE_SPLITS if data.split(s)[0].shape[0])}")
    noise = None
    if split == "train" and data.binarize == "dynamic":  # as the latent probe binarizes them
        noise = torch.rand(x.shape, generator=split_generator(run.config.data.split_seed, "probe"))
    locs, scales = [], []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size]
            if noise is not None:
                xb = (noise[start:start + batch_size].to(xb.device, xb.dtype) < xb).to(xb.dtype)
            yb = labels_for(model, None if y is None else y[start:start + batch_size])
            try:
                loc = model.encode(xb, yb)
            except NotImplementedError:
                raise ValueError(f"model {run.config.model!r} has no encoder; nothing to encode") from None
            locs.append(loc.detach().cpu())
            scale = _diagonal_scale(model, xb, yb, loc) if len(scales) == len(locs) - 1 else None
            if scale is not None:
                scales.append(scale.detach().cpu())
    codes = {"z_loc": torch.cat(locs).numpy()}
    if len(scales) == len(locs):
        codes["z_scale"] = torch.cat(scales).numpy()
    if y is not None:
        codes["y"] = y.detach().cpu().to(torch.int64).numpy()
    return codes


def _diagonal_scale(model, x, y, loc) -> torch.Tensor | None:
    """The posterior's per-dimension scale, ``loc``-shaped, or None where it has none.

    Read from the guide's ``posterior`` through
    :func:`~pyro_vae.models.distributions.normal_marginals`: a Normal family's scale, zeros
    for a point mass, None for a family without Normal marginals. Models without a guide
    (``has_latents`` False) give None.
    """
    posterior = getattr(model, "posterior", None)
    if posterior is None or not getattr(model, "has_latents", True):
        return None
    scale = normal_marginals(posterior(x, y))[1]
    if not isinstance(scale, torch.Tensor) or scale.shape != loc.shape:
        return None
    return scale


def write_codes(path, codes: dict, *, overwrite: bool = False) -> Path:
    """Write :func:`encode_run`'s arrays to ``path`` (``.npz``, no pickle) atomically.

    An existing file is replaced only with ``overwrite``.
    """
    path = check_out_file(path, CODE_FORMATS, overwrite=overwrite)
    arrays = {key: np.asarray(value) for key, value in codes.items()}
    bad = [key for key, value in arrays.items() if value.dtype == object]
    if bad:
        raise TypeError(f"codes {', '.join(bad)} must be numeric arrays, got object arrays")
    _write_atomic(path, lambda buffer: np.savez(buffer, **arrays), overwrite)
    return path


def _write_atomic(path: Path, fill, overwrite: bool) -> None:
    """Render into memory with ``fill(buffer)``, then write ``path`` atomically (checked again),
    creating its missing directories as a figure's are."""
    buffer = io.BytesIO()
    fill(buffer)
    check_out_file(path, (path.suffix.lower(),), overwrite=overwrite)  # it may have appeared since
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda handle: handle.write(buffer.getvalue()))


__all__ = ["CODE_FORMATS", "CODE_SPLITS", "FIGURE_FORMATS", "SAMPLE_FORMATS", "check_out_file",
           "encode_run", "sample_labels", "sample_run", "write_codes", "write_samples"]
