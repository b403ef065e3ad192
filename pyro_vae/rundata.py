"""What a run directory records of its data, so it outlives the data: spec and fingerprint.

config.json holds, beside the data settings (with absolute paths),

- ``data_spec``: the data's shapes and classes (:class:`~pyro_vae.data.DataSpec`), from which
  the model is rebuilt without the data (``load_run(run_dir, data=False)``);
- ``data_fingerprint``: :func:`data_fingerprint` of the data as loaded when the run was
  trained; a run whose data no longer has it is not resumed or evaluated
  (:func:`check_data`).

Runs of older versions lack both (:func:`read_data_record` gives None for each); they are
recorded when such a run is resumed.

Example
-------
>>> from pyro_vae.data import DataConfig, load_dataset
>>> data = load_dataset(DataConfig(name="digits"))
>>> record = data_record(data)
>>> record["data_spec"]["image_shape"], len(record["data_fingerprint"])
([1, 8, 8], 64)
>>> check_data(data, record["data_fingerprint"], "runs/vae") is data
True
"""

from __future__ import annotations

import hashlib
import json
import re

import torch

from .data import DataSpec, DataSplits
from .inference.fingerprints import hash_values

#: Format version of :func:`data_fingerprint` (part of what is hashed).
_FINGERPRINT_TAG = b"pyro-vae data v1;"
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def data_fingerprint(data: DataSplits) -> str:
    """SHA-256 (hex) of a data set as loaded: its spec and every split's images and labels.

    Covers the shapes and classes (:class:`~pyro_vae.data.DataSpec`) and, for the ``train``,
    ``val`` and ``test`` splits in turn, the values of ``x`` as float64 (the training split
    as stored: grey levels under dynamic binarization, the one-off draw under static) and the
    labels ``y`` as int64 (unlabelled rows ``-1``), with their shapes. So it is a pure function
    of the data definition (source file, split, subset, binarization seed, kept labels),
    the same on any device and in any floating dtype; a data file changed under a run gives
    another. Hashed in slices of rows, so no float64 copy of a whole split is made.

    Example
    -------
    >>> from pyro_vae.data import DataConfig, load_dataset
    >>> data = load_dataset(DataConfig(name="digits"))
    >>> data_fingerprint(data) == data_fingerprint(data.to(dtype=torch.float64))
    True
    """
    digest = hashlib.sha256(_FINGERPRINT_TAG)
    spec = data.spec
    digest.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for split in ("train", "val", "test"):
        x, y = data.split(split)
        x = x.detach().reshape(x.shape[0], spec.data_dim)  # flat rows, whatever the layout held
        digest.update(f"{split};x{tuple(x.shape)};".encode())
        hash_values(digest, x, torch.float64)  # about 8 MB at a time
        if y is not None:
            digest.update(f"y{tuple(y.shape)};".encode())
            hash_values(digest, y, torch.int64)
    return digest.hexdigest()


def data_record(data: DataSplits, fingerprint: str | None = None) -> dict:
    """What config.json records of ``data``: ``{"data_spec": {...}, "data_fingerprint": hex}``.

    ``fingerprint``: one already checked against ``data`` (:func:`check_data`), not computed again.
    """
    return {"data_spec": data.spec.to_dict(), "data_fingerprint": fingerprint or data_fingerprint(data)}


def check_data(data: DataSplits, recorded: str | None, run_dir) -> DataSplits:
    """``data`` if its fingerprint is ``recorded`` (or nothing was recorded), else ``ValueError``.

    The message is one line naming the run, the data set and both fingerprints.
    """
    if recorded is not None:
        now = data_fingerprint(data)
        if now != recorded:
            raise ValueError(
                f"the data of run {str(run_dir)!r} changed: data set {data.name!r} now has "
                f"fingerprint {now}, but the run was trained on {recorded}; restore the data it "
                f"was trained on, or train a new run")
    return data


def read_data_record(raw: dict) -> dict:
    """Pop and check ``data_spec`` and ``data_fingerprint`` from config.json's object ``raw``.

    Returns ``{"data_spec": DataSpec or None, "data_fingerprint": str or None}`` (None where
    absent: a run of an older version); anything the writer does not produce is a
    ``ValueError`` naming the field (the caller adds the file).
    """
    spec, fingerprint = raw.pop("data_spec", None), raw.pop("data_fingerprint", None)
    if spec is not None:
        try:
            spec = DataSpec.from_dict(spec)
        except (TypeError, ValueError) as err:
            raise ValueError(f"field data_spec: {err}") from None
    if fingerprint is not None and not (isinstance(fingerprint, str) and _SHA256.match(fingerprint)):
        raise ValueError(f"field data_fingerprint must be 64 lowercase hex digits (a SHA-256), "
                         f"got {fingerprint!r}")
    return {"data_spec": spec, "data_fingerprint": fingerprint}


__all__ = ["check_data", "data_fingerprint", "data_record", "read_data_record"]
