"""What the training loop prints per epoch when stderr is not a terminal (a log file, CI).

Example
-------
>>> progress_line({"epoch": 1, "train_elbo": -50.0, "train_reconstruction": -40.0, "train_kl": 10.0,
...                "lr": 1e-3}, 5, 0.5)
'epoch 1/5 train_elbo -50.00 train_reconstruction -40.00 train_kl 10.00 lr 0.001 0.50 s'
"""

from __future__ import annotations


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (False for a file, a pipe, a closed stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_line(record: dict, epochs: int, seconds: float) -> str:
    """The line printed per epoch when stderr is not a terminal.

    Example
    -------
    >>> progress_line({"epoch": 3, "train_elbo": -45.123, "test_elbo": -46.0, "lr": 1e-3,
    ...                "grad_norm": 12.5}, 20, 1.234)
    'epoch 3/20 train_elbo -45.12 test_elbo -46.00 lr 0.001 grad_norm 12.5 1.23 s'
    """
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key, value in record.items():
        if key in ("epoch", "lr", "grad_norm", "kl_weight"):
            continue
        parts.append(f"{key} {value:.2f}")
    parts.append(f"lr {record['lr']:.4g}")
    if "grad_norm" in record:
        parts.append(f"grad_norm {record['grad_norm']:.4g}")
    if "kl_weight" in record:
        parts.append(f"kl_weight {record['kl_weight']:.4g}")
    return " ".join(parts) + f" {seconds:.2f} s"
