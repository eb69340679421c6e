"""A small model trained on phantom heart crops in about half a minute, and its Dice on phantom patients:
for checks that need a real trained model but no real data (the field-of-view demo and its tests)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.checkpoint.io import load_checkpoint
from pipeline.data.phantom import PhantomConfig, generate_dataset, iter_records
from pipeline.evaluation.metrics import dice
from pipeline.experiments.folds import fold_dir, train_folds
from pipeline.inference.predict import Segmenter
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.run import preprocess_dataset
from pipeline.preprocessing.store import ClipStore
from pipeline.training.config import TrainConfig
from pipeline.vocabulary import PHASES, STRUCTURES

#: Heart-centred crops like acdc-roi's: 96 px at 1.4-1.8 mm, about 150 mm around the heart.
CROPS = PhantomConfig(n_patients=10, matrix=(96, 96), inplane_spacing_mm=(1.4, 1.8), n_frames=(8, 10),
                      n_slices=(4, 6))  # fmt: skip
#: 5 other hearts, seen at training's field of view (a patient's anatomy does not depend on the matrix).
HELD_OUT = replace(CROPS, n_patients=5, seed=7)
#: ~25 s on one core (Dice ~0.93 at training's field of view).
SMALL_UNET = TrainConfig(model="unet", model_args={"base_channels": 8, "depth": 3}, max_epochs=40, batch_size=8,
                         lr=3e-3, patience=40, threads=1)  # fmt: skip


def train_on_crops(
    folder: Path, cfg: TrainConfig = SMALL_UNET
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A checkpoint trained on :data:`CROPS` (8 patients trained, 2 validated) under ``folder``, and the clip
    store's metadata of the 8 it was trained on."""
    generate_dataset(folder / "raw", CROPS)
    preprocess_dataset(folder / "raw", folder / "pre", PreprocessConfig(size=48, workers=1), progress=False)
    store = ClipStore(folder / "pre")
    ids = sorted(p["patient"] for p in store.patients)
    split = {"folds": [{"train": ids[:-2], "val": ids[-2:]}]}
    (result,) = train_folds(store, split, cfg, folder / "work", [0], progress=False)
    trained = set(ids[:-2])
    ckpt = load_checkpoint(fold_dir(folder / "work", 0) / result.model_file)
    return ckpt, [p for p in store.patients if p["patient"] in trained]


def phantom_dice(seg: Segmenter, cfg: PhantomConfig) -> tuple[float, float]:
    """Mean 3D Dice (LV, MYO, RV at ED and ES) over ``cfg``'s patients, and seconds per patient."""
    scores, seconds = [], 0.0
    for rec in iter_records(cfg):
        start = time.perf_counter()
        pred = seg.predict(rec.cine, [rec.frame_index(p) for p in PHASES], spacing=rec.spacing)
        seconds += time.perf_counter() - start
        scores += [
            dice(pred[i] == v, rec.labels[p] == v) for i, p in enumerate(PHASES) for v in STRUCTURES.values()
        ]
    return float(np.mean(scores)), seconds / cfg.n_patients
