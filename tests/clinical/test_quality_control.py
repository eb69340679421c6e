"""Quality control from the labels: a clean segmentation raises no flag, each planted defect raises its
own named flag, and the score orders cases by how much looks wrong."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.clinical import quality_control
from pipeline.clinical.indices import clinical_indices, volume_curves
from pipeline.clinical.quality_control import (
    assess,
    auroc,
    basal_slice,
    estimated_dice,
    phase_measures,
    physiology_flags,
)
from pipeline.vocabulary import STRUCTURES

LV, MYO, RV = STRUCTURES["LV"], STRUCTURES["MYO"], STRUCTURES["RV"]
SPACING = (10.0, 1.5, 1.5)


class Heart:
    """A plausible labelled cine: 8 slices of 10 mm, 96 x 96 px of 1.5 mm, 10 frames; the LV cavity (radius
    25 mm at ED, 17 mm at ES: EDV ~157 ml, EF ~54 %), an 8 mm myocardial ring (~120 g) and an RV crescent
    against the septum (~140 ml at ED)."""

    def __init__(self, frames: int = 10) -> None:
        yy, xx = np.mgrid[:96, :96] * 1.5
        d = np.hypot(yy - 72, xx - 72)
        self.cine_labels = np.zeros((frames, 8, 96, 96), np.uint8)
        for t in range(frames):
            phase = (1 - np.cos(2 * np.pi * t / frames)) / 2  # 0 at ED (frame 0), 1 at ES (mid-cycle)
            r_lv, r_rv = 25 - 8 * phase, 14 - 6 * phase
            lab = np.zeros((96, 96), np.uint8)
            lab[(d >= r_lv + 8) & (d < r_lv + 8 + r_rv) & (xx < 72)] = RV
            lab[(d >= r_lv) & (d < r_lv + 8)] = MYO
            lab[d < r_lv] = LV
            self.cine_labels[t] = lab
        self.spacing = SPACING


def make_record(t: int = 10, **_: int) -> Heart:
    return Heart(t)


def _case(labels: np.ndarray, spacing: tuple[float, float, float], ed: int = 0, es: int = 5):
    indices = clinical_indices(labels[ed], labels[es], spacing)
    return assess({"ED": labels[ed], "ES": labels[es]}, indices, volume_curves(labels, spacing)["LV"])


def test_a_clean_segmentation_raises_no_flag() -> None:
    record = make_record(t=10)
    quality = _case(record.cine_labels, record.spacing, 0, 5)
    assert quality.ok, quality.flags
    assert quality.measures["ED"]["lv_open"] == 0.0 and quality.measures["ED"]["rv_detached"] == 0.0


@pytest.mark.parametrize("defect", ["no_myo", "rv_away", "lv_gap", "fragments", "no_rv"])
def test_each_planted_defect_raises_its_flag(defect: str) -> None:
    record = make_record(t=10)
    labels = record.cine_labels.copy()
    ed = labels[0]
    if defect == "no_myo":  # slice 1 loses its myocardium: LV unenclosed, LV without MYO
        ed[1][ed[1] == MYO] = 0
        expected = {"lv_without_myo@ED", "lv_open@ED"}
    elif defect == "rv_away":  # the RV moved to the far corner on every slice
        for z in range(ed.shape[0]):
            ed[z][ed[z] == RV] = 0
            ed[z][:6, :6] = RV
        expected = {"rv_detached@ED"}
    elif defect == "lv_gap":  # no LV or MYO on slice 2, but on 1 and 3
        ed[2][(ed[2] == LV) | (ed[2] == MYO)] = 0
        expected = {"slice_gap@ED"}
    elif defect == "fragments":  # a second LV blob on two slices
        for z in (0, 1):
            ed[z][2:6, 2:6] = LV
        expected = {"fragmented@ED"}
    else:
        labels[:, labels[0] == RV] = 0
        labels[labels == RV] = 0
        expected = {"missing@ED", "missing@ES"}
    quality = _case(labels, record.spacing, 0, 5)
    assert expected <= set(quality.flags), quality.flags
    assert quality.score >= 0.5 and not quality.ok


def test_physiology_flags() -> None:
    good = {"LV_EDV": 150.0, "LV_ESV": 60.0, "LV_EF": 60.0, "RV_EDV": 160.0, "RV_ESV": 80.0, "RV_EF": 50.0,
            "MYO_mass": 120.0}  # fmt: skip
    curve = [150, 140, 110, 80, 60, 70, 100, 130, 145, 150]
    assert physiology_flags(good, curve)[0] == []
    bad = {**good, "LV_ESV": 160.0, "LV_EF": -6.7, "RV_EDV": 700.0, "MYO_mass": 10.0}
    two_dips = [150, 140, 100, 60, 100, 140, 150, 150, 140, 100, 60, 100, 140, 150, 150, 150]
    flags, measures = physiology_flags(bad, two_dips)
    assert set(flags) == {
        "edv_not_above_esv",
        "ef_implausible",
        "curve_irregular",
        "rv_lv_ratio",
        "mass_implausible",
    }
    assert measures["lv_curve_minima"] == 2 and measures["rv_lv_edv_ratio"] == pytest.approx(4.667, abs=1e-3)
    # NaN indices (no LV) flag nothing by themselves
    assert physiology_flags(dict.fromkeys(good, float("nan")), None)[0] == []


def test_the_score_orders_cases_by_how_much_is_wrong() -> None:
    record = make_record(t=10)
    clean = _case(record.cine_labels, record.spacing, 0, 5)
    one = record.cine_labels.copy()
    one[0, 1][one[0, 1] == MYO] = 0
    two = one.copy()
    two[5, 2][two[5, 2] == MYO] = 0
    scores = [_case(x, record.spacing, 0, 5).score for x in (record.cine_labels, one, two)]
    assert clean.score == scores[0] < scores[1] < scores[2]
    assert phase_measures(np.zeros((2, 8, 8), np.uint8))["missing"] == ["LV", "MYO", "RV"]


def test_auroc() -> None:
    assert auroc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auroc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    assert auroc([1, 1, 1, 1], [True, False, True, False]) == 0.5  # ties count half
    assert auroc([2, 0, 1, 3], [True, False, False, True]) == 1.0
    assert auroc([0.9, 0.1, 0.5], [True, False, True]) == 1.0
    assert np.isnan(auroc([1, 2], [True, True]))


def _one_hot(labels: np.ndarray) -> np.ndarray:
    """(Z, Y, X) labels as (Z, 4, Y, X) probabilities of certainty."""
    return np.moveaxis(np.eye(4, dtype=np.float32)[labels], -1, 1)


def test_estimated_dice_is_one_for_certain_views_and_drops_as_they_disagree() -> None:
    labels = make_record(t=10).cine_labels[0]
    certain = _one_hot(labels)
    assert estimated_dice(certain, labels) == pytest.approx(1.0)
    # two views that disagree on every MYO voxel (one says MYO, the other LV): MYO's soft Dice is 2/3
    other = labels.copy()
    other[labels == MYO] = LV
    split = (certain + _one_hot(other)) / 2
    myo = 2 * 0.5 * (labels == MYO).sum() / (0.5 * (labels == MYO).sum() + (labels == MYO).sum())
    lv_p = split[:, LV]
    lv = 2 * lv_p[labels == LV].sum() / (lv_p.sum() + (labels == LV).sum())
    assert estimated_dice(split, labels) == pytest.approx((lv + myo + 1.0) / 3, rel=1e-6)
    assert estimated_dice(np.zeros((8, 4, 96, 96), np.float32), np.zeros((8, 96, 96), np.uint8)) == 1.0
    with pytest.raises(ValueError, match="do not match"):
        estimated_dice(certain[:, :, :10], labels)


def test_uncertain_phases_are_flagged_and_score_higher() -> None:
    record = make_record(t=10)
    labels = record.cine_labels
    indices = clinical_indices(labels[0], labels[5], record.spacing)
    curve = volume_curves(labels, record.spacing)["LV"]
    sure = assess({"ED": labels[0], "ES": labels[5]}, indices, curve, {"ED": 0.97, "ES": 0.95})
    unsure = assess({"ED": labels[0], "ES": labels[5]}, indices, curve, {"ED": 0.97, "ES": 0.70})
    assert sure.ok and sure.measures["ES"]["estimated_dice"] == 0.95
    assert unsure.flags == ("uncertain@ES",)
    assert unsure.phase_scores["ES"] > sure.phase_scores["ES"] > sure.phase_scores["ED"] - 1e-9
    assert unsure.phase_scores["ED"] == sure.phase_scores["ED"]


def test_a_ventricle_above_the_base_raises_basal_slice() -> None:
    """An atrium labelled RV on a slice beyond the base (RV without LV at the basal end), or a basal slice
    the model itself doubts, raises ``basal_slice``; the clean heart does not."""
    record = make_record(t=10)
    clean = record.cine_labels[0]
    assert basal_slice(clean) == 0 and not phase_measures(clean)["basal_rv_only"]
    above = clean.copy()
    yy, xx = np.mgrid[:96, :96]
    above[0] = 0
    above[0][np.hypot(yy - 48, xx - 48) < 40] = RV  # a large "ventricle" with no LV, at the wide end
    assert basal_slice(above) == 0 and phase_measures(above)["basal_rv_only"]
    assert assess({"ED": above}).flags == ("basal_slice@ED",)
    assert assess({"ED": clean}, consistency={"ED": 0.95, "ED_basal": 0.9}).ok
    doubted = assess({"ED": clean}, consistency={"ED": 0.95, "ED_basal": 0.5})
    assert doubted.flags == ("basal_slice@ED",) and doubted.measures["ED"]["basal_estimated_dice"] == 0.5
    assert basal_slice(np.zeros((3, 4, 4), np.uint8)) is None


def test_an_rv_in_two_pieces_and_an_open_apical_tip_raise_no_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The RV crescent split in two on some slices (as at the base and apex) is recorded, not flagged; an
    apical LV tip far smaller than the cavity's largest slice is not judged for being open."""
    labels = make_record(t=10).cine_labels[0].copy()
    yy, xx = np.mgrid[:96, :96] * 1.5  # mm, as Heart draws
    for z in (2, 3):  # a background band cuts the RV crescent on two slices
        labels[z][(labels[z] == RV) & (np.abs(yy - 72) < 4)] = 0
    d = np.hypot(yy - 72, xx - 72)
    tip = np.zeros((96, 96), np.uint8)
    tip[(d >= 4.5) & (d < 9) & (xx < 75)] = MYO  # a ring open on one side around a ~28-pixel cavity
    tip[d < 4.5] = LV
    labels[7] = tip
    m = phase_measures(labels)
    assert m["fragmented_by"]["RV"] == 2 and m["fragmented"] == 0
    assert m["lv_open"] == 0.0  # the tip (28 px, 3 % of the largest cavity) is not judged
    assert assess({"ED": labels}).ok
    with monkeypatch.context() as patch:  # judged like the other slices, the tip is open
        patch.setattr(quality_control, "LV_OPEN_MIN_AREA", 0.0)
        assert phase_measures(labels)["lv_open"] > quality_control.THRESHOLDS["lv_open"]
    opened = labels.copy()
    opened[4][(opened[4] == MYO) & (xx > 72)] = 0  # the same opening on a full-size slice is flagged
    assert "lv_open@ED" in assess({"ED": opened}).flags


def test_qc_readout_counts_bad_worst_and_flagged_volumes() -> None:
    dice = [0.95, 0.90, 0.84, 0.70, 0.92]
    hd = [5.0, 20.0, 8.0, 30.0, float("nan")]  # HD over 15 mm or undefined: bad too
    score = [0.1, 2.0, 3.0, 5.0, 1.0]
    flagged = [False, True, False, True, True]
    got = quality_control.qc_readout(dice, hd, score, flagged)
    assert got["bad"] == 4 and got["dice_below_0.80"] == 1
    assert got["auroc_bad"] == 1.0  # every bad volume scores above the one good volume
    assert got["spearman_score_vs_dice"] < 0
    assert got["flagged_of_dice_below_0.80"] == "1 of 1"
    assert got["flagged_of_good"] == "0 of 1" and got["flagged_of_bad"] == "3 of 4"
