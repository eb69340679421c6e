"""Clinical indices, volume curves, agreement statistics and largest-component post-processing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.clinical.indices import (
    CLINICAL_KEYS,
    clinical_indices,
    phases_from_curves,
    structure_volumes,
    volume_curves,
)
from pipeline.evaluation.agreement import agreement, agreement_summary
from pipeline.inference.postprocess import largest_component
from tests.conftest import make_record

SPACING = (10.0, 1.5, 2.0)  # one voxel = 30 mm^3 = 0.03 ml


def volume_with(counts: dict[int, int], shape=(4, 40, 50)) -> np.ndarray:
    """A label volume holding exactly ``counts[label]`` voxels of each label (placed in raster order)."""
    flat = np.zeros(int(np.prod(shape)), np.uint8)
    start = 0
    for label, n in counts.items():
        flat[start : start + n] = label
        start += n
    return flat.reshape(shape)


def test_clinical_indices_on_known_volumes():
    ed = volume_with({3: 1000, 1: 2000, 2: 500})
    es = volume_with({3: 400, 1: 1000, 2: 600})
    idx = clinical_indices(ed, es, SPACING)
    assert idx["LV_EDV"] == pytest.approx(30.0)
    assert idx["LV_ESV"] == pytest.approx(12.0)
    assert idx["LV_EF"] == pytest.approx(60.0)
    assert idx["RV_EDV"] == pytest.approx(60.0)
    assert idx["RV_ESV"] == pytest.approx(30.0)
    assert idx["RV_EF"] == pytest.approx(50.0)
    assert idx["MYO_mass"] == pytest.approx(500 * 0.03 * 1.05)  # ED myocardium only
    assert idx["LV_EF_status"] == idx["RV_EF_status"] == "ok"
    assert set(CLINICAL_KEYS) <= set(idx)
    assert structure_volumes(es, SPACING) == pytest.approx({"RV": 30.0, "MYO": 18.0, "LV": 12.0})


def test_zero_edv_gives_nan_with_status():
    ed = volume_with({2: 100, 1: 50})  # no LV at ED
    es = volume_with({3: 10, 1: 0})
    idx = clinical_indices(ed, es, SPACING)
    assert math.isnan(idx["LV_EF"]) and idx["LV_EF_status"] == "edv_zero"
    assert idx["RV_EF"] == pytest.approx(100.0) and idx["RV_EF_status"] == "ok"


def test_volume_curves_and_phases_on_a_contracting_phantom():
    rec = make_record(t=8)
    curves = volume_curves(rec.cine_labels, rec.spacing)
    assert set(curves) == {"LV", "RV", "MYO"}
    assert curves["LV"].shape == (8,)
    voxel_ml = np.prod(rec.spacing) / 1000
    assert curves["LV"][0] == pytest.approx(np.count_nonzero(rec.cine_labels[0] == 3) * voxel_ml)
    ed, es = phases_from_curves(curves)
    assert (ed, es) == (rec.frame_index("ED"), rec.frame_index("ES")) == (0, 4)


def test_phases_from_curves_picks_argmax_and_argmin():
    assert phases_from_curves({"LV": np.array([90.0, 120.0, 80.0, 50.0, 70.0])}, rule="lv_extrema") == (1, 3)
    with pytest.raises(ValueError, match="rule must be one of"):
        phases_from_curves({"LV": np.ones(5)}, rule="argmax")
    with pytest.raises(ValueError, match="zero in every frame"):
        phases_from_curves({"LV": np.zeros(5)})
    with pytest.raises(ValueError, match="'LV'"):
        phases_from_curves({"RV": np.ones(5)})
    with pytest.raises(ValueError, match="4D"):
        volume_curves(np.zeros((3, 4, 5), np.uint8), SPACING)


def test_agreement_on_known_arrays():
    ref = np.array([10.0, 20.0, 30.0, 40.0])
    stats = agreement(ref + np.array([1.0, -1.0, 1.0, -1.0]), ref)
    assert stats["n"] == 4 and stats["n_dropped"] == 0
    assert stats["bias"] == pytest.approx(0.0)
    assert stats["sd"] == pytest.approx(math.sqrt(4 / 3))
    assert stats["loa_high"] == pytest.approx(1.96 * math.sqrt(4 / 3))
    assert stats["loa_low"] == pytest.approx(-1.96 * math.sqrt(4 / 3))
    assert agreement([1.0, 3.0, 2.0], [1.0, 2.0, 3.0])["pearson_r"] == pytest.approx(0.5)


def test_agreement_drops_nan_pairs_and_counts_them():
    stats = agreement([2.0, np.nan, 4.0, 6.0, 8.0], [1.0, 5.0, 3.0, np.nan, 7.0])
    assert stats["n"] == 3 and stats["n_dropped"] == 2
    assert stats["bias"] == pytest.approx(1.0)
    assert stats["sd"] == pytest.approx(0.0)
    assert stats["pearson_r"] == pytest.approx(1.0)
    tiny = agreement([1.0], [0.5])
    assert tiny["bias"] == pytest.approx(0.5) and math.isnan(tiny["sd"]) and math.isnan(tiny["pearson_r"])
    with pytest.raises(ValueError, match="same length"):
        agreement([1.0, 2.0], [1.0])


def test_agreement_summary_reads_mae_bias_and_limits_over_finite_pairs():
    got = agreement_summary([12.0, 18.0, np.nan, 33.0], [10.0, 20.0, 30.0, 30.0])
    assert got["n"] == 3 and got["mae"] == pytest.approx(7 / 3, abs=0.005)
    assert got["bias"] == pytest.approx(1.0)
    sd = math.sqrt(((2 - 1) ** 2 + (-2 - 1) ** 2 + (3 - 1) ** 2) / 2)
    assert got["loa"] == [pytest.approx(1 - 1.96 * sd, abs=0.005), pytest.approx(1 + 1.96 * sd, abs=0.005)]
    assert math.isnan(agreement_summary([np.nan], [1.0])["mae"])


def test_largest_component_removes_stray_blobs():
    labels = np.zeros((5, 20, 20), np.uint8)
    labels[1:4, 5:12, 5:12] = 3  # LV body
    labels[0, 18, 18] = 3  # stray LV voxel
    labels[1:4, 14:18, 2:6] = 1  # RV body (one component: untouched)
    labels[4, 0:2, 0:3] = 2  # MYO, larger piece
    labels[2, 18, 0] = 2  # MYO, stray voxel
    before = labels.copy()
    out = largest_component(labels)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert out[0, 18, 18] == 0 and out[2, 18, 0] == 0
    assert np.count_nonzero(out == 3) == 3 * 7 * 7
    assert np.count_nonzero(out == 1) == 3 * 4 * 4
    assert np.count_nonzero(out == 2) == 6
    assert out.dtype == labels.dtype


def test_largest_component_connectivity():
    labels = np.zeros((3, 6, 6), np.uint8)
    labels[1, 1:3, 1:3] = 3
    labels[2, 3, 3] = 3  # touches the body only at a corner
    assert np.count_nonzero(largest_component(labels) == 3) == 5  # 26-connected by default: kept
    assert np.count_nonzero(largest_component(labels, connectivity=1) == 3) == 4
    with pytest.raises(ValueError, match="connectivity"):
        largest_component(labels, connectivity=4)


def test_cycle_rule_starts_at_the_first_frame_and_smooths_around_the_cycle():
    """A cine starts at ED: a last frame 2 % above the first does not make it ED (lv_extrema's pick, as on
    acdc-roi patient002), a real maximum elsewhere does; one noisy frame no longer moves ES, and a dip
    that wraps from the last frame to the first is found around the cycle."""
    lv = np.array([150.0, 140, 110, 80, 60, 55, 70, 95, 120, 145, 153])
    assert phases_from_curves({"LV": lv}, rule="lv_extrema") == (10, 5)
    assert phases_from_curves({"LV": lv}) == (0, 5)
    late = np.array([100.0, 90, 70, 60, 80, 130, 150, 120])  # the cine starts in systole: ED is the peak
    assert phases_from_curves({"LV": late}) == (6, 3)
    noisy = np.array([150.0, 140, 110, 80, 65, 64, 62, 20, 66, 100, 140])  # frame 7: a one-frame dropout
    assert phases_from_curves({"LV": noisy}, rule="lv_extrema")[1] == 7
    assert phases_from_curves({"LV": noisy})[1] == 6
    rv = np.array([120.0, 118, 90, 40, 35, 60, 80, 90, 100, 115, 121])  # the RV empties earlier
    assert phases_from_curves({"LV": lv, "RV": rv}, rule="cycle_lv_rv") == (0, 4)  # LV + RV: their minimum
    assert phases_from_curves({"LV": lv, "RV": rv}) == (0, 5)  # the default reads the LV
    wrap = np.array([62.0, 100, 140, 150, 152, 145, 120, 90, 60, 58])  # systole ends at the last frames
    ed, es = phases_from_curves({"LV": wrap})
    assert ed in (3, 4) and es in (9, 0)
