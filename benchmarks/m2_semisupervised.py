"""Semi-supervised gain of M2: its classifier q(y | x) against the same network trained on the labels alone.

    python benchmarks/m2_semisupervised.py [--labels-per-class 100] [--epochs 10] [--alpha A]
        [--latent-dim 16] [--hidden-dims 256] [--batch-size 128] [--lr 1e-3] [--seed 0]
        [--dataset fashion-mnist] [--device cpu|cuda] [--threads N] [--json PATH]
    python benchmarks/m2_semisupervised.py --smoke [--json PATH]

The measurement: on Fashion-MNIST with ``--labels-per-class 100`` (1,000 labelled training
images, the other 59,000 unlabelled), M2's test accuracy against a classifier of the same
architecture trained on the 1,000 labelled images alone, both in one run of this script:

- ``m2``: :class:`~pyro_vae.models.m2.M2` trained by the library's one loop,
  :func:`pyro_vae.fit`, on ``load_dataset(DataConfig(name, labels_per_class=N,
  binarize="dynamic"))`` (every training image, unlabelled ones with ``y = -1``) for
  ``--epochs`` epochs, the last parameters kept (``eval_every=0``: no model selection, the
  test split is never looked at during training). Its accuracy is that of
  ``argmax model.classify(x_test)``.
- ``classifier``: a copy of that M2's ``classifier`` network taken before ``fit`` (so the same
  architecture, ``MLP(D, hidden_dims, C)``, and the same initial weights), trained with
  cross-entropy and Adam (same ``--lr`` and ``--batch-size``) on the ``N * C`` labelled rows
  only, each batch a fresh Bernoulli draw of their grey levels (dynamic binarization, as M2
  sees them). Its accuracy is that of ``argmax classifier(x_test)``.

How long the classifier trains. M2's ``--epochs`` passes over 60,000 images are hundreds of
steps per epoch; the same number of passes over 1,000 images would be ~80 steps, an untrained
classifier and an unfair comparison. So the classifier is trained to convergence, its length
chosen on labelled data only: (1) a stratified ``--holdout`` share of the labelled rows
(20%: 20 of each class's 100) is held out (binarized once), the classifier trains on the
rest for up to ``--classifier-max-epochs`` passes and the pass with the best held-out
accuracy (ties: lower held-out cross-entropy) is kept, stopping after
``--classifier-patience`` passes without improvement; (2) it is re-initialized to the same
initial weights and trained on all the labelled rows for that many passes: that is the
reported ``classifier`` row. The step-(1) network's test accuracy is in the JSON too
(``classifier.holdout_model_test_accuracy``). Neither step looks at the test split.

Both use the data set's official test split (Fashion-MNIST: 10,000 images, statically
binarized once by :func:`pyro_vae.load_dataset`, the same tensor as every other run on this
data definition). ``seconds`` are wall time on ``--device``: M2's is the whole ``fit`` call
(its data checks and set-up included), the classifier's is both steps.

``--alpha`` is M2's classification weight as a share of N (:class:`M2Config`; the paper's
0.1 by default). Since the weight per labelled row is ``alpha * N / N_labelled`` and a uniform
batch holds ``N_labelled / N`` of them, ``alpha`` is also the average weight per row, the
same on digits and Fashion-MNIST: 0.1 may be weak beside an ELBO of hundreds of nats per
image (not measured here); tests/test_m2.py needs ``alpha=1.0`` for M2 to win on digits
(``--smoke`` uses 1.0 as it does).

``--smoke``: digits (sklearn's 8 x 8), 10 labels per class, 2 epochs, a small network, a
short classifier search: seconds, for tests (tests/test_m2_benchmark.py); its accuracies
mean nothing. The table is printed; ``--json PATH`` writes the result (also returned by
:func:`main`).

Notes
-----
Cost: an M2 step enumerates the C = 10 classes of its unlabelled rows: the encoder's first
layer reads ``x`` once, but the rest of ``q(z | x, c)`` and the whole decoder
``p(x | z, c)`` (256 -> 784 and the Bernoulli log-density) run on ``(C, batch)``. Measured
on the development machine (2 shared CPU cores, busy: load ~4; torch 2.14.1, float32,
M2Config defaults: latent 16, hidden 256, batch 128; ``fit`` on 784-pixel batches, one row
in 60 labelled): 25 ms a step with ``--threads 1``,
so 469 steps, about 12 s, an epoch of 60,000 images, about 2 minutes for 10 epochs. With 2
threads on that busy machine a step took 200-300 ms (the threads wait on each other): use
``--threads 1`` there. The classifier (at most 300 passes of 7 steps over 800 images, then
the refit) takes seconds; loading Fashion-MNIST about 4 s.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import pyro
import torch
from common import sync  # benchmarks/common.py (puts pyro_vae on the path)
from torch.nn import functional as F

from pyro_vae import DataConfig, TrainConfig, fit, load_dataset
from pyro_vae.checkpoint import atomic_write_text
from pyro_vae.jsonio import dumps_finite
from pyro_vae.models.m2 import M2, M2Config

#: What ``--smoke`` sets (tests/test_m2.py's digits settings, fewer epochs).
SMOKE = {"dataset": "digits", "labels_per_class": 10, "epochs": 2, "alpha": 1.0, "latent_dim": 8,
         "hidden_dims": (64,), "lr": 5e-3, "classifier_max_epochs": 30, "classifier_patience": 5}


def parse_dims(text: str) -> tuple[int, ...]:
    """``"500,500"`` -> ``(500, 500)``; ``""`` -> ``()`` (no hidden layer)."""
    try:
        dims = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden dims must be comma-separated integers, got {text!r}") from None
    if any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"hidden dims must be positive, got {text!r}")
    return dims


def build_parser() -> argparse.ArgumentParser:
    defaults = M2Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default), mnist, digits ...")
    p.add_argument("--labels-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=10, help="M2's epochs (passes over every training image)")
    p.add_argument("--alpha", type=float, default=None,
                   help=f"M2's classification weight (default: M2Config's {defaults.alpha}; "
                        f"tests/test_m2.py uses 1.0 on digits)")
    p.add_argument("--latent-dim", type=int, default=defaults.latent_dim)
    p.add_argument("--hidden-dims", type=parse_dims, default=defaults.hidden_dims,
                   help=f"comma-separated (default {','.join(map(str, defaults.hidden_dims))})")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's rate, for both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch's intra-op threads (default: torch's; 1 on a shared, busy CPU)")
    p.add_argument("--classifier-max-epochs", type=int, default=300)
    p.add_argument("--classifier-patience", type=int, default=30)
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of each class's labelled rows held out to choose the classifier's length")
    p.add_argument("--smoke", action="store_true",
                   help="digits, 10 labels per class, 2 epochs, small nets: seconds")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    return p


def accuracy(log_probs: torch.Tensor, y: torch.Tensor) -> float:
    return (log_probs.argmax(-1) == y).double().mean().item()


def stratified_holdout(y: torch.Tensor, share: float, generator: torch.Generator):
    """Boolean mask of held-out rows: ``round(share * n_c)`` of each class (at least one, one kept)."""
    held = torch.zeros_like(y, dtype=torch.bool)
    for c in torch.unique(y).tolist():
        rows = torch.nonzero(y == c).squeeze(1)
        k = min(max(1, round(share * rows.numel())), rows.numel() - 1)
        held[rows[torch.randperm(rows.numel(), generator=generator)[:k].to(rows.device)]] = True
    return held


def train_classifier(net, x, y, epochs, lr, batch_size, *, val=None, patience=0):
    """Adam on the cross-entropy of ``net(bernoulli(x))``, ``epochs`` passes over ``(x, y)``.

    With ``val = (x_val, y_val)``: after each pass score it; keep the best pass (accuracy,
    then lower cross-entropy), stop after ``patience`` passes without improvement. Returns
    ``(best_epoch, best_val_accuracy)`` (``(epochs, None)`` without ``val``); ``net`` ends
    with the best pass's weights.
    """
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    best, best_state, best_epoch, since = None, None, epochs, 0
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(x.shape[0], device=x.device)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(net(torch.bernoulli(x[idx])), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if val is None:
            continue
        net.eval()
        with torch.no_grad():
            logits = net(val[0])
            score = (accuracy(logits, val[1]), -F.cross_entropy(logits, val[1]).item())
        if best is None or score > best:
            best, best_epoch, since = score, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            since += 1
            if patience and since >= patience:
                break
    if val is None:
        return epochs, None
    net.load_state_dict(best_state)
    return best_epoch, best[0]


def main(argv=None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if not 0 < args.holdout < 1:
        parser.error(f"--holdout must lie in (0, 1), got {args.holdout}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    alpha = M2Config().alpha if args.alpha is None else args.alpha

    data = load_dataset(DataConfig(name=args.dataset, labels_per_class=args.labels_per_class,
                                   binarize="dynamic"))
    labelled = data.y_train >= 0
    n_labelled, n_train = int(labelled.sum()), int(data.x_train.shape[0])
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    config = M2Config(latent_dim=args.latent_dim, hidden_dims=args.hidden_dims, alpha=alpha)

    # (a) M2 through fit, on every training image (unlabelled ones y = -1).
    pyro.set_rng_seed(args.seed)
    model = M2(data.data_dim, config, num_classes=data.num_classes)
    initial_classifier = copy.deepcopy(model.classifier)  # (b) starts from these weights
    model.init_from_data(data.x_train, data.y_train)  # N and N_labelled: the classification weight
    sync(device)
    start = time.perf_counter()
    result = fit(model, data, TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                          seed=args.seed, device=str(device), eval_every=0, progress=False))
    sync(device)
    m2_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        m2_accuracy = accuracy(model.classify(x_test), y_test)
    curve = result.history[-1]
    m2_row = {"test_accuracy": m2_accuracy, "seconds": m2_seconds, "epochs": result.epochs,
              "steps": result.steps, "fit_seconds": result.seconds,
              "final_train_objective": curve.get("train_objective", curve.get("train_elbo"))}

    # (b) The same network, same initial weights, on the labelled rows alone.
    torch.manual_seed(args.seed)
    x_l, y_l = data.x_train[labelled].to(device), data.y_train[labelled].to(device)
    generator = torch.Generator().manual_seed(args.seed)
    held = stratified_holdout(y_l.cpu(), args.holdout, generator).to(device)
    x_val = torch.bernoulli(x_l[held].cpu(), generator=generator).to(device)  # binarized once
    batch = min(args.batch_size, n_labelled)
    sync(device)
    start = time.perf_counter()
    probe = copy.deepcopy(initial_classifier).to(device)
    best_epoch, val_accuracy = train_classifier(
        probe, x_l[~held], y_l[~held], args.classifier_max_epochs, args.lr, batch,
        val=(x_val, y_l[held]), patience=args.classifier_patience)
    net = copy.deepcopy(initial_classifier).to(device)
    train_classifier(net, x_l, y_l, best_epoch, args.lr, batch)
    sync(device)
    classifier_seconds = time.perf_counter() - start
    net.eval()
    probe.eval()
    with torch.no_grad():
        classifier_accuracy = accuracy(net(x_test), y_test)
        probe_accuracy = accuracy(probe(x_test), y_test)
    classifier_row = {
        "test_accuracy": classifier_accuracy, "seconds": classifier_seconds, "epochs": best_epoch,
        "steps": best_epoch * math.ceil(n_labelled / batch),
        "holdout": {"share": args.holdout, "held_out_rows": int(held.sum()), "best_epoch": best_epoch,
                    "val_accuracy": val_accuracy, "max_epochs": args.classifier_max_epochs,
                    "patience": args.classifier_patience},
        "holdout_model_test_accuracy": probe_accuracy,
    }

    record = {
        "dataset": args.dataset, "labels_per_class": args.labels_per_class, "labelled": n_labelled,
        "unlabelled": n_train - n_labelled, "train_examples": n_train,
        "test_examples": int(x_test.shape[0]), "epochs": args.epochs, "alpha": alpha,
        "latent_dim": args.latent_dim, "hidden_dims": list(args.hidden_dims),
        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "smoke": args.smoke,
        "device": str(device), "threads": torch.get_num_threads(),
        "m2": m2_row, "classifier": classifier_row,
        "m2_minus_classifier": m2_accuracy - classifier_accuracy,
        "m2_beats_classifier": m2_accuracy > classifier_accuracy,
        "versions": {"torch": str(torch.__version__), "pyro": str(pyro.__version__)},
    }

    print(f"{args.dataset}: {n_labelled} labelled + {n_train - n_labelled} unlabelled training images, "
          f"{int(x_test.shape[0])} test images; M2 alpha={alpha:g}, latent {args.latent_dim}, "
          f"hidden {','.join(map(str, args.hidden_dims))}, device {device}")
    header = f"{'model':<12} {'labels':>7} {'epochs':>7} {'test accuracy':>14} {'seconds':>9}"
    print(header)
    print("-" * len(header))
    print(f"{'m2':<12} {n_labelled:>7} {args.epochs:>7} {m2_accuracy:>14.4f} {m2_seconds:>9.1f}")
    print(f"{'classifier':<12} {n_labelled:>7} {best_epoch:>7} {classifier_accuracy:>14.4f} "
          f"{classifier_seconds:>9.1f}")
    print(f"M2 - classifier: {m2_accuracy - classifier_accuracy:+.4f} (classifier epochs: passes over its "
          f"{n_labelled} images, chosen on {int(held.sum())} held-out labelled rows)")
    if args.json:
        atomic_write_text(args.json, dumps_finite(record, nonfinite="null") + "\n")
    return record


if __name__ == "__main__":
    main()
