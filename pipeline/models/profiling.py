"""Where a training step's time goes: a model's forward + backward + Adam step under the torch profiler.

Used by ``benchmarks.gpu_check`` (speed section) to attribute DeU-Net's cost on a GPU, where its clips/s
were 26 % of U-Net's (../shared/gpu/2026-12-04): the top kernels by device time (CUDA) or operators by
self time (CPU), and the share of each part of the network. Parts (TDAM, its offset U-Net, DGPA, every
encoder and decoder level, the attention bottleneck, the head) are marked with ``record_function`` around
their forward pass; backward kernels run outside those marks, so a part's share is of the forward pass,
and the kernel table covers both passes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.autograd import DeviceType

from pipeline.models.base import SegmentationModel
from pipeline.models.losses import DiceCELoss
from pipeline.models.precision import autocast

#: Modules marked by their attribute name: the model's parts (nested marks overlap, so shares may add
#: up to more than 1), and every level of a U-Net's encoder and decoder.
_MARKED = ("fusion", "backbone", "head", "offset_net", "offset_head", "bottleneck")
_LEVELS = ("encoders", "decoders")


def _parts(model: nn.Module) -> dict[str, nn.Module]:
    """The modules to mark, by qualified name: see :data:`_MARKED` and :data:`_LEVELS`."""
    parts: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        parent, _, leaf = name.rpartition(".")
        if leaf in _MARKED or parent.rpartition(".")[2] in _LEVELS:
            parts[name] = module
    return parts


@contextmanager
def _marked(parts: dict[str, nn.Module]) -> Iterator[None]:
    """Wrap each part's forward in ``record_function("part:NAME")`` while the context is open."""
    handles: list[Any] = []
    open_marks: dict[str, list[Any]] = {}

    def pre(name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            mark = torch.profiler.record_function(f"part:{name}")
            mark.__enter__()
            open_marks.setdefault(name, []).append(mark)

        return hook

    def post(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            open_marks[name].pop().__exit__(None, None, None)

        return hook

    for name, module in parts.items():
        handles += [module.register_forward_pre_hook(pre(name)), module.register_forward_hook(post(name))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profile_training_step(model: SegmentationModel, size: int, batch: int, device: torch.device,
                          bf16: bool = True, warmup: int = 2, top: int = 12,
                          channels_last: bool = False) -> dict[str, Any]:  # fmt: skip
    """Profile one training step of ``model`` on random (batch, 2r+1, size, size) clips (``channels_last``:
    NHWC weights and clips, as the trainer keeps them; Adam fused on CUDA, as the trainer runs it).

    Returns ``step_ms`` (the profiled step's wall time, synchronised), ``kernels`` (the ``top`` kernels or
    operators by self device time on CUDA, self CPU time elsewhere: name, ms, share) and ``parts`` (each
    marked part's forward time and share of the whole forward pass).
    """
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=cuda)
    loss_fn = DiceCELoss()
    gen = torch.Generator().manual_seed(0)
    clip = torch.randn(batch, 2 * model.radius + 1, size, size, generator=gen).to(device)
    clip = clip.contiguous(memory_format=memory_format)
    target = torch.randint(0, model.num_classes, (batch, size, size), generator=gen).to(device)

    def step() -> None:
        with autocast(device, bf16):
            logits = model(clip)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with _marked(_parts(model)), torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        with torch.profiler.record_function("part:forward"), autocast(device, bf16):
            logits = model(clip)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        step_ms = (time.perf_counter() - start) * 1e3
    events = prof.key_averages()

    def device_us(event: Any) -> float:  # kernels launched inside a host range (CUDA), its time (CPU)
        return float(getattr(event, "device_time_total" if cuda else "cpu_time_total", 0.0))

    def self_us(event: Any) -> float:
        return float(getattr(event, "self_device_time_total" if cuda else "self_cpu_time_total", 0.0))

    def on_host(event: Any) -> bool:
        return getattr(event, "device_type", DeviceType.CPU) == DeviceType.CPU

    # On CUDA the table lists kernels only: a host op's self device time repeats its kernels' (the first
    # GPU run listed both, so every share was halved), and record_function also leaves a device-side
    # annotation of each mark under the same name, which is not a kernel either.
    ops = [e for e in events if not e.key.startswith("part:") and self_us(e) > 0
           and (not cuda or not (on_host(e) or getattr(e, "is_user_annotation", False)))]  # fmt: skip
    total = sum(self_us(e) for e in ops) or 1.0
    kernels = [{"name": e.key[:90], "ms": round(self_us(e) / 1e3, 3), "share": round(self_us(e) / total, 4),
                "calls": int(e.count)} for e in sorted(ops, key=self_us, reverse=True)[:top]]  # fmt: skip
    marks = {
        e.key.removeprefix("part:"): device_us(e) for e in events if e.key.startswith("part:") and on_host(e)
    }
    forward = marks.pop("forward", 0.0) or 1.0
    parts = [{"part": name, "forward_ms": round(us / 1e3, 3), "share_of_forward": round(us / forward, 4)}
             for name, us in sorted(marks.items(), key=lambda kv: -kv[1])]  # fmt: skip
    return {"model": model.name, "size": size, "batch": batch, "bf16": bool(bf16), "device": str(device),
            "step_ms": round(step_ms, 3), "device_total_ms": round(total / 1e3, 3),
            "channels_last": channels_last, "kernels": kernels, "parts": parts}  # fmt: skip
