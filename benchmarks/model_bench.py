"""Model benchmark: parameters, FLOPs, forward and forward+backward time of every registered network.

    .venv/bin/python -m benchmarks.model_bench                  # CPU at 128 x 128, then the GPU if there is one
    .venv/bin/python -m benchmarks.model_bench --device cpu --threads 1   # one torch thread (shared machines)
    .venv/bin/python -m benchmarks.model_bench --device cpu --threads 1 --size 64 --batch 12 --models unet,deunet \
        --model-args "{base_channels: 8, norm: batch}" --channels-last --cpu-bf16 --skip-deform   # acdc-roi CPU recipe
    .venv/bin/python -m benchmarks.model_bench --device cuda    # GPU only: 256 x 256, bf16 autocast

Also times the deformable convolution alone (12 x 96 x 128 x 128, 3x3, forward+backward): the grid_sample
path against torchvision's kernel on the same device, and a plain convolution of the same size.

Caveats printed with the table: FLOPs come from torch.utils.flop_counter.FlopCounterMode, which counts
convolutions and matrix products but not grid_sample, so the sampling part of every deformable
convolution (and of the ToFlow warps) is missing; on CUDA torchvision's deform_conv2d is not counted at
all. Times are medians over rounds that visit the models in turn, so slow drift (another process on the
machine) hits all models alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchvision
import yaml
from torch.utils.flop_counter import FlopCounterMode

from pipeline.experiments.speed import bench_deform, timed_ms
from pipeline.models import DiceCELoss, available_models, build_model
from pipeline.models.precision import autocast, bf16_enabled


def bench_models(
    args: argparse.Namespace, device: torch.device, bf16: bool, size: int
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    clip = torch.randn(args.batch, 2 * args.radius + 1, size, size, device=device).contiguous(
        memory_format=fmt
    )
    target = torch.randint(0, 4, (args.batch, size, size), device=device)
    loss_fn = DiceCELoss()
    names = args.models.split(",") if args.models else available_models()
    extra = yaml.safe_load(args.model_args) or {}
    models = {
        name: build_model(name, radius=args.radius, **extra).to(device, memory_format=fmt) for name in names
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        model.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), autocast(device, bf16), counter:
            model(clip)
        rows[name] = {
            "model": name,
            "params": sum(p.numel() for p in model.parameters()),
            "gflops_forward": counter.get_total_flops() / 1e9,
            "forward_ms": [],
            "train_step_ms": [],
        }

    def forward(model: torch.nn.Module) -> None:
        with torch.no_grad(), autocast(device, bf16):
            model(clip)

    def forward_backward(model: torch.nn.Module) -> None:
        with autocast(device, bf16):
            loss = loss_fn(model(clip), target)
        loss.backward()
        model.zero_grad(set_to_none=True)

    for round_ in range(args.warmup + args.repeats):
        for name, model in models.items():
            model.eval()
            fwd = timed_ms(partial(forward, model), device)
            model.train()
            step = timed_ms(partial(forward_backward, model), device)
            if round_ >= args.warmup:
                rows[name]["forward_ms"].append(fwd)
                rows[name]["train_step_ms"].append(step)
    for row in rows.values():
        row["forward_ms_median"] = statistics.median(row["forward_ms"])
        row["train_step_ms_median"] = statistics.median(row["train_step_ms"])
    return list(rows.values())


def run_device(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Model table (and deform-conv comparison) on one device; prints it and returns the numbers."""
    bf16 = bf16_enabled(device, device.type == "cuda" or args.cpu_bf16)
    size = args.size or (256 if device.type == "cuda" else 128)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"\n== {device} ({machine}): torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"torch threads {torch.get_num_threads()}, size {size}x{size}, batch {args.batch}, r = {args.radius}, "
        f"precision {'bf16 autocast' if bf16 else 'fp32'}, median of {args.repeats} (after {args.warmup} warm-up)"
    )
    rows = bench_models(args, device, bf16, size)
    header = f"{'model':<16}{'params':>12}{'GFLOPs fwd':>12}{'fwd ms':>10}{'fwd+bwd ms':>12}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['model']:<16}{row['params']:>12,}{row['gflops_forward']:>12.2f}"
            f"{row['forward_ms_median']:>10.1f}{row['train_step_ms_median']:>12.1f}"
        )
    by_name = {row["model"]: row for row in rows}
    summary: dict[str, Any] = {"size": size, "threads": torch.get_num_threads(), "bf16": bf16, "models": rows}
    if "deunet" in by_name and "unet" in by_name:
        ratio = by_name["deunet"]["forward_ms_median"] / by_name["unet"]["forward_ms_median"]
        summary["deunet_over_unet_inference"] = ratio
        print(f"DeU-Net / U-Net inference time: {ratio:.2f}x (target on the CPU: <= 3x)")
    print(
        "FLOPs exclude grid_sample (deformable sampling, flow warps) and, on CUDA, torchvision's deform_conv2d."
    )
    if not args.skip_deform:
        deform = bench_deform(args.deform_shape, args.deform_repeats, device)
        summary["deform_conv"] = deform
        print(
            f"deform conv 3x3 {deform['shape']} fwd+bwd on {device}: grid_sample {deform['grid_sample_ms']:.0f} ms, "
            f"torchvision {deform['torchvision_ms']:.0f} ms, plain conv {deform['conv_ms']:.0f} ms; "
            f"torchvision / grid_sample = {deform['torchvision_ms'] / deform['grid_sample_ms']:.2f}x, "
            f"grid_sample / conv = {deform['grid_sample_ms'] / deform['conv_ms']:.2f}x; "
            f"max |diff| {deform['max_abs_diff']:.2e} on values up to {deform['max_abs_value']:.1f}"
        )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        default="all",
        choices=["all", "cpu", "cuda"],
        help="all (default): the CPU, then the GPU when torch.cuda.is_available()",
    )
    parser.add_argument("--size", type=int, default=None, help="H = W (default 128 on CPU, 256 on CUDA)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--radius", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--models", default="", help="comma-separated subset of the registry")
    parser.add_argument("--model-args", default="{}", help="constructor arguments, a YAML mapping, e.g. "
                        "'{base_channels: 8, norm: batch}'")  # fmt: skip
    parser.add_argument("--channels-last", action="store_true", help="NHWC weights and inputs")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on the CPU too, where it has "
                        "native bf16 (train.bf16's rule); CUDA always runs bf16")  # fmt: skip
    parser.add_argument(
        "--deform-shape", default="12x96x128x128", help="B x C x H x W of the deform-conv test"
    )
    parser.add_argument("--deform-repeats", type=int, default=3)
    parser.add_argument("--skip-deform", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    elif args.device == "all":
        print("no CUDA device: GPU numbers skipped (run with --device cuda where one is available)")
    results = {str(device): run_device(args, device) for device in devices}
    if args.json is not None:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **results}, indent=2)
        )


if __name__ == "__main__":
    main()
