"""MNIST and Fashion-MNIST from their IDX files (plain or gzipped), read and checked here.

The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or ``.gz``) are looked for
in ``data_dir`` (default ``~/.cache/pyro-vae``), in its torchvision-style subfolder
(``MNIST/raw``, ``FashionMNIST/raw``) and, for Fashion-MNIST, in
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``). With
``download=True`` and nothing found, torchvision downloads them into that subfolder. The
official test split (10,000 images) becomes the test set. A header announcing more values
than the file holds is refused before anything is allocated.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DATASETS, DataConfig, RawData
from .files import data_roots, read_file_bytes, unique_paths

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}




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
    data = read_file_bytes(path)
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
    for root in data_roots(config):
        dirs += [root, root / source.torchvision_class / "raw"]
    return unique_paths(dirs + [Path(d) for d in source.system_dirs])


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

    dirs = _idx_dirs(source, config)
    files, partial = _locate_idx(source, dirs)
    if files is None and config.download:
        root = data_roots(config)[0]
        _download_idx(source, root)
        dirs = [root / source.torchvision_class / "raw"]
        files, partial = _locate_idx(source, dirs)
    if files is None:
        names = ", ".join(f"{stem}[.gz]" for stem in _IDX_FILES.values())
        target = data_roots(config)[0] / source.torchvision_class / "raw"
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


@DATASETS.register("mnist")
def load_mnist(config: DataConfig) -> RawData:
    """MNIST handwritten digits: 60,000 training and 10,000 test images of 28 x 28, 10 classes."""
    return _load_idx_source(MNIST, config)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(config: DataConfig) -> RawData:
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 images of 28 x 28 clothes, 10 classes."""
    return _load_idx_source(FASHION_MNIST, config)
