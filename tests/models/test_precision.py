"""bf16 autocast: on where the hardware has it (CUDA, CPUs with native bf16), and deformable sampling in fp32."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.models import precision
from pipeline.models.deform_conv import deform_conv2d

CPU = torch.device("cpu")


def test_bf16_off_never_autocasts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert not precision.bf16_enabled(CPU, False)
    with precision.autocast(CPU, False):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_autocast_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.bf16_enabled(CPU, True) is native
    with precision.autocast(CPU, True):
        assert torch.is_autocast_enabled("cpu") is native
        out = torch.nn.functional.conv2d(torch.randn(1, 2, 8, 8), torch.randn(3, 2, 3, 3))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert not torch.is_autocast_enabled("cpu")


def test_cuda_autocasts_whenever_asked() -> None:
    assert precision.bf16_enabled(torch.device("cuda"), True)
    assert not precision.bf16_enabled(torch.device("cuda"), False)


def test_deformable_sampling_positions_stay_fp32_under_autocast() -> None:
    """bf16 offsets (as a bf16 conv yields them) still sample at fp32 positions on a 96-px image.

    A 1x1 kernel of weight 1 shifted by 0.3 px reads a fine sinusoid (period 4 px): sampling positions
    rounded to bf16 (8 bits of the normalised coordinate, up to ~0.2 px here) would change the result by
    up to ~0.3, while bf16 rounding of the mixing matmul alone changes it by < 0.01.
    """
    w = 96
    xs = torch.arange(w, dtype=torch.float32)
    image = torch.sin(2 * math.pi * xs / 4).expand(1, 1, w, w).contiguous()
    offset = torch.zeros(1, 2, w, w)
    offset[:, 1] = 0.3  # dx, pixels
    weight = torch.ones(1, 1, 1, 1)
    reference = deform_conv2d(image, offset, weight, backend="grid_sample")
    row = image[0, 0, 5]
    expected = 0.7 * row[:-1] + 0.3 * row[1:]  # bilinear between the two neighbours
    assert torch.allclose(reference[0, 0, 5, :-1], expected, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = deform_conv2d(image, offset.bfloat16(), weight, backend="grid_sample")
    assert (low.float() - reference).abs().max() < 0.02
