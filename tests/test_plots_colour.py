"""Colour images are drawn in colour and grey ones in grey; runs without data draw what needs none."""

from __future__ import annotations

import inspect
import io
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
import torch

from pyro_vae import plots
from pyro_vae.data import DataSpec
from pyro_vae.models import MODELS, VAE, VAEConfig
from pyro_vae.plots import (
    FIGURES,
    KINDS,
    applicable_kinds,
    as_images,
    drawable_kinds,
    figure_kind,
    image_grid,
    manifold_codes,
    plot_kind,
    plot_run,
)
from pyro_vae.runs import load_run

#: Kinds whose figure is made of the model's images (the others draw curves, points and bars).
IMAGE_KINDS = {"reconstructions", "samples", "manifold", "interpolation", "arithmetic", "classes",
               "analogies", "components", "pca"}
#: Kinds drawn from test images: refused for a run loaded without its data.
DATA_KINDS = {"reconstructions", "latent", "arithmetic", "analogies"}
#: What the evaluation records of a two-dimensional code (metrics.json ``test.latent``).
RECORDED_LATENT = {"kl_per_dim": [1.5, 0.002], "latent_variance": [0.9, 0.0001]}
CLASSES = 3
#: A picture is in colour when two channels of some pixel differ by more than this (grey: exactly 0;
#: an untrained decoder's colours can be faint, so the bar is low).
COLOURED = 0.05


class _ImageData:
    """The parts of a data set the figures read: binary images whose channels differ
    (red mostly on, green half, blue mostly off), labels 0..2."""

    def __init__(self, image_shape, n=24, seed=0):
        c, h, w = image_shape
        generator = torch.Generator().manual_seed(seed)
        on = torch.tensor([0.9, 0.5, 0.1])[:c, None, None].expand(c, h, w)  # (C, H, W)
        self.image_shape = image_shape
        self.x_test = torch.bernoulli(on.expand(n, c, h, w), generator=generator).reshape(n, -1)
        self.y_test = torch.arange(n) % CLASSES
        self.x_train, self.y_train = self.x_test, self.y_test
        self.num_classes = CLASSES

    def split(self, name):
        return self.x_test, self.y_test


def _model(name, image_shape):
    config_cls, model_cls = MODELS[name]
    fields = set(config_cls.__dataclass_fields__)
    options = {k: v for k, v in {"latent_dim": 2, "hidden_dims": (8,), "num_components": 3}.items() if k in fields}
    model = model_cls(int(np.prod(image_shape)), config_cls(**options), num_classes=CLASSES)
    data = _ImageData(image_shape)
    model.init_from_data(data.x_train, data.y_train)
    return model.eval(), data


def _rgb(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]  # (H, W, 3) in [0, 1]


def _channel_spread(png: bytes) -> float:
    """The largest difference between two channels of one pixel: 0 for a grey picture."""
    return float(np.ptp(_rgb(png), axis=-1).max())


def _draw(kind, model, data, **kwargs) -> bytes:
    buffer = io.BytesIO()
    plot_kind(kind, model, data, buffer, history=[{"epoch": 1, "train_elbo": -3.0}], **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def drawn():
    """``{(model name, channels): {kind: png bytes}}`` for every model and applicable image kind."""
    out = {}
    for name in sorted(MODELS):
        for shape in [(3, 6, 6), (1, 6, 6)]:
            torch.manual_seed(0)
            model, data = _model(name, shape)
            out[name, shape[0]] = {kind: _draw(kind, model, data)
                                   for kind in applicable_kinds(model, data) if kind in IMAGE_KINDS}
    return out


def test_every_image_kind_of_a_colour_model_is_drawn_in_colour(drawn):
    seen = set()
    for (name, channels), figures in drawn.items():
        if channels != 3:
            continue
        for kind in IMAGE_KINDS & set(figures):
            assert _channel_spread(figures[kind]) > COLOURED, (name, kind)
            seen.add(kind)
    assert seen == IMAGE_KINDS  # every image kind was drawn by some model


def test_grey_images_stay_grey(drawn):
    for (name, channels), figures in drawn.items():
        if channels != 1:
            continue
        # PCA's directions are signed: a red/blue map by design, so only the other kinds are grey.
        for kind in (IMAGE_KINDS - {"pca"}) & set(figures):
            assert _channel_spread(figures[kind]) == 0, (name, kind)
        if "pca" in figures:
            assert _channel_spread(figures["pca"]) > COLOURED


def test_a_colour_grid_keeps_each_channel_in_place():
    image = torch.zeros(3, 2, 3)
    image[0] = 1.0  # pure red
    image[2, 1, 2] = 0.5
    grid = image_grid(torch.stack([image, 1 - image]).reshape(2, -1), (3, 2, 3), ncols=2)  # (H, W, 3)
    assert grid.shape == (2, 7, 3)
    np.testing.assert_array_equal(grid[0, 0], [1, 0, 0])
    np.testing.assert_array_equal(grid[1, 2], [1, 0, 0.5])
    np.testing.assert_array_equal(grid[:, 3], np.ones((2, 3)))  # the white pad column
    np.testing.assert_array_equal(grid[0, 4], [0, 1, 1])  # the second image: cyan


def test_images_are_read_as_channels_height_width():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 60)
    torch.testing.assert_close(as_images(x, (3, 4, 5)), x.reshape(2, 3, 4, 5))
    assert as_images(x.reshape(2, 3, 4, 5), (3, 4, 5)).shape == (2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"images of shape \(2, 60\) do not match image_shape \(3, 4, 4\): "
                                         r"expected \(n, 48\) or \(n, 3, 4, 4\)$"):
        as_images(x, (3, 4, 4))
    with pytest.raises(ValueError, match=r"image_shape \(2, 5, 6\) has 2 channels; figures draw 1 \(grey\) "
                                         r"or 3 \(colour\)$"):
        as_images(x, (2, 5, 6))


def test_a_colour_run_trained_from_an_npz_file_writes_colour_figures(tmp_path):
    from pyro_vae.cli import main

    rng = np.random.default_rng(0)
    on = np.array([0.9, 0.5, 0.1])[None, :, None, None]
    x = (rng.random((60, 3, 6, 6)) < on).astype(np.float32)  # (n, C, H, W), red mostly on
    np.savez(tmp_path / "colour.npz", x=x, y=np.arange(60) % CLASSES)
    out = tmp_path / "run"
    assert main(["train", "--dataset", f"npz:{tmp_path / 'colour.npz'}", "--model", "vae", "--latent-dim", "2",
                 "--hidden-dims", "8", "--epochs", "1", "--eval-samples", "2", "--no-progress",
                 "--out", str(out)]) == 0
    for kind in ("reconstructions", "samples", "manifold", "interpolation"):
        assert _channel_spread((out / "figures" / f"{kind}.png").read_bytes()) > COLOURED, kind

    # The same run loaded without its data, the data file gone: what needs no data is drawn.
    if "data" not in inspect.signature(load_run).parameters:
        pytest.skip("load_run cannot leave the data out yet")
    (tmp_path / "colour.npz").unlink()
    run = load_run(out, "cpu", data=False)
    assert run.data is None and run.spec.image_shape == (3, 6, 6)
    kinds = drawable_kinds(run.model, run.data, run.spec)
    assert kinds == ["curves", "samples", "manifold", "interpolation", "kl"]
    for kind in kinds:
        png = io.BytesIO()
        plot_run(run, kind, png)
        assert kind not in IMAGE_KINDS or _channel_spread(png.getvalue()) > COLOURED, kind
    with pytest.raises(ValueError, match="figure kind 'reconstructions' needs the run's data"):
        plot_run(run, "reconstructions", io.BytesIO())


# ------------------------------------------------------------------ runs loaded without data


def _dataless_run(model, tmp_path, metrics=None):
    """A loaded run as ``load_run(dir, data=False)`` gives it: no data, the shapes in ``spec``."""
    c, h, w = 3, 6, 6
    return SimpleNamespace(
        model=model, data=None, spec=DataSpec(data_dim=c * h * w, image_shape=(c, h, w), num_classes=CLASSES),
        directory=tmp_path, config=SimpleNamespace(model="vae", model_config={"latent_dim": 2}),
        metrics=lambda: metrics or {"history": [{"epoch": 1, "train_elbo": -3.0}],
                                    "test": {"latent": RECORDED_LATENT}})


@pytest.mark.parametrize("name", ["vae", "cvae", "mixture", "ppca"])
def test_a_run_without_data_draws_the_kinds_that_need_none_in_colour(name, tmp_path):
    if name not in MODELS:
        pytest.skip(f"model {name!r} is not registered")
    model, data = _model(name, (3, 6, 6))
    run = _dataless_run(model, tmp_path)
    kinds = drawable_kinds(model, None, run.spec)
    assert kinds == [k for k in applicable_kinds(model, data) if k not in DATA_KINDS]
    for kind in kinds:
        buffer = io.BytesIO()
        plot_run(run, kind, buffer)
        if kind in IMAGE_KINDS:
            assert _channel_spread(buffer.getvalue()) > COLOURED, kind
    for kind in sorted(set(applicable_kinds(model, data)) & DATA_KINDS):
        with pytest.raises(ValueError, match=f"^figure kind '{kind}' needs the run's data .*loaded without it$"):
            plot_run(run, kind, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def _spy_decode(monkeypatch):
    calls = []
    real = plots.compute.decode_mean

    def spy(model, z, y=None):
        calls.append((z.clone(), None if y is None else y.clone()))
        return real(model, z, y)

    monkeypatch.setattr(plots.compute, "decode_mean", spy)
    monkeypatch.setattr(plots.images, "decode_mean", spy)
    return calls


def test_interpolation_without_data_runs_between_two_prior_draws(tmp_path, monkeypatch):
    model = VAE(108, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    calls = _spy_decode(monkeypatch)
    plot_run(_dataless_run(model, tmp_path), "interpolation", io.BytesIO(), n=3, steps=5)
    (z, y), = calls
    z = z.reshape(3, 5, 2)  # (rows, steps, d)
    t = torch.linspace(0, 1, 5)[None, :, None]
    torch.testing.assert_close(z, (1 - t) * z[:, :1] + t * z[:, -1:])  # straight lines
    assert y is None and not torch.allclose(z[:, 0], z[:, -1])  # two different draws per row
    with torch.random.fork_rng():  # the ends are the first two prior draws under the plot's seed
        torch.manual_seed(0)
        torch.testing.assert_close(z[:, 0], model.prior().sample((3,)))
        torch.testing.assert_close(z[:, -1], model.prior().sample((3,)))


def test_interpolation_without_data_gives_a_conditional_model_one_class_per_row(tmp_path, monkeypatch):
    model, _ = _model("cvae", (3, 6, 6))
    calls = _spy_decode(monkeypatch)
    plot_run(_dataless_run(model, tmp_path), "interpolation", io.BytesIO(), n=4, steps=2)
    (_, y), = calls
    assert y.tolist() == [0, 0, 1, 1, 2, 2, 0, 0]


def test_manifold_without_data_spans_the_recorded_most_active_dimensions(tmp_path, monkeypatch):
    model = VAE(108, VAEConfig(latent_dim=4, hidden_dims=(8,)))
    metrics = {"history": [], "test": {"latent": {"latent_variance": [0.0, 5.0, 0.001, 3.0]}}}
    calls = _spy_decode(monkeypatch)
    plot_run(_dataless_run(model, tmp_path, metrics), "manifold", io.BytesIO(), n=3)
    (z, _), = calls
    torch.testing.assert_close(z, manifold_codes(3, 4, (1, 3), like=z))


# ------------------------------------------------------------------ the registry


def test_a_registered_figure_kind_is_listed_checked_and_drawn(tmp_path):
    model = VAE(108, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    drawn_with = {}

    @figure_kind("mean-image", "the decoder's image of z = 0", options=("scale",),
                 applies=lambda model, spec: spec is None or spec.image_shape[0] == 3)
    def draw(inputs, path, scale=1.0):
        drawn_with.update(shape=inputs.image_shape, scale=scale)
        return path

    try:
        assert list(KINDS)[-1] == "mean-image" and KINDS["mean-image"] == "the decoder's image of z = 0"
        assert "mean-image" in applicable_kinds(model, _ImageData((3, 6, 6)))
        assert "mean-image" not in applicable_kinds(VAE(36), _ImageData((1, 6, 6)))
        assert plot_run(_dataless_run(model, tmp_path), "mean-image", "out.png", scale=2.0) == "out.png"
        assert drawn_with == {"shape": (3, 6, 6), "scale": 2.0}
        with pytest.raises(ValueError, match="option.*colour do not apply to figure kind 'mean-image'; "
                                             "it accepts: scale$"):
            plot_run(_dataless_run(model, tmp_path), "mean-image", "out.png", colour="red")
    finally:
        dict.pop(FIGURES, "mean-image")
    assert "mean-image" not in KINDS


def test_kl_without_data_draws_what_the_evaluation_recorded(tmp_path, monkeypatch):
    model = VAE(108, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    shown = {}
    real = plots.latent.plot_kl

    def spy(model, x, path, y=None, *, stats=None):
        shown.update(x=x, stats=stats)
        return real(model, x, path, y, stats=stats)

    monkeypatch.setattr(plots.latent, "plot_kl", spy)
    plot_run(_dataless_run(model, tmp_path), "kl", io.BytesIO())
    assert shown["x"] is None
    assert shown["stats"]["kl"].tolist() == RECORDED_LATENT["kl_per_dim"]
    assert shown["stats"]["active"].tolist() == [True, False] and shown["stats"]["standard_prior"]
    unrecorded = _dataless_run(model, tmp_path, metrics={"history": [], "test": {"latent": {}}})
    with pytest.raises(ValueError, match=r"^figure kind 'kl' needs the run's data or the KL per dimension its "
                                         r"evaluation recorded \(metrics.json test.latent\); this run has neither$"):
        plot_run(unrecorded, "kl", io.BytesIO())
