"""Plug-ins: one registry type, files and modules loaded by --plugin, recorded by runs, and
never run from a run directory the user did not vouch for (issue 14)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyro_vae import registry
from pyro_vae.cli import main
from pyro_vae.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
LAPLACE = ROOT / "examples" / "custom_prior.py"
TINY = ["--epochs", "1", "--latent-dim", "2", "--hidden-dims", "16", "--eval-samples", "5",
        "--no-progress"]

GUIDE_AND_LIKELIHOOD = '''
import pathlib, torch
import pyro.distributions as dist
from pyro_vae.models.guides import GuideFamily
from pyro_vae.models.likelihoods import BernoulliLikelihood
from pyro_vae.registry import register

pathlib.Path(__file__).with_suffix(".ran").write_text("imported")  # proves the code ran

@register("guide", "laplace-guide")
class LaplaceGuide(GuideFamily):
    def forward(self, loc, scale):
        return dist.Laplace(loc, scale).to_event(1)

@register("likelihood", "bernoulli-copy")
class BernoulliCopy(BernoulliLikelihood):
    name = "bernoulli-copy"
'''


@pytest.fixture(autouse=True)
def _registries_restored():
    """What a test registers (in this process) is removed afterwards: other test files list
    the built-in choices in their expected messages."""
    saved = {kind: (dict(reg), dict(reg._provenance)) for kind, reg in registry._REGISTRIES.items()}
    loaded = dict(registry._LOADED)
    yield
    for kind, (entries, provenance) in saved.items():
        reg = registry._REGISTRIES[kind]
        dict.clear(reg)
        dict.update(reg, entries)
        reg._provenance = provenance
    registry._LOADED.clear()
    registry._LOADED.update(loaded)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A fresh trust list per test (in this process and in subprocesses)."""
    monkeypatch.setenv("PYRO_VAE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run_cli(*argv, env_home, cwd=None):
    """The CLI in a new process: nothing loaded by this test process leaks into it."""
    env = {**os.environ, "PYRO_VAE_HOME": str(env_home), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "pyro_vae", *map(str, argv)], capture_output=True,
                          text=True, env=env, cwd=cwd or ROOT, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_registry_refuses_a_second_owner_and_lists_choices():
    shapes = Registry("shape-test")
    shapes.register("square", object)
    with pytest.raises(ValueError, match="shape-test 'square' is already registered"):
        shapes.register("square", int)
    with pytest.raises(ValueError, match="unknown shape-test 'circle'; choose from: square"):
        shapes.get("circle")
    with pytest.raises(ValueError, match="names must be non-empty strings"):
        shapes.register("a,b", int)
    assert registry.registry("prior") is __import__("pyro_vae").models.PRIORS


def test_entry_points_are_discovered_lazily(monkeypatch, tmp_path):
    module = tmp_path / "pv_entry_plugin.py"
    module.write_text("from pyro_vae.registry import register\n"
                      "register('objective', 'ep-objective')(lambda **k: None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Point:
        value = "pv_entry_plugin"

    monkeypatch.setattr(registry, "entry_points", lambda group: [Point()] if group == "pyro_vae.plugins" else [])
    monkeypatch.setattr(registry, "_discovered", False)
    from pyro_vae.inference.objectives import OBJECTIVES

    assert "ep-objective" in OBJECTIVES
    assert registry.registry("objective").provenance("ep-objective") == {"module": "pv_entry_plugin"}


def test_laplace_plugin_trains_and_is_found_again_in_a_new_process(tmp_path, home):
    run = tmp_path / "laplace"
    # Trained in this process (the same user's trust list); found again in new ones below.
    assert main(["train", "--plugin", str(LAPLACE), "--prior", "laplace", "--out", str(run), *TINY]) == 0
    recorded = json.loads((run / "config.json").read_text())["plugins"]
    assert recorded == [{"path": str(LAPLACE), "sha256": registry.sha256_of(LAPLACE)}]
    # A new process, no --plugin: the run names the file, which this user loaded before.
    status, out, err = run_cli("evaluate", run, "--samples", "3", env_home=home)
    assert status == 0, err
    assert json.loads(out)["log_likelihood_samples"] == 3
    assert main(["compare", "--runs", str(run), "--out", str(tmp_path / "cmp")]) == 0
    # Someone else (a fresh trust list) is refused in one line, then may vouch for it.
    other = tmp_path / "other-home"
    status, _, err = run_cli("evaluate", run, "--samples", "3", env_home=other)
    assert status == 2 and err.count("\n") == 1 and "never loaded by you" in err
    status, _, err = run_cli("evaluate", run, "--samples", "3", "--trust-run", env_home=other)
    assert status == 0, err


def test_a_copied_run_does_not_run_its_plugin(tmp_path, home, capsys):
    plugin = tmp_path / "parts.py"
    plugin.write_text(GUIDE_AND_LIKELIHOOD)
    run = tmp_path / "run"
    argv = ["train", "--plugin", str(plugin), "--guide", "laplace-guide", "--likelihood",
            "bernoulli-copy", "--out", str(run), *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["log_likelihood"] is not None  # the Laplace guide has a density
    marker = plugin.with_suffix(".ran")
    marker.unlink()
    # A new process of the same user, no --plugin: the guide and likelihood are found again.
    status, out, err = run_cli("evaluate", run, "--samples", "2", env_home=home)
    assert status == 0, err
    assert json.loads(out)["log_likelihood_samples"] == 2 and marker.exists()
    marker.unlink()
    # In a new process for a user who never loaded the file: refused before any import.
    status, _, err = run_cli("plot", run, "--kind", "samples", "--out", tmp_path / "s.png",
                             env_home=tmp_path / "stranger")
    assert status == 2 and "was trained with the plug-in file" in err and "Traceback" not in err
    assert not marker.exists()
    status, _, err = run_cli("plot", run, "--kind", "samples", "--out", tmp_path / "s.png",
                             "--plugin", plugin, env_home=tmp_path / "stranger")
    assert status == 0, err
    assert marker.exists()


def test_changed_and_missing_plugin_files_are_named(tmp_path, home, capsys):
    plugin = tmp_path / "parts.py"
    source = GUIDE_AND_LIKELIHOOD.replace("laplace-guide", "laplace-guide-2").replace(
        '"bernoulli-copy"', '"bernoulli-copy-2"')  # other code: not the file another test loaded
    plugin.write_text(source)
    run = tmp_path / "run"
    assert main(["train", "--plugin", str(plugin), "--guide", "laplace-guide-2", "--out", str(run),
                 *TINY]) == 0
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    plugin.write_text(source + "\n# edited\n")
    status, _, err = run_cli("evaluate", moved, env_home=home)
    assert status == 2 and "which has changed since (SHA-256" in err
    plugin.unlink()
    status, _, err = run_cli("evaluate", moved, env_home=home)
    assert status == 2 and "which is missing" in err


@pytest.mark.slow  # three new processes; the file plug-ins' new-process checks stay in the default tier
def test_module_plugins_are_recorded_by_name_and_imported_when_installed(tmp_path, home):
    package = tmp_path / "site"
    package.mkdir()
    (package / "pv_module_plugin.py").write_text(textwrap.dedent('''
        import pyro.distributions as dist
        from pyro_vae.models.priors import Prior
        from pyro_vae.registry import register

        @register("prior", "wide")
        class Wide(Prior):
            def __init__(self, latent_dim, **context):
                super().__init__(latent_dim)
                self.latent_dim = latent_dim
            def forward(self, y=None):
                return dist.Normal(0.0, 2.0).expand([self.latent_dim]).to_event(1)
        '''))
    env_path = {"PYTHONPATH": str(package)}
    run = tmp_path / "wide"
    os.environ.update(env_path)
    try:
        status, _, err = run_cli("train", "--plugin", "pv_module_plugin", "--prior", "wide", "--out", run,
                                 *TINY, env_home=home)
        assert status == 0, err
        assert json.loads((run / "config.json").read_text())["plugins"] == [{"module": "pv_module_plugin"}]
        status, _, err = run_cli("evaluate", run, "--samples", "2", env_home=home)
        assert status == 0, err
    finally:
        del os.environ["PYTHONPATH"]
    status, _, err = run_cli("evaluate", run, "--samples", "2", env_home=home)
    assert status == 2 and "plugin module 'pv_module_plugin' cannot be imported" in err


@pytest.mark.parametrize("spec, message", [
    ("nowhere/none.py", "plugin file 'nowhere/none.py' does not exist"),
    ("no_such_module_xyz", "plugin module 'no_such_module_xyz' cannot be imported"),
])
def test_bad_plugin_specs(spec, message, tmp_path, home, capsys):
    assert main(["train", "--plugin", spec, "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_plugin_that_fails_is_one_line(tmp_path, home, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    assert main(["evaluate", str(tmp_path), "--plugin", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "failed to load: RuntimeError: boom" in err and err.count("\n") == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("pyro-vae 0.")
