"""The ``split`` stage's settings (params.yaml ``split``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SplitConfig:
    """The ``split`` section of params.yaml.

    n_folds: number of cross-validation folds (the paper uses 5).
    seed: shuffling seed; the same seed and patients give the same file.
    test_fraction: share of each group held out as a fixed test set (0 = none).
    test_patients: explicit test patients (overrides test_fraction when not empty).
    """

    n_folds: int = 5
    seed: int = 0
    test_fraction: float = 0.0
    test_patients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
