"""The registry: names, did-you-mean errors, argument validation with messages that say why."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.models import MODEL_REGISTRY, ModelConfigError, available_models, build_model

TABLE_1 = ["unet", "kunet", "gridnet", "attention_unet", "toflow_unet", "deunet_t", "deunet_d", "deunet"]


def test_every_network_of_table_1_is_registered_in_order() -> None:
    assert available_models() == TABLE_1
    assert all(MODEL_REGISTRY[name].name == name for name in TABLE_1)


def test_unknown_name_lists_choices_and_suggests() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown model 'DeUNet'.*choose one of \[.*'gridnet'.*\]\. Did you mean 'deunet'\?",
    ):
        build_model("DeUNet")
    with pytest.raises(ConfigError, match="Did you mean 'attention_unet'"):
        build_model("attention-unet")
    with pytest.raises(ModelConfigError, match="choose one of") as info:
        build_model("vision_transformer")
    assert "Did you mean" not in str(info.value)


def test_unknown_argument_names_the_accepted_ones() -> None:
    with pytest.raises(
        ModelConfigError, match=r"'unet' has no argument 'base_channel'.*Did you mean 'base_channels'\?"
    ):
        build_model("unet", base_channel=8)


@pytest.mark.parametrize("name", TABLE_1)
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius": -1}, "radius must be >= 0, got -1"),
        ({"radius": True}, "radius must be an int, got bool"),
        ({"radius": 1.0}, "radius must be an int, got float"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"base_channels": 0}, "base_channels must be >= 2"),
        ({"depth": 0}, "depth must be >= 1"),
        ({"depth": 9}, "depth must be <= 7"),
        ({"norm": "group"}, r"norm must be one of \['instance', 'batch'\], got 'group'"),
        (
            {"input_size": 100},
            r"input_size H=100 must be a positive multiple of 16 .*nearest valid sizes are 96 and 112",
        ),
        ({"input_size": (64, 72)}, "input_size W=72 must be a positive multiple of 16"),
        ({"input_size": "64"}, "input_size must be an int or a pair"),
    ],
)
def test_bad_common_arguments_raise(name: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_model(name, **kwargs)


def test_errors_are_value_errors_too() -> None:
    with pytest.raises(ValueError):
        build_model("unet", depth=-2)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("unet", {"frames": "all"}, r"frames must be one of \['middle', 'clip'\]"),
        ("gridnet", {"columns": 0}, "columns must be >= 1"),
        ("kunet", {"hidden_channels": 0}, "hidden_channels must be >= 1"),
        ("toflow_unet", {"flow_levels": 0}, "flow_levels must be >= 1"),
        ("deunet", {"kernel_size": 4}, "kernel_size .S. must be odd"),
        ("deunet", {"offset_depth": 0}, "offset_depth must be >= 1"),
        ("deunet", {"deformable_per_block": 3}, "deformable_per_block must be <= 2"),
        ("deunet", {"offset_scale": -1.0}, "offset_scale must be > 0"),
        ("deunet_t", {"kernel_size": 2}, "kernel_size .S. must be odd"),
        ("deunet", {"depth": 2, "offset_depth": 4, "input_size": 24}, "multiple of 16"),
    ],
)
def test_bad_model_specific_arguments_raise(name: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_model(name, **kwargs)


def test_config_holds_every_constructor_argument() -> None:
    model = build_model("deunet", radius=2, base_channels=8)
    assert model.config["radius"] == 2
    assert model.config["base_channels"] == 8
    assert model.config["offset_depth"] == 3
    assert model.in_frames == 5
