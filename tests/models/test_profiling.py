"""pipeline.models.profiling: one profiled training step names its costliest ops and the model's parts."""

from __future__ import annotations

import torch

from pipeline.models import build_model
from pipeline.models.profiling import profile_training_step


def test_profile_names_kernels_and_parts_and_removes_its_hooks() -> None:
    torch.manual_seed(0)
    model = build_model("deunet", radius=1, base_channels=4, depth=2, norm="batch")
    before = [p.detach().clone() for p in model.parameters()]
    result = profile_training_step(model, 16, 2, torch.device("cpu"), bf16=False, warmup=1, top=5)
    assert result["model"] == "deunet" and result["step_ms"] > 0 and len(result["kernels"]) == 5
    shares = [k["share"] for k in result["kernels"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001
    parts = {p["part"]: p["share_of_forward"] for p in result["parts"]}
    assert {"fusion", "backbone", "head", "fusion.offset_net", "backbone.core.encoders.0"} <= set(parts)
    assert all(0 < share <= 1.0001 for share in parts.values())
    # the steps trained the model, and no profiling hook is left on it
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
