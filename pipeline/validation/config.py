"""The ``validate`` stage's settings (params.yaml ``validate``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import check_pair


@dataclass(frozen=True)
class ValidateConfig:
    """The ``validate`` section of params.yaml: plausible ranges for cine MRI of the heart."""

    inplane_spacing_mm: tuple[float, float] = (0.5, 3.0)
    slice_spacing_mm: tuple[float, float] = (3.0, 15.0)
    frames: tuple[int, int] = (8, 60)
    slices: tuple[int, int] = (3, 30)
    inplane_pixels: tuple[int, int] = (48, 1024)
    min_structure_ml: float = 0.1

    def __post_init__(self) -> None:
        check_pair("inplane_spacing_mm", self.inplane_spacing_mm, low=0.0)
        check_pair("slice_spacing_mm", self.slice_spacing_mm, low=0.0)
        check_pair("frames", self.frames, low=1)
        check_pair("slices", self.slices, low=1)
        check_pair("inplane_pixels", self.inplane_pixels, low=1)
