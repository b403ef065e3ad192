"""The figure kinds: one :class:`~pyro_vae.registry.Registry` entry per kind, in report order.

Each kind is a :class:`FigureKind`: a description, the options it accepts, whether it needs
the run's data, an ``applies(model, spec)`` test built on the model contract (its public
methods and declared attributes such as ``needs_labels``, ``latent_dim``, ``posterior``) and
a drawer ``draw(inputs, path, **options)`` reading a :class:`FigureInputs`. A plug-in adds a
kind with the :func:`figure_kind` decorator, exactly as the built-ins below do.

Example
-------
>>> from pyro_vae.plots.kinds import FIGURES, figure_kind
>>> FIGURES.get("manifold").options
('n', 'label')
>>> @figure_kind("blank", "an empty figure", applies=lambda model, spec: True)   # doctest: +SKIP
... def draw_blank(inputs, path):
...     ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ..registry import Registry
from . import families, images, latent, training
from .compute import (
    can_decode,
    can_encode,
    can_reconstruct,
    decodes_any_class,
    has_posterior_scale,
    is_conditional,
    latent_dim,
    recorded_activity,
    recorded_kl,
)


@dataclass(frozen=True)
class FigureKind:
    """One kind of figure.

    ``applies(model, spec)`` says whether the kind fits ``model``; ``spec`` is what is known
    of the data (``image_shape``, ``num_classes``: a :class:`~pyro_vae.data.DataSpec` or the
    data set itself), or None when nothing is. ``needs_data`` kinds draw the test images and
    are refused for a run loaded without its data.
    """

    name: str
    description: str
    draw: Callable
    applies: Callable
    options: tuple[str, ...] = ()
    needs_data: bool = False


@dataclass
class FigureInputs:
    """What a drawer may read: the model, the data's shapes, and the data where it was loaded.

    ``data`` is None for a run loaded without its data; ``test`` then refuses, naming the kind.
    ``compare`` is ``(title, model, data)`` of a second run (``latent`` only); ``seed`` seeds
    what a drawer randomizes itself (t-SNE).
    """

    model: torch.nn.Module
    image_shape: tuple[int, int, int]
    num_classes: int | None = None
    data: object = None
    history: list = field(default_factory=list)
    metrics: dict | None = None
    title: str = ""
    compare: tuple | None = None
    seed: int | None = 0

    def test(self, kind: str):
        """The test split ``(x, y)``: ``x`` ``(n, D)``, ``y`` ``(n,)`` or None."""
        if self.data is None:
            raise ValueError(f"figure kind {kind!r} needs the run's data; this run was loaded without it")
        return self.data.split("test")


#: Every figure kind, in the order a report shows them (a plug-in's come after the built-ins).
FIGURES = Registry("figure kind")


def figure_kind(name: str, description: str, *, applies: Callable, options=(), needs_data: bool = False):
    """Decorator registering ``draw(inputs, path, **options)`` as the drawer of figure kind ``name``.

    Example
    -------
    >>> @figure_kind("blank", "nothing", applies=lambda model, spec: True)   # doctest: +SKIP
    ... def draw_blank(inputs, path):
    ...     ...
    """
    def add(draw):
        FIGURES.register(name, FigureKind(name, description, draw, applies, tuple(options), needs_data))
        return draw

    return add


def _labelled(spec) -> bool:
    # A data set without labels has no classes; an unknown one (None) may have them.
    return spec is None or getattr(spec, "num_classes", None) is not None


def _has_code(model) -> bool:
    return latent_dim(model) is not None


# --------------------------------------------------------------------------- the built-in kinds


@figure_kind("curves", "training curve: train and test ELBO per epoch (and the final log-likelihood estimate)",
             applies=lambda model, spec: True)
def _draw_curves(inputs, path):
    return training.plot_curves(inputs.history or [], path, inputs.metrics)


@figure_kind("reconstructions", "test inputs (top) above their reconstructions (bottom)",
             applies=lambda model, spec: can_reconstruct(model), options=("n",), needs_data=True)
def _draw_reconstructions(inputs, path, **options):
    x, y = inputs.test("reconstructions")
    return images.plot_reconstructions(inputs.model, x, inputs.image_shape, path, y, **options)


@figure_kind("samples", "new draws: the decoder's mean image beside a pixel sample with the same code",
             applies=lambda model, spec: True, options=("n",))
def _draw_samples(inputs, path, n: int = 64):
    labels = None
    if is_conditional(inputs.model):  # one class after another
        labels = torch.arange(n, device=inputs.model.device) % (inputs.num_classes or 1)
    return images.plot_samples(inputs.model, inputs.image_shape, path, n=n, y=labels)


@figure_kind("manifold", "decoder means over a grid of codes placed through the inverse normal CDF",
             applies=lambda model, spec: can_decode(model) and _has_code(model), options=("n", "label"))
def _draw_manifold(inputs, path, **options):
    x, y = (None, None) if inputs.data is None else inputs.test("manifold")
    return images.plot_manifold(inputs.model, inputs.image_shape, path, x=x, y=y,
                                activity=recorded_activity(inputs.metrics), **options)


@figure_kind("latent", "test codes (encoder means) coloured by label; PCA or t-SNE above two dimensions",
             applies=lambda model, spec: can_encode(model) and _has_code(model), options=("method",),
             needs_data=True)
def _draw_latent(inputs, path, **options):
    entries = [(inputs.title or type(inputs.model).__name__, inputs.model, *inputs.test("latent"))]
    if inputs.compare is not None:
        title, other, other_data = inputs.compare
        check_applicable("latent", other, other_data)
        if other_data is None:
            raise ValueError("figure kind 'latent' needs the compared run's data; it was loaded without it")
        other.eval()
        entries.append((title or type(other).__name__, other, *other_data.split("test")))
    return latent.plot_latent(entries, path, seed=inputs.seed or 0, **options)


@figure_kind("interpolation", "decoded points on the line between the codes of two test images",
             applies=lambda model, spec: can_encode(model) and can_decode(model), options=("n", "steps"))
def _draw_interpolation(inputs, path, **options):
    if inputs.data is None:  # no test images: the two ends are prior draws
        return images.plot_interpolation(inputs.model, None, inputs.image_shape, path,
                                         num_classes=inputs.num_classes, **options)
    x, y = inputs.test("interpolation")
    return images.plot_interpolation(inputs.model, x, inputs.image_shape, path, y, **options)


@figure_kind("arithmetic", "an attribute vector (difference of two labels' mean codes) added in steps",
             applies=lambda model, spec: (can_encode(model) and can_decode(model)
                                          and not is_conditional(model) and _labelled(spec)),
             options=("n", "steps", "from_label", "to_label"), needs_data=True)
def _draw_arithmetic(inputs, path, **options):
    x, y = inputs.test("arithmetic")
    return images.plot_arithmetic(inputs.model, x, y, inputs.image_shape, path, **options)


@figure_kind("classes", "conditional model: one row per class, the same code down each column",
             applies=lambda model, spec: decodes_any_class(model) and can_decode(model) and _has_code(model),
             options=("n",))
def _draw_classes(inputs, path, **options):
    return images.plot_classes(inputs.model, inputs.image_shape, path, inputs.num_classes, **options)


@figure_kind("analogies", "semi-supervised model (M2): test images' style code rendered in every class",
             applies=lambda model, spec: callable(getattr(model, "analogies", None)), options=("n",),
             needs_data=True)
def _draw_analogies(inputs, path, **options):
    x, _ = inputs.test("analogies")
    return families.plot_analogies(inputs.model, x, inputs.image_shape, path, **options)


@figure_kind("components", "mixture: component means with their weights, and samples",
             applies=lambda model, spec: (callable(getattr(model, "component_means", None))
                                          and hasattr(model, "weights")),
             options=("n",))
def _draw_components(inputs, path, **options):
    return families.plot_components(inputs.model, inputs.image_shape, path, **options)


def _has_loadings(model) -> bool:
    loadings = getattr(model, "loadings", None)  # PPCA's W, (D, d)
    return isinstance(loadings, torch.Tensor) and loadings.dim() == 2


@figure_kind("pca", "probabilistic PCA: the mean and the learned principal directions",
             applies=lambda model, spec: _has_loadings(model), options=("n",))
def _draw_pca(inputs, path, **options):
    return families.plot_pca(inputs.model, inputs.image_shape, path, **options)


@figure_kind("kl", "KL divergence per latent dimension, active units marked",
             applies=lambda model, spec: has_posterior_scale(model))
def _draw_kl(inputs, path):
    if inputs.data is None:  # the numbers the evaluation recorded, computed once
        stats = recorded_kl(inputs.model, inputs.metrics)
        if stats is None:
            raise ValueError("figure kind 'kl' needs the run's data or the KL per dimension its "
                             "evaluation recorded (metrics.json test.latent); this run has neither")
        return latent.plot_kl(inputs.model, None, path, stats=stats)
    x, y = inputs.test("kl")
    return latent.plot_kl(inputs.model, x, path, y)


# --------------------------------------------------------------------------- which kinds apply


def applicable_kinds(model, spec=None) -> list[str]:
    """The kinds of figure that apply to ``model``, in report order.

    ``spec`` is what is known of the data: a :class:`~pyro_vae.data.DataSpec` or a data set
    (kinds that need labels are dropped when it has no classes), or None. Each kind's
    ``applies`` reads the model's contract: ``encode``/``decode``/``reconstruct``,
    ``needs_labels``, ``latent_dim``, a Normal ``posterior`` with ``is_bound``, a mixture's
    ``weights`` and ``component_means``, PPCA's ``loadings``.

    Example
    -------
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> applicable_kinds(VAE(64, VAEConfig(latent_dim=2)))
    ['curves', 'reconstructions', 'samples', 'manifold', 'latent', 'interpolation', 'arithmetic', 'kl']
    """
    return [name for name, kind in FIGURES.items() if kind.applies(model, spec)]


def drawable_kinds(model, data=None, spec=None) -> list[str]:
    """:func:`applicable_kinds`, less those that need data when ``data`` is None (a run loaded
    without its data): the figures that can be drawn now.

    Example
    -------
    >>> from pyro_vae.data import DataSpec
    >>> from pyro_vae.models import VAE, VAEConfig
    >>> drawable_kinds(VAE(64, VAEConfig(latent_dim=2)), None, DataSpec(64, (1, 8, 8), 10))
    ['curves', 'samples', 'manifold', 'interpolation', 'kl']
    """
    kinds = applicable_kinds(model, data if spec is None else spec)
    return kinds if data is not None else [k for k in kinds if not FIGURES[k].needs_data]


def check_applicable(kind: str, model, spec=None) -> str:
    """Return ``kind`` if it applies to ``model``; else raise ``ValueError`` naming the kinds that do."""
    description = FIGURES.get(kind).description
    kinds = applicable_kinds(model, spec)
    if kind not in kinds:
        raise ValueError(
            f"figure kind {kind!r} does not apply to {type(model).__name__} "
            f"({description}); kinds that apply to this run: {', '.join(kinds)}"
        )
    return kind


class _Column(Mapping):
    """A live, read-only view ``kind name -> one field of its FigureKind``, in registry order."""

    def __init__(self, attribute: str):
        self._attribute = attribute

    def __getitem__(self, name):
        return getattr(dict.__getitem__(FIGURES, name), self._attribute)  # KeyError for unknown names

    def __iter__(self):
        return iter(FIGURES)

    def __len__(self):
        return len(FIGURES)

    def __repr__(self):
        return repr(dict(self))


#: Every kind of figure, in the order a report shows them, with a one-line description.
KINDS: Mapping[str, str] = _Column("description")

#: Options each kind accepts besides the model and data (``plot_run``/``plot_kind`` keywords).
KIND_OPTIONS: Mapping[str, tuple[str, ...]] = _Column("options")
