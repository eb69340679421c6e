"""A model trained on heart-centred crops, applied to a full field of view: Dice and time with and without
locating the heart first, and the README's figure of a predicted full-field-of-view slice.

Trains a small U-Net on phantom crops (96 x 96 at 1.4-1.8 mm, ~150 mm around the heart; ~30 s on one
core), then segments 5 held-out phantom hearts at training's field of view, at twice it, and at ~2x with
another spacing (320 x 320 at 0.85-1.0 mm), with ``locate`` auto and off. The phantom has a tissue-and-lung
background, so a larger matrix really is a larger field of view. Writes the figure to
docs/figures/full_fov_prediction.png (``--figure`` to change).

    python -m benchmarks.fov_demo
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.checkpoint.io import load_checkpoint
from pipeline.data.phantom import PhantomConfig, generate_dataset, iter_records
from pipeline.evaluation.figures import overlay_figure
from pipeline.evaluation.metrics import dice
from pipeline.inference.predict import Segmenter
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.run import preprocess_dataset
from pipeline.preprocessing.store import ClipStore
from pipeline.training.config import TrainConfig
from pipeline.training.trainer import train_fold
from pipeline.vocabulary import PHASES, STRUCTURES

REPO = Path(__file__).resolve().parents[1]
#: Heart-centred crops like acdc-roi's: 96 px at 1.4-1.8 mm, about 150 mm around the heart.
TRAIN = PhantomConfig(n_patients=10, matrix=(96, 96), inplane_spacing_mm=(1.4, 1.8), n_frames=(8, 10),
                      n_slices=(4, 6))  # fmt: skip
#: The same 5 held-out hearts at every field of view (a patient's anatomy does not depend on the matrix).
TEST = replace(TRAIN, n_patients=5, seed=7)
VIEWS = {"1x (96 px, 1.4-1.8 mm)": TEST, "2x (192 px, 1.4-1.8 mm)": replace(TEST, matrix=(192, 192)),
         "~2x (320 px, 0.85-1.0 mm)": replace(TEST, matrix=(320, 320), inplane_spacing_mm=(0.85, 1.0))}  # fmt: skip
#: ~25 s on one core (Dice ~0.93 at training's field of view).
CFG = TrainConfig(model="unet", model_args={"base_channels": 8, "depth": 3}, max_epochs=40, batch_size=8,
                  lr=3e-3, patience=40, threads=1)  # fmt: skip


def train(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A checkpoint trained on TRAIN's patients (8 trained, 2 validated) under ``folder``, and the store's
    metadata of the 8 it was trained on (tests/inference/test_field_of_view.py uses both)."""
    generate_dataset(folder / "raw", TRAIN)
    preprocess_dataset(folder / "raw", folder / "pre", PreprocessConfig(size=48, workers=1), progress=False)
    store = ClipStore(folder / "pre")
    ids = sorted(p["patient"] for p in store.patients)
    result = train_fold(store, ids[:-2], ids[-2:], CFG, folder / "work", 0, progress=False)
    trained = set(ids[:-2])
    return load_checkpoint(folder / "work" / result.model_file), [
        p for p in store.patients if p["patient"] in trained
    ]


def score(seg: Segmenter, cfg: PhantomConfig) -> tuple[float, float]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "figures" / "full_fov_prediction.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ckpt, _ = train(Path(tmp))
        print(f"trained {CFG.model} {CFG.model_args} on {TRAIN.n_patients - 2} phantom crops in "
              f"{time.perf_counter() - start:.0f} s; recorded view {ckpt['view']}")  # fmt: skip
    segs = {mode: Segmenter.from_checkpoint(ckpt, locate=mode) for mode in ("auto", "off")}
    print(
        f"{'field of view':>26} | {'Dice locate auto':>16} | {'Dice off':>8} | {'s/patient auto':>14} | {'off':>5}"
    )
    for name, cfg in VIEWS.items():
        (d_auto, t_auto), (d_off, t_off) = score(segs["auto"], cfg), score(segs["off"], cfg)
        print(f"{name:>26} | {d_auto:16.3f} | {d_off:8.3f} | {t_auto:14.2f} | {t_off:5.2f}")
    rec = next(iter_records(VIEWS["~2x (320 px, 0.85-1.0 mm)"]))
    ed, z = rec.frame_index("ED"), rec.n_slices // 2
    preds = [segs[m].predict(rec.cine, [ed], spacing=rec.spacing)[0] for m in ("auto", "off")]
    truth = rec.labels["ED"]
    panels = [f"locate {m}\nslice Dice " + ", ".join(f"{n} {dice(p[z] == v, truth[z] == v):.2f}" for n, v in STRUCTURES.items())
              for m, p in zip(("auto", "off"), preds, strict=True)]  # fmt: skip
    overlay_figure(np.stack([rec.cine[ed, z]] * 2), np.stack([truth[z]] * 2), np.stack([p[z] for p in preds]),
                   [0, 1], args.figure, spacing=rec.spacing, panel_titles=panels,
                   title=f"Phantom, full field of view ({rec.cine.shape[-1]} px at {rec.spacing[-1]:.2f} mm), "
                         "model trained on ~150 mm crops")  # fmt: skip
    print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
