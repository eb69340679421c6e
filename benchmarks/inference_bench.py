"""Speed and memory per model: whole-cine inference and training throughput.

Inference: one 4D cine (default 30 frames x 10 slices at 256 x 256) through ``Segmenter.predict``, i.e.
everything a served request does after decoding: intensity normalisation, resizing, clip building,
batched inference, mapping the probabilities back and the argmax. Variants: batch sizes, channels_last,
torch.compile, and bf16 autocast on CUDA. DeU-Net's time is also given as a ratio to U-Net's from the
same run. Training: clips/s of forward + backward + Adam step at the given size and batch, with the peak
memory (CUDA: ``max_memory_allocated``; CPU: the peak RSS of a fresh process per model).

Each (model, variant) runs in a fresh spawned process, so peak RSS and compile caches do not leak
between measurements. Models are untrained (random weights): the time does not depend on the weights.

    python -m benchmarks.inference_bench --device cpu --threads 2 --models unet deunet
    python -m benchmarks.inference_bench --device cuda --batch 32 64 128 --compile --train
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
from typing import Any

import torch

from pipeline.experiments.speed import infer_job, train_job
from pipeline.models import available_models


def _run(target: Any, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    results = []
    for job in jobs:
        with ctx.Pool(1, maxtasksperchild=1) as pool:
            result = pool.apply(target, (job,))
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k not in ("args", "all_seconds")}), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=available_models(), choices=available_models())
    p.add_argument("--model-args", default='{"base_channels": 32, "depth": 4}', help="JSON constructor args")
    p.add_argument("--radius", type=int, default=1)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--slices", type=int, default=10)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, nargs="+", default=[32])
    p.add_argument("--channels-last", action="store_true", help="also measure channels_last")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    p.add_argument(
        "--no-bf16", action="store_true", help="CUDA: also measure fp32 (bf16 autocast is the default)"
    )
    p.add_argument("--train", action="store_true", help="also measure training throughput and peak memory")
    p.add_argument("--train-batch", type=int, default=12)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None, help="write all results here")
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if cuda else f", {args.threads or torch.get_num_threads()} threads"))  # fmt: skip
    variants = [{"channels_last": False, "compile": False, "bf16": cuda}]
    if args.channels_last:
        variants.append({**variants[0], "channels_last": True})
    if args.compile:
        variants.append({**variants[0], "compile": True})
    if cuda and args.no_bf16:
        variants.append({**variants[0], "bf16": False})
    jobs = [
        {"model": m, "batch": b, **v, "args": vars(args)}
        for v in variants
        for b in args.batch
        for m in args.models
    ]
    results = _run(infer_job, jobs)

    print(f"\n## Inference: one cine of {args.frames} x {args.slices} x {args.size} x {args.size}, "
          f"r = {args.radius}, {args.model_args}\n")  # fmt: skip
    print("| model | batch | channels_last | compile | bf16 | s per cine | peak MB (before model) |")
    print("|---|---:|:---:|:---:|:---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['batch']} | {r['channels_last']} | {r['compile']} | {r['bf16']} | "
              f"{r['seconds']:.3f} | {r['peak_mb']:.0f} ({r['base_mb']:.0f}) |")  # fmt: skip
    for v in variants:
        for b in args.batch:
            same = {
                r["model"]: r["seconds"] for r in results if r["batch"] == b and all(r[k] == v[k] for k in v)
            }
            if "unet" in same and "deunet" in same:
                print(f"\nDeU-Net / U-Net ({v}, batch {b}): {same['deunet'] / same['unet']:.2f}x")
    train = []
    if args.train:
        train = _run(train_job, [{"model": m, "args": vars(args)} for m in args.models])
        print(
            f"\n## Training: batch {args.train_batch} at {args.size} x {args.size}, {args.train_steps} steps\n"
        )
        print("| model | clips/s | peak MB (before model) |")
        print("|---|---:|---:|")
        for r in train:
            print(f"| {r['model']} | {r['clips_per_s']:.1f} | {r['peak_mb']:.0f} ({r['base_mb']:.0f}) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"inference": results, "train": train}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
