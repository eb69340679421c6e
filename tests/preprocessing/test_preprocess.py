"""Preprocessing: wrapped clips, normalisation, resizing, the memory-mapped store, and no partial output."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.acdc import write_patient
from pipeline.errors import DataError
from pipeline.preprocessing.clips import clip_frames, narrow
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.geometry import Geometry
from pipeline.preprocessing.intensity import apply_normalisation, normalise
from pipeline.preprocessing.run import preprocess_dataset
from pipeline.preprocessing.store import ClipStore
from tests.conftest import make_record


def test_clip_frames_wrap_around_the_cycle() -> None:
    assert clip_frames(0, 10, 2).tolist() == [8, 9, 0, 1, 2]
    assert clip_frames(9, 10, 1).tolist() == [8, 9, 0]
    assert clip_frames(4, 10, 0).tolist() == [4]
    with pytest.raises(ValueError, match=r"t0 must be in 0\.\.9"):
        clip_frames(10, 10, 1)
    table = np.arange(14).reshape(2, 7)
    assert narrow(table, 1).tolist() == [[2, 3, 4], [9, 10, 11]]
    with pytest.raises(ValueError, match="exceeds the stored clip radius 3"):
        narrow(table, 4)


def test_normalise_is_replayable() -> None:
    rng = np.random.default_rng(0)
    cine = rng.gamma(2.0, 100.0, (4, 3, 16, 16)).astype(np.float32)
    out, stats = normalise(cine, (1.0, 99.0))
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-3
    assert out.max() <= (stats["high"] - stats["mean"]) / stats["std"] + 1e-5
    np.testing.assert_allclose(apply_normalisation(cine, stats), out, atol=1e-6)


def test_resize_labels_keeps_classes_and_identity() -> None:
    lab = np.zeros((1, 32, 32), np.uint8)
    lab[0, 8:24, 8:24] = 2
    lab[0, 12:20, 12:20] = 3
    same = Geometry("resize", 32).labels_to_network(lab)
    np.testing.assert_array_equal(same, lab)
    small = Geometry("resize", 16).labels_to_network(lab)
    assert set(np.unique(small)) == {0, 2, 3}
    assert (small == 3).sum() == 16  # 8x8 -> 4x4


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="size must be a multiple of 8"):
        PreprocessConfig(size=60)
    with pytest.raises(ValueError, match=r"radius must be in 0\.\.max_radius=2"):
        PreprocessConfig(radius=3, max_radius=2)


def _dataset(root: Path, n: int = 3) -> Path:
    for i in range(n):
        write_patient(make_record(f"patient{i + 1:03d}", seed=i), root)
    return root


def test_store_contents(tmp_path: Path) -> None:
    raw = _dataset(tmp_path / "raw")
    cfg = PreprocessConfig(size=16, radius=1, max_radius=2, workers=1)
    store = ClipStore(preprocess_dataset(raw, tmp_path / "pre", cfg, progress=False))

    # 3 patients x 2 phases x 3 slices
    assert len(store) == 18 and store.size == 16 and store.max_radius == 2
    assert isinstance(store.frames, np.memmap) and store.frames.dtype == np.float16
    # frames stored once: ED=frame0, ES=frame3 of 6, radius 2 -> {4,5,0,1,2} U {1,2,3,4,5} = 6 frames x 3 slices
    assert store.meta["n_frames"] == 3 * 6 * 3
    row = store.samples.iloc[4]
    assert (row.patient, row.phase, row.slice, row.frame) == ("patient001", "ES", 1, 3)
    clip = store.clip(4, 1)
    assert clip.shape == (3, 16, 16) and clip.dtype == np.float32
    # the clip's middle frame is the resized, normalised ES frame of slice 1
    patient = store.patients[0]
    assert patient["shape_tzyx"] == [6, 3, 20, 24] and patient["es"] == 4
    np.testing.assert_array_equal(store.clip(4, 2)[1:4], clip)
    assert np.load(tmp_path / "pre" / "clips.npy").shape == (18, 3)
    assert set(np.unique(store.label(4))) <= {0, 1, 2, 3} and (store.label(4) == 3).any()
    assert list(store.indices_for(["patient002"])) == list(range(6, 12))
    manifest = (tmp_path / "pre" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 6  # header + (patient, phase) rows


def test_wrapped_clip_uses_last_frames(tmp_path: Path) -> None:
    raw = _dataset(tmp_path / "raw", 1)
    store = ClipStore(
        preprocess_dataset(
            raw, tmp_path / "pre", PreprocessConfig(size=24, max_radius=1, workers=1), progress=False
        )
    )
    # sample 0 is ED (frame 0) of slice 0: its clip is frames (5, 0, 1) of the cycle
    meta = store.patients[0]["normalisation"]
    rec = make_record("patient001", seed=0)
    from pipeline.preprocessing.intensity import apply_normalisation as norm

    expected = Geometry("resize", 24).images_to_network(norm(rec.cine[[5, 0, 1], 0], meta))
    expected = expected.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(store.clip(0, 1), expected)


def test_bad_patient_leaves_previous_output(tmp_path: Path) -> None:
    raw = _dataset(tmp_path / "raw")
    out = preprocess_dataset(raw, tmp_path / "pre", PreprocessConfig(size=16, workers=1), progress=False)
    before = json.loads((out / "meta.json").read_text())
    bad = raw / "patient002" / "patient002_frame01_gt.nii.gz"
    data = np.full((24, 20, 3), 9, np.uint8)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(bad))
    with pytest.raises(DataError, match=r"patient002_frame01_gt\.nii\.gz: label values"):
        preprocess_dataset(raw, tmp_path / "pre", PreprocessConfig(size=32, workers=2), progress=False)
    assert json.loads((out / "meta.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre", "raw"]  # no temporary folders


def test_real_acdc_two_patients(acdc_roi: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for pid in ("patient002", "patient004"):
        (raw / pid).symlink_to(acdc_roi / pid)
    store = ClipStore(
        preprocess_dataset(raw, tmp_path / "pre", PreprocessConfig(size=64, workers=2), progress=False)
    )
    assert len(store) == 2 * 2 * 7
    lab = np.asarray(store.labels)
    assert set(np.unique(lab)) == {0, 1, 2, 3}
    assert np.isfinite(np.asarray(store.frames, dtype=np.float32)).all()
