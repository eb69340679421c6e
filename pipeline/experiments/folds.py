"""The fold loop: a split's folds as patient lists, and training a model on each of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.preprocessing.store import ClipStore
from pipeline.training.config import TrainConfig
from pipeline.training.trainer import FoldResult, train_fold

#: The "fold" of a model trained on every patient of the split (a model to ship).
ALL = -1


def fold_patients(split: dict[str, Any], fold: int) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` of ``fold``. :data:`ALL`: every patient of the split trained, fold 0's
    validation patients validated (then among the trained ones: a progress monitor only; the recipe's
    cross-validation is what measures such a model)."""
    folds = split["folds"]
    if fold == ALL:
        every = sorted(p for f in folds for p in f["val"])
        return {"train": every, "val": list(folds[0]["val"])}
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold {fold} out of range: the split has folds 0..{len(folds) - 1} (or {ALL}: all)")
    return {"train": list(folds[fold]["train"]), "val": list(folds[fold]["val"])}


def fold_dir(work: Path, fold: int) -> Path:
    """Where a run keeps one fold's checkpoints: ``fold<k>``, or ``all`` for :data:`ALL`."""
    return work / ("all" if fold == ALL else f"fold{fold}")


def train_folds(store: ClipStore, split: dict[str, Any], cfg: TrainConfig, work: Path,
                folds: Sequence[int] | None = None, *, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                progress: bool = True, stop: Callable[[int, dict[str, float]], bool] | None = None,
                ) -> list[FoldResult]:  # fmt: skip
    """Train (or resume) ``cfg``'s model on each of ``folds`` (default ``cfg.folds``) of ``split``, one after
    the other, each in :func:`fold_dir` of ``work``; ``on_epoch(fold, row)`` after every epoch;
    ``stop(fold, row)`` True ends that fold's training at the epoch (see the trainer's ``train_fold``).

    The seed of a fold is the trainer's (``cfg.seed`` and the fold number; :data:`ALL` counts as the
    fold after the last), so a run is the same whichever loop trains it.
    """
    results = []
    for fold in cfg.folds if folds is None else folds:
        spec = fold_patients(split, fold)
        seed_fold = len(split["folds"]) if fold == ALL else fold

        def epoch_done(row: dict[str, float], fold: int = fold) -> None:
            on_epoch(fold, row)  # type: ignore[misc]  # only passed when on_epoch is set

        def stop_here(row: dict[str, float], fold: int = fold) -> bool:
            return stop(fold, row)  # type: ignore[misc]  # only passed when stop is set

        results.append(train_fold(store, spec["train"], spec["val"], cfg, fold_dir(work, fold), seed_fold,
                                  epoch_done if on_epoch else None, progress=progress,
                                  stop=stop_here if stop else None))  # fmt: skip
    return results
