"""Learning-rate schedules as pure functions of training progress.

The rate is a function of (epoch, batch) only, never of scheduler state, so a training resumed from its
last checkpoint follows exactly the same curve as an uninterrupted one.

    constant: lr
    poly:     lr * (1 - p) ** 0.9            (nnU-Net's default), p = progress in [0, 1)
    cosine:   lr * 0.5 * (1 + cos(pi * p))
A linear warm-up from ~0 to lr over the first ``warmup_epochs`` epochs precedes poly and cosine.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "poly", "cosine")
POLY_EXPONENT = 0.9


def learning_rate(base_lr: float, schedule: str, progress_epochs: float, max_epochs: int,
                  warmup_epochs: float = 0.0) -> float:  # fmt: skip
    """The learning rate after ``progress_epochs`` (fractional: epoch - 1 + batch / n_batches) epochs.

    Args:
        base_lr: the peak rate (train.lr).
        schedule: one of :data:`SCHEDULES`.
        progress_epochs: epochs already done, in [0, max_epochs).
        max_epochs: the schedule's length (train.max_epochs); the decay reaches ~0 at its end.
        warmup_epochs: length of the linear warm-up (0 disables it).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if warmup_epochs > 0 and progress_epochs < warmup_epochs:
        return base_lr * (progress_epochs + 1e-3) / warmup_epochs
    if schedule == "constant":
        return base_lr
    span = max(float(max_epochs) - warmup_epochs, 1e-9)
    p = min(max((progress_epochs - warmup_epochs) / span, 0.0), 1.0)
    if schedule == "poly":
        return base_lr * (1.0 - p) ** POLY_EXPONENT
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * p))
