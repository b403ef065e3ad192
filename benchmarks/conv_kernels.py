"""Transposed convolutions on the CPU: oneDNN's kernel against torch's own, and what it does to a
conv model's evaluation.

    python benchmarks/conv_kernels.py [--threads 1] [--repeats 5] [--eval-images 20] [--eval-samples 500]

Part 1, the layers: each ``ConvTranspose2d`` of the conv decoders (kernel 4, stride 2, padding 1;
32 channels in, 1, 2, 3 or 6 out on a 14 x 14 grid; 64 in, 32 out on 7 x 7) run by
``torch.nn.ConvTranspose2d`` (oneDNN on the CPU) and by ``torch.ops.aten.slow_conv_transpose2d``
(torch's own kernel), forward for 2,000 maps (a chunk of an importance-sampled evaluation) and
forward + backward for 100 (a training batch). The variants alternate within each repetition;
the medians are reported. :data:`pyro_vae.models.conv.NATIVE_KERNEL_MAX_CHANNELS` is chosen from
these figures.

Part 2, end to end: the reproduction's conv HVAE (benchmarks/reproduce_entries.py, entry
``conv``: 784 binary pixels, conv channels 32 and 64, two 40-unit layers), untrained, its
importance-sampled log-likelihood of ``--eval-images`` binarized Fashion-MNIST test images
(the data set must be installed; ``--skip-evaluation`` runs part 1 alone) with
``--eval-samples`` samples, with the library's layer (``pyro_vae``) and with every transposed
convolution left to oneDNN (``onednn_only``), alternating; both draw the same codes, so their
estimates agree to float rounding (reported).

The last line printed is one JSON object.

Notes
-----
Measured on the development machine (2 CPU cores, torch 2.14.1, one thread, ``--repeats 5``),
twice: beside two single-threaded training runs, and on the idle machine (second figure):

- forward of 2,000 maps, oneDNN against torch's kernel: 32 -> 1 channel 125 / 90 ms against
  30 / 23 ms; 32 -> 2: 147 / 93 against 102 / 50 ms; 32 -> 3: 178 / 118 against 136 / 79 ms;
  32 -> 6: 233 / 143 against 262 / 152 ms and 64 -> 32: 185 / 129 against 297 / 226 ms
  (oneDNN ahead). Forward + backward of 100 (training), 32 -> 1: 6.5 / 6.9 against
  7.3 / 3.6 ms (noise beside the training runs). Hence torch's kernel up to 3 output channels.
- end to end, the conv HVAE's K = 500 evaluation of 20 images (5 chunks of 2,000 codes): 2.25 /
  1.54 s with oneDNN alone against 2.06 / 1.21 s (1.09x / 1.27x); the estimates agree to 6e-5
  nats (float32 rounding). The layer is one part of the model's passes (the HVAE's dense
  conditionals and the encoders are the rest).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import common  # noqa: F401  (benchmarks/common.py puts pyro_vae on the path)
import torch
from torch import nn

import pyro_vae.models.conv as conv

LAYERS = ((32, 1, 14), (32, 2, 14), (32, 3, 14), (32, 6, 14), (64, 32, 7))


def _onednn(layer: nn.ConvTranspose2d):
    return lambda x: nn.ConvTranspose2d.forward(layer, x)


def _native(layer: nn.ConvTranspose2d):
    return lambda x: torch.ops.aten.slow_conv_transpose2d(x, layer.weight, layer.kernel_size, layer.bias,
                                                          layer.stride, layer.padding, layer.output_padding,
                                                          layer.dilation)


def _seconds(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def _train_step(layer: nn.Module, fn, x: torch.Tensor) -> None:
    layer.zero_grad()
    x.grad = None
    fn(x).square().sum().backward()


def time_layers(repeats: int) -> list[dict]:
    rows = []
    for c_in, c_out, size in LAYERS:
        layer = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
        big, small = torch.randn(2000, c_in, size, size), torch.randn(100, c_in, size, size, requires_grad=True)
        times = {f"{name}_{what}": [] for name in ("onednn", "native") for what in ("forward_2000", "train_100")}
        variants = {"onednn": _onednn(layer), "native": _native(layer)}

        for _ in range(repeats + 1):  # the first round warms up
            for name, fn in variants.items():
                with torch.no_grad():
                    times[f"{name}_forward_2000"].append(_seconds(fn, big))
                times[f"{name}_train_100"].append(_seconds(_train_step, layer, fn, small))
        row = {"in": c_in, "out": c_out, "grid": size}
        row.update({key: round(statistics.median(values[1:]) * 1e3, 2) for key, values in times.items()})
        rows.append(row)
        print(f"{c_in:>3} -> {c_out:<3} ({size}x{size})  forward 2,000: oneDNN {row['onednn_forward_2000']:7.1f} ms, "
              f"torch {row['native_forward_2000']:7.1f} ms;  train 100: oneDNN {row['onednn_train_100']:5.1f} ms, "
              f"torch {row['native_train_100']:5.1f} ms", flush=True)
    return rows


def time_evaluation(images: int, samples: int, repeats: int) -> dict:
    import pyro  # noqa: PLC0415
    from reproduce_entries import run_config  # noqa: PLC0415

    from pyro_vae.data import load_dataset  # noqa: PLC0415
    from pyro_vae.inference.evaluate import log_likelihood  # noqa: PLC0415
    from pyro_vae.runs import build_model  # noqa: PLC0415

    config = run_config("conv", dataset="fashion-mnist", epochs=1, eval_samples=samples, seed=0, device="cpu",
                        data_dir=None, progress=False)
    try:  # the entry's data settings (binarized test set) on 200 training images: only x_test is used
        data = load_dataset(dataclasses.replace(config.data, subset=200))
    except (ValueError, OSError) as err:
        raise SystemExit(f"the end-to-end part needs Fashion-MNIST ({err}); --skip-evaluation runs the "
                         f"layers alone") from None
    x = data.x_test[:images]
    torch.manual_seed(0)
    model = build_model(config, data)
    saved = conv.NATIVE_KERNEL_MAX_CHANNELS
    times = {"pyro_vae": [], "onednn_only": []}
    estimates = {}
    try:
        for _ in range(repeats):
            for name, channels in (("pyro_vae", saved), ("onednn_only", 0)):
                conv.NATIVE_KERNEL_MAX_CHANNELS = channels
                pyro.set_rng_seed(1)
                started = time.perf_counter()
                estimates[name] = log_likelihood(model, x, num_samples=samples, batch_size=images, sample_chunk=100)
                times[name].append(time.perf_counter() - started)
    finally:
        conv.NATIVE_KERNEL_MAX_CHANNELS = saved
    difference = (estimates["pyro_vae"].per_example - estimates["onednn_only"].per_example).abs().max().item()
    result = {"images": images, "samples": samples,
              **{f"{name}_s": round(statistics.median(values), 3) for name, values in times.items()},
              "max_abs_difference": difference}
    result["speedup"] = round(result["onednn_only_s"] / result["pyro_vae_s"], 3)
    print(f"conv HVAE, K = {samples}, {images} images: pyro-vae {result['pyro_vae_s']:.2f} s, every transposed "
          f"convolution by oneDNN {result['onednn_only_s']:.2f} s ({result['speedup']:.2f}x); estimates "
          f"differ by {difference:.2g} nats at most", flush=True)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eval-images", type=int, default=20)
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--skip-evaluation", action="store_true", help="part 1 alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "torch": torch.__version__, "layers": time_layers(args.repeats)}
    if not args.skip_evaluation:
        result["evaluation"] = time_evaluation(args.eval_images, args.eval_samples, max(1, args.repeats // 2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
