"""The preprocessed clip store: a folder of memory-mappable arrays plus small tables.

Layout of ``data/preprocessed/``::

    frames.npy       (F, S, S) float16   normalised, resized frames; every frame stored once
    labels.npy       (N, S, S) uint8     labels of each sample (one labelled frame of one slice)
    clip_rows.npy    (N, 2R+1) int32     rows of frames.npy forming each sample's clip, R = max_radius
    clips.npy        (N, 2r+1) int32     the same for the params radius r (the middle columns)
    samples.csv      N rows: patient, group, phase, slice, frame (0-based target frame)
    patients.json    per patient: original shape, spacing, affine, ED/ES, normalisation statistics
    manifest.csv     one row per (patient, phase) for data validation
    meta.json        size, radius, max_radius, counts, format version

Frames are shared between the clips of neighbouring samples, so the store stays compact, and a training
run can use any radius r <= R without re-running preprocess.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_directory
from pipeline.errors import DataError
from pipeline.preprocessing.clips import narrow
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.patient import PreprocessedPatient

FORMAT_VERSION = 1


def write_store(out_dir: Path, patients: list[PreprocessedPatient], cfg: PreprocessConfig) -> Path:
    """Concatenate per-patient results and write the store atomically (temporary folder, then rename)."""
    with atomic_directory(out_dir) as tmp:
        offsets = np.cumsum([0] + [len(p.frames) for p in patients])
        clip_rows = np.concatenate([p.clip_rows + off for p, off in zip(patients, offsets, strict=False)])
        np.save(tmp / "frames.npy", np.concatenate([p.frames for p in patients]))
        np.save(tmp / "labels.npy", np.concatenate([p.labels for p in patients]))
        np.save(tmp / "clip_rows.npy", clip_rows.astype(np.int32))
        np.save(tmp / "clips.npy", np.ascontiguousarray(narrow(clip_rows, cfg.radius)).astype(np.int32))
        pd.DataFrame([s for p in patients for s in p.samples]).to_csv(tmp / "samples.csv", index=False)
        pd.DataFrame([r for p in patients for r in p.manifest]).to_csv(tmp / "manifest.csv", index=False)
        (tmp / "patients.json").write_text(json.dumps([p.meta for p in patients], indent=1))
        meta = {
            "format_version": FORMAT_VERSION,
            "config": asdict(cfg),
            "n_patients": len(patients),
            "n_samples": len(clip_rows),
            "n_frames": int(offsets[-1]),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return Path(out_dir)


class ClipStore:
    """Read access to a preprocessed store; arrays are memory-mapped, not loaded.

    ``clip(i, r)`` returns the (2r+1, S, S) float32 clip of sample ``i`` and ``label(i)`` its (S, S) labels.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise DataError(
                self.root, "not a preprocessed store (meta.json is missing); run the preprocess stage"
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                meta_path,
                f"format version {self.meta.get('format_version')} != {FORMAT_VERSION}; re-run preprocess",
            )
        self.frames = np.load(self.root / "frames.npy", mmap_mode="r")
        self.labels = np.load(self.root / "labels.npy", mmap_mode="r")
        self.clip_rows = np.load(self.root / "clip_rows.npy", mmap_mode="r")
        self.samples = pd.read_csv(self.root / "samples.csv")
        self.patients: list[dict[str, Any]] = json.loads((self.root / "patients.json").read_text())

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker re-opens the memory maps from the path instead of receiving the arrays.
        return {"root": str(self.root)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    @property
    def max_radius(self) -> int:
        return int(self.meta["config"]["max_radius"])

    @property
    def size(self) -> int:
        return int(self.meta["config"]["size"])

    def __len__(self) -> int:
        return len(self.samples)

    def clip(self, index: int, radius: int) -> np.ndarray:
        """(2r+1, S, S) float32 clip of sample ``index``, target frame in the middle."""
        rows = narrow(self.clip_rows[index : index + 1], radius)[0]
        return np.asarray(self.frames[rows], dtype=np.float32)

    def label(self, index: int) -> np.ndarray:
        """(S, S) uint8 labels of sample ``index``."""
        return np.asarray(self.labels[index])

    def indices_for(self, patients: list[str]) -> np.ndarray:
        """Sample indices belonging to the given patient ids (e.g. one fold's training patients)."""
        return np.flatnonzero(self.samples["patient"].isin(patients).to_numpy())
