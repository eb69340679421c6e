"""One fold trained against a wall-clock deadline, and its real training throughput.

:func:`train_until` trains like :func:`~pipeline.experiments.folds.train_folds` and ends cleanly after an
epoch once the next (as long as the last one) would end after ``deadline``, publishing that epoch's
weights; :class:`TimedFold` holds each epoch's wall time beside the trainer's own rows, so that a caller can set the real clips/s of
an epoch against a model's raw step rate (``benchmarks.gpu_check`` plans Table 1 on a lent GPU this way).
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.experiments.folds import fold_dir, train_folds
from pipeline.preprocessing.store import ClipStore
from pipeline.training.config import TrainConfig


@dataclass
class TimedFold:
    """A fold trained by :func:`train_until`."""

    checkpoint: (
        Path  # the published model file (the last epoch's weights, whether or not the clock stopped it)
    )
    stopped_by_clock: bool
    steps: str | None  # how the steps ran (FoldResult.steps)
    history: list[dict[str, float]]  # the trainer's rows, each with ``wall_s``: from the previous epoch's end
    seconds: float  # the whole training, setup included

    def median_s(self, key: str, drop_last: bool = False) -> float | None:
        """Median ``key`` (``train_s``: the training part; ``wall_s``: the whole epoch) over the epochs after
        the first (which pays for warm-up); ``drop_last``: the last one left out too where others remain."""
        later = self.history[1:]
        later = (later[:-1] or later) if drop_last else later
        return statistics.median(h[key] for h in later) if later else None

    def rates(self, clips: int, raw: float | None, drop_last: bool = False) -> dict[str, float | None]:
        """Real clips/s of the training part and of the whole epoch (``clips`` an epoch), and their shares of
        ``raw``, the model's raw step rate."""
        real, wall = (self.median_s(k, drop_last) for k in ("train_s", "wall_s"))
        real, wall = (clips / s if s else None for s in (real, wall))
        return {"real_clips_per_s": real, "wall_clips_per_s": wall, "raw_clips_per_s": raw,
                "real_fraction": real / raw if real and raw else None,
                "wall_fraction": wall / raw if wall and raw else None}  # fmt: skip


def train_until(store: ClipStore, split: dict[str, Any], cfg: TrainConfig, work: Path, fold: int,
                deadline: float | None = None) -> TimedFold:  # fmt: skip
    """Train ``fold`` of ``split`` afresh in :func:`~pipeline.experiments.folds.fold_dir` of ``work``;
    ``deadline`` (``time.monotonic()`` seconds, None: none): end after an epoch when another as long as it
    would end later (the last planned epoch always ends the training). A training the clock ended publishes
    the weights of its last epoch, as one that ran its schedule does."""
    shutil.rmtree(fold_dir(work, fold), ignore_errors=True)
    history: list[dict[str, float]] = []
    start = time.monotonic()
    clock = {"stopped": False}

    def out_of_time(_: int, row: dict[str, float]) -> bool:
        now = time.monotonic()
        wall = now - (history[-1]["ended"] if history else start)
        history.append({**row, "ended": now, "wall_s": wall})
        clock["stopped"] = deadline is not None and row["epoch"] < cfg.max_epochs and now + wall > deadline
        return clock["stopped"]

    (trained,) = train_folds(store, split, cfg, work, [fold], stop=out_of_time, progress=False)
    ckpt = fold_dir(work, fold) / trained.model_file
    return TimedFold(ckpt, clock["stopped"], trained.steps, history, time.monotonic() - start)
