"""Red-team checks of the posterior contract, the renames and their deprecation paths, and the
split of evaluate/train (importance.py, held_out.py, optim.py's gradient helpers).

Seven of these tests found bugs, fixed since; each says where in its docstring ("Was a bug").
"""

from __future__ import annotations

import doctest
import pickle
import warnings

import pyro.distributions as dist
import pytest
import torch

from pyro_vae.models.distributions import normal_marginals
from tests.test_model_devices import CASES, build

F64 = torch.float64
CODE_CASES = [(name, arch) for name, arch in CASES if name != "mixture"]  # the models with codes


def _x(n: int, dtype=torch.float32) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 64), 0.4, dtype=dtype))


def _guide_params(model, x, y):
    """The guide's own ``(loc, scale)`` of the layer ``posterior`` describes, read past ``posterior``."""
    x = x.to(F64)
    name = type(model).__name__
    if name == "HVAE":
        return model._encode_top(x)
    if name == "M2":
        return model._encode_predicted(x)
    return model._encode_params(x, y)


# --------------------------------------------------------------------------- posterior numbers


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize(("name", "arch"), CODE_CASES)
def test_normal_marginals_and_kl_match_closed_forms_for_every_model(name, arch, n):
    """``normal_marginals(model.posterior(x))`` is the guide's (loc, scale) (PPCA: the exact
    posterior's mean and sqrt(diag(sigma^2 M^-1)), computed here in float64), for one example and
    several, float32 input into a float64 model; latent_diagnostics' and the KL figure's
    per-dimension KL equal KL(N(loc, scale^2) || N(0, 1)) from torch's closed form."""
    from pyro_vae.inference.diagnostics import latent_diagnostics  # noqa: PLC0415
    from pyro_vae.plots.compute import has_posterior_scale, kl_per_dimension  # noqa: PLC0415

    model = build(name, arch)
    x = _x(n)
    y = torch.tensor([2, 0, 1, 1][:n]) if model.needs_labels else None
    q = model.posterior(x, y)
    assert q.batch_shape == (n,) and q.event_shape == (2,)
    loc, scale = normal_marginals(q)
    assert loc.shape == scale.shape == (n, 2) and loc.dtype == scale.dtype == F64
    if name == "ppca":
        w, mu = model.loadings.detach().to(F64), model.mean.detach().to(F64)
        s2 = model.noise_scale.detach().to(F64) ** 2
        m = w.T @ w + s2 * torch.eye(2, dtype=F64)
        want_loc = torch.linalg.solve(m, w.T @ (x.to(F64) - mu).T).T
        want_scale = (s2 * torch.linalg.inv(m)).diagonal().sqrt().expand(n, 2)
        torch.testing.assert_close(loc, want_loc)
        torch.testing.assert_close(scale, want_scale)
        return
    want_loc, want_scale = _guide_params(model, x, y)
    torch.testing.assert_close(loc, want_loc)
    torch.testing.assert_close(scale, want_scale)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(want_loc, want_scale),
                                           torch.distributions.Normal(0.0, 1.0)).mean(0)
    labels = torch.tensor([2, 0, 1, 1][:n])
    diag = latent_diagnostics(model, x, labels)
    torch.testing.assert_close(torch.tensor(diag["kl_per_dim"], dtype=F64), kl)
    assert diag["latent_dim"] == 2 and len(diag["latent_variance"]) == 2
    assert has_posterior_scale(model)
    if n > 1:
        torch.testing.assert_close(kl_per_dimension(model, x, labels)["kl"], kl)


@pytest.mark.parametrize("guide", ["normal", "delta", "studentt"])
def test_latent_diagnostics_follow_each_vae_guide_family(guide):
    """Per guide family: a KL per dimension only for the diagonal Normal; the latent variance is
    the variance over x of ``encode(x)`` for every family (the point mass and the Student-t too)."""
    from pyro_vae.inference.diagnostics import latent_diagnostics  # noqa: PLC0415
    from pyro_vae.models import VAE, VAEConfig  # noqa: PLC0415

    vae = VAE(64, VAEConfig(latent_dim=3, hidden_dims=(8,), guide=guide)).double()
    x = _x(6)
    diag = latent_diagnostics(vae, x)
    torch.testing.assert_close(torch.tensor(diag["latent_variance"], dtype=F64), vae.encode(x).var(0))
    assert ("kl_per_dim" in diag) == (guide == "normal")
    loc, scale = normal_marginals(vae.posterior(x))
    torch.testing.assert_close(loc, vae.encode(x))
    if guide == "delta":
        assert scale is not None and torch.equal(scale, torch.zeros_like(loc))
    elif guide == "studentt":
        assert scale is None


def test_encode_run_keeps_zero_scales_for_the_point_mass_guide(tmp_path):
    """Was a bug (exports.py `_diagonal_scale`): ``encode_run`` documents ``z_scale`` "zeros for a
    point-mass guide"; since ``posterior`` returns ``Delta(loc).to_event(1)`` the helper only
    recognises a Normal base, so an autoencoder run's codes lose ``z_scale`` (0.1.0 wrote zeros)."""
    from pyro_vae.data import DataConfig  # noqa: PLC0415
    from pyro_vae.exports import encode_run  # noqa: PLC0415
    from pyro_vae.inference import TrainConfig  # noqa: PLC0415
    from pyro_vae.runs import RunConfig, train_run  # noqa: PLC0415

    config = RunConfig(model="vae", model_config={"latent_dim": 2, "hidden_dims": (8,), "guide": "delta"},
                       eval_samples=2, data=DataConfig("digits", subset=100),
                       train=TrainConfig(epochs=1, progress=False, device="cpu"))
    train_run(config, tmp_path / "run")
    codes = encode_run(tmp_path / "run", batch_size=50)
    assert sorted(codes) == ["y", "z_loc", "z_scale"]
    assert codes["z_scale"].shape == codes["z_loc"].shape and not codes["z_scale"].any()


def test_normal_marginals_of_a_low_rank_multivariate_normal():
    """Was a bug (minor, distributions.py `normal_marginals`): a LowRankMultivariateNormal (a multivariate
    Normal, PPCA's own marginal family, a natural plug-in guide) has Normal marginals with scale
    sqrt(diag(W W^T + D)); it is not a subclass of MultivariateNormal, so the scale comes back None."""
    loc = torch.randn(3, 2, dtype=F64)
    factor = torch.tensor([[1.0], [2.0]], dtype=F64)
    diag = torch.tensor([3.0, 5.0], dtype=F64)
    got_loc, got_scale = normal_marginals(dist.LowRankMultivariateNormal(loc, factor, diag))
    torch.testing.assert_close(got_loc, loc)
    assert got_scale is not None
    torch.testing.assert_close(got_scale, torch.tensor([2.0, 3.0], dtype=F64).expand(3, 2))


def test_kl_per_dimension_refuses_a_posterior_without_normal_marginals():
    """Was a bug (minor, plots/compute.py `kl_per_dimension`): a plug-in model with codes, a density and
    no declared ``guide_family`` whose ``posterior`` is a Student-t passes ``has_posterior_scale``
    (so the 'kl' figure is offered); ``normal_marginals`` gives scale None and the KL crashes with a
    TypeError. It should refuse with the ValueError it gives every other model without a scale."""
    from pyro_vae.plots.compute import kl_per_dimension  # noqa: PLC0415

    class HeavyTailed:
        is_bound, has_latents, needs_labels = True, True, False

        def posterior(self, x, y=None):
            return dist.StudentT(4.0, x[:, :2], torch.ones(x.shape[0], 2)).to_event(1)

    with pytest.raises(ValueError, match="posterior"):
        kl_per_dimension(HeavyTailed(), _x(5))


def test_cvae_posterior_reads_the_labels_and_m2_diagnostics_take_partial_labels():
    """The CVAE's q(z | x, y) changes with y (and refuses y=None); M2's diagnostics accept labels
    with -1 (unlabelled) and ignore them in the posterior, as documented."""
    from pyro_vae.inference.diagnostics import latent_diagnostics  # noqa: PLC0415

    cvae = build("cvae", "mlp")
    x = _x(3)
    a = normal_marginals(cvae.posterior(x, torch.tensor([0, 0, 0])))[0]
    b = normal_marginals(cvae.posterior(x, torch.tensor([1, 1, 1])))[0]
    assert a.shape == (3, 2) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="needs the labels"):
        cvae.posterior(x)
    m2 = build("m2", "mlp")
    partial = torch.tensor([0, -1, 2])
    diag = latent_diagnostics(m2, x, partial)
    assert len(diag["kl_per_dim"]) == 2
    torch.testing.assert_close(m2.posterior(x, partial).mean, m2.posterior(x).mean)


# --------------------------------------------------------------------------- priors: needs_label -> needs_labels


def test_old_style_prior_warning_points_at_the_class_definition():
    """Was a bug (priors.py `Prior.__init_subclass__`, stacklevel=2): Prior's metaclass is ABCMeta, so the
    DeprecationWarning is attributed to ``<frozen abc>`` rather than the plug-in's class statement:
    Python's default filter (shown only when raised from ``__main__``) hides it from every script,
    and module-based filters cannot target it."""
    from pyro_vae.models.priors import StandardNormalPrior  # noqa: PLC0415

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class OldStyle(StandardNormalPrior):
            needs_label = False

    relevant = [w for w in caught if issubclass(w.category, DeprecationWarning) and "needs_label" in str(w.message)]
    assert len(relevant) == 1
    assert relevant[0].filename == __file__, relevant[0].filename


def test_old_style_property_needs_label_is_evaluated_not_its_truthiness():
    """Was a bug (priors.py `Prior.__init_subclass__`): ``cls.needs_labels = bool(cls.__dict__["needs_label"])``
    turns a ``needs_label`` *property* (a prior conditional only when built with classes) into
    True for every instance, so a model on unlabelled data demands labels."""
    from pyro_vae.models.priors import StandardNormalPrior  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)

        class MaybeConditional(StandardNormalPrior):
            def __init__(self, latent_dim, num_classes=None, **context):
                super().__init__(latent_dim)
                self.num_classes = num_classes

            @property
            def needs_label(self):
                return self.num_classes is not None

    assert MaybeConditional(2, num_classes=3).needs_labels is True
    assert MaybeConditional(2).needs_labels is False


def test_old_style_needs_label_set_on_the_instance_still_reads_labels(monkeypatch):
    """Was a bug (priors.py): CHANGES promises "a plug-in prior that sets needs_label still reads labels";
    one that sets it in ``__init__`` (``self.needs_label = ...``) is not seen by ``__init_subclass__``,
    so the VAE built on it no longer needs labels (0.1.0 read ``prior.needs_label`` on the instance)."""
    from pyro_vae.models import VAE, VAEConfig  # noqa: PLC0415
    from pyro_vae.models.priors import PRIORS, StandardNormalPrior  # noqa: PLC0415

    class InitConditional(StandardNormalPrior):
        def __init__(self, latent_dim, num_classes=None, **context):
            super().__init__(latent_dim)
            self.needs_label = num_classes is not None

    monkeypatch.setitem(PRIORS, "rt18-init-conditional", InitConditional)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,), prior="rt18-init-conditional"), num_classes=3)
    assert vae.prior.needs_labels is True
    assert vae.needs_labels and vae.conditional


def test_reading_the_old_name_on_a_prior_still_works():
    """Was a bug (compat, priors.py): code written for 0.1.0 reads ``prior.needs_label`` (as this
    library's own plots did until this change); it now raises AttributeError on every built-in
    prior instead of answering (with a DeprecationWarning)."""
    from pyro_vae.models.priors import ConditionalNormalPrior, StandardNormalPrior  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert ConditionalNormalPrior(2, num_classes=3).needs_label is True
        assert StandardNormalPrior(2).needs_label is False


def test_old_style_priors_inherit_and_override_without_losing_the_value(monkeypatch):
    """A subclass of an old-style prior inherits its value without a second warning; an old-style
    ``needs_label = False`` on the conditional parent turns the labels off, and a VAE built on it
    (from the registry) neither needs labels nor scores log p(x | y)."""
    from pyro_vae.models import VAE, VAEConfig  # noqa: PLC0415
    from pyro_vae.models.priors import PRIORS, ConditionalNormalPrior, StandardNormalPrior  # noqa: PLC0415

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        class OldOn(StandardNormalPrior):
            needs_label = True

        class Child(OldOn):
            pass

        class OldOff(ConditionalNormalPrior):
            needs_label = False

    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert sum("OldOn." in m for m in messages) == 1 and not any("Child." in m for m in messages)
    assert OldOn.needs_labels and Child.needs_labels and not OldOff.needs_labels
    assert ConditionalNormalPrior.needs_labels and not StandardNormalPrior.needs_labels
    monkeypatch.setitem(PRIORS, "rt18-old-off", OldOff)
    vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,), prior="rt18-old-off"), num_classes=3)
    assert not vae.needs_labels and not vae.conditional


# --------------------------------------------------------------------------- Dataset -> DataSplits


@pytest.mark.parametrize("module_name", ["pyro_vae", "pyro_vae.data", "pyro_vae.data.dataset"])
def test_the_old_data_class_name_warns_at_the_callers_line(module_name):
    """``Dataset`` from each of the three modules is ``DataSplits``, with one DeprecationWarning
    attributed to the caller (so the default filters show it in scripts)."""
    import importlib  # noqa: PLC0415

    from pyro_vae.data import DataSplits  # noqa: PLC0415

    module = importlib.import_module(module_name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cls = module.Dataset
    assert cls is DataSplits
    assert len(caught) == 1 and caught[0].category is DeprecationWarning
    assert caught[0].filename == __file__ and "DataSplits" in str(caught[0].message)


def test_star_import_dir_getattr_default_and_doctest_do_not_trip_on_the_alias():
    """``from pyro_vae import *``, ``dir``, ``getattr(m, name, default)``, pickling a data set and
    doctest collection neither warn nor see the old name; unknown names still raise AttributeError."""
    import pyro_vae  # noqa: PLC0415
    import pyro_vae.data.dataset as dataset_module  # noqa: PLC0415
    from pyro_vae.data import DataConfig, load_dataset  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        namespace: dict = {}
        exec("from pyro_vae import *", namespace)  # noqa: S102
        assert "DataSplits" in namespace and "Dataset" not in namespace
        assert "Dataset" not in dir(pyro_vae) and "DataSplits" in dir(pyro_vae)
        assert getattr(pyro_vae, "NoSuchThing", None) is None
        with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
            pyro_vae.data.NoSuchThing  # noqa: B018
        doctest.DocTestFinder().find(dataset_module)
        data = load_dataset(DataConfig("digits", subset=20))
        again = pickle.loads(pickle.dumps(data))
        assert type(again) is type(data) and torch.equal(again.x_train, data.x_train)


def test_a_pickle_naming_the_old_class_still_loads():
    """An object pickled under 0.1.0 names ``pyro_vae.data.dataset.Dataset``; unpickling resolves it
    through the alias to ``DataSplits``."""
    from pyro_vae.data import DataSplits  # noqa: PLC0415

    old = pickle.dumps(DataSplits, protocol=0).replace(b"\nDataSplits\n", b"\nDataset\n")
    assert b"Dataset\n" in old
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert pickle.loads(old) is DataSplits  # noqa: S301


# --------------------------------------------------------------------------- the split modules


@pytest.mark.parametrize("new_api", [True, False])
def test_clip_gradients_equals_torchs_clip_grad_norm(monkeypatch, new_api):
    """``total_grad_norm`` + ``clip_gradients`` give torch's ``clip_grad_norm_`` result (norm
    returned before clipping, gradients scaled), on torch's foreach path and on the fallback used
    by torch < 2.6; parameters without a gradient are left alone."""
    from pyro_vae.inference.optim import clip_gradients, total_grad_norm  # noqa: PLC0415

    if not new_api:
        monkeypatch.delattr(torch.nn.utils, "get_total_norm", raising=False)
        monkeypatch.delattr(torch.nn.utils, "clip_grads_with_norm_", raising=False)
    gen = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(4, 3, generator=gen)) for _ in range(3)]
    for p in params[:2]:
        p.grad = 5 * torch.randn(p.shape, generator=gen)
    reference = [p.grad.clone() for p in params[:2]]
    want = torch.linalg.vector_norm(torch.cat([g.flatten() for g in reference]))
    norm = total_grad_norm([p.grad for p in params if p.grad is not None], params[0])
    torch.testing.assert_close(norm, want)
    clip_gradients(params, 1.0, norm)
    coef = 1.0 / (want + 1e-6)
    for p, g in zip(params[:2], reference):
        torch.testing.assert_close(p.grad, g * coef)
    assert params[2].grad is None
    empty = total_grad_norm([], torch.zeros((), dtype=F64))
    assert empty.dtype == F64 and float(empty) == 0.0


def test_the_split_modules_keep_the_old_import_paths():
    """``log_importance_weights`` and ``GlobalSiteError`` are importable from evaluate as before (the
    same objects as importance.py's); the held-out scorers and the gradient helpers stay importable
    from train; evaluation_rng leaves the training stream where it was."""
    import importlib  # noqa: PLC0415

    # ``pyro_vae.inference.evaluate`` the attribute is the function; the modules by their paths
    evaluate, held_out, importance, optim, train = (importlib.import_module(f"pyro_vae.inference.{name}") for name in
                                                    ("evaluate", "held_out", "importance", "optim", "train"))
    assert evaluate.log_importance_weights is importance.log_importance_weights
    assert evaluate.GlobalSiteError is importance.GlobalSiteError
    assert train.held_out_elbo is held_out.held_out_elbo and train.clip_gradients is optim.clip_gradients
    torch.manual_seed(11)
    before = torch.get_rng_state()
    with held_out.evaluation_rng(1, 2, torch.device("cpu")):
        first = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
    with held_out.evaluation_rng(1, 2, torch.device("cpu")):
        assert torch.equal(torch.rand(3), first)


def test_kl_per_dimension_of_one_example_has_zero_activity_not_nan():
    """One example has no spread over x: its activity is 0, as latent_diagnostics reports, not NaN."""
    from pyro_vae.inference.diagnostics import latent_diagnostics  # noqa: PLC0415
    from pyro_vae.models import VAE, VAEConfig  # noqa: PLC0415
    from pyro_vae.plots.compute import kl_per_dimension  # noqa: PLC0415

    vae = VAE(64, VAEConfig(latent_dim=3, hidden_dims=(8,))).double()
    x = _x(1, F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on var() of one value
        result = kl_per_dimension(vae, x)
    assert result["activity"].tolist() == [0.0, 0.0, 0.0] and not bool(result["active"].any())
    assert latent_diagnostics(vae, x)["latent_variance"] == [0.0, 0.0, 0.0]
