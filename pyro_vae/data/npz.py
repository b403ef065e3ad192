"""``npz:PATH``: a user's NumPy arrays, read without unpickling and checked before allocating.

The archive holds ``x`` and optionally ``y`` (and ``x_test``/``y_test`` for a fixed test
split). Members are parsed here, not by ``np.load``: object arrays are refused (no code can
run), a header's shape is checked against the bytes stored before anything is allocated, and
each member's CRC is verified.

Example
-------
>>> import numpy as np, tempfile, os
>>> from pyro_vae.data import DataConfig, load_dataset
>>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
>>> np.savez(path, x=np.random.default_rng(0).integers(0, 256, (10, 4, 4), dtype=np.uint8))
>>> load_dataset(DataConfig(name=f"npz:{path}", binarize="none")).image_shape
(1, 4, 4)
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .config import DataConfig, RawData
from .files import source_path

#: The most classes an ``npz:`` file's labels may declare (labels ``0..MAX_CLASSES - 1``). A
#: label-conditioned model one-hot encodes labels, so a damaged label of 10**12 would otherwise
#: become an allocation of terabytes long after the file was read.
MAX_CLASSES = 100_000


def _npz_images(path: Path, key: str, x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``x`` as ``(n, D)`` (uint8 levels kept as they are, bools and floats as float32) and
    its image shape ``(C, H, W)``; :func:`pyro_vae.data.load_dataset` checks the values."""
    if x.ndim == 2:
        d = x.shape[1]
        side = math.isqrt(d)
        image_shape = (1, side, side) if side * side == d else (1, 1, d)
    elif x.ndim == 3:
        image_shape = (1, *x.shape[1:])
    elif x.ndim == 4:
        x = channels_first(x, f"{path}: {key}")
        image_shape = tuple(x.shape[1:])
    else:
        raise ValueError(f"{path}: {key} must have shape (n, D), (n, H, W) or (n, C, H, W), got {x.shape}")
    if x.shape[0] == 0 or math.prod(image_shape) == 0:
        raise ValueError(f"{path}: {key} is empty (shape {x.shape})")
    flat = x.reshape(x.shape[0], -1)
    if x.dtype == np.uint8:  # scaled by 1/255 (RawData.pixel_max) for the rows kept
        return flat, image_shape
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.floating):
        with np.errstate(over="ignore"):  # beyond float32: Inf, refused by load_dataset's check
            return flat.astype(np.float32), image_shape
    raise ValueError(
        f"{path}: {key} has dtype {x.dtype}; store uint8 (0..255, scaled by 1/255), bool, or "
        f"floats in [0, 1]"
    )


#: Channel counts an image array may have: grey or RGB.
CHANNELS = (1, 3)


def channels_first(x: np.ndarray, what: str) -> np.ndarray:
    """A 4-D image array ``(n, C, H, W)`` or ``(n, H, W, C)`` as ``(n, C, H, W)``.

    The rule: the channel axis is axis 1 or axis 3, the one whose size is 1 (grey) or 3 (RGB).
    When both are (``(n, 3, 5, 3)``: 3 x 5 RGB images, or 5 x 3 images with 3 channels?) or
    neither is (4 channels, say), the array is refused, never guessed: store it as ``(n, C,
    H, W)`` with C in {1, 3}, or grey images as ``(n, H, W)``.

    Example
    -------
    >>> channels_first(np.zeros((2, 28, 28, 3)), "x").shape
    (2, 3, 28, 28)
    """
    first, last = x.shape[1] in CHANNELS, x.shape[3] in CHANNELS
    if first and last:
        raise ValueError(
            f"{what} has shape {x.shape}: ambiguous, both axis 1 and axis 3 could hold the "
            f"channels; store grey images as (n, H, W), or channels first as (n, C, H, W) with "
            f"H, W not in {{1, 3}}")
    if not (first or last):
        raise ValueError(
            f"{what} has shape {x.shape}: no channel axis of size 1 (grey) or 3 (RGB) at axis 1 "
            f"(n, C, H, W) or axis 3 (n, H, W, C); drop an alpha channel, or store grey "
            f"images as (n, H, W)")
    return x if first else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _npz_labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{path}: {key} must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{path}: {key} must have shape ({n},), one label per example, got {y.shape}")
    if n:
        low, high = int(y.min()), int(y.max())  # Python ints: uint64 values do not wrap
        if low < -1:
            raise ValueError(f"{path}: {key} labels must be >= 0 (classes 0..K-1) or -1 "
                             f"(unlabelled), found {low}")
        if high >= MAX_CLASSES:
            raise ValueError(
                f"{path}: {key} labels must be < {MAX_CLASSES} (classes 0..K-1 with K <= "
                f"MAX_CLASSES = {MAX_CLASSES}), found {high}"
            )
    return y.astype(np.int64)


def read_npz_arrays(path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path``, read without pickle and without trusting
    its headers (see :func:`_read_npz_array`); any damage is one ``ValueError`` naming the file."""
    path = Path(path)
    with _open_npz(path) as archive:
        members = _npz_members(path, archive)
        return {key: _read_npz_array(path, archive, key, info) for key, info in members.items()}


def _open_npz(path: Path) -> zipfile.ZipFile:
    """``path`` opened as a zip archive; a single ``.npy`` array or anything else refused."""
    prefix = np.lib.format.MAGIC_PREFIX
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(prefix))
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from err
    if magic == prefix:
        raise ValueError(f"{path}: a single .npy array, not an .npz archive; save it with np.savez(path, x=...)")
    try:
        return zipfile.ZipFile(path)
    except Exception as err:  # a damaged zip directory fails as BadZipFile, OSError, EOFError, ...
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err


def _npz_members(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Array name -> zip member, named as ``np.load`` names them (``x.npy`` -> ``x``)."""
    members = {}
    for info in archive.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in members:
            raise ValueError(f"{path}: holds two members for array {key!r} "
                             f"({members[key].filename!r} and {info.filename!r}); the file is corrupt")
        members[key] = info
    return members


def _read_npz_array(path: Path, archive: zipfile.ZipFile, key: str, info: zipfile.ZipInfo) -> np.ndarray:
    """The ``.npy`` array in ``info``, read without unpickling and without trusting its header:
    the size the header declares must be the size the member holds before anything is
    allocated, and the member's CRC is checked by reading it to its end."""
    where = f"{path}: array {key!r} (member {info.filename!r})"
    try:
        handle = archive.open(info)
    except Exception as err:  # BadZipFile (local header), NotImplementedError (method), ...
        raise ValueError(f"{where} cannot be read ({err}); the file is corrupt") from err
    with handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
            else:  # 3.0 only serves structured dtypes with non-Latin-1 field names
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
            offset = handle.tell()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # bad CRC, bad deflate
            raise ValueError(f"{where} cannot be read ({err}); the file is corrupt") from err
        except Exception as err:  # numpy: no magic string, a header that does not parse
            raise ValueError(f"{where} is not a readable .npy array ({err})") from err
        if dtype.hasobject:
            raise ValueError(f"{path}: cannot read {key!r} without unpickling (it holds Python "
                             f"objects, dtype {dtype}); store a numeric array")
        count = math.prod(shape)
        declared, stored = count * dtype.itemsize, info.file_size - offset
        if declared != stored:
            raise ValueError(
                f"{where}: its header declares shape {shape} of {dtype} ({declared} bytes) but the "
                f"member holds {stored} bytes of values; the file is truncated or corrupt"
            )
        try:
            values = np.empty(count, dtype=dtype)
            buffer = memoryview(values.view(np.uint8)) if declared else memoryview(b"")
            filled = 0
            while filled < declared:  # in pieces: no second copy of a large array
                chunk = handle.read(min(declared - filled, 1 << 24))
                if not chunk:
                    break
                buffer[filled:filled + len(chunk)] = chunk
                filled += len(chunk)
            trailing = handle.read(1)  # reaching the end makes zipfile check the CRC
        except MemoryError as err:
            raise ValueError(f"{where}: {declared} bytes do not fit in memory") from err
        except Exception as err:  # BadZipFile (bad CRC), zlib.error, EOFError, OSError, ...
            raise ValueError(f"{where} cannot be read ({err}); the file is corrupt") from err
    if filled != declared or trailing:
        raise ValueError(f"{where}: holds {'fewer' if filled != declared else 'more'} bytes than "
                         f"its {declared} of values; the file is truncated or corrupt")
    if fortran_order:
        return values.reshape(shape[::-1]).transpose()
    return values.reshape(shape)


def load_npz(config: DataConfig) -> RawData:
    """A user's arrays from the ``.npz`` file named by ``config.name = "npz:PATH"``.

    Keys: ``x`` (required): ``(n, D)``, ``(n, H, W)``, ``(n, C, H, W)`` or ``(n, H, W, C)``
    (C = 1 or 3; see :func:`channels_first` for the rule), uint8 grey levels
    0..255, bools, or floats in [0, 1] (a flat ``(n, D)`` array is shown as square images
    when ``D`` is a square, else as one row); ``y`` (optional): integer labels ``0..K-1``,
    ``K = max + 1 <= MAX_CLASSES``; ``x_test``/``y_test`` (optional): a fixed test split. A
    relative ``PATH`` not found from the working directory is looked up in ``data_dir``. The
    arrays are read without unpickling (object arrays are refused, no code can run), and a
    header's shape is checked against the bytes stored before anything is allocated.
    """
    path = source_path(config, folder=False)
    with _open_npz(path) as archive:
        members = _npz_members(path, archive)
        keys = set(members)
        if "x" not in keys:
            raise ValueError(
                f"{path}: no array 'x' (the images); found: {', '.join(sorted(keys)) or 'none'}; "
                f"save with np.savez(path, x=images, y=labels)"
            )
        if "y_test" in keys and "x_test" not in keys:
            raise ValueError(f"{path}: has 'y_test' but no 'x_test'")
        if "x_test" in keys and ("y" in keys) != ("y_test" in keys):
            raise ValueError(f"{path}: give labels for both splits ('y' and 'y_test') or for neither")

        def get(key):
            return _read_npz_array(path, archive, key, members[key])

        x, image_shape = _npz_images(path, "x", get("x"))
        y = _npz_labels(path, "y", get("y"), x.shape[0]) if "y" in keys else None
        x_test = y_test = None
        if "x_test" in keys:
            x_test, test_shape = _npz_images(path, "x_test", get("x_test"))
            if test_shape != image_shape:
                raise ValueError(f"{path}: x_test images are {test_shape} but x images are {image_shape}")
            if "y_test" in keys:
                y_test = _npz_labels(path, "y_test", get("y_test"), x_test.shape[0])
    num_classes = None
    if y is not None:
        num_classes = int(max(y.max(), -1 if y_test is None else y_test.max())) + 1
        if num_classes == 0:
            raise ValueError(f"{path}: y marks every example unlabelled (-1); give some labels or "
                             f"leave y out")
    return RawData(x=x, y=y, image_shape=image_shape, x_test=x_test, y_test=y_test,
                   num_classes=num_classes)
