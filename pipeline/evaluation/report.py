"""Summaries of per-case metrics: mean ± std per structure and phase, and the paper's Table 1 in markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.evaluation.metrics import METRICS, STATUSES
from pipeline.vocabulary import PHASES, STRUCTURE_ORDER

#: Table 1 column order (the paper's: LV, MYO, RV) and row order with units.
TABLE_STRUCTURES = STRUCTURE_ORDER
TABLE_ROWS = (("assd", "ASSD (mm)"), ("hd", "HD (mm)"), ("hd95", "HD95 (mm)"), ("dice", "Dice"))
CONVENTION = "3D per patient at original resolution, header spacing"
EMPTY_STATUSES = tuple(s for s in STATUSES if s != "ok")


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and population std (ddof=0) of the finite values, and how many there were."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}


def headline_means(summary: dict[str, Any]) -> dict[str, float]:
    """Mean Dice, HD, ASSD over structures and phases of a :func:`summarise` result, and the RV Dice at ES
    (the hardest case): the numbers evaluate and the benchmarks report per variant and fold."""
    out = {f"mean_{m}": summary["average"]["all"][m]["mean"] for m in ("dice", "hd", "assd")}
    out["dice_RV_ES"] = summary["by_phase"]["ES"]["RV"]["dice"]["mean"]
    return out


def table_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Every Table-1 number of a :func:`summarise` result: per metric, ``{"LV_ED": mean, ...}`` and the
    mean over structures and phases (``mean_dice``...), then the empty-mask counts that are not zero."""
    out: dict[str, Any] = {}
    for metric in METRICS:
        out[metric] = {
            f"{s}_{p}": summary["by_phase"][p][s][metric]["mean"] for s in STRUCTURE_ORDER for p in PHASES
        }
        out[f"mean_{metric}"] = summary["average"]["all"][metric]["mean"]
    out["empty_cases"] = {f"{s}_{p}": {k: v for k, v in summary["counts"][p][s].items() if k != "ok" and v}
                          for s in STRUCTURE_ORDER for p in PHASES}  # fmt: skip
    return out


def summarise(cases: Sequence[dict]) -> dict[str, Any]:
    """Aggregate per-case metrics by phase and structure.

    Args:
        cases: ``{"patient": str, "phase": "ED" | "ES", "metrics": evaluate_case(...)}`` per volume; each
            (patient, phase) at most once.

    Returns:
        ``{"by_phase": {phase: {structure: {metric: {"mean", "std", "n"}}}},
        "average": {"ED" | "ES" | "all": {metric: {"mean", "std", "n"}}},
        "counts": {phase: {structure: {status: int}}}, "n_cases": {phase: int}}``.
        Statistics use the cases where the metric is defined (finite): distances of a one-sided empty
        structure (NaN) are left out and counted under ``counts``; both-empty cases enter with Dice 1 and
        distance 0. ``std`` is the population std (ddof=0). ``average`` pools every structure's values
        (of one phase, or of both for ``"all"``). Distances in mm, Dice in [0, 1].
    """
    values: dict[tuple[str, str, str], list[float]] = {
        (p, s, m): [] for p in PHASES for s in STRUCTURE_ORDER for m in METRICS
    }
    counts = {p: {s: dict.fromkeys(STATUSES, 0) for s in STRUCTURE_ORDER} for p in PHASES}
    n_cases = dict.fromkeys(PHASES, 0)
    seen: set[tuple[str, str]] = set()
    for i, case in enumerate(cases):
        patient, phase, metrics = case.get("patient"), case.get("phase"), case.get("metrics")
        if phase not in PHASES:
            raise ValueError(f"case {i} ({patient}): phase must be one of {PHASES}, got {phase!r}")
        if not isinstance(metrics, dict) or set(STRUCTURE_ORDER) - set(metrics):
            raise ValueError(f"case {i} ({patient}, {phase}): metrics must have keys {STRUCTURE_ORDER}")
        if (str(patient), phase) in seen:
            raise ValueError(f"case {i}: ({patient}, {phase}) appears more than once")
        seen.add((str(patient), phase))
        n_cases[phase] += 1
        for s in STRUCTURE_ORDER:
            status = metrics[s]["status"]
            if status not in STATUSES:
                raise ValueError(f"case {i} ({patient}, {phase}) {s}: unknown status {status!r}")
            counts[phase][s][status] += 1
            for m in METRICS:
                values[(phase, s, m)].append(float(metrics[s][m]))
    by_phase = {
        p: {s: {m: _stats(values[(p, s, m)]) for m in METRICS} for s in STRUCTURE_ORDER} for p in PHASES
    }
    average = {
        key: {
            m: _stats([v for p in phases for s in STRUCTURE_ORDER for v in values[(p, s, m)]])
            for m in METRICS
        }
        for key, phases in (("ED", ("ED",)), ("ES", ("ES",)), ("all", PHASES))
    }
    return {"by_phase": by_phase, "average": average, "counts": counts, "n_cases": n_cases}


def _cell(stats: dict[str, float | int], metric: str) -> str:
    if stats["n"] == 0:
        return "n/a"
    digits = 3 if metric == "dice" else 2
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def table1_markdown(summary: dict[str, Any]) -> str:
    """The summary as a markdown table in the layout of the paper's Table 1.

    Rows: ASSD, HD, HD95 (mm) and Dice; columns: LV, MYO, RV at ED and ES, then the average over the
    three structures and both phases; cells are "mean ± std". Footnotes give the convention, the case
    counts and the empty-mask counts per structure and phase.
    """
    columns = [(s, p) for s in TABLE_STRUCTURES for p in PHASES]
    header = ["Metric (unit)", *[f"{s} {p}" for s, p in columns], "Average"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
    for metric, label in TABLE_ROWS:
        cells = [_cell(summary["by_phase"][p][s][metric], metric) for s, p in columns]
        cells.append(_cell(summary["average"]["all"][metric], metric))
        lines.append("| " + " | ".join([label, *cells]) + " |")
    n = summary["n_cases"]
    empties = ", ".join(
        f"{s} {p} " + "/".join(str(summary["counts"][p][s][st]) for st in EMPTY_STATUSES) for s, p in columns
    )
    lines += [
        "",
        f"Convention: {CONVENTION}; mean ± std (ddof=0) over cases where the metric is defined; "
        f"Average pools all structures and both phases. Cases: ED {n['ED']}, ES {n['ES']}.",
        f"Empty masks ({' / '.join(EMPTY_STATUSES)}; distances undefined when one side is empty): {empties}.",
    ]
    return "\n".join(lines) + "\n"
