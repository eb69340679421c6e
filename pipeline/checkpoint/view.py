"""The in-plane field of view a model was trained on, as its checkpoint records it.

Training writes it (:func:`training_view` of the store's patients); inference reads it back
(:func:`checkpoint_view`) to decide whether an input's field of view is larger than training's and the
heart must be located first (pipeline.inference.locate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import from_dict
from pipeline.errors import ConfigError, DataError

#: How much larger than training's (in mm, in either axis) a field of view must be to be located first:
#: training's own fields of view spread about +-20% around their median (acdc-roi, the phantom), and those
#: must keep today's exact path.
LOCATE_FACTOR = 1.3


@dataclass(frozen=True)
class View:
    """The in-plane field of view training saw: medians over the training patients of the extent
    (shape * spacing, mm) and of the spacing (mm), both (y, x), as the checkpoint's ``view`` records them.

    ``spacing_mm`` documents the training resolution; the windows depend on ``fov_mm`` and the input's
    own spacing only, so a model keeps its framing at any resolution.
    """

    fov_mm: tuple[float, float]
    spacing_mm: tuple[float, float]

    def __post_init__(self) -> None:
        for name in ("fov_mm", "spacing_mm"):
            values = getattr(self, name)
            if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"{name} must be two positive (y, x) values in mm, got {list(values)}")

    def as_record(self) -> dict[str, list[float]]:
        """The plain mapping a checkpoint stores (lists of floats load with ``weights_only=True``)."""
        return {"fov_mm": list(self.fov_mm), "spacing_mm": list(self.spacing_mm)}

    def window(self, shape: tuple[int, int], spacing_yx: tuple[float, float]) -> tuple[int, int]:
        """(h, w) pixels of the training field of view at ``spacing_yx``, at most the image's ``shape``."""
        return tuple(
            min(n, max(1, round(fov / s))) for n, fov, s in zip(shape, self.fov_mm, spacing_yx, strict=True)
        )  # type: ignore[return-value]

    def exceeded_by(self, shape: tuple[int, int], spacing_yx: tuple[float, float],
                    factor: float = LOCATE_FACTOR) -> bool:  # fmt: skip
        """Whether a slice of ``shape`` at ``spacing_yx`` spans more than ``factor`` x the training field
        of view in either axis."""
        return any(n * s > factor * fov for n, s, fov in zip(shape, spacing_yx, self.fov_mm, strict=True))


def training_view(patients: Sequence[dict[str, Any]]) -> View:
    """The :class:`View` of training patients, from the store's per-patient metadata (``patients.json``:
    ``shape_tzyx`` and ``spacing_zyx_mm`` of the original images). Medians, so a few unusual scans do not
    move it."""
    if not patients:
        raise ValueError("training_view needs at least one patient")
    shape = np.array([p["shape_tzyx"][-2:] for p in patients], dtype=np.float64)
    spacing = np.array([p["spacing_zyx_mm"][-2:] for p in patients], dtype=np.float64)
    fov, step = np.median(shape * spacing, axis=0), np.median(spacing, axis=0)
    return View((float(fov[0]), float(fov[1])), (float(step[0]), float(step[1])))


def checkpoint_view(ckpt: dict[str, Any], name: str) -> View | None:
    """The :class:`View` a checkpoint records, or None for one written before views were recorded.

    Raises:
        DataError: the recorded view is malformed.
    """
    record = ckpt.get("view")
    if record is None:
        return None
    try:
        return from_dict(View, record, "view")
    except ConfigError as exc:
        raise DataError(name, f"checkpoint records an invalid view ({exc})") from None
