"""Figures: which apply to which model, their pixel sizes, and the numbers behind them."""

from __future__ import annotations

import io
import re

import matplotlib.image
import matplotlib.pyplot
import numpy as np
import pytest
import torch
from scipy.stats import norm

from pyro_vae import plots
from pyro_vae.cli import FIGURE_KINDS, main
from pyro_vae.models import MODELS, VAE, VAEConfig
from pyro_vae.plots import (
    KINDS,
    applicable_kinds,
    attribute_vector,
    class_grid,
    image_grid,
    interpolate,
    kl_per_dimension,
    manifold_codes,
    manifold_grid,
    plot_kind,
    plot_run,
    principal_directions,
)
from pyro_vae.runs import load_run

# ------------------------------------------------------------------ runs trained once per session

TINY = ["--hidden-dims", "32", "--epochs", "2", "--eval-samples", "10", "--no-progress"]
RUN_ARGS = {
    "vae": ["--model", "vae", "--latent-dim", "2", *TINY],
    "cvae": ["--model", "cvae", "--latent-dim", "2", *TINY],
    "mixture": ["--model", "mixture", "--components", "5", "--epochs", "2", "--eval-samples", "10", "--no-progress"],
    "ppca": ["--model", "ppca", "--latent-dim", "3", "--epochs", "2", "--eval-samples", "10", "--no-progress"],
}
# Shared with tests/test_report.py (which imports this module), so each run trains once.
_RUNS: dict = {}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``trained(name)`` -> the loaded run ``name`` of RUN_ARGS (skipped if its model is absent)."""

    def get(name):
        model = RUN_ARGS[name][1]
        if model not in MODELS:
            pytest.skip(f"model {model!r} is not registered")
        if name not in _RUNS:
            out = tmp_path_factory.mktemp(f"run-{name}")
            assert main(["train", *RUN_ARGS[name], "--out", str(out)]) == 0
            _RUNS[name] = load_run(out, "cpu")
        return _RUNS[name]

    return get


def _png_shape(path_or_buffer):
    return matplotlib.image.imread(path_or_buffer, format="png").shape


# Pixel size (height, width) of each figure of a digits run: figures have a fixed size in
# inches derived from the image shapes, saved at plots.DPI, so these are exact.
DIGITS_SIZES = {
    "curves": (400, 600),
    "reconstructions": (150, 830),
    "samples": (435, 820),
    "manifold": (705, 695),
    "latent": (525, 590),
    "interpolation": (402, 690),
    "arithmetic": (388, 450),
    "classes": (662, 545),
    "components": (263, 600),  # 5 components
    "pca": (155, 600),  # mean + 3 directions
    "kl": (500, 600),
}

EXPECTED_KINDS = {
    "vae": ["curves", "reconstructions", "samples", "manifold", "latent", "interpolation", "arithmetic", "kl"],
    "cvae": ["curves", "reconstructions", "samples", "manifold", "latent", "interpolation", "classes", "kl"],
    "mixture": ["curves", "reconstructions", "samples", "components"],
    "ppca": ["curves", "reconstructions", "samples", "manifold", "latent", "interpolation", "arithmetic", "pca"],
}


def test_cli_names_every_kind():
    assert FIGURE_KINDS == tuple(KINDS)


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_applicable_kinds_follow_model_capabilities(trained, name):
    run = trained(name)
    assert applicable_kinds(run.model, run.data) == EXPECTED_KINDS[name]
    assert applicable_kinds(run.model) == EXPECTED_KINDS[name]


def test_a_point_mass_guide_has_no_kl_figure():
    ae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,), guide="delta"))
    assert applicable_kinds(ae) == [k for k in EXPECTED_KINDS["vae"] if k != "kl"]


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_training_wrote_every_applicable_figure_at_its_size(trained, name):
    # write_run_figures draws each kind through plot_kind: every kind, every model it applies to.
    run = trained(name)
    written = sorted(p.stem for p in (run.directory / "figures").glob("*.png"))
    assert written == sorted(EXPECTED_KINDS[name])
    for kind in EXPECTED_KINDS[name]:
        image = matplotlib.image.imread(run.directory / "figures" / f"{kind}.png")
        assert image.shape[:2] == DIGITS_SIZES[kind] and image.shape[2] in (3, 4), kind
        assert image[..., :3].std() > 0.01, kind  # something was drawn


def test_plot_run_redraws_at_the_same_size(trained, tmp_path):
    run = trained("cvae")
    for kind in ("classes", "kl"):
        assert _png_shape(plot_run(run, kind, tmp_path / f"{kind}.png"))[:2] == DIGITS_SIZES[kind]


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_non_applicable_kinds_are_refused_naming_the_applicable_ones(trained, name, tmp_path):
    run = trained(name)
    applicable = ", ".join(EXPECTED_KINDS[name])
    for kind in set(KINDS) - set(EXPECTED_KINDS[name]):
        with pytest.raises(ValueError, match=f"{kind}.*does not apply.*apply to this run: {re.escape(applicable)}$"):
            plot_run(run, kind, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_unknown_kind_and_options_are_refused(trained, tmp_path):
    run = trained("vae")
    with pytest.raises(ValueError,
                       match="unknown figure kind 'histogram'; choose from: analogies, arithmetic, classes"):
        plot_run(run, "histogram", tmp_path / "x.png")
    with pytest.raises(ValueError, match="option.*method do not apply to figure kind 'kl'; it takes no options"):
        plot_run(run, "kl", tmp_path / "x.png", method="tsne")
    with pytest.raises(ValueError, match="unknown method 'umap'; choose from: pca, tsne"):
        plot_run(run, "latent", tmp_path / "x.png", method="umap")
    with pytest.raises(ValueError, match="compare applies to figure kind 'latent' only"):
        plot_run(run, "manifold", tmp_path / "x.png", compare=run)
    with pytest.raises(ValueError, match=r"from_label 42 has no test examples; labels present: \[0, 1"):
        plot_run(run, "arithmetic", tmp_path / "x.png", from_label=42)
    with pytest.raises(ValueError, match="from_label and to_label must differ, got 3"):
        plot_run(run, "arithmetic", tmp_path / "x.png", from_label=3, to_label=3)


# ------------------------------------------------------------------ the numbers behind the figures


def test_manifold_grid_is_normal_quantiles_of_even_probabilities():
    for n in (1, 2, 7, 15):
        expected = norm.ppf(np.linspace(0.05, 0.95, n))
        np.testing.assert_allclose(manifold_grid(n, like=torch.zeros((), dtype=torch.float64)).numpy(),
                                   expected, rtol=0, atol=1e-12)
    z = manifold_codes(4, 3, dims=(2, 0), like=torch.zeros((), dtype=torch.float64))
    grid = norm.ppf(np.linspace(0.05, 0.95, 4))
    z = z.reshape(4, 4, 3).numpy()
    np.testing.assert_allclose(z[:, :, 2], np.tile(grid, (4, 1)), atol=1e-12)  # x axis: columns
    np.testing.assert_allclose(z[:, :, 0], np.tile(grid[::-1, None], (1, 4)), atol=1e-12)  # top row largest
    assert (z[:, :, 1] == 0).all()


def _spy_decode(monkeypatch):
    calls = []
    real = plots.decode_mean

    def spy(model, z, y=None):
        calls.append((z.clone(), None if y is None else y.clone()))
        return real(model, z, y)

    # Drawers decode through the compute module or their own import of it: spy on both.
    monkeypatch.setattr(plots.compute, "decode_mean", spy)
    monkeypatch.setattr(plots.images, "decode_mean", spy)
    return calls


def test_manifold_decodes_the_grid_over_the_two_most_active_dimensions(digits, tmp_path, monkeypatch):
    model = VAE(64, VAEConfig(latent_dim=6, hidden_dims=(16,)))
    x, _ = digits.split("test")
    top = torch.argsort(model.encode(x).var(0), descending=True)[:2].tolist()
    calls = _spy_decode(monkeypatch)
    plot_kind("manifold", model, digits, tmp_path / "m.png", n=5)
    (z, y), = calls
    torch.testing.assert_close(z, manifold_codes(5, 6, top, like=z))
    others = [d for d in range(6) if d not in top]
    assert (z[:, others] == 0).all() and y is None
    expected = torch.as_tensor(norm.ppf(np.linspace(0.05, 0.95, 5)), dtype=z.dtype)
    torch.testing.assert_close(z.reshape(5, 5, 6)[0, :, top[0]], expected)  # top row: x axis
    torch.testing.assert_close(z.reshape(5, 5, 6)[:, 0, top[1]], expected.flip(0))  # left column


def test_manifold_of_a_conditional_model_decodes_the_chosen_class(trained, tmp_path, monkeypatch):
    run = trained("cvae")
    calls = _spy_decode(monkeypatch)
    plot_run(run, "manifold", tmp_path / "m.png", n=4, label=7)
    (z, y), = calls
    assert z.shape == (16, 2) and (y == 7).all()
    with pytest.raises(ValueError, match=r"label must be in \[0, 9\], got 10"):
        plot_run(run, "manifold", tmp_path / "m.png", label=10)


@pytest.mark.parametrize("name", ["vae", "cvae", "ppca"])
def test_interpolation_ends_at_the_two_reconstructions(trained, name):
    run = trained(name)
    x, y = run.data.split("test")
    xa, xb, ya = x[:3], x[3:6], y[:3]
    yc = ya if run.model.needs_labels else None
    path = interpolate(run.model, xa, xb, steps=5, y=ya)
    assert path.shape == (3, 5, x.shape[1])
    torch.testing.assert_close(path[:, 0], run.model.reconstruct(xa, yc))
    torch.testing.assert_close(path[:, -1], run.model.reconstruct(xb, yc))
    za, zb = run.model.encode(xa, yc), run.model.encode(xb, yc)
    torch.testing.assert_close(path[:, 2], plots.decode_mean(run.model, (za + zb) / 2, yc))


def test_interpolation_of_a_conditional_model_pairs_examples_of_one_class(trained, tmp_path, monkeypatch):
    run = trained("cvae")
    _, y = run.data.split("test")
    calls = _spy_decode(monkeypatch)
    plot_run(run, "interpolation", tmp_path / "i.png", n=3, steps=4)
    (z, labels), = calls
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # rows: classes 0, 1, 2; one label per row


def test_attribute_vector_is_the_difference_of_mean_codes(trained):
    run = trained("vae")
    x, y = run.data.split("test")
    z = run.model.encode(x)
    v = attribute_vector(run.model, x, y, from_label=3, to_label=8)
    torch.testing.assert_close(v, z[y == 8].mean(0) - z[y == 3].mean(0))


def test_arithmetic_adds_the_vector_in_steps(trained, tmp_path, monkeypatch):
    run = trained("vae")
    x, y = run.data.split("test")
    calls = _spy_decode(monkeypatch)
    plot_run(run, "arithmetic", tmp_path / "a.png", from_label=2, to_label=5, n=2, steps=3)
    (z, _), = calls
    v = attribute_vector(run.model, x, y, 2, 5)
    start = run.model.encode(x[y == 2][:2])
    expected = torch.stack([start, start + 0.5 * v, start + v], 1).reshape(-1, 2)
    torch.testing.assert_close(z, expected)


def test_class_rows_come_from_the_requested_classes(trained):
    run = trained("cvae")
    torch.manual_seed(0)
    images, z = class_grid(run.model, [3, 7, 3], n_cols=4)
    assert images.shape == (3, 4, 64) and z.shape == (4, 2)
    for row, label in zip(images, [3, 7, 3]):
        torch.testing.assert_close(row, run.model.decode(z, torch.full((4,), label)))
    torch.testing.assert_close(images[0], images[2])
    assert not torch.allclose(images[0], images[1])
    with pytest.raises(ValueError, match=r"classes must be labels in \[0, 10\), got \[3, 12\]"):
        class_grid(run.model, [3, 12])


def test_kl_per_dimension_matches_the_closed_form_and_the_evaluation(trained):
    run = trained("vae")
    x, _ = run.data.split("test")
    loc, scale = run.model.encoder(x)
    closed = (0.5 * (loc ** 2 + scale ** 2 - 1) - torch.log(scale)).mean(0)
    stats = kl_per_dimension(run.model, x)
    torch.testing.assert_close(stats["kl"], closed.detach())
    torch.testing.assert_close(stats["activity"], loc.var(0).detach())
    assert stats["active"].tolist() == (loc.var(0) > 0.01).tolist() and stats["standard_prior"]
    latent = run.metrics()["test"]["latent"]  # the evaluation's own numbers, same test set
    np.testing.assert_allclose(stats["kl"].numpy(), latent["kl_per_dim"], rtol=1e-4, atol=1e-6)


def test_principal_directions_are_orthonormal_and_rebuild_the_loadings(trained):
    run = trained("ppca")
    directions, variances = principal_directions(run.model)
    w = run.model.loadings.detach()
    assert directions.shape == (3, 64)
    torch.testing.assert_close(directions @ directions.T, torch.eye(3), atol=1e-5, rtol=0)
    signal = variances - run.model.noise_scale.detach() ** 2
    torch.testing.assert_close(directions.T @ torch.diag(signal) @ directions, w @ w.T, atol=1e-5, rtol=1e-4)
    assert (variances[:-1] >= variances[1:]).all()


def test_components_show_every_component(trained, tmp_path, monkeypatch):
    run = trained("mixture")
    shown = []
    real = plots.families.cells
    def spy(fig, images, titles, *args, **kwargs):
        shown.extend(titles)
        return real(fig, images, titles, *args, **kwargs)

    monkeypatch.setattr(plots.families, "cells", spy)
    plot_run(run, "components", tmp_path / "c.png")
    weights = run.model.weights.detach()
    order = torch.argsort(weights, descending=True).tolist()
    assert shown == [f"#{i} {weights[i]:.3f}" for i in order]


# ------------------------------------------------------------------ image layout


def test_image_grid_puts_rows_along_the_height():
    h, w = 28, 20
    image = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w) / h  # row r has value r / h
    grid = image_grid(torch.stack([image, 1 - image]).reshape(2, h * w), (1, h, w), ncols=2)
    assert grid.shape == (28, 41)
    np.testing.assert_allclose(grid[:, 0], np.arange(h) / h, rtol=1e-6)
    np.testing.assert_allclose(grid[:, 21], 1 - np.arange(h) / h, rtol=1e-6)
    assert (grid[:, 20] == 1).all()  # the pad column between them
    colour = torch.zeros(3, 5, 4)
    colour[0, 0, 0], colour[2, 4, 3] = 1.0, 0.5
    grid = image_grid(colour.reshape(1, -1), (3, 5, 4), ncols=1)
    assert grid.shape == (5, 4, 3) and grid[0, 0, 0] == 1 and grid[4, 3, 2] == 0.5


class _FakeData:
    """The parts of a DataSplits the figures read, for images of any shape."""

    def __init__(self, image_shape, n=12, num_classes=3):
        c, h, w = image_shape
        self.image_shape = image_shape
        self.x_test = torch.bernoulli(torch.full((n, c * h * w), 0.3))
        self.y_test = torch.arange(n) % num_classes
        self.num_classes = num_classes

    def split(self, name):
        return self.x_test, self.y_test


@pytest.mark.parametrize("image_shape", [(1, 28, 20), (3, 8, 8)])
def test_any_image_shape_renders(image_shape, tmp_path):
    model = VAE(int(np.prod(image_shape)), VAEConfig(latent_dim=3, hidden_dims=(16,)))
    data = _FakeData(image_shape)
    for kind in applicable_kinds(model, data):
        plot_kind(kind, model, data, tmp_path / f"{kind}.png", history=[{"epoch": 1, "train_elbo": -3.0}])
    height, width = _png_shape(tmp_path / "manifold.png")[:2]
    if image_shape[1] > image_shape[2]:
        assert height > width  # 28 x 20 cells make a tall grid
    buffer = io.BytesIO()
    plot_kind("reconstructions", model, data, buffer)
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_plotting_is_seeded_and_leaves_the_global_generator_alone(trained, tmp_path):
    run = trained("vae")
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, second = io.BytesIO(), io.BytesIO()
    plot_run(run, "samples", first, seed=5)
    plot_run(run, "samples", second, seed=5)
    assert first.getvalue() == second.getvalue()
    assert torch.equal(torch.random.get_rng_state(), before)


# ------------------------------------------------------------------ command line


def test_cli_plot_writes_the_default_and_given_paths(trained, tmp_path, capsys):
    run = trained("vae")
    default = run.directory / "figures" / "interpolation.png"
    default.unlink(missing_ok=True)
    assert main(["plot", str(run.directory), "--kind", "interpolation"]) == 0
    assert capsys.readouterr().out.strip() == str(default) and default.is_file()
    out = tmp_path / "sub" / "latent.png"
    assert main(["plot", str(run.directory), "--kind", "latent", "--compare", str(trained("ppca").directory),
                 "--out", str(out)]) == 0
    assert _png_shape(out)[:2] == (525, 1090)  # two panels side by side


def test_latent_points_project_or_embed_more_than_two_dimensions(digits):
    model = VAE(64, VAEConfig(latent_dim=5, hidden_dims=(16,)))
    x, y = digits.x_test[:40], digits.y_test[:40]
    z = model.encode(x).double().numpy()
    points, names = plots.latent_points(model, x, y, "pca")
    from sklearn.decomposition import PCA
    expected = PCA(2).fit_transform(z)
    np.testing.assert_allclose(np.abs(points), np.abs(expected), rtol=1e-6, atol=1e-8)  # up to sign
    assert names[0].startswith("PC 1")
    points, names = plots.latent_points(model, x, y, "tsne")
    assert points.shape == (40, 2) and np.isfinite(points).all() and names == ("t-SNE 1", "t-SNE 2")
    two = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))
    np.testing.assert_allclose(plots.latent_points(two, x, y)[0], two.encode(x).double().numpy())


@pytest.mark.parametrize("argv,message", [
    (["--kind", "bogus"], "unknown --kind 'bogus'; choose from"),
    (["--kind", "pca"], "'pca' does not apply.*apply to this run: curves, reconstructions"),
    (["--kind", "kl", "--method", "tsne"], "method do not apply to figure kind 'kl'"),
    (["--kind", "kl", "--compare", "."], "is not a pyro-vae run|has no config.json|does not exist"),
])
def test_cli_plot_bad_input_exits_2(trained, argv, message, capsys):
    assert main(["plot", str(trained("vae").directory), *argv]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_draws_in_float64(name, digits):
    config_cls, model_cls = MODELS[name]
    fields = {f for f in config_cls.__dataclass_fields__}
    options = {k: v for k, v in {"latent_dim": 3, "hidden_dims": (16,), "num_components": 4}.items() if k in fields}
    model = model_cls(64, config_cls(**options), num_classes=10).double()
    data = digits.to(dtype=torch.float64)
    model.init_from_data(data.x_train, data.y_train)
    model.eval()
    for kind in applicable_kinds(model, data):
        buffer = io.BytesIO()
        plot_kind(kind, model, data, buffer, history=[{"epoch": 1, "train_elbo": -40.0}])
        assert matplotlib.image.imread(io.BytesIO(buffer.getvalue()), format="png").ndim == 3, kind


def test_a_failing_figure_warns_and_the_others_are_written(digits, tmp_path, monkeypatch):
    model = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(plots.latent, "plot_kl", broken)
    with pytest.warns(UserWarning, match="figure 'kl' was not written: RuntimeError: boom"):
        written = plots.write_run_figures(model, digits, [{"epoch": 1, "train_elbo": -40.0}], tmp_path)
    assert sorted(p.stem for p in written) == sorted(k for k in EXPECTED_KINDS["vae"] if k != "kl")
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(p.stem for p in written)


@pytest.mark.parametrize("kl, panels", [(None, 1), ([0.0, 0.0], 1), ([3.0, 2.5], 2)])
def test_the_curves_figure_adds_a_kl_panel_where_the_history_has_a_kl(monkeypatch, kl, panels):
    from pyro_vae.plots import training  # noqa: PLC0415

    figures = []
    monkeypatch.setattr(training, "save", lambda fig, path: figures.append(fig) or path)
    history = [{"epoch": e, "train_elbo": -40.0 + e, "val_elbo": -41.0 + e} for e in (1, 2)]
    if kl is not None:
        for record, value in zip(history, kl):
            record.update(train_kl=value, val_kl=value / 2)
    training.plot_curves(history, io.BytesIO())
    (fig,) = figures
    assert len(fig.axes) == panels
    if panels == 2:
        lines = fig.axes[1].get_lines()
        assert [list(line.get_ydata()) for line in lines] == [[3.0, 2.5], [1.5, 1.25]]
        assert [line.get_label() for line in lines] == ["train", "validation"]
    matplotlib.pyplot.close(fig)
