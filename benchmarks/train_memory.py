"""Peak resident memory of a full training run, and whether it grows from epoch to epoch.

    python benchmarks/train_memory.py [--epochs 3] [--eval-samples 100] [--subset N]
        [--hidden-dims 400] [--latent-dim 50] [--threads N]

Trains the VAE (784-400-50 by default, Bernoulli, dynamic binarization, batch 128) on all
60,000 Fashion-MNIST training images (/usr/share/datasets/fashion-mnist; ``--subset`` for
fewer) through :func:`pyro_vae.runs.train_run`, the function behind ``pyro-vae train``:
checkpoint after every epoch, figures, and the final evaluation (test ELBO and an
importance-sampled log-likelihood with ``--eval-samples`` samples on the 10,000 test
images). The run happens in a fresh subprocess, which reports from /proc/self/status:

- ``rss_after_import_mb``: the interpreter with torch, Pyro and pyro_vae imported;
- ``rss_after_epoch_mb``: the resident set at the end of every epoch (after its checkpoint):
  flat when nothing is copied or kept per epoch;
- ``peak_rss_mb``: the high-water mark of the whole run (``VmHWM``), evaluation included;
- ``data_mb``: the bytes of the data set's tensors as the run holds them.

The last line printed is one JSON object. Without Fashion-MNIST installed it says so and
stops (the synthetic stand-in of the throughput benchmark would not measure a real run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import FASHION_DIR, proc_status_mb  # benchmarks/common.py


def status_mb(key: str) -> float:
    """A ``kB`` field of /proc/self/status in MiB (this benchmark needs Linux)."""
    value = proc_status_mb(key)
    if value is None:
        raise RuntimeError("/proc/self/status is not readable: this benchmark needs Linux")
    return value


def worker(args) -> dict:
    import torch  # noqa: PLC0415

    from pyro_vae.data import DataConfig, load_dataset  # noqa: PLC0415
    from pyro_vae.inference.train import Callback, TrainConfig  # noqa: PLC0415
    from pyro_vae.runs import RunConfig, train_run  # noqa: PLC0415

    if args.threads:
        torch.set_num_threads(args.threads)
    after_import = status_mb("VmRSS")
    per_epoch = []

    class RecordRSS(Callback):
        def on_epoch_end(self, model, state):
            per_epoch.append(round(status_mb("VmRSS"), 1))

    config = RunConfig(
        model="vae",
        model_config={"latent_dim": args.latent_dim, "hidden_dims": tuple(args.hidden_dims)},
        data=DataConfig("fashion-mnist", data_dir=str(FASHION_DIR), subset=args.subset),
        train=TrainConfig(epochs=args.epochs, batch_size=128, device="cpu", progress=False,
                          eval_every=0),
        eval_samples=args.eval_samples,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_run(config, Path(tmp) / "run", callbacks=[RecordRSS()])
    seconds = time.perf_counter() - started
    peak = status_mb("VmHWM")  # before anything else is loaded
    data = load_dataset(config.data)  # a second copy, only to count its bytes
    data_bytes = sum(t.numel() * t.element_size() for t in
                     (data.x_train, data.x_val, data.x_test) if t is not None)
    return {
        "peak_rss_mb": round(peak, 1),
        "rss_after_import_mb": round(after_import, 1),
        "rss_after_epoch_mb": per_epoch,
        "data_mb": round(data_bytes / 2 ** 20, 1),
        "train_examples": int(data.x_train.shape[0]),
        "test_log_likelihood": metrics["test"]["log_likelihood"],
        "seconds": round(seconds, 1),
    }


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=100)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[400])
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return None
    if not FASHION_DIR.is_dir():
        print(json.dumps({"skipped": f"Fashion-MNIST is not installed in {FASHION_DIR} "
                                     f"(apt-get install dataset-fashion-mnist)"}))
        return None
    # A fresh interpreter, so that its VmHWM is the run's alone (not this parent's).
    argv = [sys.executable, __file__, "--worker", *(argv if argv is not None else sys.argv[1:])]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result.update(epochs=args.epochs, eval_samples=args.eval_samples, data="fashion-mnist")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
