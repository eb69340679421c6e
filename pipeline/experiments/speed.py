"""Speed measurements shared by the benchmarks: whole-cine inference, raw training steps, the deformable
convolution's paths, the import time of a module.

``benchmarks.model_bench``, ``benchmarks.inference_bench`` and ``benchmarks.gpu_check`` all time with these.
:func:`infer_job` and :func:`train_job` take one picklable job so that a caller can run each in a fresh
spawned process (peak RSS and compile caches then do not leak between measurements): ``{"model": name,
..., "args": {...}}``, where ``args`` holds the command-line fields they read (``threads``, ``device``,
``model_args`` as JSON, ``radius``, ``size``, ``frames``, ``slices``, ``warmup``, ``repeats``; for training
``train_batch`` and ``train_steps``). Models are untrained (random weights): the time does not depend on
the weights.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.models import DiceCELoss, build_model
from pipeline.models.base import SegmentationModel
from pipeline.models.deform_conv import deform_conv2d


def import_seconds(module: str, env: dict[str, str], runs: int, cwd: Path | None = None) -> list[float]:
    """Wall seconds of ``import module`` in ``runs`` fresh interpreters (``env``: their environment)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                 env=env, cwd=cwd).stdout) for _ in range(runs)]  # fmt: skip


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Start a fresh CUDA peak-memory count (nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed_ms(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of one call in ms, synchronised on CUDA."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def peak_mb(device: torch.device) -> float:
    """CUDA: ``max_memory_allocated``; CPU: this process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _base_mb(device: torch.device) -> float:
    """Memory in use before the model exists (CPU: this process's RSS after its imports)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def bench_deform(shape: str, repeats: int, device: torch.device) -> dict[str, Any]:
    """The deformable convolution's grid_sample path vs torchvision's kernel vs a plain 3x3 convolution,
    forward + backward on ``device``, ``shape`` "BxCxHxW": median ms of each, and the largest difference of
    the two deformable outputs."""
    b, c, h, w = (int(v) for v in shape.split("x"))
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w, device=device)
    weight = torch.randn(c, c, 3, 3, device=device) / (3 * c**0.5)
    offset = torch.randn(b, 18, h, w, device=device)

    def run(kind: str) -> torch.Tensor:
        leaves = [t.clone().requires_grad_() for t in (x, offset, weight)]
        if kind == "conv":
            out = torch.nn.functional.conv2d(leaves[0], leaves[2], padding=1)
        else:
            out = deform_conv2d(leaves[0], leaves[1], leaves[2], padding=1, backend=kind)  # type: ignore[arg-type]
        out.sum().backward()
        return out.detach()

    result: dict[str, Any] = {"shape": [b, c, h, w]}
    outputs = {}
    for kind in ("conv", "grid_sample", "torchvision"):
        outputs[kind] = run(kind)  # warm-up, and the values to compare
        result[f"{kind}_ms"] = statistics.median(timed_ms(partial(run, kind), device) for _ in range(repeats))
    result["max_abs_diff"] = (outputs["grid_sample"] - outputs["torchvision"]).abs().max().item()
    result["max_abs_value"] = outputs["torchvision"].abs().max().item()
    return result


def _setup(
    job: dict[str, Any], channels_last: bool
) -> tuple[argparse.Namespace, torch.device, float, SegmentationModel]:
    """In the job's process: threads, device, the memory in use before the model, and the model."""
    args = argparse.Namespace(**job["args"])
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = _base_mb(device)
    torch.manual_seed(0)
    model = build_model(job["model"], radius=args.radius, **json.loads(args.model_args)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return args, device, base, model


def infer_job(job: dict[str, Any]) -> dict[str, Any]:
    """Seconds (median of ``repeats``, after ``warmup``) of one random ``frames x slices x size x size`` cine
    through ``Segmenter.predict`` (normalisation, resizing, clips, batched inference, mapping back, argmax)
    for one (model, ``batch``, variant: ``channels_last``, ``compile``, ``bf16``), and the peak memory."""
    from pipeline.inference.predict import Segmenter

    args, device, base, model = _setup(job, job["channels_last"])
    seg = Segmenter(model, size=args.size, device=str(device), batch_size=job["batch"], bf16=job["bf16"])
    if job["compile"]:  # compile each member's torch module inside its TorchNetwork
        backend = job.get("compile_backend", "inductor")
        for net in seg.models:
            net.module = torch.compile(net.module, dynamic=False, backend=backend)  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    cine = rng.normal(100, 30, (args.frames, args.slices, args.size, args.size)).astype(np.float32)
    for _ in range(args.warmup):
        seg.predict(cine)
    sync(device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        seg.predict(cine)
        sync(device)
        times.append(time.perf_counter() - start)
    return {**job, "args": None, "seconds": statistics.median(times), "all_seconds": times,
            "peak_mb": peak_mb(device), "base_mb": base}  # fmt: skip


def train_job(job: dict[str, Any]) -> dict[str, Any]:
    """Training throughput (clips/s of forward + backward + Adam) and peak memory of one model (channels_last:
    NHWC weights and clips, as the trainer's ``train.channels_last`` runs them; cuda_graph: the step replayed
    from a CUDA graph, as the trainer's ``train.cuda_graph`` runs it)."""
    from pipeline.models.precision import autocast
    from pipeline.training.steps import GraphedStep, make_step
    from pipeline.training.trainer import make_optimizer, prepare_device

    args, device, base, model = _setup(job, job.get("channels_last", False))
    model.train()
    prepare_device(device)  # as the trainer runs: cuDNN autotuning and fused Adam on CUDA
    optimizer = make_optimizer(model.parameters(), 2e-4, 0.0, device)
    loss_fn = DiceCELoss()
    b, t = args.train_batch, 2 * args.radius + 1
    clips = torch.randn(b, t, args.size, args.size, device=device)
    if job.get("channels_last"):
        clips = clips.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 4, (b, args.size, args.size), device=device)

    def loss_of(clip: torch.Tensor, label: torch.Tensor, cache: bool) -> torch.Tensor:
        with autocast(device, device.type == "cuda", cache):  # bf16 on CUDA, fp32 on the CPU
            logits = model(clip)
        return loss_fn(logits.float(), label)

    step = make_step(optimizer, loss_of, graph=bool(job.get("cuda_graph")), batch_size=b, device=device)
    graphed = step if isinstance(step, GraphedStep) else None
    # a graph: its warm-up and capture first
    for _ in range(args.warmup + (graphed.warmup + 1 if graphed is not None else 0)):
        step(clips, labels)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.train_steps):
        step(clips, labels)
    sync(device)
    seconds = time.perf_counter() - start
    out = {**job, "args": None, "clips_per_s": b * args.train_steps / seconds, "peak_mb": peak_mb(device),
           "base_mb": base}  # fmt: skip
    if graphed is not None:
        out["graph"] = "failed: " + graphed.failed if graphed.failed else f"{graphed.replays} replays"
    return out
