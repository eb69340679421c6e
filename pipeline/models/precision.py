"""bf16 autocast where the hardware runs it natively: CUDA, and CPUs with AVX512-BF16 or AMX.

One switch (``train.bf16``) for both devices. On a CPU without native bf16 instructions, oneDNN emulates
bf16 and autocast is slower than fp32, so it stays off there and the run is plain fp32. Weights, optimizer
state, losses and softmax stay fp32 (autocast only lowers convolutions and matrix products); the
deformable convolution samples its grid in fp32 (pipeline.models.deform_conv).
"""

from __future__ import annotations

import contextlib
import functools

import torch


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN's bf16 query
        return False


def bf16_enabled(device: torch.device, bf16: bool) -> bool:
    """Whether ``bf16`` autocast takes effect on ``device`` (CUDA always; a CPU only with native bf16)."""
    if not bf16:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16()


def autocast(
    device: torch.device, bf16: bool, cache: bool = True
) -> contextlib.AbstractContextManager[object]:
    """``torch.autocast`` to bf16 on ``device`` when :func:`bf16_enabled`, else a no-op context.

    ``cache``: autocast's cache of weight casts; off while a CUDA graph is captured (the cached casts
    would be freed after the capture while the graph still reads them)."""
    if bf16_enabled(device, bf16):
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()
