"""Tests of the synthetic cine phantom (pipeline.data.phantom): layout, determinism, anatomy, image model."""

from __future__ import annotations

import dataclasses
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from pipeline.data.acdc import GROUPS, PatientRecord, read_patient
from pipeline.data.phantom import (
    PhantomConfig,
    generate_dataset,
    ground_truth_volumes,
    iter_records,
    make_patient,
)

CFG = PhantomConfig(n_patients=5, seed=7)  # one patient per group
LV_EF = {
    "NOR": (0.55, 0.70),
    "DCM": (0.10, 0.35),
    "HCM": (0.65, 0.85),
    "MINF": (0.20, 0.45),
    "RV": (0.50, 0.65),
}
EF_TOL = 0.08  # label discretisation


@pytest.fixture(scope="module")
def records() -> list[PatientRecord]:
    return list(iter_records(CFG))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("phantom")
    return root, generate_dataset(root, CFG)


def _patient(cfg: PhantomConfig, index: int = 0) -> PatientRecord:
    return next(islice(iter_records(cfg), index, None))


def test_written_layout_is_exactly_acdc(
    written: tuple[Path, list[Path]], records: list[PatientRecord]
) -> None:
    root, folders = written
    assert [f.name for f in folders] == [f"patient{k:03d}" for k in range(1, 6)]
    assert sorted(p.name for p in root.iterdir()) == [f.name for f in folders]  # no temporary leftovers
    for folder, rec in zip(folders, records, strict=True):
        pid, es = folder.name, rec.info.es
        expected = {
            "Info.cfg",
            f"{pid}_4d.nii.gz",
            f"{pid}_4d_gt.nii.gz",
            f"{pid}_frame01.nii.gz",
            f"{pid}_frame01_gt.nii.gz",
            f"{pid}_frame{es:02d}.nii.gz",
            f"{pid}_frame{es:02d}_gt.nii.gz",
        }
        assert {p.name for p in folder.iterdir()} == expected
        keys = [line.split(":")[0] for line in (folder / "Info.cfg").read_text().splitlines()]
        assert keys == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]


def test_written_patients_round_trip(written: tuple[Path, list[Path]], records: list[PatientRecord]) -> None:
    _, folders = written
    for folder, rec in zip(folders, records, strict=True):
        back = read_patient(folder)
        assert back.info == rec.info
        assert back.cine.shape == rec.cine.shape
        np.testing.assert_array_equal(back.cine, np.round(rec.cine))  # int16 on disk
        assert back.cine_labels is not None
        np.testing.assert_array_equal(back.cine_labels, rec.cine_labels)
        for phase in ("ED", "ES"):
            np.testing.assert_array_equal(back.labels[phase], rec.labels[phase])
        np.testing.assert_allclose(back.spacing, rec.spacing, rtol=1e-6)
        np.testing.assert_allclose(back.affine, rec.affine, atol=1e-5)


def test_same_seed_is_identical_and_other_seed_differs(records: list[PatientRecord]) -> None:
    again = list(iter_records(CFG))
    for a, b in zip(records, again, strict=True):
        assert a.info == b.info and a.spacing == b.spacing
        assert a.cine.tobytes() == b.cine.tobytes()
        assert a.cine_labels is not None and b.cine_labels is not None
        assert a.cine_labels.tobytes() == b.cine_labels.tobytes()
        np.testing.assert_array_equal(a.affine, b.affine)
    other = _patient(dataclasses.replace(CFG, seed=8))
    assert other.cine.shape != records[0].cine.shape or not np.array_equal(other.cine, records[0].cine)


def test_patient_does_not_depend_on_n_patients(records: list[PatientRecord]) -> None:
    ten = list(islice(iter_records(dataclasses.replace(CFG, n_patients=10)), 5))
    for a, b in zip(records, ten, strict=True):
        assert a.patient_id == b.patient_id and a.info == b.info
        assert a.cine.tobytes() == b.cine.tobytes()


def test_groups_are_round_robin(records: list[PatientRecord]) -> None:
    assert tuple(r.info.group for r in records) == GROUPS
    seven = [r.info.group for r in iter_records(dataclasses.replace(CFG, n_patients=7, n_frames=(4, 4)))]
    assert seven == [*GROUPS, "NOR", "DCM"]


def test_shapes_spacing_timing_and_orientation(records: list[PatientRecord]) -> None:
    rotations = []
    for rec in records:
        t, z, y, x = rec.cine.shape
        assert rec.cine.dtype == np.float32 and (y, x) == CFG.matrix
        assert CFG.n_frames[0] <= t <= CFG.n_frames[1] and CFG.n_slices[0] <= z <= CFG.n_slices[1]
        assert rec.info.nb_frames == t and rec.info.ed == 1
        assert 0.3 <= (rec.info.es - 1) / t <= 0.5  # ES at 35-45 % of the cycle, rounded to a frame
        dz, dy, dx = rec.spacing
        assert 5.0 <= dz <= 10.0 and 1.2 <= dy <= 1.9 and dy == dx
        assert 140 <= rec.info.height_cm <= 200 and 40 <= rec.info.weight_kg <= 125
        cols = rec.affine[:3, :3]
        np.testing.assert_allclose(np.linalg.norm(cols, axis=0), [dx, dy, dz], rtol=1e-9)
        rot = cols / np.array([dx, dy, dz])
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        rotations.append(rot)
    assert not np.allclose(rotations[0], rotations[1])  # random orientation


def test_every_frame_has_labels_with_rv_vanishing_at_apex(records: list[PatientRecord]) -> None:
    for rec in records:
        labels = rec.cine_labels
        assert labels is not None and labels.shape == rec.cine.shape and labels.dtype == np.uint8
        np.testing.assert_array_equal(rec.labels["ED"], labels[rec.info.ed - 1])
        np.testing.assert_array_equal(rec.labels["ES"], labels[rec.info.es - 1])
        for t in range(rec.n_frames):
            for z in range((rec.n_slices - 1) // 2 + 1):  # base to mid
                assert set(np.unique(labels[t, z]).tolist()) == {0, 1, 2, 3}, (rec.patient_id, t, z)
            apex = labels[t, -1]
            assert not (apex == 1).any() and (apex == 2).any() and (apex == 3).any()
        # the heart stays inside the field of view
        assert not labels[:, :, [0, -1], :].any() and not labels[:, :, :, [0, -1]].any()


def test_lv_volume_curve_and_ejection_fractions_per_group(records: list[PatientRecord]) -> None:
    for rec in records:
        vol = ground_truth_volumes(rec)
        lv, rv = vol["LV"], vol["RV"]
        ed, es = rec.info.ed - 1, rec.info.es - 1
        assert lv[ed] == lv.max() and lv[es] == lv.min() and lv[es] < lv[ed]
        low, high = LV_EF[rec.info.group]
        ef = (lv[ed] - lv[es]) / lv[ed]
        assert low - EF_TOL <= ef <= high + EF_TOL, (rec.info.group, ef)
        rv_ef = (rv[ed] - rv[es]) / rv[ed]
        if rec.info.group == "RV":
            assert 0.20 - EF_TOL <= rv_ef <= 0.40 + EF_TOL
            assert rv[ed] > lv[ed]  # dilated RV
        else:
            assert rv_ef >= 0.30 - EF_TOL


def test_ejection_fractions_hold_across_seeds() -> None:
    cfg = PhantomConfig(n_patients=10, seed=123, n_frames=(8, 10), n_slices=(6, 8))
    for rec in iter_records(cfg):
        lv = ground_truth_volumes(rec)["LV"]
        ef = (lv[0] - lv[rec.info.es - 1]) / lv[0]
        low, high = LV_EF[rec.info.group]
        assert low - EF_TOL <= ef <= high + EF_TOL, (rec.patient_id, rec.info.group, ef)


def test_myocardial_volume_is_nearly_constant(records: list[PatientRecord]) -> None:
    for rec in records:
        myo = ground_truth_volumes(rec)["MYO"]
        assert (myo.max() - myo.min()) / myo.mean() < 0.1, rec.patient_id


def test_hcm_wall_thicker_than_normal(records: list[PatientRecord]) -> None:
    def myo_to_cavity(rec: PatientRecord) -> float:
        vol = ground_truth_volumes(rec)
        return float(vol["MYO"][0] / vol["LV"][0])

    by_group = {r.info.group: r for r in records}
    assert myo_to_cavity(by_group["HCM"]) > 1.5 * myo_to_cavity(by_group["NOR"])
    assert myo_to_cavity(by_group["DCM"]) < myo_to_cavity(by_group["NOR"])


def test_intensities_finite_and_tissue_contrast(records: list[PatientRecord]) -> None:
    for rec in records:
        assert np.isfinite(rec.cine).all() and rec.cine.min() >= 0 and rec.cine.max() < 32767
        assert rec.cine_labels is not None
        ed = rec.cine[0]
        blood = np.median(ed[rec.cine_labels[0] == 3])
        myo = np.median(ed[rec.cine_labels[0] == 2])
        assert 250 < blood < 900 and 50 < myo < 300 and blood > 1.8 * myo


def test_noise_is_rician_and_independent_per_frame() -> None:
    cfg = PhantomConfig(n_patients=1, seed=3, n_frames=(8, 8))
    noisy = _patient(cfg)
    clean = _patient(dataclasses.replace(cfg, noise_sigma=(0.0, 0.0)))
    assert noisy.cine_labels is not None and clean.cine_labels is not None
    np.testing.assert_array_equal(noisy.cine_labels, clean.cine_labels)  # same anatomy
    # far from the heart the noise-free image is the same in every frame; the noisy one is not
    heart = (noisy.cine_labels > 0).any(axis=(0, 1))
    far = ~ndimage.binary_dilation(heart, iterations=10)  # beyond RV wall, fat and partial volume
    tissue = clean.cine[:, :, far]
    np.testing.assert_array_equal(tissue[0], tissue[1])
    residual = noisy.cine[:, :, far] - tissue
    assert residual[0].std() > 1.0
    for t in range(1, noisy.n_frames):
        assert not np.array_equal(noisy.cine[0][:, far], noisy.cine[t][:, far])
        corr = np.corrcoef(residual[0].ravel(), residual[t].ravel())[0, 1]
        assert abs(corr) < 0.05, (t, corr)
    assert (noisy.cine >= 0).all()  # magnitude image


def test_partial_volume_gives_intermediate_intensities() -> None:
    cfg = PhantomConfig(n_patients=1, seed=5, n_frames=(4, 4), noise_sigma=(0.0, 0.0), bias_strength=0.0)
    rec = _patient(cfg)
    assert rec.cine_labels is not None
    image, labels = rec.cine[0], rec.cine_labels[0]
    blood, myo = np.median(image[labels == 3]), np.median(image[labels == 2])
    gap = blood - myo
    mixed = (image > myo + 0.2 * gap) & (image < blood - 0.2 * gap) & (labels >= 2)
    assert mixed.sum() > 50  # boundary voxels between cavity and wall
    assert (labels[mixed] >= 2).all()


def test_bias_field_is_smooth_bounded_and_fixed_over_time() -> None:
    cfg = PhantomConfig(n_patients=1, seed=11, n_frames=(4, 4), noise_sigma=(0.0, 0.0))
    biased = _patient(cfg).cine
    flat = _patient(dataclasses.replace(cfg, bias_strength=0.0)).cine
    ratio = biased / flat
    assert np.exp(-0.2) - 1e-4 <= ratio.min() and ratio.max() <= np.exp(0.2) + 1e-4
    assert ratio.max() / ratio.min() > 1.05
    np.testing.assert_allclose(ratio[0], ratio[-1], rtol=1e-5)
    assert np.abs(np.diff(ratio[0], axis=-1)).max() < 0.02  # smooth in-plane


def test_small_matrix_shrinks_heart_to_fit() -> None:
    cfg = PhantomConfig(n_patients=2, seed=1, matrix=(48, 56), n_frames=(4, 5), inplane_spacing_mm=(1.2, 1.2))
    for rec in iter_records(cfg):
        assert rec.cine.shape[2:] == (48, 56)
        assert rec.cine_labels is not None
        assert not rec.cine_labels[:, :, [0, -1], :].any() and not rec.cine_labels[:, :, :, [0, -1]].any()


def test_ground_truth_volumes_in_ml(records: list[PatientRecord]) -> None:
    rec = records[0]
    assert rec.cine_labels is not None
    vol = ground_truth_volumes(rec)
    voxel_ml = rec.spacing[0] * rec.spacing[1] * rec.spacing[2] / 1000.0
    assert vol["LV"][0] == pytest.approx((rec.cine_labels[0] == 3).sum() * voxel_ml)
    assert set(vol) == {"LV", "MYO", "RV"} and all(v.shape == (rec.n_frames,) for v in vol.values())
    no_labels = dataclasses.replace(rec, cine_labels=None)
    with pytest.raises(ValueError, match="cine_labels"):
        ground_truth_volumes(no_labels)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_patients", 0),
        ("seed", -1),
        ("matrix", (16, 16)),
        ("matrix", (96,)),
        ("n_frames", (20, 12)),
        ("n_frames", (12.5, 20)),
        ("n_slices", (2, 5)),
        ("inplane_spacing_mm", (0.0, 1.0)),
        ("slice_thickness_mm", (10.0, 5.0)),
        ("noise_sigma", (-0.1, 0.1)),
        ("bias_strength", 2.0),
        ("supersample", 0),
    ],
)
def test_bad_config_raises(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"PhantomConfig.{field} "):
        PhantomConfig(**{field: value})


def test_unknown_group_raises() -> None:
    with pytest.raises(ValueError, match="group"):
        make_patient(0, "XYZ", PhantomConfig(), np.random.default_rng(0))
