"""The constructor contract: ``model.config`` is every constructor argument, so a checkpoint rebuilds the
model exactly, whatever arguments it was built with; a class that breaks the contract is refused."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.checkpoint.io import load_checkpoint, model_from_checkpoint, save_checkpoint
from pipeline.models import MODEL_REGISTRY, SegmentationModel, available_models, build_model
from pipeline.models.base import COMMON_ARGUMENTS

#: Every common argument away from its default: r = 2, 3 classes, batch norm, a fixed (H, W).
COMMON = {
    "radius": 2,
    "num_classes": 3,
    "base_channels": 4,
    "depth": 2,
    "norm": "batch",
    "input_size": (16, 8),
}
DEUNET = {"fused_channels": 6, "kernel_size": 1, "offset_channels": 4, "offset_depth": 2, "modulated": True,
          "deformable_per_block": 2, "offset_scale": 0.2}  # fmt: skip
#: Each model's own arguments away from their defaults.
OWN: dict[str, dict[str, Any]] = {
    "unet": {"frames": "clip"},
    "attention_unet": {"frames": "middle"},
    "kunet": {"hidden_channels": 5},
    "gridnet": {"frames": "middle", "columns": 3},
    "toflow_unet": {"flow_levels": 2, "flow_channels": 6},
    "deunet": DEUNET,
    "deunet_t": DEUNET,
    "deunet_d": DEUNET,
}


def _defaults(name: str) -> dict[str, Any]:
    parameters = list(inspect.signature(MODEL_REGISTRY[name].__init__).parameters.values())[1:]
    return {p.name: p.default for p in parameters}


def test_every_registered_model_has_non_default_arguments_here() -> None:
    assert sorted(OWN) == sorted(available_models())
    for name in available_models():
        defaults = _defaults(name)
        args = {**COMMON, **OWN[name]}
        assert list(defaults)[: len(COMMON_ARGUMENTS)] == list(COMMON_ARGUMENTS)
        assert set(args) == set(defaults), f"{name}: test every argument, {sorted(set(defaults) - set(args))}"
        assert all(args[k] != defaults[k] for k in args), name


@pytest.mark.parametrize("name", available_models())
def test_checkpoint_round_trip_with_non_default_arguments(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    args = {**COMMON, **OWN[name]}
    model = build_model(name, **args)
    assert model.config == args and list(model.config) == list(_defaults(name))  # signature order
    clip = torch.randn(3, 5, 16, 8)
    if name == "gridnet":  # its shape prior is a buffer set from training labels
        model.set_prior(torch.randint(0, 3, (6, 16, 8)))
    model.train()
    model(clip)  # batch-norm running statistics move away from their initial values
    model.eval()

    save_checkpoint(tmp_path / "model.pt", model)
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["model_name"] == name and ckpt["model_config"] == args
    clone = model_from_checkpoint(ckpt)

    assert type(clone) is type(model) and clone.config == model.config
    theirs = clone.state_dict()
    assert list(theirs) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(theirs[key], value), key
    with torch.no_grad():
        assert torch.equal(clone(clip), model(clip))


def test_defaults_and_positional_arguments_are_recorded() -> None:
    model = MODEL_REGISTRY["attention_unet"](1, 4, 8)  # the rest by default, frames "clip"
    assert model.config == {**_defaults("attention_unet"), "base_channels": 8}
    assert model.config["frames"] == "clip" and model.frames == "clip"


def test_a_model_class_that_breaks_the_contract_is_refused() -> None:
    with pytest.raises(TypeError, match=r"must take \['radius', .*'input_size'\] first"):

        class NoInputSize(SegmentationModel):
            def __init__(self, radius: int = 1, num_classes: int = 4, base_channels: int = 16,
                         depth: int = 4, norm: str = "instance") -> None:  # fmt: skip
                super().__init__()

    with pytest.raises(TypeError, match=r"must name its arguments .*\['extra'\]"):

        class Variadic(SegmentationModel):
            def __init__(self, radius: int = 1, num_classes: int = 4, base_channels: int = 16, depth: int = 4,
                         norm: str = "instance", input_size: int | None = None, **extra: Any) -> None:  # fmt: skip
                super().__init__()
