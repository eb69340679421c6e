"""The ``evaluate`` stage's settings (params.yaml ``evaluate``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.inference.postprocess import POSTPROCESS_MODES
from pipeline.inference.tta import TTA_MODES


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` section of params.yaml.

    postprocess: which variant the headline metrics use: "raw", "lcc" (largest connected component per
    structure) or "lcc_fill" (lcc, then holes filled); all are always computed and reported. Predict and
    serving apply the same one (pipeline.inference.postprocess).
    tta: test-time augmentation of the Segmenter: "none", "flips" or "dihedral".
    whole_cycle: segment every frame (volume curves, ED/ES from the curves, per-frame metrics).
    overlays: number of patients drawn as contour overlays at ED and ES.
    batch_size: clips per forward pass.
    """

    postprocess: str = "lcc_fill"
    tta: str = "flips"
    whole_cycle: bool = True
    overlays: int = 3
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.postprocess not in POSTPROCESS_MODES:
            raise ValueError(
                f"postprocess must be one of {list(POSTPROCESS_MODES)}, got {self.postprocess!r}"
            )
        if self.tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {list(TTA_MODES)}, got {self.tta!r}")
        if self.overlays < 0 or self.batch_size < 1:
            raise ValueError(
                f"overlays must be >= 0 and batch_size >= 1, got {self.overlays}, {self.batch_size}"
            )
