"""``folder:PATH``: a directory of images (PNG, JPEG, ...), decoded by Pillow.

Layouts (those of ``torchvision.datasets.ImageFolder``):

- ``PATH/CLASS/*.png``: one subfolder per class; the subfolders, sorted by name, are the
  labels ``0..K-1`` (images in deeper folders belong to their top-level class);
- ``PATH/*.png``: images without labels;
- ``PATH/train/...`` and ``PATH/test/...`` (each in one of the layouts above, the same one):
  a fixed test split; otherwise ``test_fraction`` of the images are held out.

Files whose extension is not an image's (torchvision's list: .png, .jpg, .jpeg, .bmp, .pgm,
.ppm, .tif, .tiff, .webp) are skipped, as are hidden files. Every image becomes 8-bit grey
(``channels=1``) or RGB (``channels=3``; an alpha channel is dropped); by default grey if every
image is grey, else RGB. 16-bit grey images (and 32-bit integer ones holding 0..65535) are
scaled to 8 bits (``v / 257``, rounded); floating-point images (Pillow mode ``F``) have no
fixed range and are refused. Without ``image_size`` every image must have the same size; with it,
each is resized to ``(H, W)`` (bilinear, with Pillow's antialiasing). An empty folder, a
mixture of sizes, or a file that is not a readable image is refused in one line naming it.

Example
-------
>>> import os, tempfile
>>> import numpy as np
>>> from PIL import Image
>>> from pyro_vae.data import DataConfig, load_dataset
>>> root = tempfile.mkdtemp()
>>> for label in ("cat", "dog"):
...     os.mkdir(os.path.join(root, label))
...     for i in range(3):
...         pixels = np.full((6, 5, 3), 40 * i, dtype=np.uint8)
...         Image.fromarray(pixels).save(os.path.join(root, label, f"{i}.png"))
>>> data = load_dataset(DataConfig(name=f"folder:{root}", binarize="none"))
>>> data.image_shape, data.num_classes
((3, 6, 5), 2)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .config import DataConfig, RawData
from .files import source_path

#: Extensions read as images (torchvision's ``IMG_EXTENSIONS``), compared in lower case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

#: Pillow modes that hold one grey level per pixel (with or without alpha).
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La")


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if _is_image(p) and
                  not any(part.startswith(".") for part in p.relative_to(directory).parts))


def _scan(root: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """The image files of one split folder, their labels (None: unlabelled) and class names."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = sorted(p for p in root.iterdir() if _is_image(p))
    if classes and loose:
        raise ValueError(f"{root}: holds both images ({loose[0].name}, ...) and class folders "
                         f"({classes[0]}, ...); put every image in a class folder, or none")
    if not classes:
        return loose, None, []
    files, labels = [], []
    for label, name in enumerate(classes):
        found = _images_under(root / name)
        if not found:
            raise ValueError(f"{root / name}: class folder without images (extensions: "
                             f"{', '.join(IMAGE_EXTENSIONS)})")
        files += found
        labels += [label] * len(found)
    return files, labels, classes


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        return Image.open(path)
    # DecompressionBombError: a declared size over Pillow's limit (Image.MAX_IMAGE_PIXELS)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


#: Pillow modes of integer grey levels wider than 8 bits, scaled to 8 bits by :func:`_eight_bit`.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _eight_bit(image, path: Path):
    """``image`` with 16-bit grey levels scaled to 8 bits (``convert("L")`` would clip them
    at 255); a floating-point image, or 32-bit levels outside 0..65535, ``ValueError``."""
    from PIL import Image  # noqa: PLC0415

    if image.mode == "F":
        raise ValueError(f"{path}: floating-point pixels (Pillow mode F) have no fixed range; "
                         f"accepted: 8- or 16-bit images")
    if image.mode not in _WIDE_MODES:
        return image
    levels = np.asarray(image).astype(np.int64)  # (H, W)
    if levels.size and (levels.min() < 0 or levels.max() > 65535):
        raise ValueError(f"{path}: 32-bit grey levels in {levels.min()}..{levels.max()}; accepted: "
                         f"8- or 16-bit images (levels 0..65535)")
    return Image.fromarray(((levels + 128) // 257).astype(np.uint8), "L")


def _decode(path: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """The image as uint8 ``(C, H, W)``: converted to grey or RGB, resized to ``size`` if given."""
    from PIL import Image  # noqa: PLC0415

    with _open(path) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt pixel data
            raise ValueError(f"{path}: not a readable image ({err})") from None
        eight = _eight_bit(image, path)
        try:
            converted = eight.convert("L" if channels == 1 else "RGB")
            if size is not None and converted.size != (size[1], size[0]):
                converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        except (OSError, ValueError, SyntaxError) as err:  # a conversion Pillow cannot make
            raise ValueError(f"{path}: not a readable image ({err})") from None
        pixels = np.asarray(converted, dtype=np.uint8)  # (H, W) or (H, W, 3)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _read_split(root: Path, config: DataConfig) -> tuple[np.ndarray, np.ndarray | None, list[str], int]:
    files, labels, classes = _scan(root)
    if not files:
        raise ValueError(f"{root}: no images found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    grey, first_size = True, None
    for path in files:  # headers only: Pillow decodes pixels lazily
        with _open(path) as image:
            grey = grey and image.mode in _GREY_MODES
            if config.image_size is None:
                if first_size is None:
                    first_size = (path, image.size)
                elif image.size != first_size[1]:
                    (w0, h0), (w, h) = first_size[1], image.size
                    raise ValueError(
                        f"images differ in size: {first_size[0]} is {h0}x{w0} (HxW) but {path} is "
                        f"{h}x{w}; give --image-size H[,W] (DataConfig.image_size) to resize them")
    channels = config.channels or (1 if grey else 3)
    first = _decode(files[0], channels, config.image_size)
    x = np.empty((len(files), first.size), dtype=np.uint8)  # (n, C*H*W)
    x[0] = first.reshape(-1)
    for i, path in enumerate(files[1:], start=1):
        x[i] = _decode(path, channels, config.image_size).reshape(-1)
    y = None if labels is None else np.asarray(labels, dtype=np.int64)
    return x, y, classes, first.shape


def load_folder(config: DataConfig) -> RawData:
    """The images of ``config.name = "folder:PATH"`` (see the module docstring for layouts)."""
    root = source_path(config, folder=True)
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        x, y, classes, shape = _read_split(train_dir, config)
        # test images take the training images' channels; a size that differs is refused below
        x_test, y_test, test_classes, test_shape = _read_split(
            test_dir, dataclasses.replace(config, channels=shape[0]))
        if (y is None) != (y_test is None) or (classes and test_classes != classes):
            raise ValueError(f"{root}: train/ and test/ must have the same class folders, got "
                             f"{classes or 'none'} and {test_classes or 'none'}")
        if test_shape != shape:
            raise ValueError(f"{root}: test images are {test_shape} (C, H, W) but training images "
                             f"are {shape}; give --image-size H[,W] to resize both")
    else:
        x, y, classes, shape = _read_split(root, config)
        x_test = y_test = None
    return RawData(x=x, y=y, image_shape=tuple(int(s) for s in shape), x_test=x_test, y_test=y_test,
                   num_classes=len(classes) or None, pixel_max=255)
