"""The evaluation stack across the model family, its input checks and its memory bound.

Fitted densities are checked against independent implementations (scikit-learn's
GaussianMixture started from our initial parameters; its ``score_samples`` with our fitted
parameters copied in), the exact-likelihood path of PPCA against its closed form, the CVAE's
importance-sampled estimate against its ELBO, and the chunking against a spy that records
the size of every block of importance weights the evaluation asks for.
"""

from __future__ import annotations

import copy
import importlib
import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer.util import is_validation_enabled
from sklearn.mixture import GaussianMixture

from pyro_vae import (
    CVAE,
    PPCA,
    VAE,
    DataConfig,
    Mixture,
    MixtureConfig,
    PPCAConfig,
    TrainConfig,
    VAEConfig,
    fit,
    load_dataset,
)
from pyro_vae.inference.evaluate import bits_per_dim, elbo, evaluate, log_likelihood

# The module itself: ``pyro_vae.inference.evaluate`` as an attribute is the function evaluate().
evaluation = importlib.import_module("pyro_vae.inference.evaluate")
importance = importlib.import_module("pyro_vae.inference.importance")
heap = importlib.import_module("pyro_vae.inference.heap")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Run this module's tiny models on one intra-op thread, then restore the setting.

    On the shared 2-core test machine two OpenMP threads spin-wait for each other whenever
    another job holds a core: the full-batch GMM fit measured 320 ms per step on 2 threads
    against 41 ms on 1. Tensors here are far too small to gain from a second thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def grey():
    """Digits with grey levels kept (0..16 scaled to [0, 1]), for the densities."""
    return load_dataset(DataConfig("digits", binarize="none"))


# --------------------------------------------------------------------------- Gaussian mixture

K = 10
# Scale floor of the test's mixture (the default is 0.01). Why not the default: on digits'
# 17 grey levels about a quarter of the (component, pixel) scales end at the floor, which a
# softplus parametrization only approaches as raw -> -inf, one Adam step (~lr) at a time.
# Measured (full-batch Adam, seeds 0-4, float32, floor 0.01, reg_covar 1e-4): after 300
# steps at lr 3e-2 seeds 3 and 4 are 2.4% and 2.1% below EM; after 600 steps all but seed 3
# are at or above EM, and seed 3 stays 1.2-1.8% below up to 1000 steps, in another local
# maximum (EM restarted from there gains only 0.2 nats); lr 0.1 lands in a poor basin (20%
# below). With floor 0.05, 120 steps at lr 0.1 end within 0.6% of EM, or above it, for every
# one of seeds 0-7.
FLOOR = 0.05


def _sklearn_gmm_from(m: Mixture) -> dict:
    """Our mixture's current parameters as GaussianMixture's weights/means/precisions (float64)."""
    weights = torch.softmax(m.weight_logits.detach().double(), -1).numpy()
    return {"weights_init": weights / weights.sum(),  # sklearn checks the sum to 1e-8 or so
            "means_init": m.means.detach().double().numpy(),
            "precisions_init": 1.0 / m.scales().detach().double().numpy() ** 2}  # (K, D)


def _em(x: np.ndarray, start: dict, max_iter: int = 1000) -> GaussianMixture:
    # reg_covar = FLOOR**2: a pixel that never varies within a component (digits' borders)
    # gets the variance our floor gives it; elsewhere sklearn's +FLOOR**2 is a small bias.
    return GaussianMixture(K, covariance_type="diag", reg_covar=FLOOR ** 2, tol=1e-8,
                           max_iter=max_iter, init_params="random_from_data", **start).fit(x)


@pytest.fixture(scope="module")
def fitted_gmm(grey):
    """A 10-component GMM trained through ``fit``, and sklearn's EM from the same start."""
    pyro.set_rng_seed(0)
    m = Mixture(64, MixtureConfig(num_components=K, likelihood="gaussian", min_scale=FLOOR))
    m.init_from_data(grey.x_train)
    start = _sklearn_gmm_from(m)
    # Full-batch Adam: one step per epoch (minibatches of 128 for 40 epochs at lr 3e-2, floor
    # 0.01, ended 0.9-4% below EM: noisier and no faster per example seen).
    fit(m, grey, TrainConfig(epochs=120, batch_size=grey.x_train.shape[0], lr=0.1,
                             progress=False, eval_every=0))
    em = _em(grey.x_train.double().numpy(), start)
    return m, em


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # the 20-step polish
def test_fitted_gaussian_mixture_reaches_sklearn_em_from_the_same_start(grey, fitted_gmm):
    m, em = fitted_gmm
    x_train, x_test = grey.x_train, grey.x_test
    ours = m.log_marginal(x_train).mean().item()
    theirs = em.score(x_train.double().numpy())  # mean log-likelihood per example
    # Measured here (seed 0): ours 45.18 vs EM 44.68 nats per example on the training set,
    # 43.79 vs 43.40 on the test set. The same 120 full-batch Adam steps written as a plain
    # loop, seeds 0-7: ours 44.43 / 43.88 / 44.62 / 44.34 / 44.62 / 44.69 / 44.84 / 44.55 vs
    # EM 44.68 / 44.03 / 44.60 / 44.41 / 44.71 / 44.52 / 44.92 / 44.22 (at most 0.6% below).
    assert ours >= theirs - 0.01 * abs(theirs), (ours, theirs)
    test_ours = m.log_marginal(x_test).mean().item()
    test_theirs = em.score(x_test.double().numpy())
    assert test_ours >= test_theirs - 0.05 * abs(test_theirs), (test_ours, test_theirs)
    # And ours is a maximum of the likelihood, whatever EM found: EM restarted from our
    # solution (at most 20 iterations) improves it by less than 1% (measured: 44.88, lower,
    # since EM's reg_covar adds FLOOR**2 to every variance where ours only bounds it).
    polished = _em(x_train.double().numpy(), _sklearn_gmm_from(m), max_iter=20)
    assert polished.score(x_train.double().numpy()) - ours < 0.01 * abs(ours)


def _as_sklearn(m: Mixture) -> GaussianMixture:
    """A GaussianMixture holding exactly our parameters (no fitting)."""
    gmm = GaussianMixture(m.num_components, covariance_type="diag")
    scales = m.scales().detach().double().numpy()  # (K, D)
    gmm.weights_ = torch.softmax(m.weight_logits.detach().double(), -1).numpy()
    gmm.means_ = m.means.detach().double().numpy()
    gmm.covariances_ = scales ** 2
    gmm.precisions_cholesky_ = 1.0 / scales
    gmm.precisions_ = 1.0 / scales ** 2
    gmm.converged_, gmm.n_iter_, gmm.lower_bound_ = True, 0, -np.inf
    gmm.n_features_in_ = m.data_dim
    return gmm


def test_evaluate_of_a_mixture_equals_sklearn_score_samples_with_our_parameters(grey, fitted_gmm):
    m = copy.deepcopy(fitted_gmm[0]).double()  # exact comparison in float64
    x = grey.x_test.double()
    expected = _as_sklearn(m).score_samples(x.numpy())  # (n,) computed by sklearn
    per = log_likelihood(m, x, num_samples=7).per_example
    np.testing.assert_allclose(per.numpy(), expected, rtol=1e-10, atol=1e-9)
    test = evaluate(m, x, num_samples=7, pixel_max=16)
    assert test["exact"] is True and test["discrete"] is False and test["log_likelihood_samples"] == 1
    assert test["log_likelihood"] == pytest.approx(expected.mean(), rel=1e-12)
    assert test["elbo"] == pytest.approx(expected.mean(), rel=1e-12)  # no latents: ELBO is exact
    assert test["log_likelihood_stderr"] == pytest.approx(expected.std(ddof=1) / math.sqrt(len(x)), rel=1e-9)


# --------------------------------------------------------------------------- PPCA


def test_evaluate_of_ppca_is_its_exact_marginal(grey):
    # (Fitting PPCA from a random start against sklearn's PCA.score is in test_models_family.)
    ppca = PPCA(64, PPCAConfig(latent_dim=5)).double()
    ppca.init_from_data(grey.x_train.double())
    x = grey.x_test.double()
    exact = ppca.log_marginal(x)  # (n,)
    test = evaluate(ppca, x, num_samples=500, batch_size=37, pixel_max=16)
    assert test["exact"] is True and test["bound"] is True and test["conditional"] is False
    assert test["discrete"] is False
    assert test["log_likelihood_samples"] == 1  # one sample is exact; num_samples ignored
    # Exactly (measured: bit for bit, also with batch sizes 100 and 1000): one importance
    # sample of a model without latents is its log_prob, and logsumexp of one value is it.
    assert test["log_likelihood"] == exact.mean().item()
    assert test["elbo"] == test["log_likelihood"]
    assert test["num_examples"] == x.shape[0]
    assert test["bits_per_dim"] == pytest.approx(bits_per_dim(exact.mean().item(), 64, 16), rel=1e-12)
    assert test["bits_per_dim"] == pytest.approx(
        (-exact.mean().item() + 64 * math.log(16)) / (64 * math.log(2)), rel=1e-12)
    assert "bits_per_dim" not in evaluate(ppca, x[:5])  # only with the pixel scale given
    per = log_likelihood(ppca, x, num_samples=50, batch_size=11).per_example
    torch.testing.assert_close(per, exact, rtol=1e-13, atol=1e-11)


# --------------------------------------------------------------------------- CVAE


@pytest.fixture(scope="module")
def trained_cvae():
    data = load_dataset(DataConfig("digits"))
    pyro.set_rng_seed(0)
    cvae = CVAE(64, VAEConfig(latent_dim=4, hidden_dims=(32,)), num_classes=10)
    fit(cvae, data, TrainConfig(epochs=6, batch_size=128, lr=1e-2, progress=False, eval_every=0))
    return cvae.eval(), data


def test_cvae_importance_sampled_likelihood_is_conditional_and_above_its_elbo(trained_cvae):
    cvae, data = trained_cvae
    x, y = data.x_test, data.y_test
    pyro.set_rng_seed(1)
    test = evaluate(cvae, x, y, num_samples=200, elbo_samples=1)
    assert test["conditional"] is True and test["exact"] is False and test["bound"] is True
    assert test["discrete"] is True and test["log_likelihood_samples"] == 200
    # Unpaired, with the standard errors evaluate reports:
    se = math.hypot(test["log_likelihood_stderr"], test["elbo_stderr"])
    assert test["log_likelihood"] >= test["elbo"] - 3 * se
    # Paired per example, far tighter: E[IWAE_200] >= E[ELBO] and the gap is real
    # (measured: ELBO -23.11 +- 0.26, log p(x | c) -22.93 +- 0.25; paired gap 0.20 +- 0.015).
    e = elbo(cvae, x, y, num_samples=10).per_example
    ll = log_likelihood(cvae, x, y, num_samples=200).per_example
    diff = ll - e
    stderr = diff.std().item() / math.sqrt(diff.numel())
    assert diff.mean().item() > -3 * stderr
    assert diff.mean().item() > 0.1 and diff.mean().item() > 5 * stderr
    # log p(x | c) depends on c: the true labels explain the images better than shifted ones
    # (measured: -22.9 vs -32.0 nats).
    wrong = log_likelihood(cvae, x, (y + 1) % 10, num_samples=50).per_example
    assert ll.mean().item() > wrong.mean().item() + 1.0


# --------------------------------------------------------------------------- memory bound


def test_log_likelihood_with_large_k_works_in_bounded_chunks(monkeypatch):
    vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    x = torch.bernoulli(torch.full((120, 64), 0.3))
    seen = []  # (k, batch) of every call
    real = importance._weight_terms  # what the chunk loop calls

    def spy(model, xb, yb, num_samples):
        seen.append((num_samples, xb.shape[0]))
        return real(model, xb, yb, num_samples)

    monkeypatch.setattr(importance, "_weight_terms", spy)
    est = log_likelihood(vae, x, num_samples=5000, batch_size=50, sample_chunk=100)
    assert est.per_example.shape == (120,) and bool(torch.isfinite(est.per_example).all())
    assert max(k * b for k, b in seen) <= 100 * 50
    assert len(seen) == 3 * 50  # batches of 50, 50, 20; 50 chunks of 100 samples each
    for size in (50, 50, 20):  # every example got all 5000 samples
        assert sum(k for k, b in seen if b == size) == 5000 * (2 if size == 50 else 1)
    seen.clear()
    log_likelihood(vae, x[:7], num_samples=250, batch_size=5, sample_chunk=100)
    assert seen == [(100, 5), (100, 5), (50, 5), (100, 2), (100, 2), (50, 2)]


# --------------------------------------------------------------------------- input checks


@pytest.fixture
def small_vae():
    return VAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)))


@pytest.fixture
def small_cvae():
    return CVAE(64, VAEConfig(latent_dim=2, hidden_dims=(16,)), num_classes=10)


def _call(name, model, x, y=None):
    kwargs = {"num_samples": 3}
    if name == "evaluate":
        return evaluate(model, x, y, **kwargs)
    return {"elbo": elbo, "log_likelihood": log_likelihood}[name](model, x, y, **kwargs)


ENTRY_POINTS = ["evaluate", "log_likelihood", "elbo"]
SHAPES = r"x must have shape \(batch, D\), \(batch, H, W\) or \(batch, C, H, W\)"
BAD_X = {
    "32-features": (torch.zeros(4, 32), ValueError, "x has 32 features per example; this model expects 64"),
    "5-d": (torch.zeros(4, 1, 1, 8, 8), ValueError, SHAPES + r", got \(4, 1, 1, 8, 8\)"),
    "1-d": (torch.zeros(64), ValueError, SHAPES + r", got \(64,\)"),
    "nan": (torch.full((4, 64), float("nan")), ValueError, "x contains NaN or Inf"),
    "inf": (torch.full((4, 64), float("inf")), ValueError, "x contains NaN or Inf"),
    "grey-levels": (torch.full((4, 64), 0.5), ValueError, "bernoulli likelihood needs binary pixels"),
    "empty": (torch.zeros(0, 64), ValueError, "x holds no examples"),
    "numpy": (np.zeros((4, 64), np.float32), TypeError, "x must be a torch.Tensor"),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", sorted(BAD_X))
def test_evaluation_refuses_bad_x(small_vae, entry, case):
    x, error, match = BAD_X[case]
    with pytest.raises(error, match=match):
        _call(entry, small_vae, x)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_evaluation_refuses_missing_or_bad_labels(small_cvae, entry):
    x = torch.bernoulli(torch.full((4, 64), 0.3))
    with pytest.raises(ValueError, match=r"CVAE needs labels: pass y of shape \(4,\)"):
        _call(entry, small_cvae, x)
    with pytest.raises(ValueError, match=r"y must have shape \(4,\) to match x, got \(3,\)"):
        _call(entry, small_cvae, x, torch.arange(3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        _call(entry, small_cvae, x, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(TypeError, match="labels must be integers"):
        _call(entry, small_cvae, x, torch.zeros(4))


def test_inputs_are_checked_once_per_call_and_pyro_validation_is_restored(small_vae, monkeypatch):
    x = torch.bernoulli(torch.full((30, 64), 0.3))
    checks, validation_inside = [], []
    real_validate = small_vae.validate_data
    real_weights = importance._weight_terms  # what the chunk loop calls

    def count(*args, **kwargs):
        checks.append(1)
        return real_validate(*args, **kwargs)

    def spy(*args, **kwargs):
        validation_inside.append(is_validation_enabled())
        return real_weights(*args, **kwargs)

    monkeypatch.setattr(small_vae, "validate_data", count)
    monkeypatch.setattr(importance, "_weight_terms", spy)
    assert is_validation_enabled()
    evaluate(small_vae, x, num_samples=40, batch_size=7, sample_chunk=9)
    assert len(checks) == 1  # one check, for both estimates and all 5 x 5 chunks
    assert len(validation_inside) == 5 * 5 + 1 and not any(validation_inside)
    assert is_validation_enabled()  # the caller's setting is back


def test_integer_and_other_dtype_pixels_are_cast_to_the_model(small_vae):
    x = torch.bernoulli(torch.full((6, 64), 0.3))
    results = []
    for xs in (x, x.long(), x.double()):
        pyro.set_rng_seed(5)
        results.append(log_likelihood(small_vae, xs, num_samples=4).per_example)
    assert all(r.dtype == torch.float32 for r in results)
    torch.testing.assert_close(results[1], results[0])
    torch.testing.assert_close(results[2], results[0])


def test_the_free_heap_is_returned_once_per_batch_and_the_param_store_is_left_alone(monkeypatch):
    """After each batch of examples (not each block of samples) the CPU evaluation hands glibc's
    free heap back to the system; it does not register the model with Pyro's param store."""
    import sys  # noqa: PLC0415

    if sys.platform.startswith("linux"):
        assert callable(heap.find_malloc_trim())  # glibc: the real function is found
    trims = []
    monkeypatch.setattr(heap, "_MALLOC_TRIM", lambda pad: trims.append(pad) or 1)
    vae = VAE(64, VAEConfig(latent_dim=2, hidden_dims=(8,)))
    pyro.clear_param_store()
    log_likelihood(vae, torch.bernoulli(torch.full((25, 64), 0.3)), num_samples=30,
                   batch_size=10, sample_chunk=7)
    assert trims == [0, 0, 0]  # batches of 10, 10, 5; five blocks of samples each
    assert len(pyro.get_param_store()) == 0
    assert vae.register_params  # the switch is restored for plain-Pyro use
