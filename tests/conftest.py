import importlib.util
import os
import shutil
import sys
from pathlib import Path

# One thread per process, set before torch is imported (subprocesses inherit it): the tests'
# models are tiny, where a second thread costs more in synchronization than it computes, and
# on a loaded 2-core machine two threads per process are many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

#: Command-line options of the smallest useful training run (one epoch of a tiny VAE on digits).
TINY_TRAIN_ARGS = ["--epochs", "1", "--no-progress", "--hidden-dims", "16", "--latent-dim", "2",
                   "--eval-samples", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _clean_pyro_state():
    """Each test starts from a clean param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits():
    from pyro_vae.data import DataConfig, load_dataset

    return load_dataset(DataConfig("digits"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One finished tiny run, shared; tests that change or damage a run use ``run_copy``."""
    from pyro_vae.cli import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--out", str(out), *TINY_TRAIN_ARGS]) == 0
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of :func:`trained_run`."""
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def binary_batch(n=8, d=64, p=0.3, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, d), p, dtype=dtype))


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    """benchmarks/reproduce.py as a module, imported from its file (it imports its neighbour ``common``)."""
    before = {name: sys.modules.get(name) for name in ("common", "reproduce", "reproduce_entries",
                                                              "reproduce_runs", "reproduce_cost", "reproduce_results")}
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("reproduce", BENCHMARKS / "reproduce.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
        for name, old in before.items():  # leave no ``common`` behind for other tests to trip on
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
