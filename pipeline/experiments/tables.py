"""Tables of scored runs in markdown: Table 1 per post-processing variant, per fold, and per model over runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.evaluation.report import summarise, table1_markdown, table_metrics
from pipeline.experiments.scoring import fold_headlines, headline, spread_over_folds
from pipeline.vocabulary import PHASES, STRUCTURE_ORDER

#: The paper's names of the models.
LABELS = {"unet": "U-Net", "kunet": "kU-Net", "gridnet": "GridNet", "attention_unet": "Attention U-Net",
          "toflow_unet": "ToFlow U-Net", "deunet_t": "DeU-Net(t)", "deunet_d": "DeU-Net(d)", "deunet": "DeU-Net"}  # fmt: skip
VARIANT_TITLES = {
    "raw": "raw predictions",
    "lcc": "largest connected component per structure",
    "lcc_fill": "largest connected component per structure, holes filled",
}
#: Table 1's blocks: metric, title, digits.
BLOCKS = (("assd", "ASSD (mm)", 2), ("hd", "HD (mm)", 2), ("dice", "Dice", 3))
COLUMNS = [(s, p) for s in STRUCTURE_ORDER for p in PHASES]


def variants_markdown(summaries: Mapping[str, dict[str, Any]], headline: str, title: str) -> str:
    """``title``, then Table 1 of each post-processing variant's summary (``headline`` marked)."""
    text = [f"{title}\n"]
    for variant, summary in summaries.items():
        text += [f"## {VARIANT_TITLES[variant]}{' (headline)' if variant == headline else ''}\n",
                 table1_markdown(summary)]  # fmt: skip
    return "\n".join(text)


def _headline_cell(h: Mapping[str, float]) -> str:
    return f"{h['mean_dice']:.4f} / {h['mean_hd']:.2f} / {h['mean_assd']:.2f} / {h['dice_RV_ES']:.3f}"


def fold_table(rows: Sequence[tuple[str, str, Mapping[int, Sequence[dict[str, Any]]]]], caption: str) -> str:
    """Markdown: mean Dice / HD / ASSD / RV ES Dice of each fold alone, then mean ± std over folds; a row
    per ``(run, model, {fold: cases})``."""
    folds = sorted({fold for _, _, by_fold in rows for fold in by_fold})
    lines = [f"Per fold, {caption}: mean Dice / mean HD (mm) / mean ASSD (mm) / RV ES Dice", "",
             "| run | model | " + " | ".join(f"fold {f}" for f in folds) + " | mean ± std over folds |",
             "|---|---|" + "---|" * (len(folds) + 1)]  # fmt: skip
    for run, model, by_fold in rows:
        heads = fold_headlines({f: c for f, c in by_fold.items() if c})
        if not heads:
            continue
        cells = [_headline_cell(heads[f]) if f in heads else "" for f in folds]
        s = spread_over_folds(heads)
        spread = " / ".join(f"{s[k][0]:.{d}f} ± {s[k][1]:.{d}f}"
                            for k, d in (("mean_dice", 4), ("mean_hd", 2), ("mean_assd", 2), ("dice_RV_ES", 3)))  # fmt: skip
        lines.append(f"| {run} | {model} | " + " | ".join(cells) + f" | {spread} |")
    return "\n".join(lines)


def run_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """One run's Table-1 numbers, flat: ``dice/LV_ED`` ... and ``dice/average`` for each metric."""
    t = table_metrics(summary)
    out = {}
    for metric, _, _ in BLOCKS:
        out.update({f"{metric}/{k}": v for k, v in t[metric].items()})
        out[f"{metric}/average"] = t[f"mean_{metric}"]
    return out


def _cell(values: Sequence[float], digits: int) -> str:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if not arr.size:
        return "n/a"
    return f"{arr.mean():.{digits}f} ± {arr.std():.{digits}f}"


def runs_table(runs: Sequence[dict[str, Any]], models: Sequence[str]) -> str:
    """Table 1's layout over runs: one block per metric, a row per model, mean ± std over its runs of each
    run's :func:`run_metrics` (``runs``: ``{"model", "metrics", "train_seconds"}``), and the whole-cycle Dice
    where runs have it."""
    lines = []
    header = ["Method", *[f"{s} {p}" for s, p in COLUMNS], "Average"]
    for metric, title, digits in BLOCKS:
        lines += [f"**{title}**", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]  # fmt: skip
        keys = [f"{metric}/{s}_{p}" for s, p in COLUMNS] + [f"{metric}/average"]
        for model in models:
            mine = [r["metrics"] for r in runs if r["model"] == model]
            lines.append(
                "| "
                + " | ".join([LABELS.get(model, model), *(_cell([m[k] for m in mine], digits) for k in keys)])
                + " |"
            )
        lines.append("")
    if any("cycle_dice/mean" in r["metrics"] for r in runs):
        lines += [
            "**Whole-cycle Dice (every frame)**",
            "",
            "| Method | LV | MYO | RV | Mean |",
            "|:---|---:|---:|---:|---:|",
        ]
        for model in models:
            mine = [r["metrics"] for r in runs if r["model"] == model]
            cells = [
                _cell([m.get(f"cycle_dice/{s}", math.nan) for m in mine], 3)
                for s in (*STRUCTURE_ORDER, "mean")
            ]
            lines.append("| " + " | ".join([LABELS.get(model, model), *cells]) + " |")
        lines.append("")
    n = {m: sum(r["model"] == m for r in runs) for m in models}
    cost = ", ".join(f"{LABELS.get(m, m)} {np.mean([r['train_seconds'] for r in runs if r['model'] == m]):.0f} s"
                     for m in models if n[m])  # fmt: skip
    lines += [f"Runs per model: {sorted(set(n.values()))} (folds x seeds); mean ± std (ddof=0) over runs of each "
              "run's mean over its held-out patients; 3D metrics, raw predictions.",
              f"Mean training time per run: {cost}.", ""]  # fmt: skip
    return "\n".join(lines)


def cv_report(collected: Mapping[tuple[str, str], dict[str, Any]], tta_order: Sequence[str]) -> str:
    """Markdown over cross-validations (``{(tag, model): Workspace.collect(...)}``): a row per (tag, model, TTA,
    post-processing) with the pooled means, the per-fold tables, then Table 1 of each run's raw and lcc_fill
    cases without TTA and with its strongest."""
    lines = ["| run | model | folds | CPU min/fold | TTA | post-processing | mean Dice | mean HD (mm) | mean ASSD (mm) | RV ES Dice |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    tables, fold_rows = [], {}
    for (tag, model), got in collected.items():
        if not got["folds"]:
            continue
        fold_rows[(tag, model)] = got["by_fold"]
        per_fold = sum(got["cpu_minutes"]) / len(got["cpu_minutes"])
        strongest = [t for t in tta_order if any(t == k for k, _ in got["cases"])][-1]
        for (tta, variant), cases in sorted(got["cases"].items()):
            h = headline(cases)
            lines.append(f"| {tag} | {model} | {','.join(map(str, got['folds']))} | {per_fold:.1f} | {tta} | {variant} | "
                         f"{h['mean_dice']:.4f} | {h['mean_hd']:.2f} | {h['mean_assd']:.2f} | {h['dice_RV_ES']:.4f} |")  # fmt: skip
            if variant in ("raw", "lcc_fill") and tta in ("none", strongest):
                tables.append(f"### {model} ({tag}), folds {got['folds']}, TTA {tta}, {variant}\n\n"
                              + table1_markdown(summarise(cases)))  # fmt: skip
    per_fold_tables = []
    for tta, variant in (("none", "raw"), ("flips", "lcc_fill")):
        rows = [(tag, model, {f: c.get((tta, variant), []) for f, c in by_fold.items()})
                for (tag, model), by_fold in fold_rows.items()]  # fmt: skip
        per_fold_tables.append(fold_table(rows, f"TTA {tta}, {variant}"))
    folds = "\n\n".join(per_fold_tables)
    return "\n".join(lines) + "\n\n" + folds + "\n\n" + "\n\n".join(tables)
