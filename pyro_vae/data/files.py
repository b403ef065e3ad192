"""What the file sources share: where they look, and reading a file's bytes in one checked step."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import DataConfig


def default_data_root() -> Path:
    """Where file-based sources look (and download) when no ``data_dir`` is given."""
    return Path.home() / ".cache" / "pyro-vae"


def source_path(config: DataConfig, *, folder: bool) -> Path:
    """The file (or, with ``folder``, the directory) that ``config.name = "KIND:PATH"`` names.

    A relative ``PATH`` not found from the working directory is looked up in ``data_dir``;
    a path found in neither place is one ``ValueError`` saying where it looked.
    """
    kind, _, text = config.name.partition(":")
    if not text:
        example = "data/faces" if folder else "data/faces.npz"
        raise ValueError(f"dataset '{kind}:' needs a path, e.g. {kind}:{example}")
    found = Path.is_dir if folder else Path.is_file
    path = Path(text).expanduser()
    in_dir = Path(config.data_dir).expanduser() / path if config.data_dir and not path.is_absolute() else None
    if not found(path) and in_dir is not None and found(in_dir):
        return in_dir
    if not found(path):
        if folder:
            what = "is a file, not a folder" if path.exists() else "folder not found"
        else:
            what = "file not found"
        looked = str(path) + (f" and {in_dir}" if in_dir is not None else "")
        raise ValueError(f"dataset {config.name!r}: {what} (looked at {looked})")
    return path


def data_roots(config: DataConfig) -> list[Path]:
    return [Path(config.data_dir).expanduser()] if config.data_dir else [default_data_root()]


def unique_paths(paths):
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out

def read_file_bytes(path: Path) -> bytes:
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
