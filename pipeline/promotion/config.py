"""The ``register`` stage's settings (params.yaml ``register``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.config import check_range


@dataclass(frozen=True)
class RegisterConfig:
    """The ``register`` section of params.yaml.

    model_name: registered model name. metric: key of data/evaluation/metrics.json compared between
    versions (``mean_dice`` by default). higher_is_better: direction of ``metric``. min_margin: how much
    better a challenger must be to become champion. max_request_bytes: largest NIfTI a served model accepts.
    ensemble: log every trained fold in one model (their probabilities are averaged, nnU-Net's default);
    false logs the fold with the best validation Dice only.
    """

    model_name: str = "deunet-cardiac"
    metric: str = "mean_dice"
    higher_is_better: bool = True
    min_margin: float = 0.005
    max_request_bytes: int = 64 * 1024 * 1024
    ensemble: bool = True

    def __post_init__(self) -> None:
        check_range("min_margin", self.min_margin, 0.0, math.inf)
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be >= 1024, got {self.max_request_bytes}")
        if not self.model_name.strip():
            raise ValueError("model_name must not be empty")
