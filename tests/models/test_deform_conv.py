"""The deformable convolution: both backends agree, zero offsets are a plain convolution, bad shapes raise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from pipeline.models.base import ModelConfigError
from pipeline.models.deform_conv import Backend, DeformConv2d, deform_conv2d

# (batch, c_in, h, w, c_out, kernel, stride, padding, dilation, offset_groups, weight_groups, with_mask)
CASES = [
    (2, 6, 9, 11, 5, 3, 1, 1, 1, 1, 1, False),
    (2, 6, 9, 11, 5, 3, 1, 1, 1, 3, 1, True),  # one offset group per pair of channels (TDAM-like)
    (1, 3, 12, 12, 8, 3, 1, 1, 1, 3, 1, True),  # one offset group per frame, as in TDAM
    (2, 4, 10, 8, 6, 3, 2, 1, 2, 2, 1, False),  # stride and dilation
    (1, 4, 7, 9, 4, 1, 1, 0, 1, 1, 2, True),  # 1x1 kernel, weight groups
    (2, 4, 8, 8, 4, 5, 1, 2, 1, 4, 1, False),  # S = 5
]


def _random_case(case: tuple, scale: float = 2.5, dtype: torch.dtype = torch.float32):
    b, c_in, h, w, c_out, k, s, p, d, g, wg, with_mask = case
    ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
    wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
    x = torch.randn(b, c_in, h, w, dtype=dtype)
    weight = torch.randn(c_out, c_in // wg, k, k, dtype=dtype)
    bias = torch.randn(c_out, dtype=dtype)
    # Offsets large enough to reach outside the image, so the zero-padding rule is exercised too.
    offset = torch.randn(b, 2 * g * k * k, ho, wo, dtype=dtype) * scale
    mask = torch.rand(b, g * k * k, ho, wo, dtype=dtype) if with_mask else None
    return x, offset, weight, bias, mask, {"stride": s, "padding": p, "dilation": d}


@pytest.mark.parametrize("case", CASES)
def test_grid_sample_path_matches_torchvision(case: tuple) -> None:
    torch.manual_seed(0)
    x, offset, weight, bias, mask, kw = _random_case(case)
    ours = deform_conv2d(x, offset, weight, bias, mask, backend="grid_sample", **kw)
    ref = torchvision.ops.deform_conv2d(
        x, offset, weight, bias, mask=mask, **{k: (v, v) for k, v in kw.items()}
    )
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, rtol=0, atol=1e-4 * ref.abs().max().item() + 1e-5)


@pytest.mark.parametrize("case", CASES[:4])
def test_gradients_match_torchvision(case: tuple) -> None:
    torch.manual_seed(1)
    tensors = _random_case(case, dtype=torch.float64)
    x, offset, weight, bias, mask, kw = tensors
    grads = []
    for backend in ("grid_sample", "torchvision"):
        leaves = [t.clone().requires_grad_() for t in (x, offset, weight)]
        out = deform_conv2d(leaves[0], leaves[1], leaves[2], bias, mask, backend=backend, **kw)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    for name, ours, ref in zip(("x", "offset", "weight"), *grads, strict=True):
        assert ours is not None and ref is not None
        assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), name


@pytest.mark.parametrize("backend", ["grid_sample", "torchvision"])
@pytest.mark.parametrize("case", CASES)
def test_zero_offsets_are_a_regular_convolution(case: tuple, backend: Backend) -> None:
    torch.manual_seed(2)
    x, offset, weight, bias, _, kw = _random_case(case)
    out = deform_conv2d(x, torch.zeros_like(offset), weight, bias, backend=backend, **kw)
    groups = x.shape[1] // weight.shape[1]
    ref = F.conv2d(x, weight, bias, groups=groups, **kw)
    assert torch.allclose(out, ref, rtol=0, atol=1e-5 * ref.abs().max().item())


def test_integer_offset_shifts_the_sampling_point() -> None:
    """Golden value: a 1x1 kernel with offset (dy, dx) = (1, -2) reads x[y + 1, x - 2], zero outside."""
    x = torch.arange(30, dtype=torch.float32).view(1, 1, 5, 6)
    offset = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 5, 6).contiguous()
    out = deform_conv2d(x, offset, torch.ones(1, 1, 1, 1), backend="grid_sample")
    expected = torch.zeros(5, 6)
    expected[:4, 2:] = x[0, 0, 1:, :4]
    # Not bit-exact: the pixel -> [-1, 1] -> pixel round trip of grid_sample rounds in float32, so a tap
    # exactly on the edge may weigh its neighbour by ~1e-6 (about 2e-5 on these values of up to 29).
    assert torch.allclose(out[0, 0], expected, rtol=0, atol=1e-4)


def test_half_pixel_offset_interpolates_bilinearly() -> None:
    x = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    offset = torch.full((1, 2, 2, 2), 0.5)
    out = deform_conv2d(x, offset, torch.ones(1, 1, 1, 1), backend="grid_sample")
    # (0.5, 0.5) is the mean of the four pixels; beyond the last row/column the zeros pull values down.
    assert out[0, 0, 0, 0].item() == pytest.approx(15.0)
    assert out[0, 0, 1, 1].item() == pytest.approx(30.0 / 4)


def test_auto_backend_is_the_grid_sample_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("torchvision's kernel must not run with backend='auto' (grid_sample everywhere)")

    monkeypatch.setattr(torchvision.ops, "deform_conv2d", fail)
    x, offset, weight, bias, mask, kw = _random_case(CASES[0])
    assert deform_conv2d(x, offset, weight, bias, mask, **kw).shape == (2, 5, 9, 11)


@pytest.mark.parametrize("modulated", [False, True])
def test_module_starts_as_a_regular_convolution(modulated: bool) -> None:
    torch.manual_seed(3)
    conv = DeformConv2d(4, 6, 3, offset_groups=2, modulated=modulated)
    x = torch.randn(2, 4, 12, 10)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    assert torch.allclose(conv(x), ref, atol=1e-5)
    assert conv.offset_conv.out_channels == (3 if modulated else 2) * 2 * 9


def test_module_offsets_receive_gradient() -> None:
    torch.manual_seed(4)
    conv = DeformConv2d(3, 4, 3)
    conv(torch.randn(1, 3, 8, 8)).square().sum().backward()
    assert conv.offset_conv.weight.grad is not None
    assert conv.offset_conv.weight.grad.abs().sum() > 0


def test_bad_arguments_raise() -> None:
    x = torch.randn(1, 4, 8, 8)
    weight = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="multiple of 18"):
        deform_conv2d(x, torch.zeros(1, 10, 6, 6), weight)
    with pytest.raises(ValueError, match=r"offset must have shape \(B, 2\*G\*kh\*kw, Ho, Wo\)"):
        deform_conv2d(x, torch.zeros(1, 18, 8, 8), weight)  # padding 0 gives 6x6, not 8x8
    with pytest.raises(ValueError, match="mask must have shape"):
        deform_conv2d(x, torch.zeros(1, 18, 8, 8), weight, mask=torch.ones(1, 18, 8, 8), padding=1)
    with pytest.raises(ValueError, match="3 offset groups do not divide the 4 input channels"):
        deform_conv2d(x, torch.zeros(1, 54, 8, 8), weight, padding=1)
    with pytest.raises(ModelConfigError, match="backend must be one of"):
        deform_conv2d(x, torch.zeros(1, 18, 8, 8), weight, padding=1, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ModelConfigError, match="offset_groups=3 must divide in_channels=4"):
        DeformConv2d(4, 4, offset_groups=3)
    with pytest.raises(ModelConfigError, match="in_channels must be >= 1"):
        DeformConv2d(0, 4)
    with pytest.raises(ModelConfigError, match="offset_scale must be > 0"):
        DeformConv2d(4, 4, offset_scale=0.0)


@pytest.mark.parametrize("case", CASES[:3])
def test_fp32_mixing_under_autocast_is_the_fp32_convolution(case: tuple) -> None:
    """The GPU default (fp32 tap mixing outside autocast), forced on the CPU: under bf16 autocast it returns
    fp32 equal to the fp32 convolution, and its gradients are the fp32 ones; the autocast mixing does not."""
    from pipeline.models.deform_conv import _deform_conv2d_grid_sample

    torch.manual_seed(7)
    x, offset, weight, bias, mask, kw = _random_case(case)
    groups = offset.shape[1] // (2 * weight.shape[2] * weight.shape[3])
    ho, wo = offset.shape[-2:]
    pairs = (kw["stride"],) * 2, (kw["padding"],) * 2, (kw["dilation"],) * 2
    reference = deform_conv2d(x, offset, weight, bias, mask, **kw, backend="grid_sample")
    results = {}
    for fp32 in (True, False):
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = _deform_conv2d_grid_sample(leaf, offset, weight, bias, mask, *pairs, groups, ho, wo, fp32)
        out.float().square().sum().backward()
        results[fp32] = out, leaf.grad
    assert results[True][0].dtype == torch.float32 and results[False][0].dtype == torch.bfloat16
    assert torch.allclose(results[True][0], reference, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(results[False][0].float(), reference, rtol=1e-5, atol=1e-4)
    leaf = x.clone().requires_grad_()
    deform_conv2d(leaf, offset, weight, bias, mask, **kw, backend="grid_sample").square().sum().backward()
    assert torch.allclose(results[True][1], leaf.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", [c for c in CASES if c[10] == 1])
def test_nhwc_output_is_the_same_convolution_in_channels_last_order(case: tuple) -> None:
    """The GPU default for a channels_last input, forced on the CPU: the output is channels_last (so the
    layers after it stay NHWC) and equal to the NCHW product, values and gradients, to rounding."""
    from pipeline.models.deform_conv import _deform_conv2d_grid_sample

    torch.manual_seed(3)
    x, offset, weight, bias, mask, kw = _random_case(case)
    x = x.contiguous(memory_format=torch.channels_last)
    groups = offset.shape[1] // (2 * weight.shape[2] * weight.shape[3])
    ho, wo = offset.shape[-2:]
    pairs = (kw["stride"],) * 2, (kw["padding"],) * 2, (kw["dilation"],) * 2
    results = {}
    for nhwc in (True, False):
        leaf, off = x.clone().requires_grad_(), offset.clone().requires_grad_()
        out = _deform_conv2d_grid_sample(leaf, off, weight, bias, mask, *pairs, groups, ho, wo, None, nhwc)
        out.square().sum().backward()
        results[nhwc] = out, leaf.grad, off.grad
    out = results[True][0]
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert results[False][0].is_contiguous()
    for a, b in zip(results[True], results[False], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_sampling_the_input_as_it_is_equals_sampling_it_transposed(case: tuple) -> None:
    """The CUDA orientation (the input as it is, offset pairs swapped), forced on the CPU, against the CPU's
    (the input transposed): the same values and gradients to rounding, channels_last input included."""
    from pipeline.models.deform_conv import _deform_conv2d_grid_sample

    torch.manual_seed(5)
    x, offset, weight, bias, mask, kw = _random_case(case)
    groups = offset.shape[1] // (2 * weight.shape[2] * weight.shape[3])
    ho, wo = offset.shape[-2:]
    pairs = (kw["stride"],) * 2, (kw["padding"],) * 2, (kw["dilation"],) * 2
    for memory_format in (torch.contiguous_format, torch.channels_last):
        results = {}
        for transposed in (True, False):
            leaf = x.clone().contiguous(memory_format=memory_format).requires_grad_()
            off = offset.clone().requires_grad_()
            out = _deform_conv2d_grid_sample(leaf, off, weight, bias, mask, *pairs, groups, ho, wo,
                                             None, False, transposed)  # fmt: skip
            out.square().sum().backward()
            results[transposed] = out, leaf.grad, off.grad
        for a, b in zip(results[True], results[False], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
