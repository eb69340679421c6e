"""The compact acdc-roi bundle that travels to a lent GPU machine (``benchmarks.gpu_check`` prepares and reads it).

The device machine receives the working tree and a few ignored folders (64 MiB in all), never
``../shared``. A 256 x 256 clip store of acdc-roi would be ~435 MB, and the raw NIfTI files are 145 MB, so
the bundle keeps, per patient, only the frames that clips of radius r <= 1 need (ED and ES with one
neighbour on each side: 3-6 of the cine's 12-35 frames) as int16 (lossless: ACDC stores int16), with the
ED/ES labels, spacing, affine and Info.cfg values, in one compressed ``.npz`` per patient. On the machine,
:func:`materialise` writes them back as ACDC-layout folders, so preprocessing, training and evaluation run
the project's own code unchanged (the ``preprocess`` at 256 px runs there, where it is fast).

The kept frames are in their original order, so every clip of radius <= 1 (wrapping around the cycle) is
exactly the original one. One difference is known: the per-patient intensity percentiles and z-score
are computed over the kept frames instead of the whole cycle (measured on the 79 acdc-roi patients: the
mean, std and upper percentile move by a median of 0.4-0.6 %, at most 2 %, 4 % and 5 %).

Layout of a bundle folder::

    bundle.json              source, patients, fold-0 validation patients, check patient, sizes
    patientNNN.npz           cine (T', Z, Y, X) int16, kept (T',) original 0-based frames, gt_ed, gt_es
                             (Z, Y, X) uint8, spacing (z, y, x) mm, affine 4x4, info (ED, ES, NbFrame, ...)
    check_cine.npz           the whole cine of one fold-0 validation patient (CPU vs CUDA check)

``site/`` beside the bundle holds nibabel (pure Python, tests dropped): the device image has none, and
the pipeline's image I/O needs it. What comes back is within the same limit: :func:`fp16_weights` writes
a trained checkpoint's weights in half precision.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.acdc import PatientInfo, PatientRecord, list_patients, read_patient, write_patient
from pipeline.preprocessing.clips import clip_frames
from pipeline.vocabulary import PHASES

#: Clips of radius <= KEEP_RADIUS are exact in a bundle (the paper uses r = 1).
KEEP_RADIUS = 1
BUNDLE_VERSION = 1


def kept_frames(record: PatientRecord, radius: int = KEEP_RADIUS) -> list[int]:
    """0-based frames any clip of ``radius`` around ED or ES reads, in cine order (wrap included)."""
    return sorted(
        {int(f) for p in PHASES for f in clip_frames(record.frame_index(p), record.n_frames, radius)}
    )


def _int16(cine: np.ndarray, pid: str) -> np.ndarray:
    if not np.array_equal(cine, np.round(cine)) or cine.min() < -(2**15) or cine.max() >= 2**15:
        raise ValueError(f"{pid}: intensities are not int16 values; the bundle stores int16 only")
    return cine.astype(np.int16)


def pack(record: PatientRecord, radius: int = KEEP_RADIUS) -> dict[str, Any]:
    """The arrays of one patient's bundle file (see the module doc), by name."""
    keep = kept_frames(record, radius)
    info = record.info
    meta = {"ed": info.ed, "es": info.es, "nb_frames": info.nb_frames, "group": info.group,
            "height_cm": info.height_cm, "weight_kg": info.weight_kg}  # fmt: skip
    return {
        "cine": _int16(record.cine[keep], record.patient_id),
        "kept": np.asarray(keep, dtype=np.int16),
        "gt_ed": record.labels["ED"].astype(np.uint8),
        "gt_es": record.labels["ES"].astype(np.uint8),
        "spacing": np.asarray(record.spacing, dtype=np.float64),
        "affine": np.asarray(record.affine, dtype=np.float64),
        "info": np.asarray(json.dumps(meta)),
    }


def unpack(pid: str, arrays: Any) -> PatientRecord:
    """The patient a bundle file describes, with the kept frames as its cine (ED/ES renumbered)."""
    meta = json.loads(str(arrays["info"]))
    kept = [int(f) for f in arrays["kept"]]
    info = PatientInfo(ed=kept.index(meta["ed"] - 1) + 1, es=kept.index(meta["es"] - 1) + 1,
                       nb_frames=len(kept), group=meta["group"], height_cm=meta["height_cm"],
                       weight_kg=meta["weight_kg"])  # fmt: skip
    spacing = tuple(float(s) for s in arrays["spacing"])
    return PatientRecord(patient_id=pid, cine=arrays["cine"].astype(np.float32),
                         spacing=(spacing[0], spacing[1], spacing[2]), affine=np.asarray(arrays["affine"]),
                         info=info, labels={"ED": arrays["gt_ed"], "ES": arrays["gt_es"]})  # fmt: skip


def fold0_validation(
    records: list[PatientRecord], folders: list[Path] | None, split: dict[str, Any]
) -> list[str]:
    """Fold 0's validation patients of the pipeline's split (duplicate images kept in one fold)."""
    import pandas as pd

    from pipeline.config import section
    from pipeline.preprocessing.patient import manifest_rows
    from pipeline.splitting.config import SplitConfig
    from pipeline.splitting.folds import make_split
    from pipeline.validation.duplicates import duplicate_image_groups

    places = folders or [Path(r.patient_id) for r in records]
    manifest = pd.DataFrame(
        [row for r, f in zip(records, places, strict=True) for row in manifest_rows(r, f)]
    )
    groups = {r.patient_id: r.info.group for r in records}
    cfg = section({"split": split}, "split", SplitConfig)
    return list(make_split(groups, cfg, duplicate_image_groups(manifest))["folds"][0]["val"])


def write_bundle(records: Iterable[PatientRecord], out: Path, source: str, split: dict[str, Any],
                 folders: list[Path] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the bundle of ``records`` to ``out`` (replacing it); returns its ``bundle.json`` content."""
    records = list(records)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for record in records:
        np.savez_compressed(out / f"{record.patient_id}.npz", **pack(record))
    val = fold0_validation(records, folders, split)
    check = next(r for r in records if r.patient_id == val[0])
    np.savez_compressed(out / "check_cine.npz", cine=_int16(check.cine, check.patient_id),
                        spacing=np.asarray(check.spacing), patient=np.asarray(check.patient_id))  # fmt: skip
    meta = {
        "version": BUNDLE_VERSION,
        "source": source,
        "keep_radius": KEEP_RADIUS,
        "patients": [r.patient_id for r in records],
        "fold0_val": val,
        "split": split,
        "check_patient": check.patient_id,
        "frames_kept": int(sum(len(kept_frames(r)) for r in records)),
        "frames_total": int(sum(r.n_frames for r in records)),
        "bytes": folder_bytes(out),
    }
    (out / "bundle.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def prepare(source: Path, out: Path, split: dict[str, Any]) -> dict[str, Any]:
    """Bundle every ACDC-layout patient under ``source`` into ``out`` and check one round trip."""
    folders = list_patients(source)
    records = [read_patient(f, with_cine_labels=False) for f in folders]
    meta = write_bundle(records, out, str(source), split, folders)
    first = records[0]
    back = unpack(first.patient_id, np.load(out / f"{first.patient_id}.npz"))
    keep = kept_frames(first)
    assert np.array_equal(back.cine, first.cine[keep]), "bundle round trip changed the cine"
    assert back.spacing == first.spacing and all(
        np.array_equal(back.labels[p], first.labels[p]) for p in PHASES
    )
    return meta


def copy_nibabel(site: Path) -> Path:
    """Copy the installed nibabel (without its tests) to ``site/nibabel`` for a machine that lacks it."""
    import nibabel

    src = Path(nibabel.__file__).parent
    dst = site / "nibabel"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.pyc"))
    return dst


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _write_one(args: tuple[Path, Path]) -> str:
    npz, raw_root = args
    pid = npz.stem
    with np.load(npz) as arrays:
        write_patient(unpack(pid, arrays), raw_root)
    return pid


def materialise(bundle: Path, raw_root: Path, workers: int = 1) -> list[str]:
    """Write every bundled patient as an ACDC-layout folder under ``raw_root``; returns the patient ids.

    Done once per ``raw_root``: an existing complete copy (``.complete`` marker) is reused.
    """
    meta = json.loads((bundle / "bundle.json").read_text())
    if (raw_root / ".complete").is_file():
        return list(meta["patients"])
    raw_root.mkdir(parents=True, exist_ok=True)
    jobs = [(bundle / f"{pid}.npz", raw_root) for pid in meta["patients"]]
    if workers > 1:  # spawn: the caller may hold CUDA and threads, which fork would copy
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_one, jobs))
    else:
        for job in jobs:
            _write_one(job)
    (raw_root / ".complete").write_text("")
    return list(meta["patients"])


def load_check_cine(bundle: Path) -> tuple[str, np.ndarray, tuple[float, float, float]]:
    """(patient id, whole cine (T, Z, Y, X) float32, spacing (z, y, x) mm) of the bundle's check patient."""
    with np.load(bundle / "check_cine.npz") as arrays:
        spacing = tuple(float(s) for s in arrays["spacing"])
        return str(arrays["patient"]), arrays["cine"].astype(np.float32), (spacing[0], spacing[1], spacing[2])


def synthetic_bundle(out: Path, split: dict[str, Any], n_patients: int = 6) -> dict[str, Any]:
    """A tiny bundle of the project's phantom (the dry run's data where no real bundle exists)."""
    from pipeline.data.phantom import PhantomConfig, iter_records

    cfg = PhantomConfig(n_patients=n_patients, matrix=(48, 48), n_frames=(8, 10), n_slices=(4, 5))
    records = [
        PatientRecord(r.patient_id, np.round(r.cine), r.spacing, r.affine, r.info, r.labels)
        for r in iter_records(cfg)
    ]
    return write_bundle(records, out, f"phantom: {n_patients} patients, 48 x 48", split)


def fp16_weights(ckpt: Path, out: Path) -> int:
    """``ckpt``'s weights as fp16, with what rebuilds the model (name, config, preprocessing, view, fold,
    epoch, validation Dice, params; ``Segmenter.from_files`` loads it), written to ``out``; its bytes."""
    import torch

    from pipeline.checkpoint.io import load_checkpoint

    ck = load_checkpoint(ckpt)
    keep = {"model_name", "model_config", "preprocess", "view", "fold", "epoch", "val_dice", "params"}
    payload = {k: v for k, v in ck.items() if k in keep}
    payload["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    return out.stat().st_size
