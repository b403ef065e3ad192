"""Frey Face from ``frey_rawface.mat``, with a MATLAB 5 reader of its own.

``frey_rawface.mat`` in ``data_dir`` (default ``~/.cache/pyro-vae``) holds 1,965 grey-level
faces of 28 x 20 pixels, without labels. MATLAB 5 files are parsed here rather than by
``scipy.io.loadmat``, whose compiled reader can crash the process on a damaged file (an
unchecked element type code indexes past a table); every damaged file is one ``ValueError``.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .config import DATASETS, DataConfig, RawData
from .files import data_roots

FREY_FILE = "frey_rawface.mat"
FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FREY_SHAPE = (28, 20)


# MATLAB 5 element type codes of numeric data -> numpy dtypes (byte order added per file).
_MAT_NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
                12: "i8", 13: "u8"}
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED, _MI_UTF8 = 1, 5, 6, 14, 15, 16
# MATLAB array classes of numeric matrices (mxDOUBLE_CLASS .. mxUINT64_CLASS).
_MX_NUMERIC = range(6, 16)
_MX_NAMES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse", 16: "function",
             17: "opaque"}


class _MatError(ValueError):
    """A damaged or unsupported MATLAB 5 file (the reason; the caller adds the path)."""


def _mat_elements(buf: bytes, order: str, where: str):
    """The data elements packed in ``buf``: ``(type code, payload)``, each checked to lie
    within ``buf``. A small element holds its type and size (1..4 bytes) in one 32-bit word
    and its payload in the next; a full one has an 8-byte tag and is padded to 8 bytes."""
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < 8:
            raise _MatError(f"{where}: element tag at byte {pos} truncated")
        word, count = struct.unpack_from(order + "II", buf, pos)
        if word >> 16:  # small data element
            mdtype, count = word & 0xFFFF, word >> 16
            if count > 4:
                raise _MatError(f"{where}: small element at byte {pos} claims {count} bytes (at most 4)")
            yield mdtype, buf[pos + 4:pos + 4 + count]
            pos += 8
            continue
        start = pos + 8
        if count > len(buf) - start:
            raise _MatError(f"{where}: element at byte {pos} claims {count} bytes but "
                            f"{len(buf) - start} remain; the file is truncated or corrupt")
        yield word, buf[start:start + count]
        pos = start + count + (-count % 8)


def _mat_matrix(buf: bytes, order: str, where: str) -> tuple[str, np.ndarray | str]:
    """One miMATRIX element: its name and, for a real numeric matrix, its values (in the
    dtype they are stored in, as ``scipy.io.loadmat`` gives them); else a description."""
    elements = _mat_elements(buf, order, where)
    header = [next(elements, None) for _ in range(3)]
    if any(e is None for e in header):
        raise _MatError(f"{where}: array header truncated (needs flags, dimensions and a name)")
    (flags_type, flags), (dims_type, dims), (name_type, name) = header
    if flags_type != _MI_UINT32 or len(flags) != 8:
        raise _MatError(f"{where}: array flags corrupt (type {flags_type}, {len(flags)} bytes)")
    if dims_type not in (_MI_INT32, _MI_UINT32) or len(dims) % 4 or len(dims) < 8:
        raise _MatError(f"{where}: array dimensions corrupt (type {dims_type}, {len(dims)} bytes)")
    if name_type not in (_MI_INT8, _MI_UTF8):
        raise _MatError(f"{where}: array name corrupt (type {name_type})")
    word = struct.unpack_from(order + "I", flags)[0]
    mclass, is_complex = word & 0xFF, bool(word >> 11 & 1)
    shape = struct.unpack(f"{order}{len(dims) // 4}i", dims)
    name = name.decode("latin-1")
    if min(shape) < 0:
        raise _MatError(f"{where}: variable {name!r} has negative dimensions {shape}")
    if mclass not in _MX_NUMERIC or is_complex:
        kind = "complex" if is_complex else _MX_NAMES.get(mclass, f"class-{mclass}")
        return name, f"a {kind} array"
    real = next(elements, None)
    if real is None or real[0] not in _MAT_NUMERIC:
        raise _MatError(f"{where}: variable {name!r} lacks its numeric values "
                        f"(type {None if real is None else real[0]})")
    dtype = np.dtype(_MAT_NUMERIC[real[0]]).newbyteorder(order)
    if len(real[1]) != math.prod(shape) * dtype.itemsize:
        raise _MatError(f"{where}: variable {name!r} of shape {shape} needs "
                        f"{math.prod(shape) * dtype.itemsize} bytes of {dtype.name}, the file "
                        f"holds {len(real[1])}; it is truncated or corrupt")
    values = np.frombuffer(real[1], dtype=dtype).astype(dtype.newbyteorder("="))  # native copy
    return name, values.reshape(shape[::-1]).T  # MATLAB stores columns first


def read_mat5(data: bytes) -> dict:
    """The variables of a MATLAB 5 file (the format of ``save -v6``/``-v7``, compressed or
    not): numeric matrices as arrays, anything else as a one-line description.

    Raises ``ValueError`` (without the file name) on anything damaged or unsupported.
    """
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise _MatError("no MATLAB 5 header (128 bytes ending in the byte-order mark IM or MI)")
    order = "<" if data[126:128] == b"IM" else ">"
    variables = {}
    for offset, (mdtype, payload) in _top_level_elements(data, order):
        where = f"variable at byte {offset}"
        if mdtype == _MI_COMPRESSED:
            try:
                payload = zlib.decompress(payload)
            except (zlib.error, MemoryError) as err:
                raise _MatError(f"{where}: compressed data corrupt ({err})") from err
            inner = list(_mat_elements(payload, order, where))
            if len(inner) != 1 or inner[0][0] != _MI_MATRIX:
                raise _MatError(f"{where}: compressed element does not hold exactly one array")
            mdtype, payload = inner[0]
        if mdtype != _MI_MATRIX:
            raise _MatError(f"{where}: element of type {mdtype}, expected an array (14) or "
                            f"compressed data (15)")
        name, value = _mat_matrix(payload, order, where)
        if name in variables:
            raise _MatError(f"{where}: a second variable named {name!r}")
        variables[name] = value
    return variables


def _top_level_elements(data: bytes, order: str):
    """``(offset, (type, payload))`` of the elements after the 128-byte header; unlike the
    elements inside an array, these are not padded."""
    pos = 128
    while pos < len(data):
        if len(data) - pos < 8:
            raise _MatError(f"element tag at byte {pos} truncated")
        mdtype, count = struct.unpack_from(order + "II", data, pos)
        if count > len(data) - pos - 8:
            raise _MatError(f"element at byte {pos} claims {count} bytes but {len(data) - pos - 8} "
                            f"remain; the file is truncated or corrupt")
        yield pos, (mdtype, data[pos + 8:pos + 8 + count])
        pos += 8 + count


def _read_frey_mat(path: Path) -> dict:
    """The variables of ``path``: MATLAB 5 files parsed by :func:`read_mat5`, version 4 files
    (pure Python in scipy) by ``scipy.io.loadmat``, version 7.3 (HDF5) refused."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from err
    if len(data) >= 4 and 0 in data[:4]:  # MATLAB 4: the first word is a small type code
        from scipy.io import loadmat  # noqa: PLC0415  (only this format needs scipy.io)

        try:
            return loadmat(io.BytesIO(data))
        except Exception as err:  # scipy's v4 reader fails in many ways on a damaged file
            raise ValueError(f"{path}: not a readable MATLAB file ({err})") from err
    if data[124:126] in (b"\x00\x02", b"\x02\x00"):
        raise ValueError(f"{path}: a MATLAB 7.3 (HDF5) file, which is not supported; save it "
                         f"in MATLAB with save(..., '-v7')")
    try:
        return read_mat5(data)
    except _MatError as err:
        raise ValueError(f"{path}: not a readable MATLAB file ({err})") from err


@DATASETS.register("frey")
def load_frey(config: DataConfig) -> RawData:
    """Brendan Frey's face images: 1,965 grey-level frames of 28 x 20 pixels, no labels.

    Read from ``frey_rawface.mat`` (variable ``ff``, uint8, one image per column, each
    column the image's rows one after another) in ``data_dir``.
    """
    dirs = data_roots(config)
    path = next((d / FREY_FILE for d in dirs if (d / FREY_FILE).is_file()), None)
    if path is None:
        note = ""
        if config.download:
            note = " (it cannot be downloaded automatically; --download does not apply)"
        raise ValueError(
            f"Frey Face not found: looked for {FREY_FILE} in {', '.join(map(str, dirs))}{note}. "
            f"Get {FREY_FILE} from Sam Roweis' data page (https://cs.nyu.edu/~roweis/data.html, "
            f"file {FREY_URL}), put it in a folder and pass --data-dir FOLDER"
        )
    contents = _read_frey_mat(path)
    if "ff" not in contents:
        keys = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(f"{path}: no variable 'ff' (the Frey Face images); found: {', '.join(keys) or 'none'}")
    ff = contents["ff"]
    if not isinstance(ff, np.ndarray):
        raise ValueError(f"{path}: 'ff' must hold grey levels 0..255 (uint8), got {ff}")
    pixels = FREY_SHAPE[0] * FREY_SHAPE[1]
    if ff.ndim != 2 or ff.shape[0] != pixels or ff.shape[1] == 0:
        raise ValueError(f"{path}: 'ff' must have shape ({pixels}, n) (one 28 x 20 image per column), got {ff.shape}")
    if not np.issubdtype(ff.dtype, np.integer) or ff.min() < 0 or ff.max() > 255:
        raise ValueError(f"{path}: 'ff' must hold grey levels 0..255 (uint8), got {ff.dtype}")
    # (n, 560): each row a 28 x 20 image, row-major; levels scaled by 1/255 for the rows kept
    return RawData(x=ff.T, y=None, image_shape=(1, *FREY_SHAPE))
