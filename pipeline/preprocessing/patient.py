"""Preprocess one patient: normalise, resize in-plane, gather the frames its clips need, record metadata."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.acdc import PatientRecord, patient_files, read_patient
from pipeline.preprocessing.clips import clip_frames
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.intensity import normalise
from pipeline.vocabulary import PHASES, STRUCTURES, voxel_volume_ml


@dataclass
class PreprocessedPatient:
    """What one patient contributes to the store.

    frames: (F, S, S) float16, the normalised resized frames its clips need (each stored once).
    frame_keys: (F, 2) int, the (slice, frame) of each stored frame.
    samples: one dict per labelled (phase, slice) sample with its target frame.
    labels: (N, S, S) uint8, the labels of each sample in ``samples`` order.
    clip_rows: (N, 2R+1) int, indices into ``frames`` of each sample's clip (before offsetting).
    meta: patient metadata (shape, spacing, ED/ES, normalisation statistics) for mapping back.
    manifest: one row per (patient, phase) for data validation.
    """

    frames: np.ndarray
    frame_keys: np.ndarray
    samples: list[dict[str, Any]]
    labels: np.ndarray
    clip_rows: np.ndarray
    meta: dict[str, Any]
    manifest: list[dict[str, Any]]


def _sha1(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes(), usedforsecurity=False).hexdigest()


def manifest_rows(record: PatientRecord, folder: Path) -> list[dict[str, Any]]:
    """One validation row per (patient, phase): the facts the Great Expectations suite checks."""
    t, z, y, x = record.cine.shape
    voxel_ml = voxel_volume_ml(record.spacing)
    files = patient_files(folder, record.patient_id, record.info)
    rows = []
    for phase in PHASES:
        lab = record.labels[phase]
        frame = record.cine[record.frame_index(phase)]
        values = np.unique(lab)
        row: dict[str, Any] = {
            "patient": record.patient_id,
            "group": record.info.group,
            "phase": phase,
            "frame": record.info.frame(phase),
            "nb_frames": record.info.nb_frames,
            "cine_frames": t,
            "slices": z,
            "rows": y,
            "cols": x,
            "label_slices": lab.shape[0],
            "label_rows": lab.shape[1],
            "label_cols": lab.shape[2],
            "spacing_z_mm": record.spacing[0],
            "spacing_y_mm": record.spacing[1],
            "spacing_x_mm": record.spacing[2],
            "label_min": int(values.min()),
            "label_max": int(values.max()),
            "intensity_min": float(frame.min()),
            "intensity_max": float(frame.max()),
            "intensity_finite": bool(np.isfinite(frame).all()),
            "height_cm": record.info.height_cm,
            "weight_kg": record.info.weight_kg,
            "label_file": str(files[f"{phase}_gt"]),
            # Content digest of the phase's image: the same image under two ids is a duplicate patient.
            "image_sha1": _sha1(frame),
            # With the labels' digest, a folder copied whole (same images, same labels) is told apart from
            # the same images annotated twice (ACDC's patient074 and patient076).
            "label_sha1": _sha1(lab),
        }
        for name, value in STRUCTURES.items():
            row[f"{name.lower()}_ml"] = float((lab == value).sum()) * voxel_ml
        rows.append(row)
    return rows


def preprocess_patient(folder: Path, cfg: PreprocessConfig) -> PreprocessedPatient:
    """Read, check and preprocess one ACDC patient folder (see :class:`PreprocessedPatient`)."""
    record = read_patient(folder, with_cine_labels=False)
    t, z, y, x = record.cine.shape
    norm, stats = normalise(record.cine, cfg.percentiles)

    # Frames needed by any clip of radius <= max_radius around ED and ES, each stored once.
    needed = sorted(
        {int(f) for phase in PHASES for f in clip_frames(record.frame_index(phase), t, cfg.max_radius)}
    )
    keys = np.array([(s, f) for s in range(z) for f in needed], dtype=np.int64)
    row_of = {(int(s), int(f)): i for i, (s, f) in enumerate(keys)}
    geometry, spacing_yx = cfg.network_geometry(), (float(record.spacing[1]), float(record.spacing[2]))
    # The padding value is the cine's (clipped) minimum, as Segmenter pads at inference.
    frames = geometry.images_to_network(norm[keys[:, 1], keys[:, 0]], spacing_yx, fill=float(norm.min()))
    frames = frames.astype(np.float16)

    samples: list[dict[str, Any]] = []
    label_slices, clip_rows = [], []
    for phase in PHASES:
        t0 = record.frame_index(phase)
        window = clip_frames(t0, t, cfg.max_radius)
        for s in range(z):
            samples.append(
                {
                    "patient": record.patient_id,
                    "group": record.info.group,
                    "phase": phase,
                    "slice": s,
                    "frame": t0,
                }
            )
            label_slices.append(record.labels[phase][s])
            clip_rows.append([row_of[(s, int(f))] for f in window])
    labels = geometry.labels_to_network(np.stack(label_slices), spacing_yx)

    meta = {
        "patient": record.patient_id,
        "group": record.info.group,
        "shape_tzyx": [t, z, y, x],
        "spacing_zyx_mm": list(record.spacing),
        "affine": record.affine.tolist(),
        "ed": record.info.ed,
        "es": record.info.es,
        "height_cm": record.info.height_cm,
        "weight_kg": record.info.weight_kg,
        "normalisation": stats,
        "source": str(folder),
    }
    return PreprocessedPatient(
        frames=frames,
        frame_keys=keys,
        samples=samples,
        labels=labels,
        clip_rows=np.asarray(clip_rows, dtype=np.int64),
        meta=meta,
        manifest=manifest_rows(record, folder),
    )
