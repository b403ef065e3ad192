"""Figures drawn with matplotlib (Agg backend) to PNG.

Every function takes tensors or a model and returns the path it wrote. Images are flattened
``(n, D)`` tensors reshaped with the data set's ``image_shape`` ``(C, H, W)``, so 8x8 digits,
28x28 MNIST and 28x20 Frey faces all come out the right way round.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def image_grid(images: torch.Tensor, image_shape, ncols: int, pad: int = 1) -> np.ndarray:
    """Tile ``(n, D)`` images into one ``(rows*(H+pad)-pad, ncols*(W+pad)-pad[, C])`` array."""
    c, h, w = image_shape
    images = images.detach().to("cpu", torch.float32).reshape(-1, c, h, w).clamp(0, 1).numpy()
    n = images.shape[0]
    nrows = -(-n // ncols)
    grid = np.ones((c, nrows * (h + pad) - pad, ncols * (w + pad) - pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[:, r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = images[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _show(ax, grid, title=None):
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def plot_curves(history: list, path) -> Path:
    """Train (and, where evaluated, test) ELBO per epoch, nats per example."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_elbo"] for h in history], label="train ELBO")
    tested = [h for h in history if h.get("test_elbo") is not None]
    if tested:
        ax.plot([h["epoch"] for h in tested], [h["test_elbo"] for h in tested], "o-", label="test ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reconstructions(model, x, image_shape, path, y=None, n: int = 16) -> Path:
    """Test inputs (top row) above their reconstructions (bottom row)."""
    x = x[:n]
    y = None if y is None else y[:n]
    recon = model.reconstruct(x, y)
    fig, ax = plt.subplots(figsize=(max(4, n * 0.5), 1.4))
    _show(ax, image_grid(torch.cat([x, recon]), image_shape, ncols=x.shape[0]),
          "inputs (top) / reconstructions (bottom)")
    return _save(fig, path)


def plot_samples(model, image_shape, path, n: int = 64, y=None) -> Path:
    """Draws from the model: the likelihood's mean image beside a sample of the pixels."""
    ncols = int(np.ceil(np.sqrt(n)))
    seed = torch.random.get_rng_state()
    means = model.sample(n, y, mean=True)
    torch.random.set_rng_state(seed)  # same z for both panels
    pixels = model.sample(n, y, mean=False)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    _show(axes[0], image_grid(means, image_shape, ncols), "decoder mean")
    _show(axes[1], image_grid(pixels, image_shape, ncols), "pixel sample")
    return _save(fig, path)


def write_run_figures(model, data, history, out_dir) -> list[Path]:
    """The figures written at the end of training into ``out_dir``."""
    out_dir = Path(out_dir)
    x, y = data.split("test")
    y = y if model.needs_labels else None
    written = [plot_curves(history, out_dir / "curves.png")]
    was_training = model.training
    model.eval()
    try:
        try:
            written.append(plot_reconstructions(model, x, data.image_shape, out_dir / "reconstructions.png", y))
        except NotImplementedError:
            pass
        sample_labels = None
        if model.needs_labels:
            sample_labels = torch.arange(64, device=x.device) % (data.num_classes or 1)
        written.append(plot_samples(model, data.image_shape, out_dir / "samples.png", y=sample_labels))
    finally:
        model.train(was_training)
    return written
