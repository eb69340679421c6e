"""In-process ``Segmenter.predict`` seconds of the numpy path and the device-resident path, side by side.

A random-weight model (time does not depend on the weights) and a phantom-like random cine; per model
and TTA mode the two paths alternate run by run, after one warm-up each, so drift hits both alike. On
CUDA the peak GPU memory of each path and the share of voxels whose labels agree are printed too (bf16
autocast there, so not exactly equal; on a CPU tests/inference/test_resident.py checks equality).

    python -m benchmarks.resident_bench                                         # CPU, predict_bench's cine
    python -m benchmarks.resident_bench --device cuda --models deunet unet --size 256 \\
        --model-args '{"base_channels": 32, "depth": 4}' --frames 30 --slices 10 --matrix 256 256 \\
        --tta none dihedral --batch 32                                          # the GPU goal's cine
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from pipeline.inference.predict import Segmenter
from pipeline.models import build_model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cine_of(frames: int, slices: int, matrix: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(T, Z, Y, X) float32: a bright disk that beats over the cycle on noise, like a short-axis cine."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: matrix[0], : matrix[1]]
    radius = min(matrix) / 8 * (1 + 0.2 * np.sin(np.linspace(0, 2 * np.pi, frames, endpoint=False)))
    disk = np.hypot(yy - matrix[0] / 2, xx - matrix[1] / 2)[None] < radius[:, None, None]
    cine = 100.0 + 300.0 * disk[:, None] + rng.normal(0.0, 20.0, (frames, slices, *matrix))
    return cine.astype(np.float32)


def measure(seg: Segmenter, cine: np.ndarray, device: str, runs: int) -> tuple[list[float], np.ndarray]:
    """Seconds of ``runs`` predicts and the labels of the last."""
    seconds, labels = [], np.zeros(0)
    for _ in range(runs):
        _sync(device)
        start = time.perf_counter()
        labels = seg.predict(cine)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["deunet"])
    parser.add_argument("--model-args", default='{"base_channels": 8, "depth": 4, "norm": "batch"}')
    parser.add_argument("--size", type=int, default=64, help="network input size (geometry resize)")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--slices", type=int, default=7)
    parser.add_argument("--matrix", type=int, nargs=2, default=(95, 100), metavar=("Y", "X"))
    parser.add_argument("--tta", nargs="+", default=["none", "flips"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    cine = cine_of(args.frames, args.slices, tuple(args.matrix))
    cuda = args.device.startswith("cuda")
    print(f"Segmenter.predict of a {'x'.join(map(str, cine.shape))} cine on {args.device}, "
          f"{args.model_args} at {args.size} px, batch {args.batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op thread(s); median of {args.runs} after a warm-up")  # fmt: skip
    print(f"{'model':>7} | {'tta':>8} | {'numpy s':>7} | {'resident s':>10} | {'speed-up':>8} | "
          f"{'peak MiB numpy/resident':>23} | {'labels agree':>12}")  # fmt: skip
    rows: list[dict[str, Any]] = []
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, radius=1, **json.loads(args.model_args))
        for tta in args.tta:
            segs = {way: Segmenter(model, size=args.size, device=args.device, tta=tta, batch_size=args.batch,
                                   resident=way) for way in (False, True)}  # fmt: skip
            seconds: dict[bool, list[float]] = {False: [], True: []}
            peak: dict[bool, float] = {}
            labels: dict[bool, np.ndarray] = {}
            for seg in segs.values():  # warm-up: cuDNN's choices, the allocator, the taps caches
                measure(seg, cine, args.device, 1)
            for _ in range(args.runs):
                for way, seg in segs.items():
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    times, labels[way] = measure(seg, cine, args.device, 1)
                    seconds[way] += times
                    if cuda:
                        peak[way] = torch.cuda.max_memory_allocated() / 2**20
            med = {way: statistics.median(s) for way, s in seconds.items()}
            agree = float((labels[False] == labels[True]).mean())
            mib = f"{peak[False]:.0f} / {peak[True]:.0f}" if cuda else "-"
            print(f"{name:>7} | {tta:>8} | {med[False]:7.3f} | {med[True]:10.3f} | {med[False] / med[True]:7.2f}x | "
                  f"{mib:>23} | {agree:12.6f}")  # fmt: skip
            rows.append({"model": name, "tta": tta, "numpy_s": seconds[False], "resident_s": seconds[True],
                         "peak_mib": peak, "labels_agree": agree})  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
