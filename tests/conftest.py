import pyro
import pytest
import torch


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


def binary_batch(n=8, d=64, p=0.3, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, d), p, dtype=dtype))
