"""Layout: figures, image grids and PNG files. The one module of pyro_vae that imports matplotlib.

Figures have a fixed size in inches (derived from the image shapes) and are saved at
:data:`DPI`, so a PNG's pixel size does not depend on the text drawn in it. Images are
``(C, H, W)`` with C = 1 (drawn in grey) or 3 (drawn in colour, as ``(H, W, 3)`` for
``imshow``); :func:`image_grid` tiles them with :func:`torchvision.utils.make_grid`.

Example
-------
>>> import torch
>>> image_grid(torch.rand(6, 3 * 4 * 5), (3, 4, 5), ncols=3).shape   # 2 rows of 3, 1 px apart
(9, 17, 3)
>>> image_grid(torch.rand(6, 20), (1, 4, 5), ncols=3).shape         # grey: a 2-D array
(9, 17)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the library runs on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from ..checkpoint import atomic_write_bytes  # noqa: E402
from .compute import as_images, check_image_shape  # noqa: E402

#: Resolution of every PNG written here (pixels per inch).
DPI = 100

CELL_WIDTH, CELL_GAP, CELL_TITLE = 0.8, 0.12, 0.3  # inches: titled image cells (components, pca)


def image_grid(images: torch.Tensor, image_shape, ncols: int, pad: int = 1) -> np.ndarray:
    """Tile images into one array, ``ncols`` per row, ``pad`` white pixels between them.

    ``images`` is ``(n, C*H*W)`` or ``(n, C, H, W)`` (see :func:`~pyro_vae.plots.compute.as_images`),
    values clipped to [0, 1]. Returns ``(rows*(H+pad)-pad, ncols*(W+pad)-pad)`` for C = 1 (drawn
    with a grey colour map) and the same with a trailing axis of 3 (RGB) for C = 3.

    Example
    -------
    >>> image_grid(torch.zeros(1, 1, 2, 3), (1, 2, 3), ncols=1)
    array([[0., 0., 0.],
           [0., 0., 0.]], dtype=float32)
    """
    c, h, w = check_image_shape(image_shape)
    batch = as_images(images.detach(), (c, h, w)).to("cpu", torch.float32).clamp(0, 1)  # (n, C, H, W)
    if batch.shape[0] < ncols:  # make_grid narrows a short batch; keep ncols cells, blank ones white
        batch = torch.cat([batch, batch.new_ones(ncols - batch.shape[0], c, h, w)])
    grid = make_grid(batch, nrow=ncols, padding=pad, pad_value=1.0)  # (3, ...): grey repeated to RGB
    if batch.shape[0] > 1:  # make_grid frames a grid of several (not one image): cells touch the axes
        grid = grid[:, pad:grid.shape[1] - pad, pad:grid.shape[2] - pad]
    return grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()


def px(inches: float) -> float:
    """Round a figure length to whole pixels, so the PNG size is exactly figsize * DPI."""
    return max(1, round(inches * DPI)) / DPI


def new_figure(width: float, height: float):
    """An empty figure of ``width`` x ``height`` inches at :data:`DPI`."""
    return plt.figure(figsize=(width, height), dpi=DPI)


def colour_map(name: str):
    """The matplotlib colour map ``name`` (``"tab10"`` ...): a callable from index to RGBA."""
    return plt.get_cmap(name)


#: Figure formats by file suffix; anything else (and a file object) is written as PNG.
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def save(fig, path):
    """Write ``fig`` to ``path`` (PNG, or PDF/SVG by suffix; a binary file object: PNG), close it.

    A file is written beside its final name and moved into place, so a killed process never
    leaves half a figure where an earlier one was. Returns ``path``.
    """
    try:
        if hasattr(path, "write"):
            fig.savefig(path, format="png", dpi=DPI)
            return path
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = FORMATS.get(path.suffix.lower(), "png")
        # the project's atomic write (a umask-respecting mode, a full disk as one line), without
        # fsync: a figure can be drawn again, and a run draws a dozen
        atomic_write_bytes(path, lambda handle: fig.savefig(handle, format=fmt, dpi=DPI), durable=False)
        return path
    finally:
        plt.close(fig)


def image_axes(grid_hw, n_panels=1, *, panel_width=7.0, max_height=7.0, left=0.15, right=0.15,
               top=0.4, bottom=0.15, gap=0.3):
    """A figure with ``n_panels`` axes side by side, each sized to show a ``grid_hw`` image unstretched.

    Margins are in inches. Returns ``(fig, axes)``.
    """
    gh, gw = grid_hw
    pw = panel_width
    ph = pw * gh / gw
    if ph > max_height:
        ph, pw = max_height, max_height * gw / gh
    width = px(left + n_panels * pw + (n_panels - 1) * gap + right)
    height = px(bottom + ph + top)
    fig = new_figure(width, height)
    axes = [fig.add_axes([(left + i * (pw + gap)) / width, bottom / height, pw / width, ph / height])
            for i in range(n_panels)]
    return fig, axes


def show(ax, grid: np.ndarray, title=None, *, ticks=False, signed=False):
    """Draw an :func:`image_grid` on ``ax``: 2-D in grey, ``(H, W, 3)`` in colour.

    ``signed`` draws a 2-D array with a diverging colour map centred at 0 (directions, not images).
    """
    if signed and grid.ndim == 2:
        limit = float(np.abs(grid).max()) or 1.0
        ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    else:
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    if ticks:
        for side in ax.spines.values():
            side.set_visible(False)
        ax.tick_params(length=0, labelsize=8)
    else:
        ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def cell_centres(n: int, size: int, pad: int = 1) -> list[float]:
    """Pixel centres of ``n`` cells of ``size`` pixels ``pad`` apart (tick positions on a grid)."""
    return [j * (size + pad) + (size - 1) / 2 for j in range(n)]


def cells(fig, images, titles, image_shape, *, top, ncols, signed=None):
    """Draw images as titled cells, ``ncols`` per row centred, from ``top`` inches below the top.

    ``signed[i]`` shows image ``i`` with a diverging colour map centred at 0 (one channel) or
    with 0 mapped to grey (colour), for directions rather than images.
    """
    c, h, w = image_shape
    fig_w, fig_h = fig.get_size_inches()
    cw, ch = CELL_WIDTH, CELL_WIDTH * h / w
    left = (fig_w - ncols * cw - (ncols - 1) * CELL_GAP) / 2
    signed = signed or [False] * len(images)
    for i, (image, title, is_signed) in enumerate(zip(images, titles, signed)):
        r, col = divmod(i, ncols)
        x0 = left + col * (cw + CELL_GAP)
        y0 = top + r * (ch + CELL_TITLE) + CELL_TITLE
        ax = fig.add_axes([x0 / fig_w, 1 - (y0 + ch) / fig_h, cw / fig_w, ch / fig_h])
        image = image.detach().to("cpu", torch.float32).reshape(c, h, w)
        if not is_signed:
            show(ax, image_grid(image[None], image_shape, 1))
        elif c == 1:
            show(ax, image[0].numpy(), signed=True)
        else:  # a colour direction: 0 is mid-grey, each channel's sign lighter or darker
            scale = float(image.abs().max()) or 1.0
            show(ax, (0.5 + 0.5 * image / scale).permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8, pad=2)


def cells_size(count, image_shape, ncols) -> tuple[float, float]:
    """``(width, height)`` in inches that :func:`cells` needs for ``count`` images."""
    c, h, w = image_shape
    width = ncols * CELL_WIDTH + (ncols + 1) * CELL_GAP
    return width, -(-count // ncols) * (CELL_WIDTH * h / w + CELL_TITLE)
