"""Data sources read from files: MNIST and Fashion-MNIST (IDX), Frey Face (.mat), ``npz:PATH``.

Each loader takes a :class:`~pyro_vae.data.DataConfig` and returns a
:class:`~pyro_vae.data.RawData` (flattened images: 8-bit grey levels as read, or floats in
[0, 1]); validation, splitting, scaling to [0, 1] and binarization happen in
:func:`pyro_vae.data.load_dataset`.

Where files are looked for
--------------------------
- ``mnist`` / ``fashion-mnist``: the four IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  plain or ``.gz``) in ``data_dir`` (default ``~/.cache/pyro-vae``), in its torchvision-style
  subfolder (``MNIST/raw``, ``FashionMNIST/raw``) and, for Fashion-MNIST, in
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``). With
  ``download=True`` and nothing found, torchvision downloads them into that subfolder. The
  official test split (10,000 images) becomes the test set.
- ``frey``: ``frey_rawface.mat`` in ``data_dir`` (default ``~/.cache/pyro-vae``): 1,965
  grey-level faces of 28 x 20 pixels, without labels.
- ``npz:PATH``: a NumPy archive with ``x`` and optionally ``y`` (and ``x_test``/``y_test``
  for a fixed test split), read without unpickling, so a file cannot run code. Labels must lie
  in ``0..MAX_CLASSES - 1``.

Damaged files
-------------
Every reader here refuses a truncated, corrupt or foreign file with one ``ValueError`` naming
the file and what is wrong, before allocating anything its headers merely claim: an IDX or
``.npy`` header announcing more values than the file holds, a zip member or gzip stream whose
CRC does not match, a MATLAB element running past its end. MATLAB 5 files (Frey Face) are
parsed here rather than by ``scipy.io.loadmat``, whose compiled reader can crash the process
on a damaged file (an unchecked element type code indexes past a table).

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

import gzip
import io
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # data.py imports this module, so its names are imported lazily below
    from .data import DataConfig, RawData


def default_data_root() -> Path:
    """Where file-based sources look (and download) when no ``data_dir`` is given."""
    return Path.home() / ".cache" / "pyro-vae"


def _roots(config: DataConfig) -> list[Path]:
    return [Path(config.data_dir).expanduser()] if config.data_dir else [default_data_root()]


def _unique(paths):
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


# --------------------------------------------------------------------------- IDX files

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        data = path.read_bytes()
    except OSError as err:  # a directory, no permission, an I/O error
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from err
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt gzip file ({err}); delete it and fetch it again") from err
    return data


def read_idx(path) -> np.ndarray:
    """Read one IDX file (plain or gzipped) into an array of its declared type and shape.

    The format: two zero bytes, a type code, the number of dimensions ``k``; then ``k``
    big-endian uint32 sizes; then the values, big-endian, row-major.

    Example
    -------
    >>> import numpy as np, struct, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> _ = open(path, "wb").write(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([7, 0, 9]))
    >>> read_idx(path)
    array([7, 0, 9], dtype=uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'}, expected "
            f"0000TTDD with a type code TT in {sorted(f'{c:02x}' for c in _IDX_DTYPES)} and DD >= 1 "
            f"dimensions); the file is corrupt or of another format"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: IDX header truncated ({len(data)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes of values) but the "
            f"file holds {len(data) - header}; it is truncated or corrupt"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # native byte order, writable copy


@dataclass(frozen=True)
class _IdxSource:
    title: str  # for messages
    torchvision_class: str  # also the name of torchvision's folder: ROOT/<class>/raw
    system_dirs: tuple[str, ...] = ()
    apt_package: str | None = None


MNIST = _IdxSource("MNIST", "MNIST")
FASHION_MNIST = _IdxSource("Fashion-MNIST", "FashionMNIST", ("/usr/share/datasets/fashion-mnist",),
                           "dataset-fashion-mnist")

_IDX_FILES = {  # key -> file name without extension
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _find_idx(directory: Path, stem: str) -> Path | None:
    """``stem`` in ``directory``, plain or gzipped; also the ``train-images.idx3-ubyte``
    spelling of some mirrors."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _idx_dirs(source: _IdxSource, config: DataConfig) -> list[Path]:
    dirs = []
    for root in _roots(config):
        dirs += [root, root / source.torchvision_class / "raw"]
    return _unique(dirs + [Path(d) for d in source.system_dirs])


def _locate_idx(source: _IdxSource, dirs: list[Path]) -> tuple[dict | None, list[str]]:
    """The four files from the first directory holding all of them, and notes on the
    directories holding only some."""
    partial = []
    for d in dirs:
        found = {key: _find_idx(d, stem) for key, stem in _IDX_FILES.items()}
        if all(found.values()):
            return found, partial
        if any(found.values()):
            missing = [_IDX_FILES[k] for k, v in found.items() if v is None]
            partial.append(f"{d} lacks {', '.join(missing)}")
    return None, partial


def _download_idx(source: _IdxSource, root: Path) -> None:
    """Let torchvision fetch the four files into ``root/<class>/raw``."""
    try:
        import torchvision.datasets as tv_datasets  # noqa: PLC0415  (optional, slow import)
    except ImportError as err:
        raise ValueError(f"downloading {source.title} needs torchvision (pip install torchvision)") from err
    root.mkdir(parents=True, exist_ok=True)
    try:
        # One split is enough: torchvision downloads all four files before loading either.
        getattr(tv_datasets, source.torchvision_class)(root=str(root), train=False, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; checksum errors RuntimeError
        raise ValueError(
            f"downloading {source.title} into {root} failed ({err}); fetch the four IDX files "
            f"yourself and pass --data-dir DIR"
        ) from err


def _load_idx_source(source: _IdxSource, config: DataConfig) -> RawData:
    from .data import RawData  # noqa: PLC0415  (data.py imports this module)

    dirs = _idx_dirs(source, config)
    files, partial = _locate_idx(source, dirs)
    if files is None and config.download:
        root = _roots(config)[0]
        _download_idx(source, root)
        dirs = [root / source.torchvision_class / "raw"]
        files, partial = _locate_idx(source, dirs)
    if files is None:
        names = ", ".join(f"{stem}[.gz]" for stem in _IDX_FILES.values())
        target = _roots(config)[0] / source.torchvision_class / "raw"
        hints = [f"--download (torchvision fetches them into {target})",
                 "--data-dir DIR pointing at a folder that holds them"]
        if source.apt_package:
            hints.append(f"the Debian/Ubuntu package: apt-get install {source.apt_package}")
        where = "; ".join(partial) + "; " if partial else ""
        raise ValueError(
            f"{source.title} not found: looked for {names} in {', '.join(map(str, dirs))} "
            f"({where}none holds all four). Get them with {'; or '.join(hints)}"
        )

    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        xp, yp = files[f"x_{split}"], files[f"y_{split}"]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise ValueError(f"{xp}: expected uint8 images of shape (n, H, W), got {x.dtype} {x.shape}")
        if y.ndim != 1 or y.dtype != np.uint8:
            raise ValueError(f"{yp}: expected uint8 labels of shape (n,), got {y.dtype} {y.shape}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{xp} holds {x.shape[0]} images but {yp} holds {y.shape[0]} labels")
        if y.size and y.max() > 9:
            raise ValueError(f"{yp}: labels must lie in 0..9, found {int(y.max())}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            f"{source.title}: training images are {arrays['x_train'].shape[1:]} but test images are "
            f"{arrays['x_test'].shape[1:]} ({files['x_train'].parent})"
        )

    def flat(x):  # (n, H, W) uint8 -> (n, H*W) uint8, scaled to [0, 1] by load_dataset
        return x.reshape(x.shape[0], -1)

    h, w = arrays["x_train"].shape[1:]
    return RawData(
        x=flat(arrays["x_train"]), y=arrays["y_train"].astype(np.int64), image_shape=(1, h, w),
        x_test=flat(arrays["x_test"]), y_test=arrays["y_test"].astype(np.int64), num_classes=10,
    )


def load_mnist(config: DataConfig) -> RawData:
    """MNIST handwritten digits: 60,000 training and 10,000 test images of 28 x 28, 10 classes."""
    return _load_idx_source(MNIST, config)


def load_fashion_mnist(config: DataConfig) -> RawData:
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 images of 28 x 28 clothes, 10 classes."""
    return _load_idx_source(FASHION_MNIST, config)


# --------------------------------------------------------------------------- Frey Face

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


def load_frey(config: DataConfig) -> RawData:
    """Brendan Frey's face images: 1,965 grey-level frames of 28 x 20 pixels, no labels.

    Read from ``frey_rawface.mat`` (variable ``ff``, uint8, one image per column, each
    column the image's rows one after another) in ``data_dir``.
    """
    from .data import RawData  # noqa: PLC0415

    dirs = _roots(config)
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


# --------------------------------------------------------------------------- npz:PATH

#: The most classes an ``npz:`` file's labels may declare (labels ``0..MAX_CLASSES - 1``). A
#: label-conditioned model one-hot encodes labels, so a damaged label of 10**12 would otherwise
#: become an allocation of terabytes long after the file was read.
MAX_CLASSES = 100_000


def _npz_path(config: DataConfig) -> Path:
    text = config.name[len("npz:"):]
    if not text:
        raise ValueError("dataset 'npz:' needs a path, e.g. npz:data/faces.npz")
    path = Path(text).expanduser()
    if not path.is_file() and not path.is_absolute() and config.data_dir:
        path_in_dir = Path(config.data_dir).expanduser() / path
        if path_in_dir.is_file():
            return path_in_dir
    if not path.is_file():
        looked = str(path) + (f" and {Path(config.data_dir).expanduser() / path}"
                              if config.data_dir and not path.is_absolute() else "")
        raise ValueError(f"dataset {config.name!r}: file not found (looked at {looked})")
    return path


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

    Keys: ``x`` (required): ``(n, D)``, ``(n, H, W)`` or ``(n, C, H, W)``, uint8 grey levels
    0..255, bools, or floats in [0, 1] (a flat ``(n, D)`` array is shown as square images
    when ``D`` is a square, else as one row); ``y`` (optional): integer labels ``0..K-1``,
    ``K = max + 1 <= MAX_CLASSES``; ``x_test``/``y_test`` (optional): a fixed test split. A
    relative ``PATH`` not found from the working directory is looked up in ``data_dir``. The
    arrays are read without unpickling (object arrays are refused, no code can run), and a
    header's shape is checked against the bytes stored before anything is allocated.
    """
    from .data import RawData  # noqa: PLC0415

    path = _npz_path(config)
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
