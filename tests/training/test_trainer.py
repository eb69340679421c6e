"""train_fold in-process: the poly schedule, deep supervision and ``select: last`` survive a resume exactly;
early stopping by patience, ``select: best``, a finished run reused, crop windows, sparse validation."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.training.augment import AugmentConfig
from pipeline.training.config import TrainConfig
from pipeline.training.trainer import train_fold

CFG = TrainConfig(model="unet", model_args={"base_channels": 4, "depth": 2}, max_epochs=3, batch_size=8,
                  patience=3, seed=1, threads=1, schedule="poly", warmup_epochs=1, deep_supervision=1,
                  select="last")  # fmt: skip


class _Stop(Exception):
    pass


def _stop_after(epoch: int):  # type: ignore[no-untyped-def]
    def callback(row: dict[str, float]) -> None:
        if row["epoch"] == epoch:
            raise _Stop

    return callback


def test_interrupted_training_with_schedule_and_deep_supervision_resumes_exactly(
    tiny_data: Path, tmp_path: Path
) -> None:
    store, spec = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")["folds"][0]
    clean = train_fold(store, spec["train"], spec["val"], CFG, tmp_path / "clean", 0, progress=False)
    with pytest.raises(_Stop):
        train_fold(
            store, spec["train"], spec["val"], CFG, tmp_path / "cut", 0, _stop_after(2), progress=False
        )
    resumed = train_fold(store, spec["train"], spec["val"], CFG, tmp_path / "cut", 0, progress=False)
    assert resumed.resumed_from == 2 and resumed.epochs_run == clean.epochs_run == 3
    assert clean.model_file == "final.pt"
    a = torch.load(tmp_path / "clean" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0)
    lrs = [row["lr"] for row in clean.history]
    assert lrs[0] < CFG.lr and lrs[1] > lrs[2] > 0  # warm-up, then the poly decay (per batch)
    assert [r["lr"] for r in resumed.history] == lrs
    assert torch.load(tmp_path / "clean" / "last.pt", weights_only=True)["aux_heads"]


def test_bad_training_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        TrainConfig(warmup_epochs=-1)
    with pytest.raises(ValueError, match="ce_weight and dice_weight"):
        TrainConfig(ce_weight=0.0, dice_weight=0.0)


def test_crop_windows_and_sparse_validation(tiny_data: Path, tmp_path: Path) -> None:
    """Training on 16 x 16 windows of the 32 x 32 store, scored every 2nd epoch and after the last."""
    store, spec = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")["folds"][0]
    cfg = replace(CFG, deep_supervision=0, val_every=2, augment=AugmentConfig(crop=16))
    result = train_fold(store, spec["train"], spec["val"], cfg, tmp_path / "crop", 0, progress=False)
    scored = [not math.isnan(row["val_dice"]) for row in result.history]
    assert scored == [False, True, True]  # epochs 2 and 3 (the last)
    assert 0 <= result.history[-1]["val_dice"] <= 1 and result.best_epoch in (2, 3)
    for crop in (40, 10):  # larger than the store's 32 px; not a multiple of the U-Net's 4
        bad = replace(cfg, augment=AugmentConfig(crop=crop))
        with pytest.raises(ConfigError, match=f"train.augment.crop: {crop} must be"):
            train_fold(store, spec["train"], spec["val"], bad, tmp_path / f"bad{crop}", 0, progress=False)


def test_patience_stops_early_select_best_publishes_that_epoch_and_a_finished_run_is_reused(
    tiny_data: Path, tmp_path: Path
) -> None:
    """A learning rate too small to move any weight: the validation Dice never improves on epoch 1's, so
    training stops ``patience`` epochs later, long before max_epochs."""
    store, spec = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")["folds"][0]
    cfg = replace(CFG, lr=1e-30, schedule="constant", warmup_epochs=0, deep_supervision=0, max_epochs=6,
                  patience=2, select="best")  # fmt: skip
    work = tmp_path / "run"
    result = train_fold(store, spec["train"], spec["val"], cfg, work, 0, progress=False)
    assert (result.epochs_run, result.best_epoch, result.model_file) == (3, 1, "best.pt")
    dice = [row["val_dice"] for row in result.history]
    assert dice == [result.best_dice] * 3
    best = torch.load(work / "best.pt", weights_only=True)
    assert (best["epoch"], best["val_dice"]) == (1, result.best_dice)
    assert torch.load(work / "final.pt", weights_only=True)["epoch"] == 3  # what select: last would publish
    assert torch.load(work / "last.pt", weights_only=True)["finished"]

    epochs: list[dict[str, float]] = []
    again = train_fold(store, spec["train"], spec["val"], cfg, work, 0, epochs.append, progress=False)
    assert not epochs and again.resumed_from == 3 and again.history == result.history
    assert (again.best_epoch, again.best_dice, again.model_file) == (1, result.best_dice, "best.pt")


def test_a_fold_without_validation_samples_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    store, spec = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")["folds"][0]
    with pytest.raises(ValueError, match=r"fold 0: \d+ training and 0 validation samples; need both"):
        train_fold(store, spec["train"], ["patient999"], CFG, tmp_path / "run", 0, progress=False)
    assert not (tmp_path / "run").exists()
