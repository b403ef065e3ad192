"""Training throughput: pyro-vae's loop against plain PyTorch and an idiomatic Pyro SVI script.

    python benchmarks/train_throughput.py [--epochs 4] [--subset 20000] [--device cpu]
        [--batch-size 256] [--suite mlp|loader|conv|denormal] [--conv-channels 32,64]

The same VAE (784-400-50 MLP, Bernoulli likelihood, standard-normal prior, single-sample ELBO,
batch 256, Adam 1e-3, dynamic binarization) is trained four ways in one process, one epoch of
each in turn (the order rotating every epoch) so that machine noise hits all alike:

- ``pyro_vae``: :func:`pyro_vae.fit` (Trace_ELBO's differentiable loss, one torch Adam);
- ``plain_torch``: the same estimator written by hand in PyTorch (reference below), with
  ``torch.optim.Adam`` as a user writes it (torch's default implementation);
- ``plain_torch_fused``: the same hand-written loop with the optimizer ``fit`` builds (fused
  Adam, :func:`pyro_vae.inference.train.build_optimizer`). ``pyro_vae / plain_torch_fused``
  is the cost of Pyro alone (model, guide, tracing); ``pyro_vae / plain_torch`` is what a
  user switching from the hand-written loop sees;
- ``idiomatic_pyro``: ``SVI(vae.model, vae.guide, pyro.optim.Adam, Trace_ELBO())``.

``--suite denormal`` times ``fit`` with subnormal floats flushed to zero (the default,
``TrainConfig.flush_denormal``) against IEEE arithmetic, on the reproduction's IWAE entry
(784-300-300-40, K = 5, run it with ``--batch-size 100``) inside its KL warm-up, where tiny
gradients leave subnormals behind (they slow its first epoch; ``*_first_epoch_s``).
``--suite loader`` times ``fit`` over a ``DataLoader`` (the streamed path: a batch collated and
moved per step) against the hand-written loop over the same loader; ``--suite conv``
times the conv VAE (``arch="conv"``) against its own networks in the hand-written loop. Both
compare with the same (fused) Adam: the ratio is the cost of pyro-vae's loop and Pyro alone.

Data: Fashion-MNIST from /usr/share/datasets/fashion-mnist when installed, else a synthetic
stand-in of the same shape (said in the output). The last line printed is one JSON object.

Notes
-----
Measured on the development machine (2 CPU cores of a VM whose speed drifts by +-5% from
minute to minute, torch 2.14.1 CPU, float32, batch 256). Per-step figures come from scratch
scripts interleaving 20-step blocks of each variant 25 times (medians); epoch figures from
this script with ``--epochs 6 --subset 10000`` (the README's table: ``--epochs 10``).

1. Starting point (previous session): 1.12x plain PyTorch per epoch, 1.20x for idiomatic Pyro.
2. The ``elbo`` objective's fast path had never run: its check that every guide latent is
   reparameterized also looked at the data plate's subsample site (a "sample" site without
   ``rsample``), so every model went through ``Trace_ELBO``. Forward + backward of one step:
   plain 11.28 ms, pyro_vae 13.98 ms (1.24x). Fixed (and now tested: the fast path must run
   for every model).
3. Lean distributions (``pyro_vae/models/distributions.py``): the guide scores its own draw
   from the noise it drew, the prior is ``-z^2/2``, the Bernoulli sums before negating, and
   ``expand`` to the same shape is free (``pyro.plate`` expands every site's distribution):
   forward + backward 1.22x -> 1.11x.
4. Lean site recording (``pyro_vae/inference/tracing.py``) instead of ``poutine.trace`` +
   ``poutine.replay`` + ``Trace.compute_log_prob``, plates given their device: the Python
   cost of a step of a 64-2-4 toy VAE without gradients fell from 516 to 424 us (plain
   PyTorch: 120 us); forward + backward at full size 1.07-1.09x; epochs 1.07x.
5. torch's fused Adam in ``fit`` (:func:`pyro_vae.inference.train.build_optimizer`):
   ``optimizer.step()`` 0.85 ms -> 0.27 ms. Epochs: 0.94-1.05x plain PyTorch with its default
   Adam, 1.04-1.10x the same loop with the fused Adam (``ratio_vs_plain_same_optimizer``:
   what Pyro itself still costs, about 0.4 ms a step, measured on a toy model where compute
   is negligible, one thread: fit 1.26 ms a step, the plain loop 0.83 ms).

What remains is Pyro's own machinery, per step: two plates (each records a subsample site
and allocates its indices), five ``apply_stack`` passes over the handler stack, a
distribution expanded by the plate for the prior, and about five more small autograd nodes
than the hand-written loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import pyro
import torch
from common import fashion_or_synthetic, sync  # benchmarks/common.py (puts pyro_vae on the path)
from pyro.infer import SVI, Trace_ELBO
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from pyro_vae import VAE, TrainConfig, VAEConfig, fit
from pyro_vae.data import DataSplits, iterate_batches
from pyro_vae.inference.evaluate import elbo
from pyro_vae.inference.train import build_optimizer


def load_data(subset: int) -> tuple[DataSplits, str]:
    data, real = fashion_or_synthetic(subset, 2000)
    return data, "fashion-mnist" if real else "synthetic (Fashion-MNIST not installed)"


def _plain_step(vae: VAE, optimizer, x: torch.Tensor) -> None:
    """One step of the single-sample ELBO written by hand (the same estimator as Trace_ELBO)."""
    loc, scale = vae._encode_params(x)  # the model's own networks (MLP or conv), (B, latent)
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    logits = vae._decode(z)  # (B, D)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    # log p(z) - log q(z|x) for diagonal Normals, the same sampled z (no analytic KL)
    log_prior = -0.5 * (z ** 2).sum(-1)
    log_q = -0.5 * (eps ** 2).sum(-1) - torch.log(scale).sum(-1)
    loss = -(log_lik + log_prior - log_q).sum() / x.shape[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def plain_torch_epoch(vae: VAE, optimizer, data: DataSplits, batch_size: int) -> None:
    for x, _ in iterate_batches(data.x_train, None, batch_size, binarize=True):
        _plain_step(vae, optimizer, x)


def plain_torch_loader_epoch(vae: VAE, optimizer, loader: DataLoader, device: torch.device) -> None:
    """The hand-written loop over a DataLoader, moving each batch as ``fit`` does."""
    for (x,) in loader:
        _plain_step(vae, optimizer, x.reshape(x.shape[0], -1).to(device, non_blocking=True))


def idiomatic_pyro_epoch(svi: SVI, data: DataSplits, batch_size: int) -> None:
    for x, _ in iterate_batches(data.x_train, None, batch_size, binarize=True):
        svi.step(x)


#: The variants interleaved by each ``--suite``; the first is pyro-vae's, the others its references.
SUITES = {
    "mlp": ("pyro_vae", "plain_torch", "plain_torch_fused", "idiomatic_pyro"),
    "loader": ("pyro_vae_loader", "plain_torch_loader"),
    "conv": ("pyro_vae_conv", "plain_torch_conv"),
    "denormal": ("pyro_vae_flushed", "pyro_vae_ieee"),
}
#: ``--suite denormal``: the reproduction's IWAE entry (784-300-300-40, K = 5) inside its KL
#: warm-up, where tiny gradients leave subnormal floats; fit with and without flushing them.
DENORMAL_TRAIN = {"objective": "iwae", "particles": 5, "kl_warmup": 100}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each (the first is a warm-up)")
    parser.add_argument("--subset", type=int, default=20000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--suite", choices=sorted(SUITES), default="mlp",
                        help="mlp: the in-memory path against plain PyTorch and idiomatic Pyro; loader: "
                             "fit over a DataLoader against the plain loop over the same loader; conv: "
                             "the conv VAE against the same networks in a plain loop; denormal: fit with "
                        "subnormal floats flushed (the default) against IEEE arithmetic, IWAE in KL warm-up")
    parser.add_argument("--conv-channels", default="32,64", help="--suite conv: channels per conv layer")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    data, source = load_data(args.subset)
    data = data.to(device=device)
    conv = args.suite == "conv"
    config = VAEConfig(latent_dim=50, hidden_dims=(400,), **(
        {"arch": "conv", "conv_channels": tuple(int(c) for c in args.conv_channels.split(","))} if conv else {}))
    denormal = args.suite == "denormal"
    if denormal:
        config = VAEConfig(latent_dim=40, hidden_dims=(300, 300))
    names = SUITES[args.suite]
    models = {}
    for name in names:
        pyro.set_rng_seed(0)  # identical initial parameters for all
        models[name] = VAE(data.data_dim, config, image_shape=data.image_shape).to(device)
    # The references: plain_torch with torch's default Adam (as a user writes it); every other
    # plain loop with the optimizer fit builds (fused Adam), so the ratio is the loop's cost alone.
    plain_opts = {name: (torch.optim.Adam(models[name].parameters(), lr=1e-3) if name == "plain_torch"
                         else build_optimizer(models[name].parameters(), 1e-3))
                  for name in names if name.startswith("plain_torch")}
    svi = None
    if "idiomatic_pyro" in models:
        pyro.clear_param_store()
        svi = SVI(models["idiomatic_pyro"].model, models["idiomatic_pyro"].guide,
                  pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    # The loader suite reads a statically binarized copy (a loader's data is used as given),
    # through one DataLoader shared by both variants: the same per-batch collation cost.
    loader = None
    if args.suite == "loader":
        static = torch.bernoulli(data.x_train.cpu(), generator=torch.Generator().manual_seed(0))
        loader = DataLoader(TensorDataset(static), batch_size=args.batch_size, shuffle=True,
                            pin_memory=device.type == "cuda")

    times = {name: [] for name in models}
    fit_states, fit_seconds, setup_s = {}, {}, []
    for epoch in range(1, args.epochs + 1):
        shift = (epoch - 1) % len(names)  # each takes each position in turn: drift hits all alike
        for name in names[shift:] + names[:shift]:
            sync(device)
            start = time.perf_counter()
            if name.startswith("pyro_vae"):
                extra = {**DENORMAL_TRAIN, "flush_denormal": name == "pyro_vae_flushed"} if denormal else {}
                result = fit(models[name], loader if name == "pyro_vae_loader" else data, TrainConfig(
                    epochs=epoch, batch_size=args.batch_size, lr=1e-3, device=args.device,
                    eval_every=0, progress=False, **extra), resume_state=fit_states.get(name))
                fit_states[name] = result.state.state_dict()
            elif name == "plain_torch_loader":
                plain_torch_loader_epoch(models[name], plain_opts[name], loader, device)
            elif name in plain_opts:
                plain_torch_epoch(models[name], plain_opts[name], data, args.batch_size)
            else:
                idiomatic_pyro_epoch(svi, data, args.batch_size)
            sync(device)
            times[name].append(time.perf_counter() - start)
            if name.startswith("pyro_vae"):
                # fit() is called once per epoch here only to interleave the variants; its set-up
                # (data validation, optimizer state restore), paid once per call, is not part of
                # an epoch of a normal run: time the epoch as fit itself measures it.
                setup_s.append(times[name][-1] - (result.seconds - fit_seconds.get(name, 0.0)))
                times[name][-1] = result.seconds - fit_seconds.get(name, 0.0)
                fit_seconds[name] = result.seconds
            print(f"epoch {epoch} {name:18s} {times[name][-1]:7.2f} s", flush=True)

    pyro.set_rng_seed(1)
    test_neg_elbo = {name: -elbo(m.eval(), data.x_test, num_samples=1).mean for name, m in models.items()}
    # The first epoch of each pays one-off costs (lazy imports in torch.optim, allocator
    # warm-up): it is left out of the median when there are later ones.
    median = {name: statistics.median(t[1:] or t) for name, t in times.items()}
    ours, references = names[0], names[1:]
    result = {f"{name}_s": median[name] for name in names}
    result.update({f"{name}_first_epoch_s": t[0] for name, t in times.items()})
    ratio_keys = (_MLP_RATIO_KEYS if args.suite == "mlp" else {references[0]: "ratio_vs_ieee"} if denormal
                  else {references[0]: "ratio_vs_plain"})
    result.update({ratio_keys[ref]: median[ours] / median[ref] for ref in references})
    result.update({
        "suite": args.suite,
        "test_neg_elbo": test_neg_elbo,
        "fit_setup_s": statistics.median(setup_s),
        "epochs": args.epochs,
        "train_examples": int(data.x_train.shape[0]),
        "data": source,
        "threads": torch.get_num_threads(),
        "device": str(device),
    })
    print(json.dumps(result))
    return result


#: The mlp suite's ratio names (kept from earlier versions of this benchmark).
_MLP_RATIO_KEYS = {"plain_torch": "ratio_vs_plain", "plain_torch_fused": "ratio_vs_plain_same_optimizer",
                   "idiomatic_pyro": "ratio_vs_idiomatic"}


if __name__ == "__main__":
    main()
