"""Red-team checks of the activation option, the streamed range check, the module split and
users' networks in HVAE and M2 (commits 273b404, 9f92ece, af3e0fe, a76aabc).

Everything is tiny (4x4 or 8x8 digits, a few dozen examples, one epoch). Tests marked
``# Was a bug:`` guard behaviour that failed when these checks were written, since fixed.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from pyro_vae import TrainConfig, fit, load_model
from pyro_vae.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.cli import main
from pyro_vae.inference import log_importance_weights
from pyro_vae.inference.evaluate import elbo, log_likelihood
from pyro_vae.models import CVAE, HVAE, M2, VAE, HVAEConfig, M2Config, VAEConfig

SHAPE = (1, 4, 4)
D = 16
CONV = {"arch": "conv", "conv_channels": (2,)}
TINY = ["--epochs", "1", "--no-progress", "--hidden-dims", "8", "--latent-dim", "2", "--device", "cpu",
        "--dataset", "digits", "--subset", "64", "--batch-size", "32"]


def binary(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, D), 0.5), generator=g)


def cli(args):
    """``(exit code, stderr lines)`` of ``pyro-vae ARGS``; a traceback fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    return code, err.getvalue().strip().splitlines()


@pytest.fixture
def no_figures(monkeypatch):
    """Run directories without their PNGs (matplotlib costs seconds; these tests read configs)."""
    import pyro_vae.plots

    monkeypatch.setattr(pyro_vae.plots, "write_run_figures", lambda *args, **kwargs: None)


def _same_scores(a, b, x, y=None, k=3):
    a.eval(), b.eval()
    args = (x,) if y is None else (x, y)
    torch.manual_seed(0)
    first = log_importance_weights(a, *args, num_samples=k)
    torch.manual_seed(0)
    second = log_importance_weights(b, *args, num_samples=k)
    return first.shape == (k, x.shape[0]) and bool(torch.isfinite(first).all()) and torch.equal(first, second)


def _resave_with(path, edit):
    """Rewrite a checksummed file with ``edit(checkpoint)`` applied (a file of another version)."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    checkpoint.pop("format_version")
    edit(checkpoint)
    save_checkpoint(path, checkpoint)


# --------------------------------------------------------------------------- activation


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_gated_models_of_every_kind_save_and_load_to_the_same_scores(arch, tmp_path):
    cc = CONV if arch == "conv" else {}
    models = [
        VAE(D, VAEConfig(latent_dim=2, hidden_dims=(4, 3), activation="gated", **cc), image_shape=SHAPE),
        CVAE(D, VAEConfig(latent_dim=2, hidden_dims=(4,), activation="gated", **cc), num_classes=3,
             image_shape=SHAPE),
        HVAE(D, HVAEConfig(levels=1, latent_dim=2, hidden_dims=(4,), activation="gated", **cc), image_shape=SHAPE),
        HVAE(D, HVAEConfig(levels=3, latent_dim=2, hidden_dims=(4, 3), activation="gated", **cc),
             image_shape=SHAPE),
        HVAE(D, HVAEConfig(levels=2, latent_dim=2, hidden_dims=(), activation="gated", **cc), image_shape=SHAPE),
        M2(D, M2Config(latent_dim=2, hidden_dims=(4, 3), activation="gated", **cc), num_classes=3,
           image_shape=SHAPE),
        M2(D, M2Config(latent_dim=2, hidden_dims=(), activation="gated", **cc), num_classes=3, image_shape=SHAPE),
    ]
    x, y = binary(5), torch.tensor([0, 1, 2, 0, 1])
    for i, model in enumerate(models):
        path = tmp_path / f"m{i}.pt"
        model.save(path)
        again = load_model(path)
        assert again.config.activation == "gated"
        if model.config.hidden_dims:
            assert any(isinstance(m, nn.GLU) for m in again.modules())
        assert _same_scores(model, again, x, y if model.needs_labels else None), type(model).__name__


def test_hvae_with_one_level_draws_the_gated_vaes_weights():
    torch.manual_seed(0)
    vae = VAE(D, VAEConfig(latent_dim=2, hidden_dims=(4,), activation="gated"), image_shape=SHAPE)
    torch.manual_seed(0)
    hvae = HVAE(D, HVAEConfig(levels=1, latent_dim=2, hidden_dims=(4,), activation="gated"), image_shape=SHAPE)
    assert list(vae.state_dict()) == list(hvae.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), hvae.state_dict().values()))


def test_saved_models_from_before_the_option_load_as_relu(tmp_path):
    def drop_activation(checkpoint):
        meta = json.loads(checkpoint["meta"])
        del meta["model_config"]["activation"]
        checkpoint["meta"] = json.dumps(meta)

    x = binary(4)
    for i, model in enumerate([VAE(D, VAEConfig(latent_dim=2, hidden_dims=(4,)), image_shape=SHAPE),
                               HVAE(D, HVAEConfig(levels=2, latent_dim=2, hidden_dims=(4,)), image_shape=SHAPE),
                               M2(D, M2Config(latent_dim=2, hidden_dims=(4,)), num_classes=3, image_shape=SHAPE)]):
        path = tmp_path / f"old{i}.pt"
        model.save(path)
        _resave_with(path, drop_activation)
        again = load_model(path)
        assert again.config.activation == "relu"
        assert _same_scores(model, again, x)


def test_bad_activation_flags_exit_2_in_one_line(tmp_path):
    for extra, expected in (
        (["--activation", "sigmoid"], "unknown activation 'sigmoid'; choose from: elu, gated, relu, tanh"),
        (["--activation", ""], "unknown activation ''"),
        (["--activation", "GATED"], "unknown activation 'GATED'"),
        (["--model", "ppca", "--activation", "gated"], "--activation do not apply to --model ppca"),
        (["--model", "mixture", "--activation", "gated"], "--activation do not apply to --model mixture"),
    ):
        code, lines = cli(["train", "--out", str(tmp_path / "never"), *TINY, *extra])
        assert code == 2 and len(lines) == 1 and expected in lines[0], (extra, lines)
    assert not (tmp_path / "never").exists()


def test_gated_runs_from_the_cli_load_resume_and_refuse_a_new_activation(tmp_path, no_figures):
    from pyro_vae.runs import load_run

    for name, extra in (("vae", []), ("hvae", ["--model", "hvae", "--levels", "3"]),
                        ("m2", ["--model", "m2", "--labels-per-class", "2"])):
        out = tmp_path / name
        assert cli(["train", "--out", str(out), *TINY, "--eval-samples", "2", "--activation", "gated", *extra])[0] == 0
        assert json.loads((out / "config.json").read_text())["model_config"]["activation"] == "gated"
        run = load_run(out, data=False)
        assert run.model.config.activation == "gated"
        assert any(isinstance(m, nn.GLU) for m in run.model.modules())
    code, lines = cli(["train", "--resume", str(tmp_path / "vae"), "--epochs", "2", "--no-progress",
                       "--activation", "relu"])
    assert code == 2 and len(lines) == 1 and "drop --activation" in lines[0]


def test_run_directories_without_the_activation_field_load_and_resume(tmp_path, no_figures):
    from pyro_vae.runs import load_run, read_config

    out = tmp_path / "old"
    assert cli(["train", "--out", str(out), *TINY, "--eval-samples", "2"])[0] == 0
    config_path = out / "config.json"
    raw = json.loads(config_path.read_text())
    del raw["model_config"]["activation"]  # as written before the option existed
    config_path.write_text(json.dumps(raw))

    def drop(checkpoint):
        stored = json.loads(checkpoint["config"])
        del stored["model_config"]["activation"]
        checkpoint["config"] = json.dumps(stored)

    _resave_with(out / "checkpoint.pt", drop)
    assert read_config(out).model_config["activation"] == "relu"
    assert load_run(out, data=False).model.config.activation == "relu"
    assert cli(["train", "--resume", str(out), "--epochs", "2", "--no-progress"])[0] == 0
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_compare_entries_carry_the_activation_and_refuse_bad_ones(tmp_path):
    from pyro_vae.compare import CompareConfig
    from pyro_vae.compare.entries import parse_entries

    entries = parse_entries("g=vae:activation=gated,e=hvae:activation=elu:levels=3,vae")
    assert [e.model_options.get("activation") for e in entries] == ["gated", "elu", None]
    config = CompareConfig(entries=tuple(entries), model_options={"activation": "tanh"})
    runs = [config.run_config(e).model_config["activation"] for e in entries]
    assert runs == ["gated", "elu", "tanh"]  # the entry's own option wins over the shared one
    mixed = CompareConfig(entries=("ppca", "vae"), model_options={"activation": "gated"})
    ppca = mixed.run_config(parse_entries("ppca")[0])
    assert "activation" not in ppca.model_config  # a shared option skips models without the field
    for spec, expected in (("g=vae:activation=sigmoid", "entry 'g': unknown activation 'sigmoid'"),
                           ("g=vae:activation=none", "entry 'g': unknown activation None"),
                           ("vae:activation=gated", "needs a name"),
                           ("g=ppca:activation=gated", "unknown option 'activation' for model 'ppca'"),
                           ("g=vae:activation=gated:activation=elu", "option 'activation' is given twice")):
        code, lines = cli(["compare", "--out", str(tmp_path / "cmp"), *TINY, "--models", spec])
        assert code == 2 and len(lines) == 1 and expected in lines[0], (spec, lines)
    assert not (tmp_path / "cmp").exists()


# --------------------------------------------------------------------------- streamed range check


def _tiny_vae(likelihood="bernoulli"):
    return VAE(D, VAEConfig(latent_dim=2, hidden_dims=(4,), likelihood=likelihood), image_shape=SHAPE)


def _stream(model, loader, dtype="float32"):
    config = TrainConfig(epochs=1, batch_size=8, progress=False, eval_every=0, device="cpu", dtype=dtype)
    return fit(model, loader, config)


class _Batches(IterableDataset):
    """An iterable-style dataset (no len) yielding ready-made batches."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def test_a_later_batch_out_of_range_is_named_whatever_its_dtype_size_or_loader():
    x = binary(24)
    scaled = x.clone()
    scaled[9] *= 255  # batch 2
    cases = {
        "float32": DataLoader(TensorDataset(scaled), batch_size=8),
        "float64": DataLoader(TensorDataset(scaled.double()), batch_size=8),
        "uint8": DataLoader(TensorDataset(scaled.to(torch.uint8)), batch_size=8),
        "uneven": DataLoader(TensorDataset(scaled[:19]), batch_size=8),  # 8, 8, 3
        "no len": DataLoader(_Batches([x[:8], x[8:11] * 3, x[11:20]]), batch_size=None),
    }
    for name, loader in cases.items():
        with pytest.raises(ValueError, match=r"^epoch 1, batch 2 of the training data has values in \[0, (255|3)\]; "
                                             r"the bernoulli likelihood needs them in \[0, 1\]") as err:
            _stream(_tiny_vae(), loader)
        assert "\n" not in str(err.value), name
    # a float64 model reads the extremes in float64
    with pytest.raises(ValueError, match="batch 2 of the training data has values in"):
        _stream(_tiny_vae(), DataLoader(TensorDataset(scaled), batch_size=8), dtype="float64")


def test_in_range_uint8_pixels_and_any_finite_gaussian_values_stream():
    x = binary(21)
    assert _stream(_tiny_vae(), DataLoader(TensorDataset(x.to(torch.uint8)), batch_size=8)).epochs == 1
    wild = torch.randn(21, D, generator=torch.Generator().manual_seed(1)) * 50
    wild[12] = -1e4  # far outside [0, 1], in a later batch
    for likelihood in ("gaussian", "gaussian-heteroscedastic"):
        assert _stream(_tiny_vae(likelihood), DataLoader(TensorDataset(wild), batch_size=8)).epochs == 1


def test_non_finite_later_batches_are_named_as_such():
    x = binary(24)
    for likelihood, bad in (("bernoulli", float("inf")), ("gaussian", -float("inf")), ("gaussian", float("nan"))):
        data = x.clone()
        data[12, 3] = bad
        with pytest.raises(ValueError, match=r"^epoch 1, batch 2 of the training data contains NaN or Inf"):
            _stream(_tiny_vae(likelihood), DataLoader(TensorDataset(data), batch_size=8))


def test_an_empty_later_batch_is_one_line():
    x = binary(16)
    with pytest.raises(ValueError, match=r"^epoch 1, batch 2: x must have shape") as err:
        _stream(_tiny_vae(), DataLoader(_Batches([x[:8], x[8:8], x[8:]]), batch_size=None))
    assert "\n" not in str(err.value)


def test_nan_and_out_of_range_in_one_epoch_name_the_first_bad_batch():
    # Was a bug: streaming.check_batch_range reports the NaN in batch 3 before the out-of-range batch 2
    # (the user fixes batch 3, reruns, and only then hears of batch 2)
    x = binary(24)
    x[9] *= 255  # batch 2: 0-255
    x[20, 0] = float("nan")  # batch 3: NaN
    with pytest.raises(ValueError, match=r"batch 2 of the training data"):
        _stream(_tiny_vae(), DataLoader(TensorDataset(x), batch_size=8))


def test_a_later_batch_just_above_one_reports_a_value_outside_the_range():
    # Was a bug: streaming.check_batch_range formats the extremes with 4 significant digits, so a pixel
    # of 1 + 1e-9 reads "has values in [..., 1]; ... needs them in [0, 1]", a self-contradiction
    x = torch.rand(16, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[12, 3] = 1 + 1e-9
    with pytest.raises(ValueError, match="batch 2") as err:
        _stream(_tiny_vae("continuous-bernoulli"), DataLoader(TensorDataset(x), batch_size=8), dtype="float64")
    reported_high = str(err.value).split("has values in [")[1].split("]")[0].split(", ")[1]
    assert float(reported_high) > 1, str(err.value)


# --------------------------------------------------------------------------- module split


def test_old_import_paths_are_the_new_objects():
    import importlib

    # (importlib: ``import pyro_vae.inference.evaluate as m`` gives the evaluate function, which
    # pyro_vae.inference re-exports under the module's name)
    evaluate, fingerprints, heap, runload, runs = (importlib.import_module(f"pyro_vae.{name}") for name in (
        "inference.evaluate", "inference.fingerprints", "inference.heap", "runload", "runs"))

    for name in ("load_run", "read_config", "read_run_config", "trust_run_plugins", "LoadedRun"):
        assert getattr(runs, name) is getattr(runload, name), name
    assert evaluate.fingerprint is fingerprints.fingerprint
    assert evaluate.hash_values is fingerprints.hash_values
    assert callable(heap.release_free_heap)
    x = torch.tensor([[0.0, 1.0]])
    assert evaluate.fingerprint(x) == fingerprints.fingerprint(x.double()) != fingerprints.fingerprint(1 - x)


# --------------------------------------------------------------------------- users' networks


class Images(nn.Module):
    """Images ``(N, 1, 4, 4)`` (+ one-hot labels) -> ``(N, out)``, recording what it was given."""

    def __init__(self, out, extra=0, cast=None, device=None, fail=None):
        super().__init__()
        self.linear = nn.Linear(D + extra, out)
        self.cast, self.device, self.fail = cast, device, fail
        self.seen = []

    def forward(self, images, *extra):
        self.seen.append((tuple(images.shape), *(tuple(e.shape) for e in extra)))
        if self.fail is not None:
            raise self.fail
        out = self.linear(torch.cat([images.flatten(1), *extra], -1))
        if self.cast is not None:
            out = out.to(self.cast)
        return out if self.device is None else out.to(self.device)


class Codes(nn.Module):
    """Codes ``(N, d)`` (+ one-hot labels) -> flat logits ``(N, 16)``."""

    def __init__(self, latent, extra=0):
        super().__init__()
        self.linear = nn.Linear(latent + extra, D)
        self.seen = []

    def forward(self, z, *extra):
        self.seen.append((tuple(z.shape), *(tuple(e.shape) for e in extra)))
        return self.linear(torch.cat([z, *extra], -1))


def test_non_modules_and_networks_a_model_does_not_take_are_one_line_type_errors():
    for build, name in ((lambda: HVAE(D, HVAEConfig(), image_shape=SHAPE, encoder=lambda t: t), "encoder"),
                        (lambda: HVAE(D, HVAEConfig(), image_shape=SHAPE, decoder="mlp"), "decoder"),
                        (lambda: M2(D, M2Config(), num_classes=3, image_shape=SHAPE, classifier=nn.Linear),
                         "classifier")):
        with pytest.raises(TypeError, match=rf"^{name} must be a Module, got \w+; pass a torch.nn.Module"):
            build()
    with pytest.raises(TypeError, match="classifier"):
        VAE(D, VAEConfig(), image_shape=SHAPE, classifier=Images(3))
    with pytest.raises(TypeError, match="classifier"):
        HVAE(D, HVAEConfig(), image_shape=SHAPE, classifier=Images(3))


@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_hvae_user_networks_at_one_and_three_levels_score_save_and_load(levels, arch, tmp_path):
    dims = tuple(range(2, 2 + levels))  # z_1 .. z_L; the encoder writes the top, the decoder reads z_1
    config = HVAEConfig(levels=levels, latent_dims=dims, hidden_dims=(4,), activation="gated",
                        **(CONV if arch == "conv" else {}))
    enc, dec = Images(2 * dims[-1]), Codes(dims[0])
    model = HVAE(D, config, image_shape=SHAPE, encoder=enc, decoder=dec)
    enc.seen.clear(), dec.seen.clear()
    x = binary(5)
    assert log_importance_weights(model, x, num_samples=3).shape == (3, 5)
    assert enc.seen == [((5, 1, 4, 4),)] and dec.seen == [((15, dims[0]),)]
    path = tmp_path / "h.pt"
    model.save(path)
    with pytest.raises(ValueError, match=r"built with your own decoder \(Codes\); pass decoder="):
        load_model(path, encoder=Images(2 * dims[-1]))
    again = load_model(path, encoder=Images(2 * dims[-1]), decoder=Codes(dims[0]))
    assert _same_scores(model, again, x)


def test_m2_user_networks_under_enumeration_and_importance_sampling(tmp_path):
    cls, enc, dec = Images(3), Images(4, extra=3), Codes(2, extra=3)
    model = M2(D, M2Config(latent_dim=2, hidden_dims=(4,), activation="gated", **CONV), num_classes=3,
               image_shape=SHAPE, classifier=cls, encoder=enc, decoder=dec)
    x, y = binary(5), torch.tensor([0, -1, 2, -1, 1])
    for net in (cls, enc, dec):
        net.seen.clear()
    assert torch.isfinite(elbo(model, x, y, num_samples=3).per_example).all()
    assert torch.isfinite(log_likelihood(model, x, num_samples=4).per_example).all()
    for net in (cls, enc, dec):  # always (N, ...) inputs; images and labels row for row
        assert net.seen and all(len(s[0]) in (2, 4) and all(len(e) == 2 and e[0] == s[0][0] for e in s[1:])
                                for s in net.seen)
    assert model.decode(torch.zeros(2, 2)).shape == (2, D) and model.analogies(x).shape == (5, 3, D)
    path = tmp_path / "m2.pt"
    model.save(path)
    again = load_model(path, classifier=Images(3), encoder=Images(4, extra=3), decoder=Codes(2, extra=3))
    model.eval()
    torch.manual_seed(0)
    first = log_likelihood(model, x, num_samples=4).per_example
    torch.manual_seed(0)
    assert torch.equal(log_likelihood(again, x, num_samples=4).per_example, first)


def test_a_user_network_returning_integers_is_refused_when_the_model_is_built():
    # Was a bug: adapters.check_network checks the output's shape only: an int64 output passes, then
    # scoring dies in softplus ("not implemented for 'Long'") or M2 silently uses truncated logits
    builds = {
        "encoder": lambda: VAE(D, VAEConfig(latent_dim=2), image_shape=SHAPE, encoder=Images(4, cast=torch.long)),
        "hvae encoder": lambda: HVAE(D, HVAEConfig(levels=2, latent_dim=2), image_shape=SHAPE,
                                     encoder=Images(4, cast=torch.long)),
        "classifier": lambda: M2(D, M2Config(latent_dim=2), num_classes=3, image_shape=SHAPE,
                                 classifier=Images(3, cast=torch.long)),
    }
    for what, build in builds.items():
        name = what.split()[-1]
        with pytest.raises((ValueError, TypeError), match=rf"'?{name}'?.*(int64|dtype|floating)"):
            build()


def test_an_encoder_returning_another_float_dtype_is_refused_or_works():
    # Was a bug: a float32 model whose encoder returns float64 is accepted, then scoring fails in the
    # decoder with a raw "mat1 and mat2 must have the same dtype" RuntimeError
    try:
        model = HVAE(D, HVAEConfig(levels=2, latent_dim=2), image_shape=SHAPE, encoder=Images(4, cast=torch.float64))
    except ValueError as err:
        assert "encoder" in str(err) and "float64" in str(err) and "\n" not in str(err)
        return
    assert torch.isfinite(log_importance_weights(model, binary(3), num_samples=2)).all()


def test_a_user_network_returning_tensors_on_another_device_is_refused_when_built():
    # Was a bug: check_network does not compare the output's device with the input's; the model is
    # built and fails later in torch ("Tensor.item() cannot be called on meta tensors" here; a
    # network moving its output to cuda behaves alike). The meta device stands in for a GPU.
    with pytest.raises(ValueError, match=r"encoder.*meta"):
        VAE(D, VAEConfig(latent_dim=2), image_shape=SHAPE, encoder=Images(4, device="meta"))


def test_a_value_error_inside_a_user_network_is_one_line_naming_the_network():
    # Was a bug: check_network re-raises any ValueError as it is (meant for the adapter's own shape
    # error), so a user's ValueError neither names the network nor stays on one line
    failure = ValueError("my layer refused its input\nsecond line of details")
    for build in (lambda: M2(D, M2Config(latent_dim=2), num_classes=3, image_shape=SHAPE,
                             encoder=Images(4, extra=3, fail=failure)),
                  lambda: HVAE(D, HVAEConfig(levels=2, latent_dim=2), image_shape=SHAPE,
                               encoder=Images(4, fail=failure))):
        with pytest.raises(ValueError, match=r"network 'encoder' failed") as err:
            build()
        assert "\n" not in str(err.value)


def test_the_construction_check_leaves_submodules_in_their_own_modes():
    # Was a bug: check_network restores only the top module's flag with net.train(was_training), which
    # also switches a frozen (eval-mode) backbone inside the user's network back to training
    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(D, 8), nn.BatchNorm1d(8))
            self.head = nn.Linear(8, 4)

        def forward(self, images):
            return self.head(self.backbone(images))

    net = Backbone()
    net.backbone.eval()  # frozen batch-norm statistics
    HVAE(D, HVAEConfig(levels=2, latent_dim=2), image_shape=SHAPE, encoder=net)
    assert net.training and not net.backbone.training and not net.backbone[2].training


def test_a_saved_file_naming_a_network_its_model_cannot_take_is_a_value_error_naming_the_file(tmp_path):
    # Was a bug: model_io.load_model catches only ValueError around the constructor: a (checksummed)
    # file whose meta lists a classifier for a VAE ends in "VAE.__init__() got an unexpected
    # keyword argument 'classifier'", a TypeError that does not name the file
    path = tmp_path / "vae.pt"
    VAE(D, VAEConfig(latent_dim=2, hidden_dims=(4,)), image_shape=SHAPE).save(path)

    def claim_classifier(checkpoint):
        meta = json.loads(checkpoint["meta"])
        meta["user_networks"]["classifier"] = "Linear"
        checkpoint["meta"] = json.dumps(meta)

    _resave_with(path, claim_classifier)
    with pytest.raises(ValueError, match=r"vae\.pt"):
        load_model(path, classifier=nn.Linear(D, 3))
