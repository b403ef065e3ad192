"""Every figure the subject is taught with, drawn with matplotlib (Agg backend) to PNG.

The package is split by what the figures show:

- :mod:`~pyro_vae.plots.compute`: the numbers behind the figures, torch only (codes, decoded
  images, statistics) and what a model can do, read from its contract;
- :mod:`~pyro_vae.plots.layout`: the one module importing matplotlib (figures, image grids, PNGs);
- :mod:`~pyro_vae.plots.training`, :mod:`~pyro_vae.plots.images`, :mod:`~pyro_vae.plots.latent`,
  :mod:`~pyro_vae.plots.families`: one drawing function per figure, by subject;
- :mod:`~pyro_vae.plots.kinds`: the registry of figure kinds (:data:`FIGURES`), each with its
  options, its ``applies(model, spec)`` test and whether it needs the run's data;
- this module: :func:`plot_kind`, :func:`plot_run` and :func:`write_run_figures`.

Images are ``(C, H, W)`` from the data's ``image_shape`` (a flat batch ``(n, C*H*W)`` is
reshaped): C = 3 is drawn in colour, C = 1 in grey, so 8x8 digits, 28x28 MNIST, 28x20 Frey
faces and colour images all come out the right way round. Figures have a fixed size in inches
and are saved at :data:`DPI`, so a PNG's pixel size does not depend on the text drawn in it.

A run loaded without its data (``run.data`` None, ``run.spec`` giving the shapes) still draws
what needs no test images: curves, samples, manifold, interpolation (between prior draws),
classes, components, pca, and kl from the numbers its evaluation recorded (see
:func:`drawable_kinds`).

Example
-------
>>> from pyro_vae.runs import load_run
>>> from pyro_vae.plots import applicable_kinds, plot_run
>>> run = load_run("runs/vae-digits")                         # doctest: +SKIP
>>> applicable_kinds(run.model, run.data)                     # doctest: +SKIP
['curves', 'reconstructions', 'samples', 'manifold', 'latent', 'interpolation', 'arithmetic', 'kl']
>>> plot_run(run, "manifold")                                 # doctest: +SKIP
PosixPath('runs/vae-digits/figures/manifold.png')
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .compute import (
    ACTIVE_THRESHOLD,
    as_images,
    attribute_vector,
    can_decode,
    can_encode,
    check_image_shape,
    class_grid,
    decode_mean,
    encode_means,
    interpolate,
    interpolate_codes,
    kl_per_dimension,
    latent_activity,
    latent_dim,
    manifold_codes,
    manifold_grid,
    most_active_dims,
    principal_directions,
    prior_codes,
    recorded_kl,
    seeded,
)
from .families import plot_analogies, plot_components, plot_pca
from .images import (
    plot_arithmetic,
    plot_classes,
    plot_interpolation,
    plot_manifold,
    plot_reconstructions,
    plot_samples,
)
from .kinds import (
    FIGURES,
    KIND_OPTIONS,
    KINDS,
    FigureInputs,
    FigureKind,
    applicable_kinds,
    check_applicable,
    drawable_kinds,
    figure_kind,
)
from .latent import LATENT_METHODS, latent_points, plot_kl, plot_latent
from .layout import DPI, image_grid
from .training import plot_curves


def _spec_of(data, spec):
    """What gives the figures' shapes: ``spec`` if given, else the data set (both have
    ``image_shape`` and ``num_classes``); ``ValueError`` when neither is."""
    if spec is not None:
        return spec
    if data is not None:
        return data
    raise ValueError("plot_kind needs data or spec (a DataSpec giving image_shape and num_classes), got neither")


def run_spec(run):
    """The shapes of a loaded run's data: ``run.spec`` (a :class:`~pyro_vae.data.DataSpec`) where
    the run has one, else its data set; either has ``image_shape`` and ``num_classes``.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from pyro_vae.data import DataSpec
    >>> run_spec(SimpleNamespace(spec=DataSpec(48, (3, 4, 4)), data=None)).image_shape
    (3, 4, 4)
    """
    spec = getattr(run, "spec", None)  # runs loaded before DataSpec existed have data only
    return spec if spec is not None else run.data


def plot_kind(kind: str, model, data, path, *, spec=None, history=None, metrics=None, compare=None,
              title: str = "", compare_title: str = "", seed: int | None = 0, **options):
    """Draw the figure ``kind`` of ``model`` into ``path``.

    Parameters
    ----------
    kind : str
        A name in :data:`FIGURES` that applies to the model (:func:`applicable_kinds`).
    data : DataSplits or None
        The data the model was trained on (its test split is drawn); None for a run loaded
        without its data, when ``spec`` must say the shapes and kinds that need data refuse.
    path : str, Path or binary file object
        Where the PNG goes.
    spec : DataSpec, optional
        ``image_shape`` and ``num_classes``; defaults to ``data``'s.
    history, metrics : list, dict
        The run's training history and metrics (``curves``; ``manifold`` reads the recorded
        latent activity when there is no data).
    compare : (model, data) or None
        A second run shown beside the first (``latent`` only), titled ``compare_title``.
    seed : int or None
        Seeds the draws (samples, prior codes) without disturbing torch's global generator.
    options
        The kind's options (:data:`KIND_OPTIONS`: ``n``, ``method``, ``from_label`` ...).

    Returns
    -------
    What was written to: ``path``.

    Example
    -------
    >>> import io
    >>> from pyro_vae.data import DataSpec
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> vae = VAE(3 * 6 * 6, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    >>> plot_kind("samples", vae, None, io.BytesIO(), spec=DataSpec(108, (3, 6, 6)), n=4)   # doctest: +ELLIPSIS
    <_io.BytesIO object at ...>
    """
    shapes = _spec_of(data, spec)
    check_applicable(kind, model, shapes)
    figure = FIGURES.get(kind)
    unknown = sorted(set(options) - set(figure.options))
    if unknown:
        accepted = f"it accepts: {', '.join(figure.options)}" if figure.options else "it takes no options"
        raise ValueError(f"option(s) {', '.join(unknown)} do not apply to figure kind {kind!r}; {accepted}")
    if compare is not None and kind != "latent":
        raise ValueError(f"compare applies to figure kind 'latent' only, got kind {kind!r}")
    if figure.needs_data and data is None:
        raise ValueError(f"figure kind {kind!r} needs the run's data ({figure.description}); "
                         f"this run was loaded without it")
    inputs = FigureInputs(
        model=model, image_shape=tuple(shapes.image_shape), num_classes=shapes.num_classes, data=data,
        history=history or [], metrics=metrics, title=title, seed=seed,
        compare=None if compare is None else (compare_title, *compare))
    was_training = model.training
    model.eval()
    try:
        with seeded(seed, model.device), torch.no_grad():
            return figure.draw(inputs, path, **options)
    finally:
        model.train(was_training)


def _run_title(run) -> str:
    config = run.config
    extras = [f"{k}={v}" for k, v in config.model_config.items() if k in ("latent_dim", "guide", "prior")]
    name = f"{run.directory.name}: {config.model}"
    return f"{name} ({', '.join(extras)})" if extras else name


def plot_run(run, kind: str, out=None, *, compare=None, seed: int | None = 0, **options):
    """Draw figure ``kind`` of a loaded run (:func:`pyro_vae.runs.load_run`) into ``out``.

    ``out`` defaults to ``<run>/figures/<kind>.png``; ``compare`` is a second loaded run
    (``latent`` only). A run loaded without its data draws the kinds that need none, with the
    shapes from ``run.spec``. Returns the path (or file object) written.

    Example
    -------
    >>> from pyro_vae.runs import load_run
    >>> plot_run(load_run("runs/vae-digits"), "samples", "samples.png", n=16)   # doctest: +SKIP
    'samples.png'
    """
    FIGURES.get(kind)  # an unknown kind is refused before anything is read
    out = Path(run.directory) / "figures" / f"{kind}.png" if out is None else out
    metrics = run.metrics()
    return plot_kind(
        kind, run.model, run.data, out, spec=run_spec(run), history=metrics.get("history", []),
        metrics=metrics, compare=None if compare is None else (compare.model, compare.data),
        title=_run_title(run), compare_title="" if compare is None else _run_title(compare),
        seed=seed, **options)


def write_run_figures(model, data, history, out_dir, metrics=None, *, spec=None) -> list[Path]:
    """Write every figure that can be drawn (PCA for the latent view, never t-SNE) into ``out_dir``.

    With ``data`` None (``spec`` then says the shapes) the kinds that need data are left out.
    A figure that fails is reported with a warning and skipped, so a finished training keeps
    its other figures.

    Example
    -------
    >>> write_run_figures(model, data, result.history, "runs/x/figures")   # doctest: +SKIP
    [PosixPath('runs/x/figures/curves.png'), ...]
    """
    out_dir = Path(out_dir)
    written = []
    for kind in drawable_kinds(model, data, spec):
        try:
            written.append(plot_kind(kind, model, data, out_dir / f"{kind}.png", spec=spec,
                                     history=history, metrics=metrics))
        except Exception as err:  # noqa: BLE001  (one broken figure must not lose the others)
            warnings.warn(f"figure {kind!r} was not written: {type(err).__name__}: {err}", stacklevel=2)
    return written


__all__ = [
    "ACTIVE_THRESHOLD", "DPI", "FIGURES", "KINDS", "KIND_OPTIONS", "LATENT_METHODS", "FigureInputs",
    "FigureKind", "applicable_kinds", "as_images", "attribute_vector", "can_decode", "can_encode",
    "check_applicable", "check_image_shape", "class_grid", "decode_mean", "drawable_kinds", "encode_means",
    "figure_kind", "image_grid", "interpolate", "interpolate_codes", "kl_per_dimension", "latent_activity",
    "latent_dim", "latent_points", "manifold_codes", "manifold_grid", "most_active_dims", "plot_analogies",
    "plot_arithmetic", "plot_classes", "plot_components", "plot_curves", "plot_interpolation", "plot_kind",
    "plot_kl", "plot_latent", "plot_manifold", "plot_pca", "plot_reconstructions", "plot_run",
    "plot_samples", "principal_directions", "prior_codes", "recorded_kl", "run_spec", "write_run_figures",
]
