"""Quality control of a segmented cine from its labels alone: named flags and a score, per phase and per case.

A segmentation can be wrong in ways its own labels betray. Each check measures one such property on the
ED and ES volumes (anatomy) or on the whole cine's read-out (physiology), and raises a named flag past a
threshold:

anatomy, per phase (in-plane on each slice, then over the volume):
    lv_open          share of the LV cavity's border touching background instead of myocardium on its
                     worst slice (> 0.3), of the slices whose cavity is at least 10 % of its largest (the
                     apical tip is left out): the cavity should be enclosed by myocardium
    lv_without_myo   slices with LV but no myocardium (>= 1)
    rv_detached      share of the RV's slices on which the RV does not reach the myocardium within 2 px
                     (> 0.34): the RV lies against the septum
    fragmented       slices where the LV or the myocardium falls into several pieces (>= 2; the RV
                     crescent can show as two pieces at the base and the apex, so its pieces are only
                     recorded, in ``fragmented_by``)
    slice_gap        a structure present on slices that are not contiguous from base to apex (>= 1 gap)
    missing          LV, myocardium or RV absent from the whole volume
    basal_slice      the basal end of the ventricles (the end slice of the LV/RV stack with the larger
                     ventricular area) holds RV without LV, or the model's estimate of its Dice on that
                     slice alone is below 0.65: the signs of an atrium or outflow tract labelled as a
                     ventricle on a slice above the base
consistency, per phase (when the class probabilities behind the labels are given):
    uncertain        the model's own estimate of its Dice (:func:`estimated_dice`: the soft Dice of the
                     probabilities, averaged over TTA views and ensemble members, against the labels drawn
                     from them) below 0.80: where views or members disagree, or one is unsure, the averaged
                     probabilities spread and the estimate drops
physiology, per case:
    edv_not_above_esv   LV or RV EDV <= ESV
    ef_implausible      LV or RV EF outside 5-90 %
    curve_irregular     the smoothed LV volume curve has more than one minimum per cycle (a minimum
                        counting when it is at least 30 % of the curve's range deep)
    rv_lv_ratio         RV EDV / LV EDV outside 0.25-4.0 (a dilated LV beside a normal RV reaches ~0.3,
                        a dilated RV beside a normal LV ~3; ACDC's expert labels span 0.26-2.16 from
                        the 2.5th to the 97.5th percentile)
    mass_implausible    LV myocardial mass outside 20-400 g

The score is the number of flags raised, weighted (:data:`WEIGHTS`), plus the continuous part of the
anatomy measures (lv_open, rv_detached) and of the consistency (CONSISTENCY_WEIGHT x (1 - estimated Dice)
+ SLICE_CONSISTENCY_WEIGHT x (1 - the worst slice's estimated Dice)), so cases order by how much looks
wrong; each phase also gets its own score (its anatomy and the case's physiology) for judging one volume;
``ok`` is no flag. The thresholds and weights were set on the cross-validated predictions of five U-Net
folds (benchmarks/qc_validation.py, docs/experiments.md, "Quality control") and checked on another
model's; how the score separates good from bad volumes is measured there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.vocabulary import STRUCTURES

LV, MYO, RV = STRUCTURES["LV"], STRUCTURES["MYO"], STRUCTURES["RV"]
THRESHOLDS = {"lv_open": 0.3, "lv_without_myo": 1, "rv_detached": 0.34, "fragmented": 2, "slice_gap": 1}
WEIGHTS = {"lv_open": 1.0, "lv_without_myo": 1.0, "rv_detached": 1.0, "fragmented": 0.5, "slice_gap": 1.0,
           "missing": 2.0, "edv_not_above_esv": 2.0, "ef_implausible": 1.0, "curve_irregular": 0.5,
           "rv_lv_ratio": 0.5, "mass_implausible": 0.5, "uncertain": 1.0, "basal_slice": 1.0}  # fmt: skip
# plausible ranges of the read-out, (low, high): outside them a physiology flag is raised
PLAUSIBLE = {"LV_EF": (5.0, 90.0), "RV_EF": (5.0, 90.0), "rv_lv_ratio": (0.25, 4.0), "MYO_mass": (20.0, 400.0)}  # fmt: skip
CURVE_PROMINENCE = 0.3  # a minimum of the LV curve counts when this share of the curve's range deep
LV_OPEN_MIN_AREA = 0.1  # lv_open judges the slices whose LV cavity is at least this share of its largest
UNCERTAIN_BELOW = 0.80  # estimated Dice under which a phase is flagged "uncertain"
BASAL_UNCERTAIN_BELOW = 0.65  # estimated Dice of the basal slice alone under which "basal_slice" is raised
# phase_consistency's keys (<phase><suffix>) -> the phase measure each becomes
CONSISTENCY_MEASURES = {"": "estimated_dice", "_basal": "basal_estimated_dice",
                        "_structure": "structure_estimated_dice", "_slice": "slice_estimated_dice"}  # fmt: skip
CONSISTENCY_WEIGHT = 40.0  # score points per unit of (1 - estimated Dice): 0.025 below 1 is one flag
SLICE_CONSISTENCY_WEIGHT = 5.0  # score points per unit of (1 - the worst slice's estimated Dice)


@dataclass(frozen=True)
class Quality:
    """Flags (names), score and the measures behind them; ``ok`` when no flag is raised."""

    flags: tuple[str, ...]
    score: float
    measures: dict[str, Any] = field(default_factory=dict)
    phase_scores: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.flags

    def phase_flags(self, phase: str) -> list[str]:
        """The flags that concern one phase's volume: its own and the case's physiology flags."""
        return [f for f in self.flags if "@" not in f or f.endswith(f"@{phase}")]

    def as_record(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "score": round(self.score, 4),
            "flags": list(self.flags),
            "phase_scores": {k: round(v, 4) for k, v in self.phase_scores.items()},
            "measures": self.measures,
        }


def qc_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    """The table columns of a :meth:`Quality.as_record`: ``qc_ok``, ``qc_score``, ``qc_flags`` (space-separated),
    as summary.csv, evaluate's clinical table and the served model's answer carry them."""
    return {"qc_ok": record["ok"], "qc_score": record["score"], "qc_flags": " ".join(record["flags"])}


def _shift_neighbours(mask: np.ndarray) -> list[np.ndarray]:
    """The 4 in-plane neighbours of every pixel of (Z, Y, X) ``mask`` (outside the image: False)."""
    out = []
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        shifted = np.zeros_like(mask)
        src = [slice(None)] * 3
        dst = [slice(None)] * 3
        src[axis] = slice(None, -1) if step == 1 else slice(1, None)
        dst[axis] = slice(1, None) if step == 1 else slice(None, -1)
        shifted[tuple(dst)] = mask[tuple(src)]
        out.append(shifted)
    return out


def _components_2d(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


def basal_slice(labels: np.ndarray) -> int | None:
    """The basal end of the ventricles in (Z, Y, X) ``labels``: of the first and last slices holding LV or
    RV, the one with the larger LV + RV area (the ventricles narrow towards the apex); None without any."""
    area = np.isin(labels, (LV, RV)).sum(axis=(1, 2))
    present = np.flatnonzero(area)
    if not present.size:
        return None
    first, last = int(present[0]), int(present[-1])
    return first if area[first] >= area[last] else last


def phase_measures(labels: np.ndarray) -> dict[str, Any]:
    """The anatomy measures of one (Z, Y, X) label volume (0 bg, 1 RV, 2 MYO, 3 LV)."""
    from scipy import ndimage

    labels = np.asarray(labels)
    lv, myo, rv, bg = labels == LV, labels == MYO, labels == RV, labels == 0
    # LV border pixels touching background (4-neighbourhood, in-plane), over all LV border contacts
    touch_bg = np.zeros_like(lv)
    border = np.zeros_like(lv)
    for neighbour_bg, neighbour_other in zip(_shift_neighbours(bg), _shift_neighbours(~lv), strict=True):
        touch_bg |= lv & neighbour_bg
        border |= lv & neighbour_other
    per_slice = touch_bg.sum(axis=(1, 2)) / np.maximum(border.sum(axis=(1, 2)), 1)
    # the worst slice, of those whose LV cavity is at least LV_OPEN_MIN_AREA of its largest (the apical tip
    # of a few pixels, where the cavity closes, is left out)
    lv_area = lv.sum(axis=(1, 2))
    judged = (lv_area >= LV_OPEN_MIN_AREA * lv_area.max()) & (lv_area > 0)
    lv_open = float(per_slice[judged].max()) if judged.any() else 0.0
    lv_slices = lv.any(axis=(1, 2))
    lv_without_myo = int(np.sum(lv_slices & ~myo.any(axis=(1, 2))))
    near_myo = ndimage.binary_dilation(myo, structure=np.ones((1, 5, 5), bool))
    rv_slices = rv.any(axis=(1, 2))
    detached = rv_slices & ~(rv & near_myo).any(axis=(1, 2))
    rv_detached = float(detached.sum() / rv_slices.sum()) if rv_slices.any() else 0.0
    pieces = {name: sum(_components_2d(m) > 1 for m in m3 if m.any())
              for name, m3 in (("LV", lv), ("MYO", myo), ("RV", rv))}  # fmt: skip
    fragmented = pieces["LV"] + pieces["MYO"]  # the RV crescent may show as two pieces at base and apex
    gaps = 0
    for m3 in (lv, myo, rv):
        present = np.flatnonzero(m3.any(axis=(1, 2)))
        if present.size:
            gaps += int(np.sum(np.diff(present) > 1))
    missing = [name for name, m3 in (("LV", lv), ("MYO", myo), ("RV", rv)) if not m3.any()]
    base = basal_slice(labels)
    basal_rv_only = base is not None and bool(rv[base].any() and not lv[base].any())
    return {"lv_open": round(lv_open, 4), "lv_without_myo": lv_without_myo, "rv_detached": round(rv_detached, 4),
            "fragmented": int(fragmented), "slice_gap": gaps, "missing": missing, "basal_rv_only": basal_rv_only,
            "fragmented_by": {k: int(v) for k, v in pieces.items()}}  # fmt: skip


def structure_estimates(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The model's own estimate of its Dice for each of LV, MYO and RV on one volume: the soft Dice between
    that structure's (Z, C, Y, X) ``probabilities`` (averaged over TTA views and ensemble members) and the
    (Z, Y, X) ``labels``, 2 sum(p * [label]) / (sum(p) + sum([label])); a structure that neither the labels
    nor the probabilities hold (sum below one voxel) is left out.

    Confident agreeing views give probabilities near 0/1 that match the labels (estimate near 1); views or
    members that disagree, or an unsure network, spread the probability mass (estimate lower).
    """
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    if probabilities.shape[0] != labels.shape[0] or probabilities.shape[2:] != labels.shape[1:]:
        raise ValueError(f"probabilities {probabilities.shape} do not match labels {labels.shape}")
    scores = {}
    for name, label in (("LV", LV), ("MYO", MYO), ("RV", RV)):
        p = probabilities[:, label]
        hard = labels == label
        denominator = float(p.sum() + hard.sum())
        if denominator >= 1.0:
            scores[name] = 2.0 * float(p[hard].sum()) / denominator
    return scores


def estimated_dice(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The model's own estimate of its mean Dice over LV, MYO and RV on one volume: the mean of
    :func:`structure_estimates` (1.0 when no structure is held)."""
    return _mean_estimate(structure_estimates(probabilities, labels))


def _mean_estimate(scores: Mapping[str, float]) -> float:
    return float(np.mean(list(scores.values()))) if scores else 1.0


def volume_consistency(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The consistency measures of one volume, from its (Z, C, Y, X) ``probabilities`` and the (Z, Y, X)
    ``labels`` drawn from them, keyed by :data:`CONSISTENCY_MEASURES`' suffixes: ``""`` its
    :func:`estimated_dice`; ``_structure`` the lowest of its :func:`structure_estimates`; ``_basal`` the
    estimate on its :func:`basal_slice` alone; ``_slice`` the lowest estimate of one slice holding a
    ventricle."""
    scores = structure_estimates(probabilities, labels)
    out = {"": _mean_estimate(scores), "_structure": min(scores.values(), default=1.0)}
    base = basal_slice(labels)
    if base is not None:
        out["_basal"] = estimated_dice(probabilities[base : base + 1], labels[base : base + 1])
    held = np.flatnonzero(np.isin(labels, (LV, RV)).any(axis=(1, 2)))
    if held.size:
        out["_slice"] = min(estimated_dice(probabilities[z : z + 1], labels[z : z + 1]) for z in held)
    return out


def phase_consistency(segmenter: Any, cine: np.ndarray, frames: Mapping[str, int], labels: Mapping[str, np.ndarray],
                      spacing: Sequence[float] | None) -> dict[str, float]:  # fmt: skip
    """:func:`volume_consistency` of each phase, as :func:`assess`'s ``consistency`` takes it
    (``<phase><suffix>``): ``segmenter`` (a pipeline.inference.predict.Segmenter) computes the
    probabilities of the (T, Z, Y, X) ``cine``'s ``frames`` {phase: frame} again, and each is compared
    with that phase's (Z, Y, X) ``labels``."""
    probabilities = segmenter.probabilities(cine, list(frames.values()), spacing=spacing)
    out = {}
    for phase, p in zip(frames, probabilities, strict=True):
        out.update({phase + suffix: v for suffix, v in volume_consistency(p, labels[phase]).items()})
    return out


def _phase_flags(measures: Mapping[str, Any]) -> list[str]:
    # shares (lv_open, rv_detached) flag above their limit, counts at or above it
    flags = [name for name, limit in THRESHOLDS.items()
             if (measures[name] > limit if isinstance(limit, float) else measures[name] >= limit)]  # fmt: skip
    if measures["missing"]:
        flags.append("missing")
    if measures.get("estimated_dice", 1.0) < UNCERTAIN_BELOW:
        flags.append("uncertain")
    if measures["basal_rv_only"] or measures.get("basal_estimated_dice", 1.0) < BASAL_UNCERTAIN_BELOW:
        flags.append("basal_slice")
    return flags


def _minima(curve: np.ndarray, prominence: float) -> int:
    """Local minima of a cyclic (T,) curve deeper than ``prominence`` below both neighbouring maxima."""
    n = len(curve)
    if n < 3:
        return 1
    count = 0
    for t in range(n):
        if curve[t] <= curve[t - 1] and curve[t] < curve[(t + 1) % n]:
            left = max(curve[(t - k) % n] for k in range(1, n // 2 + 1))
            right = max(curve[(t + k) % n] for k in range(1, n // 2 + 1))
            if min(left, right) - curve[t] >= prominence:
                count += 1
    return max(count, 1)


def physiology_flags(
    indices: Mapping[str, float], lv_curve: Sequence[float] | np.ndarray | None
) -> tuple[list[str], dict[str, Any]]:
    """Flags and measures of a case's read-out (LV/RV EDV, ESV, EF, MYO_mass; the LV volume curve)."""
    from pipeline.clinical.indices import _smooth_cycle

    flags: list[str] = []
    measures: dict[str, Any] = {}
    finite = {k: v for k, v in indices.items() if isinstance(v, int | float) and math.isfinite(v)}
    if any(finite.get(f"{s}_EDV", math.inf) <= finite.get(f"{s}_ESV", -math.inf) for s in ("LV", "RV")):
        flags.append("edv_not_above_esv")
    ef = [f"{s}_EF" for s in ("LV", "RV")]
    if any(not PLAUSIBLE[k][0] <= finite[k] <= PLAUSIBLE[k][1] for k in ef if k in finite):
        flags.append("ef_implausible")
    if lv_curve is not None and len(lv_curve) >= 3 and max(lv_curve) > 0:
        smooth = _smooth_cycle(np.asarray(lv_curve, dtype=np.float64))
        minima = _minima(smooth, CURVE_PROMINENCE * float(smooth.max() - smooth.min()) or 1.0)
        measures["lv_curve_minima"] = minima
        if minima > 1:
            flags.append("curve_irregular")
    if finite.get("LV_EDV", 0) > 0 and "RV_EDV" in finite:
        ratio = finite["RV_EDV"] / finite["LV_EDV"]
        measures["rv_lv_edv_ratio"] = round(ratio, 3)
        low, high = PLAUSIBLE["rv_lv_ratio"]
        if not low <= ratio <= high:
            flags.append("rv_lv_ratio")
    low, high = PLAUSIBLE["MYO_mass"]
    if "MYO_mass" in finite and not low <= finite["MYO_mass"] <= high:
        flags.append("mass_implausible")
    return flags, measures


def assess(phases: Mapping[str, np.ndarray], indices: Mapping[str, float] | None = None,
           lv_curve: Sequence[float] | np.ndarray | None = None,
           consistency: Mapping[str, float] | None = None) -> Quality:  # fmt: skip
    """QC of a case: ``phases`` {"ED": (Z, Y, X), "ES": ...} labels, the read-out's indices and LV curve,
    and per phase the :func:`estimated_dice` of the probabilities behind the labels (``consistency``, as
    :func:`phase_consistency` gives it; phases it lacks are judged without it).

    Per-phase flags are named ``<flag>@<phase>`` (``lv_open@ES``); the per-phase measures are kept under
    the phase's name.
    """
    measures: dict[str, dict[str, Any]] = {}
    for phase, labels in phases.items():
        m = phase_measures(labels)
        for suffix, name in CONSISTENCY_MEASURES.items():
            if consistency is not None and phase + suffix in consistency:
                m[name] = round(float(consistency[phase + suffix]), 4)
        measures[phase] = m
    return judge(measures, indices, lv_curve)


def judge(phases: Mapping[str, Mapping[str, Any]], indices: Mapping[str, float] | None = None,
          lv_curve: Sequence[float] | np.ndarray | None = None) -> Quality:  # fmt: skip
    """Flags and scores from measures already taken: ``phases`` {phase: :func:`phase_measures` plus the
    consistency measures}, the read-out's indices and LV curve. :func:`assess` measures, then judges;
    a stored :meth:`Quality.as_record` can be judged again under other thresholds the same way."""
    flags: list[str] = []
    measures: dict[str, Any] = {phase: dict(m) for phase, m in phases.items()}
    own: dict[str, float] = {}
    for phase, m in phases.items():
        raised = _phase_flags(m)
        flags += [f"{f}@{phase}" for f in raised]
        own[phase] = (sum(WEIGHTS[f] for f in raised) + m["lv_open"] + m["rv_detached"]
                      + CONSISTENCY_WEIGHT * (1.0 - m.get("estimated_dice", 1.0))
                      + SLICE_CONSISTENCY_WEIGHT * (1.0 - m.get("slice_estimated_dice", 1.0)))  # fmt: skip
    shared = 0.0
    if indices is not None:
        more, extra = physiology_flags(indices, lv_curve)
        flags += more
        measures.update(extra)
        shared = sum(WEIGHTS[f] for f in more)
    # a phase's score: its own anatomy plus the case's physiology; the case's: all of it
    phase_scores = {phase: float(v + shared) for phase, v in own.items()}
    return Quality(tuple(flags), float(sum(own.values()) + shared), measures, phase_scores)


def auroc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` cases: the chance that a positive scores
    higher than a negative, ties counting half (NaN without both kinds)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


#: How quality control is validated (benchmarks.qc_validation, benchmarks.fullfov_eval): a volume is bad
#: when its mean Dice is under BAD_DICE or its mean HD over BAD_HD_MM (or undefined); under WORST_DICE it
#: must be flagged.
BAD_DICE, BAD_HD_MM, WORST_DICE = 0.85, 15.0, 0.80


def qc_readout(dice: Sequence[float] | np.ndarray, hd_mm: Sequence[float] | np.ndarray,
               score: Sequence[float] | np.ndarray, flagged: Sequence[bool] | np.ndarray) -> dict[str, Any]:  # fmt: skip
    """How the QC ``score`` and ``flagged`` verdicts of volumes separate the bad ones (see BAD_DICE), given
    each volume's true mean Dice and mean HD: AUROC, Spearman correlation of score and Dice (negative is
    right), and how many volumes under WORST_DICE, good and bad are flagged."""
    from scipy.stats import spearmanr

    dice, hd_mm = np.asarray(dice, dtype=np.float64), np.asarray(hd_mm, dtype=np.float64)
    score, flagged = np.asarray(score, dtype=np.float64), np.asarray(flagged, dtype=bool)
    bad, worst = (dice < BAD_DICE) | ~(hd_mm <= BAD_HD_MM), dice < WORST_DICE
    return {"bad": int(bad.sum()), "dice_below_0.80": int(worst.sum()),
            "spearman_score_vs_dice": round(float(spearmanr(score, dice).statistic), 3),
            "auroc_bad": round(auroc(score, bad), 3),
            "flagged_of_dice_below_0.80": f"{int((flagged & worst).sum())} of {int(worst.sum())}",
            "flagged_of_good": f"{int((flagged & ~bad).sum())} of {int((~bad).sum())}",
            "flagged_of_bad": f"{int((flagged & bad).sum())} of {int(bad.sum())}"}  # fmt: skip
