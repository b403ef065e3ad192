"""Reproduce the literature's Fashion-MNIST log-likelihoods (issue 16) as resumable runs.

    python benchmarks/reproduce.py [--only vae,vamp] [--runs-dir DIR] [--results PATH]
        [--max-epochs N] [--eval-samples K] [--device cpu|cuda] [--threads N]
        [--data-dir DIR] [--seed S] [--no-progress]
    python benchmarks/reproduce.py --smoke --results PATH [--runs-dir DIR]
    python benchmarks/reproduce.py --status [--only NAME] [--runs-dir DIR]

What it trains. Each entry of :data:`ENTRIES` is the literature's configuration of one model
on dynamically binarized Fashion-MNIST, with the training protocol of the VampPrior code
(Tomczak & Welling 2018, github.com/jmtomczak/vae_vampprior) that the Exemplar VAE code
(Norouzi, Fleet & Norouzi 2020, github.com/sajadn/Exemplar-VAE, ``density_estimation.py``)
follows: every setting, with where it comes from, is in :data:`SETTINGS` and in the entry's
own ``settings``. The entries:

- ``vae``: the VAE with a standard-normal prior;
- ``vae-gated``: the same with the reference code's gated dense layers (``activation="gated"``),
  which tests whether the ungated layers explain ``vae``'s gap to the published figure;
- ``vamp``: the VAE with a VampPrior of 500 pseudo-inputs; ``vamp-gated`` the same with gated
  layers;
- ``iwae5``: the VAE's model trained on the IWAE bound with K = 5 (Burda et al. 2015); no
  Fashion-MNIST figure is published, so it is judged against ``vae`` (paired difference);
- ``hvae``: the two-layer hierarchical VAE (z1, z2 of 40 units each) with a standard prior;
- ``hvae-vamp``: the same with a VampPrior on the top layer;
- ``iwae5-gated``, ``hvae-gated``, ``hvae-vamp-gated``: those three with gated layers;
- ``conv``, ``conv-vamp``: the two-layer HVAE with convolutional networks (``arch="conv"``),
  standard prior and VampPrior.

Where pyro-vae's networks or training loop differ from the reference code (ungated layers in
the entries without ``-gated``, and more) is in each entry's ``config.known_differences``: the
JSON states them, the numbers are what these runs reach. Each entry is also paired with its
``baseline`` VAE of the same layers (``vae``, or ``vae-gated`` for the gated entries), so "the
VampPrior (or IWAE) is better than the VAE" is judged with the networks held fixed.

Run directories. Each entry trains into ``--runs-dir/NAME`` (default
``~/pyro-vae-runs/reproduce``), a pyro-vae run directory: checkpointed after every epoch, with
``best.pt`` the best validation epoch. On every invocation an entry's directory is

- reused if it holds a finished run (``metrics.json``) that stopped early or ran at least the
  epochs asked for (re-scored with :func:`pyro_vae.runs.evaluate_run`, no training, when its
  K differs from the K asked for);
- resumed (:func:`pyro_vae.runs.resume_run`) if it holds a checkpoint: an interrupted run
  continues where it stopped, and a run capped by an earlier ``--max-epochs`` continues to
  the new cap;
- trained (:func:`pyro_vae.runs.train_run`) otherwise.

``--status`` prints, per entry, where its directory stands and writes nothing: finished (test
NLL), or its last checkpoint (epoch, best validation epoch and score, evaluations since the
best out of the patience, hours and seconds per epoch, wall time, pauses included) and the
process training it, if any.

Stopping and scoring a run early. A run checkpoints after every epoch (atomically), so it can
be stopped at any moment: Ctrl-C in a terminal, or ``kill PID`` (SIGTERM; a job started in the
background of a non-interactive shell ignores SIGINT) keeps its last finished epoch. To score
it as it stands, rerun the entry with ``--max-epochs N``, N its epochs (``--status``); a later
invocation with a larger cap resumes it. Never move a directory a process is still writing:
its lock moves with it, and the process goes on writing the old path.

A directory written with other settings (than these entries' at this commit) is refused,
naming what differs, never overwritten. ``--only NAME[,NAME]`` trains those entries; the
results still list every other entry whose directory holds a finished run (read, never
trained), so a reproduction can be done one entry per session.

Budget. ``--max-epochs N`` caps each entry's epochs below the literature's 2,000 (recorded as
``config.epoch_budget``; an entry that hit the cap before early stopping has
``budget_limited: true``). ``--eval-samples K`` replaces the literature's K = 5000 (recorded
as ``samples``). Early stopping counts validation evaluations, one per epoch
(``eval_every 1``), so ``patience 50`` is the papers' 50 epochs.

Results. ``--results PATH`` (default ``docs/results/fashion-mnist.json``) receives
``{"commit", "commit_dirty", "machine", "settings", "entries": [...], "not_run", "targets"}``;
each entry holds ``name, nll, nll_stderr, elbo, epochs, best_epoch, seconds,
paired_vs_vae, published, config, samples, test_examples`` and a few more (see
docs/results/README.md). Every number is read from the runs' ``metrics.json`` and
``test_per_example.npz``; ``paired_vs_vae`` is :func:`pyro_vae.compare.stats.paired_difference`
of the entry's per-example log-likelihoods against the VAE's (positive: the entry's NLL is
lower, in nats per test image), after every run's test-set fingerprint was checked to be the
same tensor. ``seconds`` is the training wall time (validation evaluations included, the final
K-sample evaluation not), summed over resumed sessions, on whatever machine trained it;
``machine`` describes the one that wrote the results. A table (published vs obtained) is
printed.

``--smoke``: the embedded 8x8 digits, 2 epochs, K = 10, every entry, into a temporary runs
directory (or ``--runs-dir``) and the ``--results`` path the caller gives (required: smoke
numbers never replace the committed results). Seconds; the numbers mean nothing. Used by
tests/test_reproduce.py.

Cost. Not measured here: estimated from the issue's measurement on the development machine
(2 shared CPU cores) of 6.5 s per epoch of 60,000 images for the 784-300-300-40 VAE at batch
100 and about 11 minutes for K = 5000 on 10,000 test images, scaled by each model's
multiply-adds (forward and backward alike), so read them as +-50%:

=========  ==============  ===========================================  ==============
entry      s per epoch     why                                          K = 5000 eval
=========  ==============  ===========================================  ==============
vae        ~6              50,000 images plus the validation ELBO       ~11 min
vae-gated  ~10             gates double the hidden layers (1.6x)        ~14 min
iwae5      ~17             the decoder runs 5 times per image           ~11 min
hvae       ~10             three more 300-300 networks (1.7x)           ~19 min
vamp       ~20             the encoder also runs on 500 pseudo-inputs   ~12 min
                           at every step (3.5x)
hvae-vamp  ~24             both (4.3x)                                  ~20 min
conv       several 100     convolutions on 2 CPU cores (a GPU's job)    hours
conv-vamp  several 100     the same, plus 500 pseudo-inputs per step    hours
=========  ==============  ===========================================  ==============

Measured since (each run's ``seconds`` over its ``epochs`` in docs/results/fashion-mnist.json;
the development machine, shared with other jobs, so again read them as +-50%): vae 7.2 s per
epoch (2 threads), vae-gated 5.4 s (1 thread), vamp 12.9 s (1 thread), vamp-gated 16.7 s and
iwae5-gated 12.7 s (1 thread each, side by side; iwae5-gated's includes its K = 5 validation
bound); the K = 5000 evaluation took 12.5 minutes for vae-gated and 14.7 for vamp (1 thread
each, side by side).

Early stopping ends such runs after several hundred to 2,000 epochs (the pretrained
dynamic-MNIST run in the Exemplar VAE repository, exemplar prior, stopped at epoch 1,088):
about 1.5 to 13 hours of training per entry, up to about 43 hours for the five CPU models if none stops
early. Run the entries one at a time (``--only``) in the background; an interrupted run
resumes from its last epoch. On 2 busy shared cores ``--threads 1`` may be faster than 2
threads (benchmarks/m2_semisupervised.py found so).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pyro
import torch
from common import FASHION_DIR  # benchmarks/common.py (puts pyro_vae on the path)

from pyro_vae.checkpoint import atomic_write_text, load_checkpoint, validate_train_state
from pyro_vae.compare.stats import SIGNIFICANCE_STDERRS, check_comparable, paired_difference
from pyro_vae.data import DataConfig
from pyro_vae.inference import TrainConfig
from pyro_vae.inference.config import selection_key
from pyro_vae.jsonio import dumps_finite
from pyro_vae.rundir_lock import lock_holder
from pyro_vae.runfiles import CHECKPOINT_FILE, CONFIG_FILE
from pyro_vae.runs import RunConfig, evaluate_run, read_config, read_metrics, read_per_example, resume_run, train_run

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "docs" / "results" / "fashion-mnist.json"
DEFAULT_RUNS_DIR = Path("~/pyro-vae-runs/reproduce")

VAMP_CODE = "VampPrior code (github.com/jmtomczak/vae_vampprior, experiment.py)"
EXEMPLAR_CODE = "Exemplar VAE code (github.com/sajadn/Exemplar-VAE, density_estimation.py)"
EXEMPLAR_PAPER = ("Norouzi, Fleet & Norouzi, 'Exemplar VAE: Linking Generative Models, Nearest Neighbor "
                  "Retrieval, and Data Augmentation', NeurIPS 2020 (arXiv:2004.04795), density-estimation "
                  "table: dynamically binarized Fashion-MNIST, test NLL in nats, 5,000 importance samples "
                  "(values as quoted in issue 16)")

#: The literature's settings shared by every entry: value and where it comes from.
SETTINGS = {
    "dataset": {"value": "fashion-mnist",
                "source": "Exemplar VAE paper, density estimation on Fashion-MNIST (28x28, 60,000 + 10,000)"},
    "binarize": {"value": "dynamic",
                 "source": f"{EXEMPLAR_CODE} and {VAMP_CODE}: --dynamic_binarization (a fresh Bernoulli "
                           "draw of each training image per batch; validation and test binarized once)"},
    "train_examples": {"value": 50000, "source": f"{EXEMPLAR_CODE}: --training_set_size 50000"},
    "val_examples": {"value": 10000, "source": "the other 10,000 of the 60,000 training images "
                                               f"({EXEMPLAR_CODE}; {VAMP_CODE}, utils/load_data.py)"},
    "val_fraction": {"value": 1 / 6, "source": "10,000 of the 60,000 training images: pyro-vae's "
                                               "DataConfig.val_fraction"},
    "test_examples": {"value": 10000, "source": "the official Fashion-MNIST test split, all of it"},
    "batch_size": {"value": 100, "source": f"{EXEMPLAR_CODE} and {VAMP_CODE}: --batch_size 100"},
    "optimizer": {"value": "adam", "source": f"{VAMP_CODE}: AdamNormGrad (Adam on normalized "
                                             "gradients); pyro-vae's Adam, see known_differences"},
    "lr": {"value": 5e-4, "source": f"{EXEMPLAR_CODE} and {VAMP_CODE}: --lr 0.0005"},
    "max_epochs": {"value": 2000, "source": f"{EXEMPLAR_CODE} and {VAMP_CODE}: --epochs 2000"},
    "patience": {"value": 50, "source": f"{EXEMPLAR_CODE} and {VAMP_CODE}: --early_stopping_epochs 50 on "
                                        "the validation bound (pyro-vae's patience counts evaluations; "
                                        "eval_every 1 makes them epochs)"},
    "eval_every": {"value": 1, "source": "the reference code scores the validation set after every epoch"},
    "kl_warmup": {"value": 100, "source": f"{EXEMPLAR_CODE} and {VAMP_CODE}: --warmup 100 (KL weight "
                                          "epoch/100, then 1)"},
    "latent_dim": {"value": 40, "source": f"{EXEMPLAR_CODE} and {VAMP_CODE}: --z1_size 40, --z2_size 40"},
    "hidden_dims": {"value": [300, 300], "source": f"{EXEMPLAR_CODE}: --hidden_size 300; {VAMP_CODE} "
                                                   "models/VAE.py: two GatedDense(300) layers in encoder "
                                                   "and decoder (the vae-gated entry; the others are "
                                                   "ungated, see known_differences)"},
    "likelihood": {"value": "bernoulli", "source": f"{VAMP_CODE}: --input_type binary"},
    "eval_samples": {"value": 5000, "source": f"{EXEMPLAR_CODE} and {VAMP_CODE}: --S 5000 importance "
                                              "samples per test image"},
    "seed": {"value": 0, "source": "pyro-vae's default seed (the reference code's default is 14; the "
                                   "published figures are means over several runs)"},
}

#: The difference of every entry whose dense layers are not gated (those without ``-gated``).
UNGATED_DIFFERENCE = (
    "layers: the reference code's dense layers are gated (GatedDense: h = Linear(x) * sigmoid(Linear'(x))); "
    "this entry's MLPs use plain Linear + ReLU layers of the same widths (300-300); the vae-gated entry "
    "uses gated ones (activation='gated')")

#: Differences from the reference code that apply to every entry.
SHARED_DIFFERENCES = [
    "variances: the reference code bounds each log-variance by hardtanh(-6, 2); pyro-vae's guide scale is "
    "softplus + 1e-5",
    "initialization: the reference code uses He initialization; pyro-vae uses torch's default Linear "
    "initialization",
    "optimizer: the reference code uses AdamNormGrad (each parameter's gradient divided by its norm); "
    "pyro-vae uses torch's Adam",
    "early stopping: the reference code resets its counter during the 100 warm-up epochs "
    "(Exemplar-VAE: `if epoch < args.warmup: e = 0`) and stops after 51 epochs without improvement; "
    "pyro-vae counts from epoch 1 and stops after 50",
    "splits: pyro-vae holds out a seeded random 10,000 of the 60,000 training images for validation and "
    "binarizes validation and test images once from its own seeded streams; the reference code's split "
    "and binarized test set are not reproduced image for image (same protocol, different draws)",
]

_VAMP_DIFFERENCES = [
    "pseudo-inputs: the reference code initializes them at hardtanh(0, 1) of N(-0.05, 0.01) weights "
    "(--pseudoinputs_mean -0.05, --pseudoinputs_std 0.01: black images); pyro-vae at sigmoid(N(0, 1)) "
    "(grey levels around 0.5)",
]
_HVAE_DIFFERENCES = [
    "decoder: the reference HVAE (models/HVAE_2level.py) decodes p(x | z1, z2) from both layers; "
    "pyro-vae's HVAE decodes p(x | z1) (z2 reaches x through p(z1 | z2))",
    "q(z1 | x, z2): the reference code has separate gated layers for x and z2, then a joint 300 layer; "
    "pyro-vae's is one 300-300 MLP over [x, z2] (its first layer split in two)",
]

_STANDARD_PRIOR = {"prior": {"value": "standard", "source": f"{VAMP_CODE}: --prior standard"}}
_VAMP_SETTINGS = {
    "prior": {"value": "vamp", "source": f"{VAMP_CODE}: --prior vampprior"},
    "prior_components": {"value": 500, "source": f"{VAMP_CODE}: --number_components 500 (its "
                         "default; Tomczak & Welling 2018 use 500 pseudo-inputs on the MNIST-like "
                         "data sets). Exemplar-VAE's script default of 50000 is its exemplar "
                         "prior's size, not the VampPrior's"},
}
_GATED = {"activation": {"value": "gated", "source": f"{VAMP_CODE}: models/VAE.py builds its encoder and "
                                                     "decoder from GatedDense layers (utils/nn.py: "
                                                     "Linear(x) * sigmoid(Linear'(x)), no activation "
                                                     "on the first factor)"}}
_VAE_PUBLISHED = {"nll": 228.70, "plus_minus": 0.15, "source": f"{EXEMPLAR_PAPER}: VAE w/ Gaussian prior"}
_VAMP_PUBLISHED = {"nll": 227.35, "plus_minus": 0.05, "source": f"{EXEMPLAR_PAPER}: VAE w/ VampPrior"}

#: Each entry: the pyro-vae model and settings beyond :data:`SETTINGS`, the published figure.
#: The ``-gated`` entries have the reference code's gated layers, the others ReLU layers.
ENTRIES = {
    "vae": {
        "model": "vae", "model_config": {"prior": "standard"}, "train": {},
        "settings": _STANDARD_PRIOR, "published": _VAE_PUBLISHED, "known_differences": [],
    },
    "vae-gated": {
        "model": "vae", "model_config": {"prior": "standard", "activation": "gated"}, "train": {},
        "settings": {**_STANDARD_PRIOR, **_GATED}, "published": _VAE_PUBLISHED, "known_differences": [],
    },
    "vamp": {
        "model": "vae", "model_config": {"prior": "vamp", "prior_components": 500}, "train": {},
        "settings": _VAMP_SETTINGS, "published": _VAMP_PUBLISHED, "known_differences": _VAMP_DIFFERENCES,
    },
    "vamp-gated": {
        "model": "vae", "model_config": {"prior": "vamp", "prior_components": 500, "activation": "gated"},
        "train": {}, "settings": {**_VAMP_SETTINGS, **_GATED}, "published": _VAMP_PUBLISHED,
        "known_differences": _VAMP_DIFFERENCES, "baseline": "vae-gated",
    },
    "iwae5": {
        "model": "vae", "model_config": {"prior": "standard"},
        "train": {"objective": "iwae", "particles": 5, "select_on": "bound"},
        "settings": {
            "objective": {"value": "iwae", "source": "Burda, Grosse & Salakhutdinov, 'Importance Weighted "
                                                     "Autoencoders', ICLR 2016"},
            "particles": {"value": 5, "source": "issue 16: IWAE with K = 5"},
            "select_on": {"value": "bound", "source": f"{VAMP_CODE}: early stopping and model selection "
                                                      "watch the validation value of the loss being trained; "
                                                      "for this entry the K = 5 bound (val_bound), not the "
                                                      "ELBO, which understates an IWAE-trained model"},
        },
        "published": {"nll": None, "plus_minus": None, "source": None,
                      "note": "no published Fashion-MNIST figure for this configuration; judged against "
                              "its baseline VAE of the same layers (paired_vs_baseline: vae, or vae-gated "
                              "for iwae5-gated)"},
        "known_differences": [
            "protocol: Burda et al. trained without KL warm-up on a stepped learning-rate schedule "
            "(3^i epochs at 1e-3 * 10^(-i/7), 3,280 epochs); here the vae entry's protocol with only the "
            "objective (and so the validation bound that selects and stops it) changed, so the paired "
            "difference to vae isolates the objective; the warm-up "
            "weights the log importance weights' latent terms (pyro-vae's beta-IWAE)",
        ],
    },
    "hvae": {
        "model": "hvae", "model_config": {"levels": 2, "prior": "standard"}, "train": {},
        "settings": {
            "levels": {"value": 2, "source": f"{VAMP_CODE}: --model_name hvae_2level"},
            "latent_dims": {"value": [40, 40], "source": f"{VAMP_CODE}: --z1_size 40 --z2_size 40"},
            "prior": {"value": "standard", "source": f"{VAMP_CODE}: --prior standard"},
        },
        "published": {"nll": 227.37, "plus_minus": 0.1,
                      "source": f"{EXEMPLAR_PAPER}: HVAE (two stochastic layers) w/ Gaussian prior"},
        "known_differences": _HVAE_DIFFERENCES,
    },
    "hvae-vamp": {
        "model": "hvae", "model_config": {"levels": 2, "prior": "vamp", "prior_components": 500}, "train": {},
        "settings": {
            "levels": {"value": 2, "source": f"{VAMP_CODE}: --model_name hvae_2level"},
            "latent_dims": {"value": [40, 40], "source": f"{VAMP_CODE}: --z1_size 40 --z2_size 40"},
            "prior": {"value": "vamp", "source": f"{VAMP_CODE}: --prior vampprior (on z2, the top layer)"},
            "prior_components": {"value": 500, "source": f"{VAMP_CODE}: --number_components 500"},
        },
        "published": {"nll": 226.72, "plus_minus": 0.08, "source": f"{EXEMPLAR_PAPER}: HVAE w/ VampPrior"},
        "known_differences": _HVAE_DIFFERENCES + _VAMP_DIFFERENCES,
    },
}

_CONV_DIFFERENCES = _HVAE_DIFFERENCES + [
    "networks: the reference ConvHVAE (models/convHVAE_2level.py) uses gated convolutions (GatedConv2d) "
    "of its own kernel sizes and a final convolutional stack over [x-features, z1, z2]; pyro-vae's conv "
    "networks (--arch conv) are plain stride-2 convolutions (kernel 4; channels 32, 64) then the 300-300 "
    "dense layers, their transposes in the decoder",
]

ENTRIES["conv"] = {
    "model": "hvae", "model_config": {"levels": 2, "prior": "standard", "arch": "conv"}, "train": {},
    "settings": {
        "levels": {"value": 2, "source": f"{VAMP_CODE}: --model_name convhvae_2level"},
        "latent_dims": {"value": [40, 40], "source": f"{VAMP_CODE}: --z1_size 40 --z2_size 40"},
        "prior": {"value": "standard", "source": f"{VAMP_CODE}: --prior standard"},
        "arch": {"value": "conv", "source": "pyro-vae's conv networks (conv_channels 32, 64)"},
    },
    "published": {"nll": 225.38, "plus_minus": 0.08, "source": f"{EXEMPLAR_PAPER}: ConvHVAE w/ Gaussian prior"},
    "known_differences": _CONV_DIFFERENCES,
}
ENTRIES["conv-vamp"] = {
    "model": "hvae", "model_config": {"levels": 2, "prior": "vamp", "prior_components": 500, "arch": "conv"},
    "train": {},
    "settings": {**ENTRIES["conv"]["settings"],
                 "prior": {"value": "vamp", "source": f"{VAMP_CODE}: --prior vampprior (on z2, the top layer)"},
                 "prior_components": {"value": 500, "source": f"{VAMP_CODE}: --number_components 500"}},
    "published": {"nll": 224.67, "plus_minus": 0.03, "source": f"{EXEMPLAR_PAPER}: ConvHVAE w/ VampPrior"},
    "known_differences": _CONV_DIFFERENCES + _VAMP_DIFFERENCES,
}


def _gated_variant(spec: dict) -> dict:
    """``spec`` with the reference code's gated dense layers, paired against ``vae-gated``."""
    return {**spec, "model_config": {**spec["model_config"], **{k: v["value"] for k, v in _GATED.items()}},
            "settings": {**spec["settings"], **_GATED}, "baseline": "vae-gated"}


def _with_gated_twins(entries: dict, bases: tuple[str, ...]) -> dict:
    """``entries`` with a ``NAME-gated`` twin placed after each of ``bases`` (the table's order)."""
    out = {}
    for name, spec in entries.items():
        out[name] = spec
        if name in bases:
            out[f"{name}-gated"] = _gated_variant(spec)
    return out


# The reference networks are gated dense layers: every MLP entry has a gated twin (vae-gated and
# vamp-gated are spelled out above; the conv entries' reference layers are gated convolutions).
ENTRIES = _with_gated_twins(ENTRIES, ("iwae5", "hvae", "hvae-vamp"))

#: Published rows this script cannot train, and why (none since the conv networks exist).
NOT_RUN: list[dict] = []

#: What ``--smoke`` changes: the embedded digits, 2 epochs, K = 10.
SMOKE = {"dataset": "digits", "max_epochs": 2, "eval_samples": 10}

#: Training settings a run directory may differ in from the entry and still be continued.
_CONTINUABLE = ("epochs", "device", "progress")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", metavar="NAME[,NAME]",
                   help=f"train only these entries (choices: {', '.join(ENTRIES)}; default: all); the "
                        f"results also list the others' finished runs")
    p.add_argument("--runs-dir", metavar="DIR",
                   help=f"where the run directories live (default {DEFAULT_RUNS_DIR}; with --smoke a new "
                        f"temporary directory)")
    p.add_argument("--results", metavar="PATH",
                   help="the results JSON (default docs/results/fashion-mnist.json; required with --smoke)")
    p.add_argument("--max-epochs", type=int, metavar="N",
                   help=f"cap each entry's epochs (default: the literature's {SETTINGS['max_epochs']['value']}; "
                        f"recorded as config.epoch_budget)")
    p.add_argument("--eval-samples", type=int, metavar="K",
                   help=f"importance samples of the test log-likelihood (default: the literature's "
                        f"{SETTINGS['eval_samples']['value']}; recorded as samples)")
    p.add_argument("--data-dir", metavar="DIR",
                   help=f"Fashion-MNIST's IDX files (default: pyro-vae's search, which includes {FASHION_DIR})")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, metavar="N", help="torch's intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=SETTINGS["seed"]["value"], help="training seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--status", action="store_true",
                   help="print each entry's run directory as it stands (epochs, best epoch and score, "
                        "patience used, a live process) and exit: nothing is trained or written")
    p.add_argument("--smoke", action="store_true",
                   help="digits, 2 epochs, K = 10, every entry, a temporary runs directory: seconds, for tests")
    return p


def parse_only(text: str | None, parser: argparse.ArgumentParser) -> list[str]:
    if text is None:
        return list(ENTRIES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENTRIES]
    if not names or unknown:
        parser.error(f"--only: unknown entry {', '.join(unknown) or repr(text)}; choose from: {', '.join(ENTRIES)}")
    return [n for n in ENTRIES if n in names]  # in the table's order, vae first


def run_config(name: str, *, dataset: str, epochs: int, eval_samples: int, seed: int, device: str | None,
               data_dir: str | None, progress: bool) -> RunConfig:
    """The pyro-vae run of entry ``name``: :data:`SETTINGS` plus the entry's own."""
    spec, s = ENTRIES[name], {k: v["value"] for k, v in SETTINGS.items()}
    model_config = {"hidden_dims": tuple(s["hidden_dims"]), "likelihood": s["likelihood"], **spec["model_config"]}
    if spec["model"] == "hvae":  # both layers 40 wide, bottom first
        model_config["latent_dims"] = (s["latent_dim"],) * model_config["levels"]
    else:
        model_config["latent_dim"] = s["latent_dim"]
    return RunConfig(
        model=spec["model"], model_config=model_config,
        data=DataConfig(name=dataset, binarize=s["binarize"], val_fraction=s["val_fraction"], data_dir=data_dir),
        train=TrainConfig(epochs=epochs, batch_size=s["batch_size"], lr=s["lr"], optimizer=s["optimizer"],
                          seed=seed, device=device, eval_every=s["eval_every"], patience=s["patience"],
                          kl_warmup=s["kl_warmup"], progress=progress, **spec["train"]),
        eval_samples=eval_samples)


def _comparable_settings(config: RunConfig) -> dict:
    """The settings a run directory must share with its entry to be reused or continued."""
    raw = config.to_dict()
    raw["train"] = {k: v for k, v in raw["train"].items() if k not in _CONTINUABLE}
    raw.pop("eval_samples")  # a finished run is re-scored with the K asked for
    return raw


def _differences(stored, wanted, prefix="") -> list[str]:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(stored) | set(wanted)):
            out += _differences(stored.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    return [] if stored == wanted else [f"{prefix.rstrip('.')} {stored!r} (run) vs {wanted!r} (entry)"]


def check_run_matches(run_dir: Path, config: RunConfig) -> None:
    """Refuse a run directory written with other settings than ``config``'s."""
    stored = read_config(run_dir)
    diffs = _differences(_comparable_settings(stored), _comparable_settings(config))
    if diffs:
        raise ValueError(f"run directory {str(run_dir)!r} was written with other settings than this entry's "
                         f"({'; '.join(diffs[:3])}); move it away or choose another --runs-dir")


def _finished(metrics: dict, epochs: int) -> bool:
    return bool(metrics.get("test")) and (bool(metrics.get("stopped_early")) or metrics["epochs"] >= epochs)


def ensure_run(run_dir: Path, config: RunConfig, *, device: str | None, progress: bool) -> str:
    """Reuse, resume or train ``config`` in ``run_dir``; return which of those was done.

    Returns ``"reused"``, ``"re-evaluated"`` (reused, re-scored with another K), ``"resumed"``
    or ``"trained"``.
    """
    if not (run_dir / CONFIG_FILE).is_file():
        train_run(config, run_dir)
        return "trained"
    check_run_matches(run_dir, config)
    metrics = read_metrics(run_dir)
    if _finished(metrics, config.train.epochs):
        action = "reused"
    elif (run_dir / CHECKPOINT_FILE).is_file():  # interrupted, or capped below this budget
        resume_run(run_dir, epochs=config.train.epochs, device=device, progress=progress)
        action = "resumed"
    else:  # stopped before its first epoch ended: nothing to keep but its config.json
        train_run(config, run_dir, overwrite=True)
        return "trained"
    if read_metrics(run_dir)["test"].get("log_likelihood_samples") != config.eval_samples:
        evaluate_run(run_dir, config.eval_samples, device=device)
        action = "re-evaluated" if action == "reused" else action
    return action


def git_commit() -> tuple[str | None, bool | None]:
    """HEAD's hash and whether tracked files differ from it (None, None outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head, bool(status.strip())


def machine_description(device: str | None) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(torch.device(target)) if target.startswith("cuda") else None
    threads = torch.get_num_threads()
    description = (f"{cpu or 'unknown CPU'}, {os.cpu_count()} logical CPUs, {platform.system()} "
                   f"{platform.release()}; torch {torch.__version__} ({threads} threads), pyro {pyro.__version__}, "
                   f"Python {platform.python_version()}; device {target}{f' ({gpu})' if gpu else ''}")
    return {"description": description, "platform": platform.platform(), "cpu": cpu or None,
            "cpu_count": os.cpu_count(), "torch": str(torch.__version__), "pyro": str(pyro.__version__),
            "python": platform.python_version(), "threads": threads, "device": target, "gpu": gpu}


def _baseline(name: str) -> str:
    """The VAE an entry is judged against: ``vae-gated`` for the gated entries but itself, else ``vae``."""
    return ENTRIES[name].get("baseline", "vae")


def _gated(name: str) -> bool:
    return ENTRIES[name]["model_config"].get("activation") == "gated"


def entry_record(name: str, run_dir: Path, action: str) -> dict:
    """One ``entries`` item, read from the run's files (paired difference added later).

    ``config.epoch_budget`` is the epochs the run was last asked for (its config.json).
    """
    spec, config, metrics = ENTRIES[name], read_config(run_dir), read_metrics(run_dir)
    test = metrics["test"]
    nll = -test["log_likelihood"]
    published = dict(spec["published"])
    gap = None if published["nll"] is None else nll - published["nll"]
    budget_limited = not metrics.get("stopped_early", False) and metrics["epochs"] < SETTINGS["max_epochs"]["value"]
    return {
        "name": name, "model": config.model,
        "nll": nll, "nll_stderr": test["log_likelihood_stderr"],
        "elbo": test["elbo"], "elbo_stderr": test["elbo_stderr"],
        "epochs": metrics["epochs"], "best_epoch": metrics.get("best_epoch"),
        "stopped_early": bool(metrics.get("stopped_early", False)), "budget_limited": budget_limited,
        "seconds": metrics.get("seconds"),
        "paired_vs_vae": None, "baseline": None if name == "vae" else _baseline(name), "paired_vs_baseline": None,
        "published": published, "gap_to_published": gap,
        "config": {
            "run_config": config.to_dict(), "epoch_budget": config.train.epochs, "settings": spec["settings"],
            "known_differences": (SHARED_DIFFERENCES + ([] if _gated(name) else [UNGATED_DIFFERENCE])
                                  + spec["known_differences"]),
        },
        "samples": test["log_likelihood_samples"], "test_examples": test["num_examples"],
        "test_set_sha256": test.get("test_set_sha256"),
        "run_dir": str(run_dir), "action": action,
    }


def add_pairing(records: list[dict]) -> None:
    """Check one test set for all, then set ``paired_vs_vae`` and ``paired_vs_baseline`` of every entry.

    Both are ``paired_difference(entry, reference)``: the reference's NLL minus the entry's, per
    test image (positive: the entry is better). They stay None where the reference has no run.
    """
    check_comparable([{"run_dir": r["run_dir"], "test_set_sha256": r["test_set_sha256"],
                       "num_examples": r["test_examples"], "data": r["config"]["run_config"]["data"]}
                      for r in records])
    by_name = {r["name"]: r for r in records}
    per_example = {r["name"]: read_per_example(r["run_dir"], r["test_examples"])["log_likelihood"] for r in records}
    for r in records:
        if r["name"] != "vae" and "vae" in by_name:
            r["paired_vs_vae"] = paired_difference(per_example[r["name"]], per_example["vae"])
        if r["baseline"] in by_name:
            r["paired_vs_baseline"] = {"baseline": r["baseline"],
                                       **paired_difference(per_example[r["name"]], per_example[r["baseline"]])}


def targets(records: list[dict]) -> list[dict]:
    """Issue 16's targets, each met (True/False) or not measured (None).

    The published figures hold for every entry of that model, gated or not; "better than the
    VAE" compares each VampPrior and IWAE entry with its baseline VAE (same layers).
    """
    by_name = {r["name"]: r for r in records}
    out = []
    for name, spec in ENTRIES.items():
        if spec["published"]["nll"] is None:
            continue
        r = by_name.get(name)
        out.append({"target": f"{name} within 1 nat of the published {spec['published']['nll']:.2f}",
                    "met": None if r is None else abs(r["gap_to_published"]) <= 1.0,
                    "value": None if r is None else r["gap_to_published"]})
    # The VampPrior must win by more than two paired standard errors, IWAE at all (issue 16).
    for name, need_two_se in (("vamp", True), ("vamp-gated", True), ("iwae5", False), ("iwae5-gated", False)):
        what = (f"{name} better than {_baseline(name)}"
                + (f" by more than {SIGNIFICANCE_STDERRS:g} paired standard errors" if need_two_se else ""))
        paired = by_name.get(name, {}).get("paired_vs_baseline")
        met = None
        if paired is not None:
            stderr = paired["stderr"] or 0.0
            met = paired["difference"] > (SIGNIFICANCE_STDERRS * stderr if need_two_se else 0.0)
        out.append({"target": what, "met": met, "value": None if paired is None else paired["difference"]})
    return out


def _fmt(value, spread=None, digits=2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + ("" if spread is None else f" ± {spread:.{digits}f}")


def print_table(records: list[dict]) -> None:
    header = (f"{'entry':<15} {'published NLL':>15} {'obtained NLL':>16} {'gap':>7} {'vs baseline (paired)':>28} "
              f"{'epochs (best)':>14} {'budget':>6} {'K':>5} {'n':>6}  how")
    print(header)
    print("-" * len(header))
    for r in records:
        pub, paired = r["published"], r["paired_vs_baseline"]
        vs = "-" if paired is None else f"{_fmt(paired['difference'], paired['stderr'])} ({paired['baseline']})"
        stop = "early" if r["stopped_early"] else "cap"
        print(f"{r['name']:<15} {_fmt(pub['nll'], pub['plus_minus']):>15} {_fmt(r['nll'], r['nll_stderr']):>16} "
              f"{_fmt(r['gap_to_published'], None):>7} {vs:>28} "
              f"{r['epochs']:>6} ({r['best_epoch'] if r['best_epoch'] is not None else '-':>5}) "
              f"{r['config']['epoch_budget']:>6} {r['samples']:>5} {r['test_examples']:>6}  {stop}, {r['action']}")
    for row in NOT_RUN:
        print(f"{row['name']:<15} {_fmt(row['published']['nll'], row['published']['plus_minus']):>15} "
              f"{'not run':>16}  ({row['reason']})")
    print("NLL in nats per test image (lower is better), ± one standard error; 'vs baseline': the baseline VAE's "
          "NLL minus the entry's on the same images (positive: better than that VAE; vae-gated for gated entries).")


def run_status(name: str, run_dir: Path, config: RunConfig | None = None) -> str:
    """One line: where entry ``name``'s run directory stands, read without changing it.

    Finished runs (scored at the epoch of their last checkpoint, and done by early stopping
    or their budget) show their test NLL; others their last checkpoint: epochs done, the best
    validation epoch and score, evaluations since it (of the patience), training seconds per
    epoch. A process holding the run's lock is named, and so is a run written with other
    settings than ``config`` (which training would refuse). Anything unreadable is one line.
    """
    if not (run_dir / CONFIG_FILE).exists():
        return f"{name:<15} not started ({run_dir})"
    try:
        holder = lock_holder(run_dir)
        notes = f"; in use by {holder}" if holder else ""
        if config is not None:
            try:
                check_run_matches(run_dir, config)
            except ValueError:
                notes += "; written with other settings than this entry's (training refuses it)"
        stored = read_config(run_dir).train
        metrics = read_metrics(run_dir)
        train = None
        if (run_dir / CHECKPOINT_FILE).exists():
            path = run_dir / CHECKPOINT_FILE
            train = load_checkpoint(path, map_location="cpu", required=("train_state",))["train_state"]
            validate_train_state(train, path)
        scored_last = train is None or metrics.get("epochs") == train["epoch"]
        if metrics.get("test") and scored_last and _finished(metrics, stored.epochs):
            test = metrics["test"]
            how = "stopped early" if metrics.get("stopped_early") else f"capped at {metrics['epochs']}"
            return (f"{name:<15} finished: {metrics['epochs']} epochs (best {metrics.get('best_epoch')}), {how}; "
                    f"test NLL {-test['log_likelihood']:.2f} ± {_fmt(test.get('log_likelihood_stderr'))} "
                    f"(K = {test['log_likelihood_samples']}){notes}")
        if train is None:
            return f"{name:<15} started, no epoch finished yet{notes}"
        selection = train.get("selection") if isinstance(train.get("selection"), dict) else {}
        epochs, best = train["epoch"], selection.get("best_score")
        rate = f"{train['seconds'] / epochs:.1f} s/epoch" if epochs else "-"
        return (f"{name:<15} {'training' if holder else 'interrupted'}: epoch {epochs} of {stored.epochs}, "
                f"best {selection.get('best_epoch')} ({selection_key(stored)} {_fmt(best)}), "
                f"{selection.get('evaluations_since_best', 0)} of {stored.patience} evaluations since; "
                f"{train['seconds'] / 3600:.2f} h, {rate}{notes}")
    except Exception as err:  # noqa: BLE001  (a status line for whatever is unreadable, never a crash)
        return f"{name:<15} unreadable: {' '.join(str(err).split()) or type(err).__name__}"


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke and not args.results and not args.status:
        parser.error("--smoke needs --results PATH (smoke numbers never replace the committed results)")
    for option in ("max_epochs", "eval_samples", "threads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    names = parse_only(args.only, parser)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    s = {k: v["value"] for k, v in SETTINGS.items()}
    dataset = SMOKE["dataset"] if args.smoke else s["dataset"]
    epochs = args.max_epochs or (SMOKE["max_epochs"] if args.smoke else s["max_epochs"])
    if epochs > s["max_epochs"]:
        parser.error(f"--max-epochs caps the literature's {s['max_epochs']} epochs; got {epochs}")
    eval_samples = args.eval_samples or (SMOKE["eval_samples"] if args.smoke else s["eval_samples"])
    if args.runs_dir:
        runs_dir = Path(args.runs_dir).expanduser()
    elif args.smoke and not args.status:
        runs_dir = Path(tempfile.mkdtemp(prefix="pyro-vae-reproduce-smoke-"))
    else:
        runs_dir = DEFAULT_RUNS_DIR.expanduser()
    results_path = Path(args.results) if args.results else DEFAULT_RESULTS
    progress = not (args.no_progress or args.smoke)

    configs = {name: run_config(name, dataset=dataset, epochs=epochs, eval_samples=eval_samples, seed=args.seed,
                                device=args.device, data_dir=args.data_dir, progress=progress)
               for name in ENTRIES}
    if args.status:  # read only: before the runs directory is made
        lines = [run_status(name, runs_dir / name, configs[name]) for name in names]
        print("\n".join(lines))
        return {"status": lines}
    runs_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for name in ENTRIES:
        run_dir = runs_dir / name
        if name in names:
            print(f"[{name}] {run_dir}", file=sys.stderr, flush=True)
            try:
                action = ensure_run(run_dir, configs[name], device=args.device, progress=progress)
            except KeyboardInterrupt:  # Ctrl-C or SIGINT: the run keeps its last finished epoch
                print(f"[{name}] interrupted: {run_dir} keeps its last finished epoch; the same command "
                      f"resumes it (--max-epochs N, N the epochs done, scores it as it stands)", file=sys.stderr)
                raise SystemExit(130) from None
        else:  # not asked for: listed if it has finished, never trained
            if not (run_dir / CONFIG_FILE).is_file() or not read_metrics(run_dir).get("test"):
                continue
            try:
                check_run_matches(run_dir, configs[name])
            except ValueError as err:
                print(f"[{name}] left out: {err}", file=sys.stderr)
                continue
            action = "read"
        records.append(entry_record(name, run_dir, action))
    add_pairing(records)

    commit, dirty = git_commit()
    results = {
        "commit": commit, "commit_dirty": dirty,
        "command": " ".join(["python", "benchmarks/reproduce.py", *(argv if argv is not None else sys.argv[1:])]),
        "smoke": args.smoke, "dataset": dataset, "runs_dir": str(runs_dir),
        "machine": machine_description(args.device),
        "settings": SETTINGS, "shared_known_differences": SHARED_DIFFERENCES,
        "entries": records, "not_run": NOT_RUN, "targets": targets(records),
    }
    print_table(records)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_path, dumps_finite(results, nonfinite="null") + "\n")
    print(f"results: {results_path}")
    return results


if __name__ == "__main__":
    main()
