"""What the benchmarks share: their data, a device sync, and /proc/self/status readings."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pyro_vae import DataConfig, load_dataset  # noqa: E402
from pyro_vae.data import DataSplits  # noqa: E402

#: Where the Debian package dataset-fashion-mnist puts the IDX files.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def fashion_or_synthetic(train_subset: int, test_size: int) -> tuple[DataSplits, bool]:
    """Fashion-MNIST (the first ``train_subset`` shuffled training images, the official test
    set) when installed, else a synthetic stand-in of the same shape with ``test_size``
    statically binarized test images. Returns ``(data, is_fashion_mnist)``."""
    if FASHION_DIR.is_dir():
        try:
            return load_dataset(DataConfig("fashion-mnist", subset=train_subset,
                                           data_dir=str(FASHION_DIR))), True
        except ValueError as err:  # the installed files are unreadable
            print(f"fashion-mnist unavailable ({err}); using a synthetic stand-in")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(train_subset + test_size, 784, generator=gen) ** 3  # sparse-ish grey levels
    data = DataSplits("synthetic", (1, 28, 28), x[:train_subset], None, x[:0], None,
                   torch.bernoulli(x[train_subset:], generator=gen), None, None, "dynamic")
    return data, False


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def proc_status_mb(key: str) -> float | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
