"""Segmentation metrics: hand-computed golden values, edge cases, and a cross-check against medpy on real ACDC masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from pipeline.data.acdc import read_patient
from pipeline.evaluation.metrics import binary_metrics, evaluate_case, surface_distances
from pipeline.vocabulary import STRUCTURES


def cube(shape, z, y, x) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[z, y, x] = True
    return mask


def test_cubes_offset_along_z_golden():
    # Two 3x3x3 cubes, 2 voxels apart along z, 5 mm slices. Each surface has 26 voxels (the centre is
    # eroded away). Directed distances per cube: 9 at 0 mm (shared layer), 8 at 5 mm, 9 at 10 mm.
    a = cube((8, 8, 8), slice(2, 5), slice(2, 5), slice(2, 5))
    b = cube((8, 8, 8), slice(4, 7), slice(2, 5), slice(2, 5))
    m = binary_metrics(a, b, (5.0, 1.0, 1.0))
    assert m["status"] == "ok"
    assert m["hd"] == pytest.approx(10.0)
    assert m["hd95"] == pytest.approx(10.0)
    assert m["assd"] == pytest.approx((18 * 10 + 16 * 5) / 52)
    assert m["dice"] == pytest.approx(2 * 9 / 54)
    d_ab, d_ba = surface_distances(a, b, (5.0, 1.0, 1.0))
    assert sorted(d_ab.tolist()) == [0.0] * 9 + [5.0] * 8 + [10.0] * 9
    assert sorted(d_ba.tolist()) == sorted(d_ab.tolist())


def test_spacing_follows_array_axes():
    # One voxel each, 3 voxels apart along Y (spacing 2 mm) or along X (spacing 1.5 mm).
    spacing = (10.0, 2.0, 1.5)
    a = cube((3, 9, 9), 1, 4, 4)
    along_y = binary_metrics(a, cube((3, 9, 9), 1, 7, 4), spacing)
    along_x = binary_metrics(a, cube((3, 9, 9), 1, 4, 7), spacing)
    assert along_y["hd"] == pytest.approx(6.0) and along_y["assd"] == pytest.approx(6.0)
    assert along_x["hd"] == pytest.approx(4.5) and along_x["hd95"] == pytest.approx(4.5)
    assert along_x["dice"] == 0.0


def test_outlier_voxel_moves_hd_not_hd95():
    # B = A plus one stray voxel 6 voxels (x spacing 1.5 mm) from A's surface: 52 zero distances and one 9 mm.
    a = cube((5, 5, 12), slice(2, 5), slice(1, 4), slice(2, 5))
    b = a.copy()
    b[3, 2, 10] = True
    m = binary_metrics(a, b, (8.0, 1.25, 1.5))
    assert m["hd"] == pytest.approx(9.0)
    assert m["hd95"] == 0.0
    assert m["assd"] == pytest.approx(9.0 / 53)
    assert m["dice"] == pytest.approx(54 / 55)


def test_edge_cases_are_explicit():
    gt = np.zeros((4, 10, 10), np.uint8)
    gt[1:3, 2:6, 2:6] = 3  # LV only
    gt[1:3, 7:9, 7:9] = 1  # RV
    pred = gt.copy()
    pred[pred == 1] = 0  # RV missed
    pred[0, 0, 0] = 2  # MYO predicted where the truth has none
    res = evaluate_case(pred, gt, (10.0, 1.5, 1.5))
    assert set(res) == {"LV", "MYO", "RV"}
    assert res["LV"] == {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "status": "ok"}
    assert res["RV"]["status"] == "pred_empty" and res["RV"]["dice"] == 0.0
    assert res["MYO"]["status"] == "gt_empty" and res["MYO"]["dice"] == 0.0
    for s in ("RV", "MYO"):
        assert all(math.isnan(res[s][k]) for k in ("hd", "hd95", "assd"))
    empty = np.zeros_like(gt)
    both = evaluate_case(empty, empty, (10.0, 1.5, 1.5))
    assert all(
        v == {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "status": "both_empty"} for v in both.values()
    )


def test_mask_touching_the_border_equals_padded():
    # The bounding-box crop must not change the surface of a mask that touches the array's edge.
    rng = np.random.default_rng(0)
    gt = ndimage.binary_dilation(rng.random((4, 12, 12)) > 0.8).astype(np.uint8) * 3
    pred = np.roll(gt, 1, axis=2)
    spacing = (6.0, 1.2, 0.9)
    plain = evaluate_case(pred, gt, spacing)
    padded = evaluate_case(np.pad(pred, 3), np.pad(gt, 3), spacing)
    assert plain["LV"]["status"] == "ok"
    for k in ("dice", "hd", "hd95", "assd"):
        assert plain["LV"][k] == pytest.approx(padded["LV"][k], rel=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pred": np.zeros((2, 3, 3), np.uint8), "gt": np.zeros((2, 3, 4), np.uint8), "spacing": (1, 1, 1)},
        {"pred": np.zeros((3, 3), np.uint8), "gt": np.zeros((3, 3), np.uint8), "spacing": (1, 1, 1)},
        {"pred": np.zeros((2, 3, 3), np.float32), "gt": np.zeros((2, 3, 3), np.uint8), "spacing": (1, 1, 1)},
        {"pred": np.zeros((2, 3, 3), np.uint8), "gt": np.zeros((2, 3, 3), np.uint8), "spacing": (1, 0, 1)},
        {"pred": np.zeros((2, 3, 3), np.uint8), "gt": np.zeros((2, 3, 3), np.uint8), "spacing": (1, 1)},
    ],
)
def test_bad_inputs_raise(kwargs):
    with pytest.raises(ValueError, match=r"shape|dtype|spacing|3D"):
        evaluate_case(**kwargs)


def test_surface_distances_refuse_empty_masks():
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(np.zeros((2, 3, 3), bool), np.ones((2, 3, 3), bool), (1, 1, 1))


# ------------------------------------------------------------------ cross-check against medpy


def _pairs(acdc_roi: Path):
    """Real mask pairs: ED vs ES truth, truth vs eroded truth, truth vs shifted truth."""
    for pid in ("patient002", "patient007", "patient008"):
        rec = read_patient(acdc_roi / pid, with_cine_labels=False)
        ed, es = rec.labels["ED"], rec.labels["ES"]
        for name, value in STRUCTURES.items():
            gt = ed == value
            yield pid, name, "ed_vs_es", es == value, gt, rec.spacing
            yield pid, name, "eroded", ndimage.binary_erosion(gt), gt, rec.spacing
            # a shift and an in-plane anisotropic spacing, so swapped axes would show
            yield (
                pid,
                name,
                "shifted",
                np.roll(gt, (1, 2, -3), axis=(0, 1, 2)),
                gt,
                (rec.spacing[0], 1.3, 1.9),
            )


def test_matches_medpy_on_real_acdc_masks(acdc_roi):
    binary = pytest.importorskip("medpy.metric.binary")
    worst = 0.0
    checked = 0
    for pid, name, kind, pred, gt, spacing in _pairs(acdc_roi):
        if not pred.any() or not gt.any():
            continue
        ours = binary_metrics(pred, gt, spacing)
        ref = {
            "dice": binary.dc(pred, gt),
            "hd": binary.hd(pred, gt, voxelspacing=spacing),
            "hd95": binary.hd95(pred, gt, voxelspacing=spacing),
            "assd": binary.assd(pred, gt, voxelspacing=spacing),
        }
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (pid, name, kind, key)
            worst = max(worst, abs(ours[key] - value))
        checked += 1
    assert checked >= 20, f"only {checked} non-empty pairs were compared"
    assert worst < 1e-9
