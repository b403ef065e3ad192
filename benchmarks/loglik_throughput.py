"""Importance-sampled log-likelihood: pyro-vae's evaluation against plain PyTorch, time and memory.

    python benchmarks/loglik_throughput.py [--samples 1000] [--examples 2000] [--chunk 100]
        [--batch-size 100] [--repeats 3] [--train-epochs 1] [--threads N] [--with-validation]
        [--device cpu]
    python benchmarks/loglik_throughput.py --memory-scaling [--samples 5000]
        [--scaling-examples 100,200,300] [--target-examples 10000]
    python benchmarks/loglik_throughput.py --vamp 500 [--examples 200] [--samples 1000]
        [--repeats 1]

The estimator is ``log p(x) ~ logsumexp_k [log p(x | z_k) + log p(z_k) - log q(z_k | x)] - log K``
with ``z_k ~ q(z | x)``, for a 784-400-50 VAE (Bernoulli likelihood, standard-normal prior) on
the first ``--examples`` images of the statically binarized Fashion-MNIST test set (read from
/usr/share/datasets/fashion-mnist; a synthetic stand-in of the same shape when it is not
installed, said in the output). The model is trained for ``--train-epochs`` (1 by default, on
10,000 training images; 0 scores the untrained initialization), as the output says. It is
computed two ways:

- ``pyro_vae``: :func:`pyro_vae.inference.evaluate.log_likelihood` (the guide and the model
  traced and replayed inside a plate of ``--chunk`` importance samples);
- ``plain_torch``: :func:`reference_log_likelihood` below, the same estimator written by hand
  (encode once per batch, draw the K codes in chunks, decode, add the log densities);
- with ``--with-validation`` also ``pyro_vae_validating``: the library's chunk loop with Pyro's
  argument validation left on, i.e. the evaluation as it ran before it switched validation off
  (the before/after of that change).

Both parts draw the same random numbers in the same order, so their estimates agree to float
rounding, not just within Monte Carlo noise; the output also gives the paired difference and
its standard error.

Each repetition runs each part in a fresh subprocess (order alternating between repetitions,
so machine noise hits both alike), so that each reports its own peak resident set and the
parent's memory does not count: ``VmHWM`` from /proc/self/status, reset after loading and a
warm-up (``ru_maxrss`` is useless here: Linux carries it across ``exec``, so every worker
would report at least the parent's peak). ``working_set_mb`` is that peak minus the resident
set at the start of the measured run (about 600 MiB of it is the interpreter with this CUDA
build of torch imported). Medians over repetitions are reported.
``--memory-scaling`` runs only ``pyro_vae`` with K = ``--samples`` (5000 by default) on growing
numbers of examples, to show that the peak does not grow with the number of examples (the
evaluation is chunked over examples and samples), and extrapolates the time to
``--target-examples``. The last line printed is one JSON object.

``--vamp C`` trains the same VAE with a VampPrior of C pseudo-inputs instead (``--train-epochs``
on the same images) and scores it with :func:`log_likelihood` three ways, each in its own
subprocess as above: ``standard_prior`` (the trained encoder and decoder with N(0, I) swapped
in as the prior: the cost of the network passes alone), ``vamp_broadcast`` (the VampPrior as
torch's ``MixtureSameFamily``, ``mixture_form = "broadcast"``: the code before the change) and
``vamp_expansion`` (the VampPrior's :class:`~pyro_vae.models.mixture_density.DiagonalNormalMixture`,
matrix products). The two VampPrior parts draw the same codes, so their per-example estimates
differ only by float rounding (reported). Defaults in this mode: 200 test images, 1 repetition.

Notes
-----
Current figures (idle machine, 200 test images, K = 1000, 100 x 100 blocks, the repetitions
named in the table;
the 2-thread figures vary by +-15% from run to run on this VM, the 1-thread ones by +-5%):

==================================  ========  ===========  ====================================
run                                 pyro_vae  plain_torch  ratio
==================================  ========  ===========  ====================================
default threads (2), 5 repetitions  2.52 s    2.26 s       1.11 (0.99-1.32 in six earlier runs)
``--threads 1``, 3 repetitions       4.37 s    4.20 s       1.04 (0.94-1.06 in three runs)
==================================  ========  ===========  ====================================

``--vamp 500`` (VampPrior of 500 pseudo-inputs, trained 1 epoch on 10,000 Fashion-MNIST
images, the first 200 test images, K = 1000, 100 x 100 blocks, 1 repetition, 2 threads on 2
cores shared with other jobs, load average about 8):

==================  ========  ==========  ============  ===============
part                seconds   x standard  peak RSS MiB  working set MiB
==================  ========  ==========  ============  ===============
standard_prior        8.28 s        1.00         777.1            204.6
vamp_broadcast      168.63 s       20.37        5509.5           4935.1
vamp_expansion        7.92 s        0.96         780.1            203.8
==================  ========  ==========  ============  ===============

The broadcast form built (10,000 codes, 500 components, 50) tensors of 1 GB per block; the
matrix-product form costs about one (10,000 x 101) by (101 x 500) float64 product per block
(26 ms of CPU time on one thread, against 43 ms for the decoder's two products), so the
VampPrior scores at the standard prior's cost within this machine's noise. Mean estimates
-281.6743 nats both ways (largest per-example difference 3e-5 nats: float32 rounding).

What changed since the figures further down (each measured before and after):

- The guide's ``log(scale)`` was taken on the scale expanded to (K, batch, 50) by the
  importance plate; it is now taken once per example (``DiagonalNormal``), and the guide
  scores its own draw from the noise it drew (2 passes instead of about 9).
- Page faults were most of the remaining gap: 115k minor faults per 20 blocks of 25 x 100
  against 7-11k for the reference. Releasing a block's traces before the next block had
  allocated let glibc trim the heap, and the next block faulted every page back in. The loop
  now releases the previous block's sites only after the next one is computed (faults halved),
  and the Bernoulli log-density without gradients is an exact in-place form with two
  temporaries instead of the cross-entropy kernel's four. 2-thread ratio 1.49 -> 0.99,
  1-thread 1.14 -> 0.94 (one run each).
- After a training run in the same process (``pyro-vae train`` evaluates at the end), glibc's
  per-thread arenas kept what each block freed: a K = 100 evaluation of the 10,000 test images
  raised the resident set by 850 MB (the reference's loop: 375 MB). The loop now calls glibc's
  ``malloc_trim(0)`` after each batch of examples: +140 MB, and the ratio within the noise
  above (with and without it: 1.04 and 1.17 in consecutive runs).

Before those changes (previous session): 2 CPU cores shared with other jobs (load average 3-5
during every run), torch 2.14.1 CPU, float32, model trained 1 epoch on 10,000 Fashion-MNIST
images, the first 200 test images, K = 1000, 100 samples x 100 examples per block, 3
interleaved repetitions (medians). The size of the brief, 2,000 examples, takes 10x longer
per part; the per-example cost is the same.

==============================================  ========  ===========  =====  ===============
run                                             pyro_vae  plain_torch  ratio  validation on
==============================================  ========  ===========  =====  ===============
``--threads 1 --with-validation``                 4.55 s       3.50 s   1.30  4.67 s (1.33)
same, glibc heap trimming off (see below)         3.61 s       3.31 s   1.09  3.73 s (1.13)
default threads (2) ``--with-validation``         9.63 s       5.54 s   1.74  10.59 s (1.91)
==============================================  ========  ===========  =====  ===============

Estimates: -285.2448 nats per example both ways (paired difference 2e-7 +- 7e-7). Peak RSS
about 750-840 MiB per part; working set above the start: pyro_vae 205 MiB, plain 188 MiB
(2-thread run).

Where pyro_vae's extra time goes (in-process profiles, one thread, 100 x 100 blocks):

- Pyro's argument validation re-checked every block's distributions (the support of each
  sample, the parameters of every expanded Normal): 302 ms per block with it, 276 ms without,
  248 ms for the plain reference. ``evaluate.py`` now checks the inputs once per public call
  and runs the blocks under ``pyro.validation_enabled(False)`` (the "validation on" column
  is the code before that change).
- Page faults: the traced path keeps more 30 MB tensors alive at its peak, so glibc returns
  the top of the heap to the kernel after each block and faults it back in on the next one
  (129k minor faults and 0.22 s system time per 4 blocks against 28k and 0.05 s for the
  reference). With ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296
  MALLOC_TOP_PAD_=268435456`` in the environment the faults vanish and the ratio is 1.05-1.13
  in process, 1.09 in the table: the compute overhead of the traced path is about 5-10%.
- torch's ``Bernoulli.log_prob`` negates the whole (K, batch, 784) tensor before
  ``Independent`` sums it: one extra 30 MB pass and allocation per block. A likelihood whose
  log_prob sums first (written in a scratch test) took pyro_vae from 1.108 s to 1.030 s
  (plain 0.923 s); that change belongs in ``pyro_vae/models/likelihoods.py``.
- ``Normal.log_prob`` of the guide and of the prior: about 9 element-wise passes each over
  (K, batch, 50) expanded parameters, against 2 in the reference. Cheap on an idle core, but
  with 2 threads on a busy machine every parallel operation waits for the descheduled
  thread, so the op count, not the FLOPs, sets the time: hence the 2-thread ratio (both parts
  also run slower on 2 threads than on 1 there).

Memory scaling, previous session: ``--memory-scaling --threads 1`` (K = 5000): 100 / 200 /
300 examples took 12.3 / 24.2 / 35.6 s with peak RSS 765 / 766 / 886 MiB, extrapolated to
about 20 minutes for all 10,000 test images. Now measured in full:
``--memory-scaling --samples 5000 --scaling-examples 200,10000`` (2 threads): 200 examples
11.5 s, peak 780 MiB; all 10,000 test images 637 s (0.064 s per example), peak 805 MiB
(working set 206 MiB above the start): bounded by the block, far under the 4 GB target.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch
from common import fashion_or_synthetic, proc_status_mb, sync  # benchmarks/common.py
from torch.nn import functional as F

from pyro_vae import VAE, TrainConfig, VAEConfig, fit
from pyro_vae.data import DataSplits
from pyro_vae.inference.evaluate import log_importance_weights, log_likelihood
from pyro_vae.models.priors import StandardNormalPrior

CONFIG = VAEConfig(latent_dim=50, hidden_dims=(400,))
PARTS = ("pyro_vae", "plain_torch")
#: Optional third part (``--with-validation``): the library's chunk loop with Pyro's argument
#: validation left on, as :func:`log_likelihood` ran before it switched validation off.
VALIDATING = "pyro_vae_validating"
#: ``--vamp``'s parts: one VampPrior VAE scored with N(0, I) swapped in, with the VampPrior as
#: torch's MixtureSameFamily (before), and as the matrix-product mixture (after).
VAMP_PARTS = ("standard_prior", "vamp_broadcast", "vamp_expansion")


def model_config(args) -> VAEConfig:
    """The benchmark's 784-400-50 VAE; with ``--vamp C`` its prior is a VampPrior of C inputs."""
    if not args.vamp:
        return CONFIG
    return VAEConfig(latent_dim=50, hidden_dims=(400,), prior="vamp", prior_components=args.vamp)


# --------------------------------------------------------------------------- the reference


@torch.no_grad()
def reference_log_likelihood(vae: VAE, x: torch.Tensor, num_samples: int, batch_size: int,
                             sample_chunk: int) -> torch.Tensor:
    """The importance-sampled log p(x) of each example written in plain PyTorch, ``(n,)``.

    Same estimator, proposal and chunking as the library: for each batch of examples the
    encoder runs once; K codes per example are drawn ``sample_chunk`` at a time.
    """
    d = vae.config.latent_dim
    log_norm = 0.5 * d * math.log(2 * math.pi)  # Normal normalizer, in log p(z) and log q(z | x)
    out = []
    for xb in x.split(batch_size):
        loc, scale = vae.encoder(xb)  # (b, d) each
        sum_log_scale = torch.log(scale).sum(-1)  # (b,)
        pieces = []
        for start in range(0, num_samples, sample_chunk):
            k = min(sample_chunk, num_samples - start)
            eps = torch.randn((k, *loc.shape), dtype=loc.dtype, device=loc.device)  # (k, b, d)
            z = loc + scale * eps
            logits = vae.decoder(z)  # (k, b, D)
            log_lik = -F.binary_cross_entropy_with_logits(
                logits, xb.expand_as(logits), reduction="none").sum(-1)  # (k, b)
            log_prior = -0.5 * (z ** 2).sum(-1) - log_norm
            log_q = -0.5 * (eps ** 2).sum(-1) - sum_log_scale - log_norm
            pieces.append(torch.logsumexp(log_lik + log_prior - log_q, 0))  # (b,)
        out.append(torch.logsumexp(torch.stack(pieces), 0) - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def validating_log_likelihood(vae: VAE, x: torch.Tensor, num_samples: int, batch_size: int,
                              sample_chunk: int) -> torch.Tensor:
    """The library's estimator with Pyro's validation on (the code before the change), ``(n,)``."""
    out = []
    with pyro.validation_enabled(True):
        for xb in x.split(batch_size):
            pieces = []
            for start in range(0, num_samples, sample_chunk):
                k = min(sample_chunk, num_samples - start)
                pieces.append(torch.logsumexp(log_importance_weights(vae, xb, None, k), 0))
            out.append(torch.logsumexp(torch.stack(pieces), 0) - math.log(num_samples))
    return torch.cat(out)


# --------------------------------------------------------------------------- one measured part


def peak_rss_mb() -> float:
    """This process's peak resident set, MiB.

    Linux: ``VmHWM`` of /proc/self/status. ``ru_maxrss`` is not used there because Linux
    carries it across ``exec``: a worker started by a parent that once held 1 GB reports at
    least 1 GB. Elsewhere: ``ru_maxrss`` (KiB on Linux-likes, bytes on macOS; read as KiB).
    """
    peak = proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def worker(args) -> None:
    """Run one part once on the saved model and data; print one JSON line."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    payload = torch.load(Path(args.state_dir) / "payload.pt", weights_only=True)
    vae = VAE(784, model_config(args))
    vae.load_state_dict(payload["model"])
    if args.worker == "standard_prior":  # same networks, N(0, I) as the prior
        vae.prior = StandardNormalPrior(CONFIG.latent_dim)
    elif args.worker == "vamp_broadcast":  # the VampPrior as torch's MixtureSameFamily
        vae.prior.mixture_form = "broadcast"
    vae.to(device).eval()
    x = payload["x"][: args.examples].to(device)
    del payload

    def run(xs, k):
        if args.worker in ("pyro_vae",) + VAMP_PARTS:
            return log_likelihood(vae, xs, num_samples=k, batch_size=args.batch_size,
                                  sample_chunk=args.chunk).per_example
        if args.worker == VALIDATING:
            return validating_log_likelihood(vae, xs, k, args.batch_size, args.chunk)
        return reference_log_likelihood(vae, xs, k, args.batch_size, args.chunk)

    run(x[: args.batch_size], args.chunk)  # warm-up: one batch, one chunk (allocator, kernels)
    sync(device)
    before = peak_rss_mb()  # peak of start-up, loading and warm-up
    reset = reset_peak_rss()  # from here on, the peak is the measured run's own
    start_rss = proc_status_mb("VmRSS") if reset else before
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    pyro.set_rng_seed(args.seed)
    start = time.perf_counter()
    per_example = run(x, args.samples)
    sync(device)
    seconds = time.perf_counter() - start
    torch.save(per_example.cpu(), Path(args.state_dir) / f"{args.worker}-{args.tag}.pt")
    record = {"part": args.worker, "seconds": seconds, "mean": per_example.mean().item(),
              "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before, "peak_reset": reset,
              "rss_start_mb": start_rss,
              "examples": int(x.shape[0]), "samples": args.samples, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        record["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(record), flush=True)


def run_part(args, part: str, tag: str, examples: int) -> dict:
    """Run ``part`` in a fresh interpreter; return its JSON record."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", part, "--state-dir",
               args.state_dir, "--tag", tag, "--examples", str(examples), "--samples",
               str(args.samples), "--chunk", str(args.chunk), "--batch-size", str(args.batch_size),
               "--device", args.device, "--seed", str(args.seed)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.vamp:
        command += ["--vamp", str(args.vamp)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{part} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{tag:>8s} {part:14s} {record['seconds']:8.2f} s  mean {record['mean']:9.3f}  "
          f"peak RSS {record['peak_rss_mb']:7.1f} MiB (at start {record['rss_start_mb']:.1f}, "
          f"peak before {record['rss_before_mb']:.1f})", flush=True)
    return record


# --------------------------------------------------------------------------- set-up


def load_data(train_subset: int) -> tuple[DataSplits, str]:
    data, real = fashion_or_synthetic(train_subset, 10000)
    return data, ("fashion-mnist test set (static binarization, split_seed 0)" if real
                  else "synthetic stand-in (Fashion-MNIST not installed)")


def prepare(args, examples: int) -> str:
    """Build (and briefly train) the VAE; save it with the test images for the workers."""
    data, source = load_data(args.train_subset)
    if examples > data.x_test.shape[0]:
        raise SystemExit(f"--examples {examples} exceeds the {data.x_test.shape[0]} test images")
    pyro.set_rng_seed(0)
    vae = VAE(784, model_config(args))
    if args.train_epochs:
        fit(vae, data, TrainConfig(epochs=args.train_epochs, batch_size=128, lr=1e-3,
                                   device="cpu", eval_every=0, progress=False))
    model_note = (f"trained {args.train_epochs} epoch(s) on {data.x_train.shape[0]} training images"
                  if args.train_epochs else "untrained (seed-0 initialization)")
    if args.vamp:
        model_note += f", VampPrior of {args.vamp} pseudo-inputs"
    torch.save({"model": vae.cpu().state_dict(), "x": data.x_test[:examples].clone()},
               Path(args.state_dir) / "payload.pt")
    return f"{source}; model {model_note}"


def compare(args) -> dict:
    note = prepare(args, args.examples)
    parts = PARTS + ((VALIDATING,) if args.with_validation else ())
    records = {part: [] for part in parts}
    for rep in range(args.repeats):
        order = parts if rep % 2 == 0 else parts[::-1]
        for part in order:
            records[part].append(run_part(args, part, f"rep{rep}", args.examples))
    median = {part: statistics.median(r["seconds"] for r in records[part]) for part in parts}
    # Agreement: both parts draw the same random numbers, so the paired per-example
    # difference is float rounding, not Monte Carlo noise.
    a = torch.load(Path(args.state_dir) / "pyro_vae-rep0.pt")
    b = torch.load(Path(args.state_dir) / "plain_torch-rep0.pt")
    diff = (a - b).double()
    stderr = diff.std().item() / math.sqrt(diff.numel()) if diff.numel() > 1 else float("nan")
    extra = {}
    if args.with_validation:
        extra = {"pyro_vae_validating_s": median[VALIDATING],
                 "ratio_validating": median[VALIDATING] / median["plain_torch"]}
    return {
        "mode": "compare",
        "pyro_vae_s": median["pyro_vae"],
        "plain_torch_s": median["plain_torch"],
        "ratio": median["pyro_vae"] / median["plain_torch"],
        "pyro_vae_loglik": a.double().mean().item(),
        "plain_torch_loglik": b.double().mean().item(),
        "mean_difference": diff.mean().item(),
        "difference_stderr": stderr,
        "agree_within_4_stderr": bool(abs(diff.mean().item()) <= 4 * stderr + 1e-6),
        **extra,
        "peak_rss_mb": {p: max(r["peak_rss_mb"] for r in records[p]) for p in parts},
        "rss_start_mb": {p: max(r["rss_start_mb"] for r in records[p]) for p in parts},
        "working_set_mb": {p: max(r["peak_rss_mb"] - r["rss_start_mb"] for r in records[p]) for p in parts},
        "seconds": {p: [r["seconds"] for r in records[p]] for p in parts},
        "samples": args.samples, "examples": args.examples, "chunk": args.chunk,
        "batch_size": args.batch_size, "repeats": args.repeats, "data": note,
        "threads": records["pyro_vae"][0]["threads"], "device": args.device,
    }


def compare_vamp(args) -> dict:
    """``--vamp``: the VampPrior VAE scored with N(0, I), with the broadcast and the matrix mixture."""
    note = prepare(args, args.examples)
    records = {part: [] for part in VAMP_PARTS}
    for rep in range(args.repeats):
        order = VAMP_PARTS if rep % 2 == 0 else VAMP_PARTS[::-1]
        for part in order:
            records[part].append(run_part(args, part, f"rep{rep}", args.examples))
    median = {p: statistics.median(r["seconds"] for r in records[p]) for p in VAMP_PARTS}
    peak = {p: max(r["peak_rss_mb"] for r in records[p]) for p in VAMP_PARTS}
    working = {p: max(r["peak_rss_mb"] - r["rss_start_mb"] for r in records[p]) for p in VAMP_PARTS}
    # Same codes in both VampPrior parts: their difference is the float32 rounding of each form.
    before = torch.load(Path(args.state_dir) / "vamp_broadcast-rep0.pt").double()
    after = torch.load(Path(args.state_dir) / "vamp_expansion-rep0.pt").double()
    standard = median["standard_prior"]
    print(f"{'part':16s} {'seconds':>8s} {'x standard':>10s} {'peak RSS MiB':>13s} {'working set MiB':>16s}")
    for p in VAMP_PARTS:
        print(f"{p:16s} {median[p]:8.2f} {median[p] / standard:10.2f} {peak[p]:13.1f} {working[p]:16.1f}")
    return {
        "mode": "vamp",
        "components": args.vamp,
        "seconds": median,
        "ratio_to_standard": {p: median[p] / standard for p in VAMP_PARTS},
        "speedup": median["vamp_broadcast"] / median["vamp_expansion"],
        "peak_rss_mb": peak,
        "working_set_mb": working,
        "loglik": {"standard_prior": torch.load(Path(args.state_dir) / "standard_prior-rep0.pt")
                   .double().mean().item(),
                   "vamp_broadcast": before.mean().item(), "vamp_expansion": after.mean().item()},
        "expansion_minus_broadcast_max_abs": (after - before).abs().max().item(),
        "all_seconds": {p: [r["seconds"] for r in records[p]] for p in VAMP_PARTS},
        "samples": args.samples, "examples": args.examples, "chunk": args.chunk,
        "batch_size": args.batch_size, "repeats": args.repeats, "data": note,
        "threads": records["standard_prior"][0]["threads"], "device": args.device,
    }


def memory_scaling(args) -> dict:
    sizes = [int(s) for s in args.scaling_examples.split(",")]
    note = prepare(args, max(sizes))
    records = [run_part(args, "pyro_vae", f"n{n}", n) for n in sizes]
    per_example_s = records[-1]["seconds"] / records[-1]["examples"]
    peaks = [r["peak_rss_mb"] for r in records]
    return {
        "mode": "memory-scaling",
        "samples": args.samples,
        "examples": sizes,
        "seconds": [r["seconds"] for r in records],
        "peak_rss_mb": peaks,
        "rss_start_mb": [r["rss_start_mb"] for r in records],
        "working_set_mb": [r["peak_rss_mb"] - r["rss_start_mb"] for r in records],
        "peak_growth_mb": peaks[-1] - peaks[0],  # from the fewest to the most examples
        "peak_spread_mb": max(peaks) - min(peaks),
        "under_4gb": bool(max(peaks) < 4096),
        "seconds_per_example": per_example_s,
        "extrapolated_s": per_example_s * args.target_examples,
        "target_examples": args.target_examples,
        "chunk": args.chunk, "batch_size": args.batch_size, "data": note,
        "threads": records[0]["threads"], "device": args.device,
    }



def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None, help="K (1000; 5000 with --memory-scaling)")
    parser.add_argument("--examples", type=int, default=None, help="test images (2000; 200 with --vamp)")
    parser.add_argument("--chunk", type=int, default=100, help="importance samples per pass")
    parser.add_argument("--batch-size", type=int, default=100, help="examples per pass")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (3; 1 with --vamp)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-epochs", type=int, default=1, help="0: score the untrained model")
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--memory-scaling", action="store_true")
    parser.add_argument("--scaling-examples", default="100,200,300",
                        help="example counts for --memory-scaling (multiples of --batch-size)")
    parser.add_argument("--target-examples", type=int, default=10000)
    parser.add_argument("--with-validation", action="store_true",
                        help=f"also time {VALIDATING}: Pyro's validation left on (before/after)")
    parser.add_argument("--vamp", type=int, default=0, metavar="C",
                        help="score a VampPrior VAE of C pseudo-inputs: N(0, I) vs the VampPrior "
                             "as MixtureSameFamily (before) vs as matrix products (after)")
    parser.add_argument("--worker", choices=PARTS + (VALIDATING,) + VAMP_PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 5000 if args.memory_scaling else 1000
    if args.examples is None:
        args.examples = 200 if args.vamp else 2000
    if args.repeats is None:
        args.repeats = 1 if args.vamp else 3
    if args.worker:
        worker(args)
        return None
    with tempfile.TemporaryDirectory(prefix="loglik-bench-") as state_dir:
        args.state_dir = state_dir
        if args.vamp:
            result = compare_vamp(args)
        else:
            result = memory_scaling(args) if args.memory_scaling else compare(args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
