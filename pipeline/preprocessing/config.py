"""The ``preprocess`` stage's settings (params.yaml ``preprocess``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import check_pair
from pipeline.preprocessing.geometry import Geometry


@dataclass(frozen=True)
class PreprocessConfig:
    """The ``preprocess`` section of params.yaml.

    size: in-plane output size in pixels (the paper uses 256).
    radius: the temporal radius r of the clip table written as ``clips.npy`` (clips have 2r+1 frames).
    max_radius: frames kept around every labelled frame, so training can use any r <= max_radius
        without re-running preprocess (Optuna tunes r).
    percentiles: intensity clipping percentiles before z-scoring.
    workers: processes used to read and resize patients.
    geometry: "resize" (the paper: every slice to size x size) or "spacing" (resample to spacing_mm per
        pixel, then centre-crop/pad to size x size; see pipeline.preprocessing.geometry).
    spacing_mm: the in-plane target spacing of geometry "spacing".
    """

    size: int = 64
    radius: int = 1
    max_radius: int = 3
    percentiles: tuple[float, float] = (0.5, 99.5)
    workers: int = 2
    geometry: str = "resize"
    spacing_mm: float = 1.5

    def __post_init__(self) -> None:
        self.network_geometry()  # checks geometry and spacing_mm
        if self.size < 8 or self.size % 8:
            raise ValueError(f"size must be a multiple of 8 and >= 8 (U-Net pooling), got {self.size}")
        if not 0 <= self.radius <= self.max_radius:
            raise ValueError(f"radius must be in 0..max_radius={self.max_radius}, got {self.radius}")
        check_pair("percentiles", self.percentiles, low=0.0)
        if self.percentiles[1] > 100:
            raise ValueError(f"percentiles must be within 0..100, got {list(self.percentiles)}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def network_geometry(self) -> Geometry:
        """The in-plane map to the network's input that training and inference share."""
        return Geometry(self.geometry, self.size, self.spacing_mm)  # type: ignore[arg-type]
