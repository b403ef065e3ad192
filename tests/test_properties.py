"""Property-based robustness: random configurations, arrays and command lines at the entry points.

Every outcome must be either a valid result (a config that round-trips, a data set whose
tensors are finite images in [0, 1], a trained model with a finite history) or a clean
``ValueError``/``TypeError`` (or, for the CLI, exit status 2 with one ``pyro-vae: error:``
line): never another exception type, never a traceback.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import json
import math
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyro_vae.runs as runs_module
from pyro_vae.cli import main
from pyro_vae.data import BINARIZE_CHOICES, DATASETS, DataConfig, load_dataset
from pyro_vae.inference import TrainConfig, fit
from pyro_vae.inference.config import SELECT_ON
from pyro_vae.inference.objectives import OBJECTIVES
from pyro_vae.inference.train import DTYPES, training_curve_key, validate_training_data
from pyro_vae.models import LIKELIHOODS, MODELS, PRIORS, VAE, VAEConfig
from pyro_vae.runs import RunConfig, build_model

CLEAN = (ValueError, TypeError)
FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


#: How often each outcome happened in the property test now running (see ``at_least``).
OUTCOMES: collections.Counter = collections.Counter()


def outcome(label: str) -> None:
    """Record an outcome: for Hypothesis' statistics and for the floor ``at_least`` checks."""
    event(label)
    OUTCOMES[label] += 1


def at_least(**floors):
    """Run the wrapped property test, then require each outcome at least ``floors[label]``
    times: a property whose every example is refused would otherwise pass while testing
    nothing (the examples are derandomized, so the counts are fixed)."""
    def wrap(property_test):
        @functools.wraps(property_test)
        def test():
            OUTCOMES.clear()
            property_test()
            for label, minimum in floors.items():
                assert OUTCOMES[label.replace("_", " ")] >= minimum, dict(OUTCOMES)
        return test
    return wrap



# ------------------------------------------------------------------ strategies

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(2**31, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
    st.lists(st.integers(-2, 40), max_size=3), st.tuples(st.integers(-1, 40)),
    st.sampled_from(["cpu", "cuda", "float64", "static", "bernoulli", "vae", "npz:", "iwae"]),
)
POSITIVE = st.integers(1, 64)
NON_NEGATIVE = st.integers(0, 10)
NAMES = {
    "likelihood": list(LIKELIHOODS), "prior": list(PRIORS), "guide": ["normal", "delta"],
    "objective": list(OBJECTIVES), "dtype": list(DTYPES), "binarize": list(BINARIZE_CHOICES),
    "select_on": list(SELECT_ON),
    "name": list(DATASETS), "init": ["pca", "random"], "device": ["cpu"],
}
VALID = {
    **{k: POSITIVE for k in ("epochs", "batch_size", "particles", "latent_dim", "prior_components",
                            "num_components", "eval_samples", "subset")},
    **{k: NON_NEGATIVE for k in ("seed", "split_seed", "kl_warmup", "eval_every")},
    **{k: st.floats(1e-4, 1.0) for k in ("lr", "obs_scale", "min_scale", "beta")},
    **{k: st.sampled_from(v) for k, v in NAMES.items()},
    "hidden_dims": st.lists(POSITIVE, min_size=1, max_size=3).map(tuple),
    "test_fraction": st.floats(0.01, 0.99), "val_fraction": st.floats(0.0, 0.9),
    "progress": st.booleans(), "detect_anomaly": st.booleans(), "download": st.booleans(),
    # Settings valid on their own (those that apply only beside another stay at None here).
    "patience": st.just(0), "optimizer": st.sampled_from(["adam", "adamw"]),
    "lr_schedule": st.just("constant"), "weight_decay": st.floats(0.0, 0.1),
    "clip_grad": st.none() | st.floats(0.1, 10.0), "log": st.just(()),
    **{k: st.none() for k in ("momentum", "lr_min", "lr_step_epochs", "lr_gamma", "lr_patience")},
    "levels": st.integers(1, 3), "latent_dims": st.just(()),
    "image_size": st.none(), "channels": st.none(),  # folder: data sets only
    "data_dir": st.none() | st.just("data"), "labels_per_class": st.none(),
    "arch": st.sampled_from(["mlp", "conv"]),
    "conv_channels": st.lists(POSITIVE, min_size=1, max_size=3).map(tuple),
}
CONFIG_CLASSES = [TrainConfig, DataConfig] + sorted({cls for cls, _ in MODELS.values()},
                                                      key=lambda c: c.__name__)


def field_values(cls, draw, junk_share: float = 0.3):
    """Draw keyword arguments for some of ``cls``'s fields: mostly valid values, some junk."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        choice = draw(st.floats(0, 1))
        if choice < 0.3:
            continue  # keep the default
        valid = VALID.get(f.name)
        use_junk = valid is None or choice > 1 - junk_share
        kwargs[f.name] = draw(JUNK if use_junk else valid)
    return kwargs


# ------------------------------------------------------------------ configurations


@at_least(accepted=10)
@FAST
@given(st.data())
def test_random_configs_are_valid_or_refused_cleanly(data):
    cls = data.draw(st.sampled_from(CONFIG_CLASSES))
    # Half the examples all-valid where a strategy exists: as the configs grow fields, a fixed
    # junk share per field would leave ever fewer accepted examples to check.
    kwargs = field_values(cls, data.draw, junk_share=data.draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])))
    try:
        config = cls(**kwargs)
    except CLEAN as err:
        assert str(err)  # a message, naming something
        event(f"{cls.__name__} refused")
        return
    event(f"{cls.__name__} accepted")
    outcome("accepted")
    # a config that was accepted holds only JSON-representable, sensible values
    raw = json.loads(json.dumps(dataclasses.asdict(config)))
    assert cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}) == config
    for name in ("epochs", "batch_size", "latent_dim", "particles"):
        if hasattr(config, name):
            value = getattr(config, name)
            assert isinstance(value, int) and not isinstance(value, bool) and value > 0
    if hasattr(config, "lr"):
        assert math.isfinite(config.lr) and config.lr > 0


@at_least(round_trip=6)
@FAST
@given(st.data())
def test_random_run_configs_round_trip_or_are_refused(data):
    junk = data.draw(st.sampled_from([0.0, 0.0, 0.02, 0.1]))
    model = data.draw(JUNK) if data.draw(st.floats(0, 1)) < junk else data.draw(st.sampled_from(sorted(MODELS)))
    parts = {}
    try:
        parts["train"] = TrainConfig(**field_values(TrainConfig, data.draw, junk))
        parts["data"] = DataConfig(**field_values(DataConfig, data.draw, junk))
        model_cls = MODELS[model][0] if model in MODELS else VAEConfig
        parts["model_config"] = field_values(model_cls, data.draw, junk)
        eval_samples = data.draw(JUNK if data.draw(st.floats(0, 1)) < junk else POSITIVE)
        config = RunConfig(model=model, eval_samples=eval_samples, **parts)
    except CLEAN:
        event("refused")
        return
    outcome("round trip")
    raw = json.loads(json.dumps(config.to_dict()))
    assert RunConfig.from_dict(raw) == config


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 300) | st.floats() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                             max_size=4), max_leaves=8)


@FAST
@given(st.data())
def test_damaged_config_json_is_read_or_refused_cleanly(data):
    """A config.json edited by hand (keys dropped, values replaced by random JSON) loads or
    raises ``ValueError``; it never crashes the reader."""
    raw = RunConfig(model="vae", model_config={"latent_dim": 2}).to_dict()
    for _ in range(data.draw(st.integers(1, 3))):
        section = data.draw(st.sampled_from(sorted(raw)))
        if isinstance(raw[section], dict) and raw[section] and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(raw[section])))
            raw[section][key] = data.draw(JSON)
        elif data.draw(st.booleans()):
            raw[section] = data.draw(JSON)
        else:
            del raw[section]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(raw))
        try:
            runs_module.read_config(tmp)
        except ValueError:
            pass


# ------------------------------------------------------------------ arrays


@st.composite
def npz_contents(draw):
    n = draw(st.integers(4, 12) | st.integers(0, 3))
    shape = draw(st.sampled_from([(n, 16), (n, 4, 4), (n, 1, 4, 4), (n, 3, 2, 2)])
                 | st.sampled_from([(n,), (n, 2, 2, 2, 2), (n, 0)]))
    dtype = draw(st.sampled_from([np.uint8, np.int64, np.int8, np.bool_, np.float16, np.float32,
                                  np.float64]))
    if np.issubdtype(dtype, np.floating) and draw(st.floats(0, 1)) < 0.7:
        elements = st.floats(0, 1, width=np.finfo(dtype).bits)  # in range: mostly loads
    else:
        elements = None  # the dtype's whole range: NaN, Inf, negatives, 255 ...
    arrays = {"x": draw(hnp.arrays(dtype, shape, elements=elements))}
    if draw(st.booleans()):
        y_len = draw(st.sampled_from([n, n, max(n - 1, 0), n + 1]))
        y_dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8, np.float32, np.bool_]))
        small = st.booleans() if y_dtype is np.bool_ else st.integers(0, 3)  # plausible labels
        arrays["y"] = draw(hnp.arrays(y_dtype, (y_len,), elements=None if draw(st.booleans()) else small))
    return arrays


@at_least(npz_loaded_and_trained=6)
@FAST
@given(npz_contents(), st.sampled_from(BINARIZE_CHOICES), st.none() | st.integers(1, 20))
def test_random_npz_arrays_load_and_train_or_are_refused(arrays, binarize, subset):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        np.savez(path, **arrays)
        try:
            data = load_dataset(DataConfig(f"npz:{path}", binarize=binarize, subset=subset))
        except CLEAN as err:
            event(f"npz refused: {str(err).split(':', 1)[-1][:50]}")
            return
    d = int(np.prod(data.image_shape))
    for x in (data.x_train, data.x_val, data.x_test):
        assert x.dtype == torch.float32 and x.dim() == 2 and x.shape[1] == d
        assert bool(torch.isfinite(x).all()) and bool(((x >= 0) & (x <= 1)).all())
    if binarize != "none":
        assert bool(((data.x_test == 0) | (data.x_test == 1)).all())
    if data.y_train is not None:
        assert data.y_train.dtype == torch.int64
        assert 0 <= int(data.y_train.min()) and int(data.y_train.max()) < data.num_classes
    # and the data set either trains a small model or is refused for it with a clear error
    model = VAE(d, VAEConfig(latent_dim=2, hidden_dims=(8,)), num_classes=data.num_classes)
    try:
        result = fit(model, data, TrainConfig(epochs=1, batch_size=8, progress=False, device="cpu"))
    except CLEAN:
        assert binarize == "none"  # only grey levels are refused by the default bernoulli
        event("npz loaded, grey levels refused by bernoulli")
        return
    outcome("npz loaded and trained")
    assert all(math.isfinite(h["train_elbo"]) for h in result.history)


# ------------------------------------------------------------------ command lines


FLAG_VALUES = {
    "--model": st.sampled_from(sorted(MODELS) + ["gan"]),
    "--dataset": st.sampled_from(["digits", "digits", "mnist", "npz:/nonexistent.npz", "nope"]),
    "--epochs": st.sampled_from(["1", "0", "-1", "x"]),
    "--batch-size": st.sampled_from(["32", "0", "100000"]),
    "--lr": st.sampled_from(["0.01", "0", "nan", "-1", "1e-3"]),
    "--seed": st.sampled_from(["0", "7", "-1", "99999999999"]),
    "--dtype": st.sampled_from(["float32", "float64", "float16"]),
    "--device": st.sampled_from(["cpu", "tpu"]),
    "--objective": st.sampled_from(sorted(OBJECTIVES) + ["kl"]),
    "--particles": st.sampled_from(["1", "2", "0"]),
    "--latent-dim": st.sampled_from(["2", "0", "two"]),
    "--hidden-dims": st.sampled_from(["8", "8,4", "0", ""]),
    "--likelihood": st.sampled_from(sorted(LIKELIHOODS) + ["poisson"]),
    "--prior": st.sampled_from(sorted(PRIORS) + ["uniform"]),
    "--guide": st.sampled_from(["normal", "delta", "flow"]),
    "--binarize": st.sampled_from(list(BINARIZE_CHOICES) + ["yes"]),
    "--subset": st.sampled_from(["64", "0"]),
    "--test-fraction": st.sampled_from(["0.2", "0", "1"]),
    "--eval-samples": st.sampled_from(["2", "0"]),
}


@FAST
@given(flags=st.dictionaries(st.sampled_from(sorted(FLAG_VALUES)), st.just(None), max_size=6),
       data=st.data())
def test_random_command_lines_run_or_fail_with_one_line(flags, data, monkeypatch, tmp_path):
    """Random ``train`` command lines up to the start of training (the loop is stubbed out; the
    data set is loaded, the model built and the data checked against it)."""

    def train_until_the_loop(config, out_dir, *, overwrite=False, callbacks=()):
        dataset = load_dataset(config.data)
        validate_training_data(build_model(config, dataset), dataset)
        return {"test": {}}

    monkeypatch.setattr(runs_module, "train_run", train_until_the_loop)
    argv = ["train", "--out", str(tmp_path / "run"), "--no-progress"]
    for flag in flags:
        argv += [flag, data.draw(FLAG_VALUES[flag])]
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        status = main(argv)
    assert status in (0, 2), (argv, err.getvalue())
    event(f"exit {status}")
    assert "Traceback" not in err.getvalue()
    if status == 2:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyro-vae: error:"), (argv, err.getvalue())


# ------------------------------------------------------------------ real training of random combinations


@at_least(trained=6)
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_random_model_combinations_train_or_are_refused(data):
    """Any registered model with any likelihood, prior, guide, objective, binarization and
    dtype either trains one epoch to finite numbers or is refused up front."""
    model = data.draw(st.sampled_from(sorted(MODELS)))
    config_cls = MODELS[model][0]
    names = {f.name for f in dataclasses.fields(config_cls)}
    model_config = {k: data.draw(VALID[k]) for k in ("likelihood", "prior", "guide") if k in names}
    model_config.update({k: 2 for k in ("latent_dim", "num_components", "prior_components") if k in names})
    if "hidden_dims" in names:
        model_config["hidden_dims"] = (8,)
    try:
        config = RunConfig(
            model=model, model_config=model_config, eval_samples=2,
            data=DataConfig("digits", binarize=data.draw(VALID["binarize"]), subset=64),
            train=TrainConfig(epochs=1, batch_size=32, progress=False, device="cpu", eval_every=0,
                              objective=data.draw(VALID["objective"]),
                              particles=data.draw(st.sampled_from([1, 2])),
                              dtype=data.draw(VALID["dtype"])))
        dataset = load_dataset(config.data)
        built = build_model(config, dataset)
        result = fit(built, dataset, config.train)
    except CLEAN as err:
        event(f"refused: {str(err)[:60]}")
        return
    outcome("trained")
    key = training_curve_key(config.train, built)  # train_objective under IWAE, for m2
    assert all(math.isfinite(h[key]) for h in result.history)
    assert all(bool(torch.isfinite(p).all()) for p in built.parameters())
