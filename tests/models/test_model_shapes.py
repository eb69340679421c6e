"""Every registered model maps (B, 2r+1, H, W) clips to (B, 4, H, W) logits; bad inputs raise clearly."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import InputShapeError, SegmentationModel, available_models, build_model

# Tiny versions (input multiple 4) so 48 shape cases run in seconds on a CPU.
TINY: dict[str, dict[str, object]] = {
    "unet": {},
    "attention_unet": {},
    "kunet": {},
    "gridnet": {},
    "toflow_unet": {"flow_levels": 2, "flow_channels": 4},
    "deunet_t": {},
    "deunet_d": {"offset_channels": 4, "offset_depth": 2},
    "deunet": {"offset_channels": 4, "offset_depth": 2},
}


def tiny(name: str, radius: int) -> SegmentationModel:
    return build_model(name, radius=radius, base_channels=4, depth=2, **TINY[name])


def test_tiny_table_covers_the_registry() -> None:
    assert sorted(TINY) == sorted(available_models())


@pytest.mark.parametrize("size", [(16, 16), (32, 48)])
@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(TINY))
def test_output_shape(name: str, radius: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = tiny(name, radius)
    clip = torch.randn(2, 2 * radius + 1, *size)
    logits = model(clip)
    assert logits.shape == (2, 4, *size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_default_configuration_runs_at_64(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert model.input_multiple == 16
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)


@pytest.mark.parametrize("name", sorted(TINY))
def test_config_rebuilds_the_same_model(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name, radius=1).eval()
    clone = build_model(model.name, **model.config).eval()
    clone.load_state_dict(model.state_dict())
    clip = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(clip), clone(clip))


@pytest.mark.parametrize("name", sorted(TINY))
def test_wrong_input_shapes_raise_with_expected_and_actual(name: str) -> None:
    model = tiny(name, radius=1)
    with pytest.raises(InputShapeError, match=r"multiples? of 4.*\(1, 3, 18, 16\)"):
        model(torch.randn(1, 3, 18, 16))
    with pytest.raises(InputShapeError, match=r"r = 1.*got 5 frames"):
        model(torch.randn(1, 5, 16, 16))
    with pytest.raises(InputShapeError, match="got a 3D tensor"):
        model(torch.randn(3, 16, 16))
    with pytest.raises(InputShapeError, match="floating-point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError):  # InputShapeError is a ValueError too
        model(torch.randn(1, 3, 16, 17))
