"""Train pyro-vae's VAE with a plain Pyro SVI loop (no pyro-vae training code involved).

    python examples/plain_pyro_svi.py [--epochs 20]

The model is an ordinary Pyro model/guide pair, so ``pyro.infer.SVI`` with ``pyro.optim``
trains it like any Pyro program; pyro-vae's own pieces used here are only the data set and
the evaluation, which score the result in nats per example.
"""

import argparse

import pyro
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import VAE, DataConfig, VAEConfig, evaluate, load_dataset


def main(epochs: int = 20) -> dict:
    pyro.set_rng_seed(0)
    pyro.clear_param_store()  # the param store is global: start from a clean one
    data = load_dataset(DataConfig("digits"))
    vae = VAE(data.data_dim, VAEConfig(latent_dim=8, hidden_dims=(256,)))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    for epoch in range(1, epochs + 1):
        total = 0.0
        for x, _ in data.train_batches(batch_size=128):  # freshly binarized batches
            total += svi.step(x)
        if epoch % 5 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  train ELBO {-total / data.x_train.shape[0]:8.3f} nats")
    test = evaluate(vae, data.x_test, num_samples=500)
    print(f"test ELBO {test['elbo']:.3f}, log p(x) ~ {test['log_likelihood']:.3f} nats "
          f"(importance sampling, K={test['log_likelihood_samples']})")
    return test


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    main(parser.parse_args().epochs)
