"""Deformable convolution (DCNv1/v2) behind one function: the grid_sample path by default, torchvision's kernel on request.

Layout follows ``torchvision.ops.deform_conv2d`` exactly, so weights and offsets move between the two paths:

- ``offset``: (B, 2 * G * kh * kw, Ho, Wo), group-major; inside a group, tap ``k = i * kw + j`` (row-major over
  the kernel) owns channels ``2k`` (dy, rows) and ``2k + 1`` (dx, columns), in pixels.
- ``mask``: (B, G * kh * kw, Ho, Wo), group-major, multiplied as given (no sigmoid is applied here; the
  module below applies its own squashing).
- ``G`` (offset groups) = ``offset.shape[1] // (2 * kh * kw)``; input channel ``c`` uses group
  ``c // (C_in / G)``.

Why the grid_sample path is the default on every device: torchvision's CPU kernel was 22x slower than a
plain convolution here, while sampling the kh*kw taps with ``grid_sample`` and mixing them with one matrix
product gave the same numbers (to ~1e-4 relative) several times faster. On an H200 it was also the faster
of the two (11.1 against 12.5 ms forward + backward at 12 x 96 x 128 x 128, ../shared/gpu/2026-12-04),
and it is the only one that follows autocast: torchvision's kernel has no reduced-precision path, so it
runs in fp32 (inputs cast up explicitly) and its backward is not deterministic. The two differ only where
a sample lands within ~1e-4 of an integer coordinate, the kink of bilinear interpolation, where each takes
a different one-sided derivative. ``backend="torchvision"`` stays for comparisons; torchvision is imported
only on that path.
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.base import ModelConfigError, check_int

Backend = Literal["auto", "torchvision", "grid_sample"]
_BACKENDS = ("auto", "torchvision", "grid_sample")


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ModelConfigError(f"{name} must be an int or a pair of ints, got {value!r}")


def _check_shapes(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    mask: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int]:
    """Validate the torchvision contract; return (offset_groups, Ho, Wo)."""
    if x.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            "deform_conv2d expects 4D x (B, C, H, W), offset (B, 2*G*kh*kw, Ho, Wo) and weight "
            f"(C_out, C_in/groups, kh, kw); got x {tuple(x.shape)}, offset {tuple(offset.shape)}, "
            f"weight {tuple(weight.shape)}"
        )
    b, c_in, h, w = x.shape
    _, c_per_wgroup, kh, kw = weight.shape
    if c_in % c_per_wgroup != 0:
        raise ValueError(
            f"weight has {c_per_wgroup} input channels per group, which does not divide C_in={c_in}"
        )
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = kh * kw
    if offset.shape[1] % (2 * taps) != 0 or offset.shape[1] == 0:
        raise ValueError(
            f"offset must have 2*G*kh*kw channels (a multiple of {2 * taps} for a {kh}x{kw} kernel), "
            f"got {offset.shape[1]}"
        )
    groups = offset.shape[1] // (2 * taps)
    if c_in % groups != 0:
        raise ValueError(f"{groups} offset groups do not divide the {c_in} input channels")
    if tuple(offset.shape) != (b, 2 * groups * taps, ho, wo):
        raise ValueError(
            f"offset must have shape (B, 2*G*kh*kw, Ho, Wo) = {(b, 2 * groups * taps, ho, wo)}, "
            f"got {tuple(offset.shape)}"
        )
    if mask is not None and tuple(mask.shape) != (b, groups * taps, ho, wo):
        raise ValueError(
            f"mask must have shape (B, G*kh*kw, Ho, Wo) = {(b, groups * taps, ho, wo)}, got {tuple(mask.shape)}"
        )
    return groups, ho, wo


def _deform_conv2d_grid_sample(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    ho: int,
    wo: int,
    fp32_mixing: bool | None = None,
    nhwc_out: bool | None = None,
    transposed: bool | None = None,
) -> Tensor:
    """Sample every tap with one ``grid_sample`` call, then mix channels and taps with one matrix product.

    The sampling grid is built in one fused pass (``addcmul`` of the offsets, in normalised units, onto the
    regular grid), and the mixing is a batched matmul rather than a 1x1 convolution: on the CPU both avoid
    full-size temporaries and the slow unfused paths (2x faster per DeU-Net training step than the first
    version, same numbers to rounding). The offsets are (dy, dx) pairs while grid_sample reads (x, y), so
    the input is sampled transposed (its rows become grid_sample's x) instead of reordering every pair:
    another ~20 % off a DeU-Net forward pass on one CPU thread (benchmarks/model_bench.py).

    ``fp32_mixing`` (None: on CUDA only): mix the fp32 samples in fp32, outside autocast. The samples are
    the largest tensor of the layer (kh*kw times the input, fp32); autocast would first write a bf16 copy
    of them for the matmul and, in the backward pass, cast their gradient back, two extra passes over
    memory for a matmul that a GPU does in a fraction of that time. On the CPU the matmul is the cost,
    and the CPU recipe's numbers stay as they were measured.

    ``nhwc_out`` (None: on CUDA, for a channels_last input): return the output in channels_last memory
    order (see below); the same numbers to rounding.

    ``transposed`` (None: on the CPU and in an ONNX export, not on CUDA): sample the transposed input, as
    above. On CUDA the input is sampled as it is, contiguous, with each offset pair swapped to (dx, dy):
    grid_sample's backward adds every sample's gradient into its input's gradient with atomics, and
    into a transposed input those land a row apart for neighbouring threads instead of side by side.
    The same numbers to rounding (the four corners are summed in another order).
    """
    b, c_in, h, w = x.shape
    c_out, c_per_wgroup, kh, kw = weight.shape
    taps = kh * kw
    cg = c_in // groups
    # Sampling positions in fp32 even under autocast: bf16 keeps 8 bits of a normalised coordinate in
    # [-1, 1], i.e. up to ~0.2 px of error at 96 px, far coarser than the offsets mean. The tap mixing
    # below (a matmul) still runs in autocast's dtype.
    dtype, device = torch.promote_types(offset.dtype, torch.float32), offset.device

    # Regular sampling position of tap (i, j) for output pixel (oy, ox): p0 + pn, in input pixels, then in
    # grid_sample's normalised units (align_corners=False: pixel p sits at (2p + 1) / size - 1). Zero
    # padding outside the image reproduces torchvision's bilinear_interpolate (corners outside count as 0).
    oy = torch.arange(ho, device=device, dtype=dtype) * stride[0] - padding[0]
    ox = torch.arange(wo, device=device, dtype=dtype) * stride[1] - padding[1]
    ki = torch.arange(kh, device=device, dtype=dtype) * dilation[0]
    kj = torch.arange(kw, device=device, dtype=dtype) * dilation[1]
    base_y = (ki.view(kh, 1, 1, 1) + oy.view(1, 1, ho, 1)).expand(kh, kw, ho, wo)
    base_x = (kj.view(1, kw, 1, 1) + ox.view(1, 1, 1, wo)).expand(kh, kw, ho, wo)
    if transposed is None:
        transposed = not x.is_cuda or torch.jit.is_tracing()
    # transposed: (row, column) order, as the offsets come, grid_sample's (x, y) of the transposed input;
    # else (column, row), grid_sample's (x, y) of the input itself
    pair = ((2 * base_y + 1) / h - 1, (2 * base_x + 1) / w - 1)
    base = torch.stack(pair if transposed else pair[::-1], dim=-1).reshape(taps, ho, wo, 2)
    first, second = (2.0 / h, 2.0 / w) if transposed else (2.0 / w, 2.0 / h)  # pixels -> normalised units
    if torch.jit.is_tracing():  # a constant of the exported graph
        to_grid = torch.tensor([first, second], device=device, dtype=dtype)
    else:  # made by fill kernels, not copied from the host (a copy cannot be captured in a CUDA graph)
        to_grid = torch.full((2,), first, device=device, dtype=dtype)
        to_grid[1] = second
    if torch.jit.is_tracing() and transposed:
        # An ONNX export (pipeline.inference.onnx_network): scale each offset channel while the offsets are
        # still (B, G*K*2, Ho, Wo). ONNX Runtime broadcasts the trailing (y, x) pair of the fused form below
        # slowly (as long as all the sampling took); torch runs the fused form 2x faster than this one.
        scale = to_grid.repeat(groups * taps).view(1, -1, 1, 1)
        off = (offset.to(dtype) * scale).unflatten(1, (groups, taps, 2)).permute(0, 1, 2, 4, 5, 3)
        grid = (base + off).reshape(b * groups, taps * ho, wo, 2)
    else:
        # (B, G*K*2, Ho, Wo) -> (B, G, K, Ho, Wo, 2) with (dy, dx) last, or (dx, dy) for the input as it is
        off = offset.unflatten(1, (groups, taps, 2)).permute(0, 1, 2, 4, 5, 3)
        off = off if transposed else off.flip(-1)
        grid = torch.addcmul(base, off.to(dtype), to_grid).reshape(b * groups, taps * ho, wo, 2)

    source = x.reshape(b * groups, cg, h, w)
    sampled = F.grid_sample(
        source.transpose(-1, -2).to(grid.dtype)
        if transposed
        else source.to(grid.dtype, memory_format=torch.contiguous_format),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B*G, Cg, K*Ho, Wo)
    if mask is not None:
        sampled = sampled.view(b, groups, cg, taps, ho, wo) * mask.view(b, groups, 1, taps, ho, wo).to(
            sampled.dtype
        )
    # Column index c * K + k matches weight.view(C_out, C_in/groups * K), per weight group.
    wgroups = c_in // c_per_wgroup
    columns = sampled.reshape(b, wgroups, c_per_wgroup * taps, ho * wo)
    mixing = weight.reshape(wgroups, c_out // wgroups, c_per_wgroup * taps).to(columns.dtype)
    with contextlib.ExitStack() as stack:
        if columns.is_cuda if fp32_mixing is None else fp32_mixing:
            stack.enter_context(torch.autocast(device_type=columns.device.type, enabled=False))
            mixing, columns = mixing.float(), columns.float()
        if nhwc_out is None:
            nhwc_out = columns.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
        if nhwc_out and wgroups == 1:
            # NHWC in, NHWC out: the transposed product writes (B, Ho*Wo, C_out), which is the channels_last
            # layout of (B, C_out, Ho, Wo) at no cost. An NCHW output here would turn every later layer of
            # a channels_last network NCHW (batch norm's slow generic kernels, layout conversions before
            # each cuDNN convolution: a third of a DeU-Net training step on an H200). CUDA only by
            # default: the CPU recipe's numbers stay as they were measured.
            out = torch.matmul(columns[:, 0].transpose(1, 2), mixing[0].transpose(0, 1))
            out = out.view(b, ho, wo, c_out).permute(0, 3, 1, 2)
        else:
            out = torch.matmul(mixing, columns).reshape(b, c_out, ho, wo)
    return out if bias is None else out + bias.view(1, c_out, 1, 1).to(out.dtype)


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    backend: Backend = "auto",
) -> Tensor:
    """Deformable 2D convolution with torchvision's semantics and layout.

    Args:
        x: (B, C_in, H, W) input.
        offset: (B, 2*G*kh*kw, Ho, Wo) offsets in pixels, (dy, dx) per tap, group-major (see module doc).
        weight: (C_out, C_in / groups, kh, kw).
        bias: (C_out,) or None.
        mask: (B, G*kh*kw, Ho, Wo) modulation (DCNv2), used as given, or None.
        backend: "auto" (= "grid_sample", on every device: see the module doc), "torchvision" or
            "grid_sample".

    Returns:
        (B, C_out, Ho, Wo).
    """
    if backend not in _BACKENDS:
        raise ModelConfigError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    stride_, padding_, dilation_ = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    groups, ho, wo = _check_shapes(x, offset, weight, mask, stride_, padding_, dilation_)
    if backend == "torchvision":
        # Imported here: torchvision's package import costs ~2 s of a CPU predict that never needs it.
        import torchvision.ops

        # torchvision's kernel has no reduced-precision path: run it in fp32 explicitly.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torchvision.ops.deform_conv2d(
                x.float(),
                offset.float(),
                weight.float(),
                None if bias is None else bias.float(),
                stride=stride_,
                padding=padding_,
                dilation=dilation_,
                mask=None if mask is None else mask.float(),
            )
    return _deform_conv2d_grid_sample(
        x, offset, weight, bias, mask, stride_, padding_, dilation_, groups, ho, wo
    )


class DeformConv2d(nn.Module):
    """A deformable convolution that predicts its own offsets (and optionally masks) from its input.

    The offset/mask convolution has the same kernel, stride, padding and dilation as the main one and is
    zero-initialised: offsets start at 0 and masks at ``2 * sigmoid(0) = 1``, so a freshly built module is
    exactly a regular convolution and training starts from there.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, Ho, Wo).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        offset_groups: int = 1,
        modulated: bool = False,
        bias: bool = True,
        offset_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, minimum=1)
        check_int("out_channels", out_channels, minimum=1)
        check_int("kernel_size", kernel_size, minimum=1)
        check_int("stride", stride, minimum=1)
        check_int("dilation", dilation, minimum=1)
        check_int("offset_groups", offset_groups, minimum=1)
        if in_channels % offset_groups != 0:
            raise ModelConfigError(
                f"offset_groups={offset_groups} must divide in_channels={in_channels} "
                "(each group of input channels shares one offset field)"
            )
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        check_int("padding", padding, minimum=0)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.offset_groups = offset_groups
        self.modulated = modulated
        if not offset_scale > 0:
            raise ModelConfigError(f"offset_scale must be > 0, got {offset_scale}")
        self.offset_scale = float(offset_scale)
        taps = kernel_size * kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        # Same default initialisation as nn.Conv2d, so swapping a Conv2d for this module changes nothing at init.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(in_channels * taps)
            nn.init.uniform_(self.bias, -bound, bound)
        self.offset_conv = nn.Conv2d(
            in_channels,
            (3 if modulated else 2) * offset_groups * taps,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
        )
        nn.init.zeros_(self.offset_conv.weight)
        assert self.offset_conv.bias is not None
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, Ho, Wo)."""
        out = self.offset_conv(x)
        n_off = 2 * self.offset_groups * self.weight.shape[2] * self.weight.shape[3]
        offset = out[:, :n_off] * self.offset_scale
        mask = 2 * torch.sigmoid(out[:, n_off:]) if self.modulated else None
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            mask,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
