"""The preprocessing a checkpoint records: what inference must do to an image before the network sees it."""

from __future__ import annotations

from typing import Any

from pipeline.config import from_dict
from pipeline.errors import ConfigError, DataError
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.geometry import Geometry

#: What a checkpoint from before the geometry option means: Geometry's own defaults.
_BEFORE_GEOMETRY: dict[str, Any] = {"geometry": Geometry.mode, "spacing_mm": Geometry.spacing_mm}


def checkpoint_preprocess(ckpt: dict[str, Any], name: str) -> PreprocessConfig:
    """The preprocessing a checkpoint records (``ckpt["preprocess"]``), typed; ``name`` labels errors.

    A checkpoint from before the geometry option lacks ``geometry`` and ``spacing_mm``: it was trained
    with Geometry's own defaults (resize). Settings that do not shape inference (radius, workers) may be
    missing and take PreprocessConfig's defaults.

    Raises:
        DataError: the checkpoint lacks its size or percentiles, or records invalid preprocessing.
    """
    pre = ckpt.get("preprocess") or {}
    if "size" not in pre or "percentiles" not in pre:
        raise DataError(name, "checkpoint does not record its preprocessing (size, percentiles); retrain it")
    try:
        return from_dict(PreprocessConfig, {**_BEFORE_GEOMETRY, **pre}, "preprocess")
    except ConfigError as exc:
        raise DataError(name, f"checkpoint records invalid preprocessing ({exc})") from None
