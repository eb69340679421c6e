"""Score folds: each fold's model on its held-out patients, then pooled and per-fold summaries.

What the evaluate stage writes (``metrics.json``) is :func:`cv_metrics` of :func:`score_folds`; the
cross-validation benchmarks pool the same cases and summarise them with the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluation.agreement import agreement
from pipeline.evaluation.config import EvaluateConfig
from pipeline.evaluation.report import headline_means, summarise, table_metrics
from pipeline.evaluation.runner import VARIANTS, PatientResult, clinical_table, evaluate_patients
from pipeline.inference.predict import Segmenter
from pipeline.vocabulary import PHASES, STRUCTURE_ORDER

#: The clinical indices whose agreement with the reference evaluate reports (and draws as Bland-Altman).
AGREEMENT = (
    ("LV_EF", "%"),
    ("LV_EDV", "ml"),
    ("LV_ESV", "ml"),
    ("RV_EF", "%"),
    ("RV_EDV", "ml"),
    ("MYO_mass", "g"),
)


def score_fold(files: Sequence[Path], raw: Path, patients: Sequence[str], fold: int, cfg: EvaluateConfig, *,
               progress: bool = False, **segmenter: Any) -> list[PatientResult]:  # fmt: skip
    """One fold's model (``files``: a checkpoint or ONNX export, several: an ensemble) on ``patients``
    (folders of ``raw``), with ``cfg``'s TTA and batch size; ``segmenter``: more Segmenter settings
    (``device``, ``bf16``...)."""
    seg = Segmenter.from_files(files, tta=cfg.tta, postprocess=cfg.postprocess, batch_size=cfg.batch_size,
                               **segmenter)  # fmt: skip
    return evaluate_patients(seg, raw, list(patients), fold, cfg, progress=progress)


def score_folds(models: Mapping[int, Sequence[Path]], raw: Path, split: dict[str, Any], cfg: EvaluateConfig, *,
                progress: bool = True, **segmenter: Any) -> list[PatientResult]:  # fmt: skip
    """:func:`score_fold` of each fold's model (``{fold: files}``) on the split's validation patients of
    that fold, folds in order."""
    return [
        result
        for fold, files in sorted(models.items())
        for result in score_fold(
            files, raw, split["folds"][fold]["val"], fold, cfg, progress=progress, **segmenter
        )
    ]


def pooled_cases(results: Sequence[PatientResult], variant: str) -> list[dict[str, Any]]:
    """Every (patient, phase) case of ``results`` under one post-processing variant."""
    return [case for r in results for case in r.cases[variant]]


def headline(cases: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean Dice, HD and ASSD over structures and phases, and the RV Dice at ES, of pooled ``cases``."""
    return headline_means(summarise(cases))


def fold_headlines(cases_by_fold: Mapping[int, Sequence[dict[str, Any]]]) -> dict[int, dict[str, float]]:
    """Each fold's :func:`~pipeline.evaluation.report.headline_means` (mean Dice, HD, ASSD, RV ES Dice)."""
    return {fold: headline(cases) for fold, cases in sorted(cases_by_fold.items())}


def spread_over_folds(headlines: Mapping[int, Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and std (ddof=0) over folds of each headline number: the cross-validation's spread."""
    keys = next(iter(headlines.values())).keys() if headlines else ()
    return {k: (float(np.mean([h[k] for h in headlines.values()])), float(np.std([h[k] for h in headlines.values()])))
            for k in keys}  # fmt: skip


def whole_cycle_means(results: Sequence[PatientResult]) -> dict[str, float] | None:
    """Mean whole-cycle Dice per structure over the patients whose every frame is labelled (None: none is)."""
    cycle = [r.cycle_dice for r in results if r.cycle_dice is not None]
    return {s: float(np.mean([c[s] for c in cycle])) for s in STRUCTURE_ORDER} if cycle else None


@dataclass
class CVScore:
    """Scored folds: the patients' results, the clinical table (a row a patient), a summary per
    post-processing variant and the metrics the evaluate stage writes."""

    results: list[PatientResult]
    rows: list[dict[str, Any]]
    summaries: dict[str, dict[str, Any]]
    metrics: dict[str, Any]


def cv_metrics(results: list[PatientResult], cfg: EvaluateConfig) -> CVScore:
    """Pooled Table-1 metrics of ``cfg.postprocess`` (the headline), the headline means of every variant and
    of every fold, the whole-cycle Dice where every frame is labelled, the clinical agreement and how often
    ED/ES found on the volume curves match the reference frames."""
    rows = clinical_table(results)
    summaries = {v: summarise(pooled_cases(results, v)) for v in VARIANTS}
    metrics: dict[str, Any] = {"postprocess": cfg.postprocess, "n_patients": len(results),
                               **table_metrics(summaries[cfg.postprocess])}  # fmt: skip
    metrics["variants"] = {v: headline_means(summaries[v]) for v in VARIANTS}
    folds = sorted({r.fold for r in results})
    by_fold = fold_headlines(
        {k: [c for r in results if r.fold == k for c in r.cases[cfg.postprocess]] for k in folds}
    )
    metrics["folds"] = {str(k): by_fold[k] | {"n_patients": sum(r.fold == k for r in results)} for k in folds}
    metrics["tta"] = cfg.tta
    if (cycle := whole_cycle_means(results)) is not None:
        metrics["whole_cycle_dice"] = cycle
    table = pd.DataFrame(rows)
    metrics["clinical"] = {key: agreement(table[f"{key}_pred"], table[f"{key}_ref"]) for key, _ in AGREEMENT}
    if "ED_from_curve" in table:
        metrics["phase_from_curve_exact"] = {
            "ED": float((table["ED_from_curve"] == table["ED_ref"]).mean()),
            "ES": float((table["ES_from_curve"] == table["ES_ref"]).mean()),
        }
        # within one frame around the cycle: the reference frame's neighbours count as right
        metrics["phase_from_curve_within_1"] = {
            p: float((table[f"{p}_curve_off"] <= 1).mean()) for p in ("ED", "ES")
        }
    return CVScore(results, rows, summaries, metrics)


def draw_figures(score: CVScore, overlays: int, out: Path) -> None:
    """Into ``out``: contour overlays at ED and ES of the first ``overlays`` patients (three slices from base
    to apex), their volume curves with the reference frames marked, and a Bland-Altman plot per index of
    :data:`AGREEMENT`."""
    from pipeline.clinical.curve_figure import volume_curve_figure
    from pipeline.evaluation.figures import bland_altman_figure, overlay_figure

    out.mkdir(parents=True, exist_ok=True)
    for r in score.results[:overlays]:
        a = r.arrays
        for p in PHASES:
            z = a[f"gt_{p}"].shape[0]
            slices = sorted({max(0, z // 4), z // 2, min(z - 1, (3 * z) // 4)})
            overlay_figure(a[f"image_{p}"], a[f"gt_{p}"], a[f"pred_{p}"], slices, out / f"overlay_{r.patient}_{p}.png",
                           title=f"{r.patient} {p} (fold {r.fold}): truth solid, prediction dashed")  # fmt: skip
        if r.curves_pred is not None:
            markers = {"ED": r.phases_ref[0], "ES": r.phases_ref[1]}
            volume_curve_figure(
                r.curves_pred, r.curves_ref, markers, out / f"volumes_{r.patient}.png", title=r.patient
            )
    table = pd.DataFrame(score.rows)
    for key, unit in AGREEMENT:
        bland_altman_figure(
            table[f"{key}_pred"], table[f"{key}_ref"], key, unit, out / f"bland_altman_{key}.png"
        )
