"""The semi-supervised M2 model (``--model m2``): its enumerated ELBO against a hand sum over y,
its log p(x) against quadrature, training by fit and by plain Pyro, the semi-supervised gain on
digits, labels per class, the CLI (train, compare, figures) and its one-line refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, TraceEnum_ELBO
from torch.distributions import Bernoulli, Normal
from torch.nn import functional as F

from pyro_vae import TrainConfig, fit
from pyro_vae.cli import main
from pyro_vae.data import DataConfig, keep_labels_per_class, load_dataset
from pyro_vae.inference.evaluate import elbo, log_likelihood
from pyro_vae.models import MODELS, M2Config
from pyro_vae.models.m2 import M2
from pyro_vae.models.nets import MLP
from pyro_vae.plots import KINDS, applicable_kinds
from pyro_vae.runs import RunConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for these tiny networks (see tests/test_hvae.py); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(seed=0, classes=3, dim=4, dtype=torch.float64):
    pyro.set_rng_seed(seed)
    return M2(dim, M2Config(latent_dim=1, hidden_dims=(5,)), num_classes=classes).to(dtype)


def _x(n=6, dim=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, dim), 0.4, dtype=torch.float64), generator=g)


def _hand_terms(m, x, z, label):
    """log p(c) + log p(z) + log p(x | z, c) - log q(z | x, c) with torch.distributions."""
    onehot = F.one_hot(label, m.num_classes).to(x.dtype)
    loc, scale = m._z_params(x, label)
    logits = m.decoder(z, onehot)
    return (-math.log(m.num_classes) + Normal(0.0, 1.0).log_prob(z).sum(-1)
            + Bernoulli(logits=logits).log_prob(x).sum(-1) - Normal(loc, scale).log_prob(z).sum(-1))


def test_enumerated_elbo_equals_a_hand_sum_over_y():
    m = _tiny().eval()
    x = _x()
    y = torch.tensor([-1, 2, -1, 0, -1, -1])
    elbo_ = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(5)
    loss = elbo_.differentiable_loss(m.model, m.guide, x, y)
    pyro.set_rng_seed(5)  # the same draws of z: the traces behind that loss
    _, guide_trace = next(elbo_._get_traces(m.model, m.guide, (x, y), {}))
    z = guide_trace.nodes["z"]["value"]  # (C, batch, 1): one draw per enumerated class
    assert z.shape == (3, 6, 1)
    log_q = m.classify(x)  # (batch, C)
    q = log_q.exp()
    classes = torch.arange(3)[:, None].expand(3, 6)
    unlabelled = y < 0
    # Unlabelled rows: sum_c q(c|x) [log w_c - log q(c|x)], each class at its own z.
    terms = _hand_terms(m, x, z, classes)  # (C, batch)
    by_hand = (q.T * (terms - log_q.T)).sum(0)
    # Labelled rows: log w at the label; the guide's C draws of z there are weighted equally
    # (the guide gives labelled rows uniform logits, so q(y|x) gets no gradient from them).
    labelled_terms = _hand_terms(m, x, z, y.clamp(min=0).expand(3, 6))
    by_hand = torch.where(unlabelled, by_hand, labelled_terms.mean(0))
    torch.testing.assert_close(-loss, by_hand.sum(), rtol=1e-10, atol=1e-10)


def test_training_mode_adds_the_weighted_classification_term():
    m = _tiny()
    x = _x()
    y = torch.tensor([-1, 2, -1, 0, -1, -1])
    m.init_from_data(x, y)  # N = 6, N_labelled = 2: weight alpha * 6 / 2
    assert (m.num_examples.item(), m.num_labelled.item()) == (6, 2)
    assert "num_labelled" in m.state_dict()
    elbo_ = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(5)
    train_loss = elbo_.differentiable_loss(m.model, m.guide, x, y)
    m.eval()
    pyro.set_rng_seed(5)
    eval_loss = elbo_.differentiable_loss(m.model, m.guide, x, y)
    log_q = m.classify(x)
    expected = 0.1 * 6 / 2 * (log_q[1, 2] + log_q[3, 0])
    torch.testing.assert_close(eval_loss - train_loss, expected, rtol=1e-10, atol=1e-10)


def _quadrature(m, x):
    """log p(x) = log sum_c p(c) int p(z) p(x | z, c) dz and the exact-in-y ELBO, on a fine grid."""
    grid = torch.linspace(-10, 10, 20001, dtype=x.dtype)[:, None, None]  # (G, 1, 1)
    dz = 20 / 20000
    log_px_c, elbo_c = [], []
    for c in range(m.num_classes):
        label = torch.full((x.shape[0],), c)
        onehot = F.one_hot(label, m.num_classes).to(x.dtype)
        log_joint = (-math.log(m.num_classes) + Normal(0.0, 1.0).log_prob(grid).sum(-1)
                     + Bernoulli(logits=m.decoder(grid, onehot)).log_prob(x).sum(-1))  # (G, n)
        log_px_c.append(torch.logsumexp(log_joint, 0) + math.log(dz))
        loc, scale = m._z_params(x, label)
        log_q = Normal(loc, scale).log_prob(grid).sum(-1)  # (G, n)
        elbo_c.append((log_q.exp() * (log_joint - log_q)).sum(0) * dz)
    log_q_y = m.classify(x)
    log_px = torch.logsumexp(torch.stack(log_px_c, -1), -1)
    elbo_exact = (log_q_y.exp() * (torch.stack(elbo_c, -1) - log_q_y)).sum(-1)
    return log_px, elbo_exact


def test_log_likelihood_and_elbo_against_quadrature():
    m = _tiny(seed=3)
    x = _x(n=5, seed=4)
    with torch.no_grad():
        # A proposal q(z | x, c) = N(0, 1.5^2), wider than the prior: bounded importance weights,
        # so K = 5000 is accurate to about a hundredth of a nat.
        last = m.encoder.net[-1][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, math.log(math.expm1(1.5))]))
        log_px, elbo_exact = _quadrature(m, x)
        pyro.set_rng_seed(0)
        estimate = log_likelihood(m, x, num_samples=5000, sample_chunk=1000).per_example
        bound = elbo(m, x, num_samples=5000, sample_chunk=1000).per_example
    torch.testing.assert_close(estimate, log_px, rtol=0, atol=2e-2)
    torch.testing.assert_close(bound, elbo_exact, rtol=0, atol=3e-2)
    assert bool((elbo_exact < log_px).all())
    assert m.training  # the evaluation restored the mode


def test_trains_with_plain_pyro_svi_and_trace_enum_elbo():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    data = load_dataset(DataConfig(name="digits", labels_per_class=5))
    x, y = torch.bernoulli(data.x_train[:256]), data.y_train[:256]
    m = M2(64, M2Config(latent_dim=4, hidden_dims=(32,)), num_classes=10)
    m.init_from_data(x, y)
    svi = SVI(m.model, m.guide, pyro.optim.Adam({"lr": 1e-2}), TraceEnum_ELBO(max_plate_nesting=1))
    losses = [svi.step(x, y) for _ in range(40)]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert any(name.startswith("m2$$$") for name in pyro.get_param_store())
    pyro.clear_param_store()


def _fit_m2(epochs, seed=0):
    data = load_dataset(DataConfig(name="digits", labels_per_class=10))
    pyro.set_rng_seed(seed)
    m = M2(64, M2Config(latent_dim=8, hidden_dims=(64,), alpha=1.0), num_classes=10)
    m.init_from_data(data.x_train, data.y_train)
    result = fit(m, data, TrainConfig(epochs=epochs, batch_size=128, lr=5e-3, seed=seed, device="cpu",
                                      progress=False, eval_every=epochs))
    return m.eval(), data, result


def test_m2_beats_a_classifier_trained_on_the_labelled_images_alone():
    m, data, result = _fit_m2(epochs=60)
    assert math.isfinite(result.history[-1]["train_objective"]) and "test_elbo" in result.history[-1]
    with torch.no_grad():
        m2_accuracy = (m.classify(data.x_test).argmax(-1) == data.y_test).double().mean().item()
    # The same architecture as q(y | x), trained on the 100 labelled training images only.
    torch.manual_seed(0)
    labelled = data.y_train >= 0
    assert int(labelled.sum()) == 100
    x_l, y_l = data.x_train[labelled], data.y_train[labelled]
    classifier = MLP(64, (64,), 10)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(classifier(torch.bernoulli(x_l)), y_l).backward()
        optimizer.step()
    with torch.no_grad():
        alone = (classifier(data.x_test).argmax(-1) == data.y_test).double().mean().item()
    assert m2_accuracy > alone + 0.01, (m2_accuracy, alone)


def test_labels_per_class_is_balanced_seeded_and_refuses_bad_counts():
    y = np.array([0, 1, 1, 2, 2, 2, 0, 1, -1])
    kept = keep_labels_per_class(y, 2, split_seed=7)
    assert kept[-1] == -1 and (np.bincount(kept[kept >= 0]) == 2).all()
    assert (kept[kept >= 0] == y[kept >= 0]).all()
    assert (keep_labels_per_class(y, 2, split_seed=7) == kept).all()
    with pytest.raises(ValueError, match=r"labels_per_class 3 is larger than class 0's 2 labelled"):
        keep_labels_per_class(y, 3, split_seed=7)
    with pytest.raises(ValueError, match="labels_per_class"):
        DataConfig(labels_per_class=0)
    with pytest.raises(ValueError, match=r"labels_per_class 10 applies to models that learn from partial labels"):
        RunConfig(model="vae", data=DataConfig(labels_per_class=10))
    with pytest.raises(ValueError, match=r"objective 'iwae' does not support model 'm2'"):
        RunConfig(model="m2", train=TrainConfig(objective="iwae"))


def test_cli_trains_m2_and_writes_accuracy_and_figures(tmp_path, capsys):
    out = tmp_path / "m2"
    argv = ["train", "--model", "m2", "--dataset", "digits", "--labels-per-class", "10", "--latent-dim", "4",
            "--hidden-dims", "32", "--epochs", "2", "--eval-samples", "5", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert 0 <= test["classification_accuracy"] <= 1 and test["log_likelihood"] >= test["elbo"] - 5
    assert json.loads((out / "config.json").read_text())["data"]["labels_per_class"] == 10
    assert test["latent"]["classifier_accuracy"] is not None  # the probe: predicted labels only
    assert main(["evaluate", str(out), "--samples", "5"]) == 0
    capsys.readouterr()
    for kind in ("classes", "analogies"):
        png = tmp_path / f"{kind}.png"
        assert main(["plot", str(out), "--kind", kind, "--out", str(png)]) == 0 and png.stat().st_size > 0


def test_figure_kinds_apply_to_m2():
    m = M2(64, M2Config(latent_dim=2, hidden_dims=(16,)), num_classes=10)
    kinds = applicable_kinds(m)
    assert {"classes", "analogies", "latent", "kl"} <= set(kinds)
    assert "analogies" in KINDS and "analogies" not in applicable_kinds(MODELS["vae"][1](64))
    assert m.analogies(torch.zeros(3, 64)).shape == (3, 10, 64)


def test_compare_ranks_vae_hvae_and_m2_in_one_table(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--models", "vae,hvae,m2=m2:labels_per_class=10", "--dataset", "digits",
                 "--epochs", "1", "--hidden-dims", "16", "--latent-dim", "2", "--samples", "5",
                 "--no-progress", "--out", str(out)]) == 0
    rows = {row["name"]: row for row in json.loads((out / "summary.json").read_text())}
    assert set(rows) == {"vae", "hvae", "m2"}
    # One group (unconditional log p(x) of binary pixels): every row is paired with the same best.
    assert not any(row["conditional"] for row in rows.values())
    best = [name for name, row in rows.items() if row["paired"] is None]
    assert len(best) == 1 and all(row["paired"]["vs"] == best[0] for name, row in rows.items() if name != best[0])
    table = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| ")]
    assert {line.split("|")[2].strip() for line in table} >= {"vae", "hvae", "m2"}


def _write_npz(path, y, y_test=None):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.integers(0, 256, (40, 16), dtype=np.uint8), "y": y}
    if y_test is not None:
        arrays.update(x_test=rng.integers(0, 256, (10, 16), dtype=np.uint8), y_test=y_test)
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize("case,argv,message", [
    ("zero", ["--model", "m2", "--labels-per-class", "0"], "labels_per_class must be"),
    ("too-many", ["--model", "m2", "--labels-per-class", "1000"],
     r"labels_per_class 1000 is larger than class \d's \d+ labelled"),
    ("no-partial-labels", ["--model", "vae", "--labels-per-class", "5"],
     "labels_per_class 5 applies to models that learn from partial labels"),
    ("iwae", ["--model", "m2", "--objective", "iwae"], "objective 'iwae' does not support model 'm2'"),
    ("unlabelled-for-cvae", ["--model", "cvae", "NPZ_TRAIN"],
     r"model CVAE needs every label .* unlabelled rows \(y = -1\); use --model m2"),
    ("unlabelled-test", ["--model", "m2", "NPZ_TEST"], r"test data has 3 unlabelled rows"),
])
def test_cli_refuses_bad_label_inputs_in_one_line(tmp_path, capsys, case, argv, message):
    labels = np.tile(np.arange(4), 10)
    if "NPZ_TRAIN" in argv:
        y = labels.copy()
        y[:5] = -1
        argv = [a for a in argv if a != "NPZ_TRAIN"] + [
            "--dataset", _write_npz(tmp_path / "d.npz", y, np.tile(np.arange(4), 3)[:10])]
    elif "NPZ_TEST" in argv:
        y_test = np.tile(np.arange(4), 3)[:10].copy()
        y_test[:3] = -1
        argv = [a for a in argv if a != "NPZ_TEST"] + [
            "--dataset", _write_npz(tmp_path / "d.npz", labels, y_test)]
    else:
        argv = [*argv, "--dataset", "digits"]
    code = main(["train", *argv, "--epochs", "1", "--hidden-dims", "8", "--eval-samples", "2",
                 "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert __import__("re").search(message, err), err


def test_labelled_rows_send_no_gradient_to_the_classifier_through_the_elbo():
    """With every row labelled and no classification term, q(y|x) is no part of the ELBO: its
    gradient is exactly zero (the guide gives labelled rows constant logits)."""
    m = _tiny().eval()
    x, y = _x(), torch.tensor([0, 2, 1, 0, 1, 2])
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m.model, m.guide, x, y)
    grads = torch.autograd.grad(loss, list(m.classifier.parameters()), allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)


def test_training_with_labels_needs_the_training_counts():
    m = _tiny().train()
    with pytest.raises(ValueError, match=r"init_from_data"):
        TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m.model, m.guide, _x(),
                                                                torch.tensor([0, -1, 1, -1, -1, 2]))


def test_m2_interpolation_never_reads_the_true_labels():
    from pyro_vae.plots.compute import interpolate

    torch.manual_seed(0)
    model = M2(64, M2Config(latent_dim=2, hidden_dims=(8,)), num_classes=3).eval()
    x = torch.bernoulli(torch.full((4, 64), 0.4))
    y = torch.tensor([0, 1, 2, 0])
    with_true = interpolate(model, x[:2], x[2:], 4, y[:2])
    with_wrong = interpolate(model, x[:2], x[2:], 4, (y[:2] + 1) % 3)
    assert torch.equal(with_true, with_wrong)
    predicted = model.classify(x[:2]).argmax(-1)
    ends = model.decode(model.encode(x[:2]), predicted)  # the first step: x_a in its predicted class
    assert torch.allclose(with_true[:, 0], ends)
