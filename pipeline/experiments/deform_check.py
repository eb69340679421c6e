"""Whether the deformable convolution's two paths agree on a device: the project's grid_sample path against
torchvision's ``deform_conv2d`` kernel, forward and backward, and a float64 ``gradcheck`` of each.

Used by ``benchmarks.gpu_check`` (its ``deform_conv`` section) on a GPU, where the CPU tests cannot look.
Offset gradients are compared away from integer sample coordinates: there bilinear interpolation has a
kink, and the two kernels take different one-sided derivatives.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from pipeline.models.deform_conv import deform_conv2d

#: Tolerances, relative to the largest reference value (the CPU tests use the same forward one).
FORWARD_TOL, BACKWARD_TOL = 1e-4, 1e-3
#: Offset-gradient elements whose sample position lies this close to an integer row or column are left out.
KINK = 1e-3


def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _positions(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regular sample rows and columns of every 3x3 tap (padding 1, stride 1), broadcastable to offsets
    viewed as (B, G, 3, 3, H, W) per coordinate."""
    h, w = shape[-2:]
    k = torch.arange(3, device=device, dtype=dtype)
    rows = torch.arange(h, device=device, dtype=dtype).view(h, 1) - 1 + k.view(3, 1, 1, 1)
    cols = torch.arange(w, device=device, dtype=dtype) - 1 + k.view(3, 1, 1)
    return rows, cols  # (3, 1, h, 1) and (3, 1, w): ki on dim -4, kj on dim -3


def near_integer(offset: torch.Tensor, groups: int) -> torch.Tensor:
    """Per offset element: whether its tap's sample position lies within :data:`KINK` of an integer row or
    column, where bilinear interpolation has a kink (both coordinates' elements of that tap)."""
    b, _, h, w = offset.shape
    off = offset.view(b, groups, 3, 3, 2, h, w)
    rows, cols = _positions(offset.shape, offset.device, offset.dtype)
    near = [((p - p.round()).abs() < KINK) for p in (rows + off[..., 0, :, :], cols + off[..., 1, :, :])]
    return (near[0] | near[1]).unsqueeze(4).expand_as(off).reshape(offset.shape)


def compare_paths(device: torch.device, b: int, c: int, h: int, w: int, c_out: int, groups: int,
                  modulated: bool) -> dict[str, Any]:  # fmt: skip
    """Both paths on one random 3x3 case (padding 1), forward and backward on ``device``: the relative
    errors (the offset's away from the kinks), the share of offset-gradient elements out of tolerance over
    all and over the kept ones, and ``ok``."""
    gen = torch.Generator().manual_seed(0)
    inputs = {"x": torch.randn(b, c, h, w, generator=gen),
              "offset": torch.randn(b, 2 * groups * 9, h, w, generator=gen) * 2.0,
              "weight": torch.randn(c_out, c, 3, 3, generator=gen) / (3 * c**0.5),
              "bias": torch.randn(c_out, generator=gen)}  # fmt: skip
    if modulated:
        inputs["mask"] = torch.rand(b, groups * 9, h, w, generator=gen)
    upstream = torch.randn(b, c_out, h, w, generator=gen).to(device)
    outs, grads = {}, {}
    for backend in ("torchvision", "grid_sample"):
        leaves = {k: v.to(device, copy=True).requires_grad_() for k, v in inputs.items()}  # fresh .grad each
        out = deform_conv2d(leaves["x"], leaves["offset"], leaves["weight"], leaves["bias"], leaves.get("mask"),
                            padding=1, backend=backend)  # fmt: skip
        out.backward(upstream)
        outs[backend], grads[backend] = out.detach(), {k: v.grad for k, v in leaves.items()}
    backward = {k: _relative(grads["grid_sample"][k], grads["torchvision"][k]) for k in inputs}
    ref, ours = grads["torchvision"]["offset"], grads["grid_sample"]["offset"]
    bad = (ours - ref).abs() > BACKWARD_TOL * ref.abs().max()
    kept = ~near_integer(inputs["offset"].to(device), groups)
    backward["offset"] = _relative(ours[kept], ref[kept])  # away from the kinks
    row: dict[str, Any] = {"shape": [b, c, h, w], "c_out": c_out, "offset_groups": groups, "modulated": modulated,
                           "backward_rel_err": backward,
                           "forward_rel_err": _relative(outs["grid_sample"], outs["torchvision"]),
                           "offset_elements": ref.numel(), "offset_kept": int(kept.sum()),
                           "offset_out_of_tol_all": float(bad.float().mean()),
                           "offset_out_of_tol_kept": float(bad[kept].float().mean()),
                           "offset_out_of_tol_near_kink": int((bad & ~kept).sum())}  # fmt: skip
    row["ok"] = row["forward_rel_err"] <= FORWARD_TOL and max(backward.values()) <= BACKWARD_TOL
    return row


def _path(x: Any, offset: Any, weight: Any, bias: Any, mask: Any, backend: str) -> torch.Tensor:
    if backend == "torchvision":  # the project's wrapper casts to fp32; call torchvision in float64 directly
        import torchvision.ops

        return torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    return deform_conv2d(x, offset, weight, bias, mask, padding=1, backend="grid_sample")


def gradcheck_paths(device: torch.device) -> dict[str, Any]:
    """float64 gradcheck of both paths on a tiny modulated case, 2 offset groups, sample positions 0.1-0.9 px
    off the grid: per path True, or the first line of gradcheck's complaint. ``nondet_tol``: on CUDA both
    backward kernels add into the input's gradient with atomics, so two backward passes differ in the last
    bits (gradcheck's reentrancy check fails on exactly 0); 1e-10 is far below any real gradient error in
    float64."""
    gen, f64, h = torch.Generator().manual_seed(1), torch.float64, 5
    rows, cols = _positions((h, h), torch.device("cpu"), f64)
    base = torch.stack(torch.broadcast_tensors(rows, cols), dim=-3).expand(1, 2, 3, 3, 2, h, h)
    pos = (base + 1.5 * torch.randn(base.shape, generator=gen, dtype=f64)).floor()
    pos = pos + 0.1 + 0.8 * torch.rand(base.shape, generator=gen, dtype=f64)
    inputs = [torch.randn(1, 4, h, h, generator=gen, dtype=f64), (pos - base).reshape(1, 36, h, h),
              torch.randn(3, 4, 3, 3, generator=gen, dtype=f64), torch.randn(3, generator=gen, dtype=f64),
              torch.rand(1, 18, h, h, generator=gen, dtype=f64)]  # fmt: skip
    leaves = [t.to(device).requires_grad_() for t in inputs]
    out: dict[str, Any] = {}
    for backend in ("grid_sample", "torchvision"):
        try:
            out[backend] = bool(torch.autograd.gradcheck(partial(_path, backend=backend), leaves, eps=1e-6,
                                                         atol=1e-5, nondet_tol=1e-10))  # fmt: skip
        except Exception as exc:  # GradcheckError: keep why, not just "no"
            out[backend] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return out
