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
  for a fixed test split), read without unpickling, so a file cannot run code.

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
    data = path.read_bytes()
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


def load_frey(config: DataConfig) -> RawData:
    """Brendan Frey's face images: 1,965 grey-level frames of 28 x 20 pixels, no labels.

    Read from ``frey_rawface.mat`` (variable ``ff``, uint8, one image per column, each
    column the image's rows one after another) in ``data_dir``.
    """
    from scipy.io import loadmat  # noqa: PLC0415  (only this source needs scipy.io)
    from scipy.io.matlab import MatReadError  # noqa: PLC0415

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
    try:
        contents = loadmat(path)
    except (OSError, ValueError, TypeError, MatReadError, NotImplementedError) as err:
        raise ValueError(f"{path}: not a readable MATLAB file ({err})") from err
    if "ff" not in contents:
        keys = sorted(k for k in contents if not k.startswith("__"))
        raise ValueError(f"{path}: no variable 'ff' (the Frey Face images); found: {', '.join(keys) or 'none'}")
    ff = np.asarray(contents["ff"])
    pixels = FREY_SHAPE[0] * FREY_SHAPE[1]
    if ff.ndim != 2 or ff.shape[0] != pixels or ff.shape[1] == 0:
        raise ValueError(f"{path}: 'ff' must have shape ({pixels}, n) (one 28 x 20 image per column), got {ff.shape}")
    if not np.issubdtype(ff.dtype, np.integer) or ff.min() < 0 or ff.max() > 255:
        raise ValueError(f"{path}: 'ff' must hold grey levels 0..255 (uint8), got {ff.dtype}")
    # (n, 560): each row a 28 x 20 image, row-major; levels scaled by 1/255 for the rows kept
    return RawData(x=ff.T, y=None, image_shape=(1, *FREY_SHAPE))


# --------------------------------------------------------------------------- npz:PATH


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
    if n and y.min() < 0:
        raise ValueError(f"{path}: {key} labels must be >= 0 (classes 0..K-1), found {int(y.min())}")
    return y.astype(np.int64)


def load_npz(config: DataConfig) -> RawData:
    """A user's arrays from the ``.npz`` file named by ``config.name = "npz:PATH"``.

    Keys: ``x`` (required): ``(n, D)``, ``(n, H, W)`` or ``(n, C, H, W)``, uint8 grey levels
    0..255, bools, or floats in [0, 1] (a flat ``(n, D)`` array is shown as square images
    when ``D`` is a square, else as one row); ``y`` (optional): integer labels ``0..K-1``,
    ``K = max + 1``; ``x_test``/``y_test`` (optional): a fixed test split. A relative
    ``PATH`` not found from the working directory is looked up in ``data_dir``. The file is
    read with ``allow_pickle=False``: object arrays are refused and no code can run.
    """
    from .data import RawData  # noqa: PLC0415

    path = _npz_path(config)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, not an .npz archive; save it with np.savez(path, x=...)")

    with archive:
        keys = set(archive.files)
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
            try:
                return archive[key]
            except ValueError as err:  # object arrays need pickle
                raise ValueError(
                    f"{path}: cannot read {key!r} without unpickling ({err}); store a numeric array"
                ) from err

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
    return RawData(x=x, y=y, image_shape=image_shape, x_test=x_test, y_test=y_test,
                   num_classes=num_classes)
