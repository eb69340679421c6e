"""One registry: model name -> class. ``build_model(name, **kwargs)`` is the only way the pipeline builds one.

A checkpoint stores ``model.name`` and ``model.config``; ``build_model(name, **config)`` rebuilds it.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from pipeline.models.attention_unet import AttentionUNet
from pipeline.models.base import ModelConfigError, SegmentationModel
from pipeline.models.deunet import DeUNet, DeUNetD, DeUNetT
from pipeline.models.gridnet import GridNet
from pipeline.models.kunet import KUNet
from pipeline.models.toflow_unet import ToFlowUNet
from pipeline.models.unet import UNet

# Table 1's rows, in the paper's order.
MODEL_REGISTRY: dict[str, type[SegmentationModel]] = {
    cls.name: cls for cls in (UNet, KUNet, GridNet, AttentionUNet, ToFlowUNet, DeUNetT, DeUNetD, DeUNet)
}


def available_models() -> list[str]:
    """Registered model names, in Table 1's order."""
    return list(MODEL_REGISTRY)


def _did_you_mean(word: str, choices: list[str]) -> str:
    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1)
    return f" Did you mean {lowered[close[0]]!r}?" if close else ""


def build_model(name: str, **kwargs: Any) -> SegmentationModel:
    """Build a registered model by name with its constructor arguments.

    Raises ModelConfigError (a ConfigError) for an unknown name, listing the choices, or an unknown
    argument, listing the ones the model accepts; invalid values raise from the constructor.
    """
    choices = available_models()
    if not isinstance(name, str) or name not in MODEL_REGISTRY:
        hint = _did_you_mean(name, choices) if isinstance(name, str) else ""
        raise ModelConfigError(f"unknown model {name!r}; choose one of {choices}.{hint}")
    cls = MODEL_REGISTRY[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in kwargs:
        if key not in accepted:
            raise ModelConfigError(
                f"model {name!r} has no argument {key!r}; it accepts {accepted}.{_did_you_mean(key, accepted)}"
            )
    return cls(**kwargs)
