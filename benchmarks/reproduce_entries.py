"""The entries of benchmarks/reproduce.py (issue 16): the literature's settings, with their sources.

:data:`SETTINGS` holds what every entry shares, :data:`ENTRIES` each entry's model and settings
beyond them, its published figure and its known differences from the reference code;
:func:`run_config` turns an entry into the pyro-vae run that trains it. Nothing here trains or
reads files.

Cost. ``reproduce.py --cost`` measures it on the machine at hand (benchmarks/reproduce_cost.py;
the development machine's figures are in docs/results/fashion-mnist-cost.json and the
README). The table below is the estimate made before the entries ran, from the issue's
measurement on the development machine (2 shared CPU cores) of 6.5 s per epoch of 60,000
images for the 784-300-300-40 VAE at batch 100 and about 11 minutes for K = 5000 on 10,000
test images, scaled by each model's multiply-adds (forward and backward alike), so read them
as +-50%:

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
bound), hvae-gated 11.8 s and hvae-vamp-gated 25.7 s (1 thread each, side by side, with some
minutes paused or shared with tests); the K = 5000 evaluation took 12.5 minutes for vae-gated
and 14.7 for vamp, 25.1 for hvae-gated and 26.7 for hvae-vamp-gated (1 thread
each, side by side; 17.3 for hvae-vamp-gated at 504 epochs, beside conv). The conv row
above was a guess: ``--cost`` measured 26.8 s per epoch and 116 minutes of evaluation for
conv, 70.4 s and 121 minutes for conv-vamp (one thread): CPU work over a few sessions.

Early stopping ends such runs after several hundred to 2,000 epochs (the pretrained
dynamic-MNIST run in the Exemplar VAE repository, exemplar prior, stopped at epoch 1,088):
about 1.5 to 13 hours of training per entry, up to about 43 hours for the five CPU models if none stops
early. Run the entries one at a time (``--only``) in the background; an interrupted run
resumes from its last epoch. On 2 busy shared cores ``--threads 1`` may be faster than 2
threads (benchmarks/m2_semisupervised.py found so).
"""

from __future__ import annotations

import common  # noqa: F401  (benchmarks/common.py puts pyro_vae on the path)

from pyro_vae.data import DataConfig
from pyro_vae.inference import TrainConfig
from pyro_vae.runs import RunConfig

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


def baseline(name: str) -> str:
    """The VAE an entry is judged against: ``vae-gated`` for the gated entries but itself, else ``vae``."""
    return ENTRIES[name].get("baseline", "vae")


def gated(name: str) -> bool:
    return ENTRIES[name]["model_config"].get("activation") == "gated"


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
