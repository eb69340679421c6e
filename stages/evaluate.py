"""Stage ``evaluate``: each fold's model on its validation patients, ACDC metrics, clinical indices, figures."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_directory
from pipeline.checkpoint.io import load_checkpoint
from pipeline.config import section
from pipeline.errors import DataError
from pipeline.evaluation import agreement, summarise, table1_markdown
from pipeline.evaluation.config import EvaluateConfig
from pipeline.evaluation.metrics import STRUCTURE_ORDER
from pipeline.evaluation.report import headline_means
from pipeline.evaluation.runner import VARIANTS, PatientResult, clinical_table, evaluate_patients
from pipeline.inference.predict import Segmenter
from pipeline.models.device import resolve_device
from pipeline.splitting.folds import read_split
from pipeline.tracking import TrackingConfig, make_tracker, provenance_tags
from pipeline.training.config import TrainConfig
from pipeline.vocabulary import PHASES
from stages import paths
from stages._common import parser, repo_root, run

log = logging.getLogger("stages.evaluate")
AGREEMENT = (
    ("LV_EF", "%"),
    ("LV_EDV", "ml"),
    ("LV_ESV", "ml"),
    ("RV_EF", "%"),
    ("RV_EDV", "ml"),
    ("MYO_mass", "g"),
)


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in ("dice", "hd", "hd95", "assd"):
        out[metric] = {
            f"{s}_{p}": summary["by_phase"][p][s][metric]["mean"] for s in STRUCTURE_ORDER for p in PHASES
        }
        out[f"mean_{metric}"] = summary["average"]["all"][metric]["mean"]
    out["empty_cases"] = {f"{s}_{p}": {k: v for k, v in summary["counts"][p][s].items() if k != "ok" and v}
                          for s in STRUCTURE_ORDER for p in PHASES}  # fmt: skip
    return out


VARIANT_TITLES = {
    "raw": "raw predictions",
    "lcc": "largest connected component per structure",
    "lcc_fill": "largest connected component per structure, holes filled",
}


def _figures(
    results: list[PatientResult], rows: list[dict[str, Any]], cfg: EvaluateConfig, out: Path
) -> None:
    from pipeline.evaluation.figures import bland_altman_figure, overlay_figure, volume_curve_figure

    figs = out / "figures"
    figs.mkdir()
    for r in results[: cfg.overlays]:
        a = r.arrays
        for p in PHASES:
            z = a[f"gt_{p}"].shape[0]
            slices = sorted({max(0, z // 4), z // 2, min(z - 1, (3 * z) // 4)})
            overlay_figure(a[f"image_{p}"], a[f"gt_{p}"], a[f"pred_{p}"], slices, figs / f"overlay_{r.patient}_{p}.png",
                           title=f"{r.patient} {p} (fold {r.fold}): truth solid, prediction dashed")  # fmt: skip
        if r.curves_pred is not None:
            markers = {"ED": r.phases_ref[0], "ES": r.phases_ref[1]}
            volume_curve_figure(
                r.curves_pred, r.curves_ref, markers, figs / f"volumes_{r.patient}.png", title=r.patient
            )
    table = pd.DataFrame(rows)
    for key, unit in AGREEMENT:
        bland_altman_figure(
            table[f"{key}_pred"], table[f"{key}_ref"], key, unit, figs / f"bland_altman_{key}.png"
        )


def _track(params: dict[str, Any], metrics: dict[str, Any], out: Path, train_metrics: Path) -> None:
    """Log the held-out metrics, the report and the figures to MLflow, linked to the training run."""
    train_run = (
        json.loads(train_metrics.read_text()).get("mlflow_run_id") if train_metrics.is_file() else None
    )
    tags = {**provenance_tags(repo_root(), "evaluate"), "stage": "evaluate", "train_run_id": train_run or ""}
    with make_tracker(
        section(params, "tracking", TrackingConfig), repo_root(), "evaluate", tags=tags
    ) as tracker:
        tracker.log_params({"evaluate": params.get("evaluate", {})})
        flat = {f"{m}/{k}": v for m in ("dice", "hd", "hd95", "assd") for k, v in metrics[m].items()}
        flat.update({k: v for k, v in metrics.items() if k.startswith("mean_")})
        flat.update({f"whole_cycle_dice/{k}": v for k, v in metrics.get("whole_cycle_dice", {}).items()})
        flat.update(
            {f"clinical/{k}/{s}": v[s] for k, v in metrics["clinical"].items() for s in ("pearson_r", "bias")}
        )
        tracker.log_metrics(flat)
        for name in ("metrics.json", "table1.md", "clinical.csv", "cases.json"):
            tracker.log_artifact(out / name)
        tracker.log_artifacts(out / "figures", "figures")


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    cfg = section(params, "evaluate", EvaluateConfig)
    split = read_split(Path(args.split))
    models = sorted(Path(args.models).glob("fold*.pt"))
    if not models:
        raise DataError(args.models, "no fold*.pt models; run the train stage")
    device = resolve_device(section(params, "train", TrainConfig).device)
    results: list[PatientResult] = []
    for path in models:
        fold = int(path.stem.removeprefix("fold"))
        seg = Segmenter.from_checkpoint(load_checkpoint(path), names=[str(path)], device=device,
                                        batch_size=cfg.batch_size, tta=cfg.tta, postprocess=cfg.postprocess)  # fmt: skip
        results += evaluate_patients(seg, Path(args.raw), split["folds"][fold]["val"], fold, cfg)
    rows = clinical_table(results)
    summaries = {v: summarise([c for r in results for c in r.cases[v]]) for v in VARIANTS}
    metrics: dict[str, Any] = {"postprocess": cfg.postprocess, "n_patients": len(results),
                               **_headline(summaries[cfg.postprocess])}  # fmt: skip
    metrics["variants"] = {v: headline_means(summaries[v]) for v in VARIANTS}
    metrics["folds"] = {
        str(k): headline_means(
            summarise([c for r in results if r.fold == k for c in r.cases[cfg.postprocess]])
        )
        | {"n_patients": sum(r.fold == k for r in results)}
        for k in sorted({r.fold for r in results})
    }
    metrics["tta"] = cfg.tta
    cycle = [r.cycle_dice for r in results if r.cycle_dice is not None]
    if cycle:
        metrics["whole_cycle_dice"] = {s: float(np.mean([c[s] for c in cycle])) for s in STRUCTURE_ORDER}
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
    with atomic_directory(Path(args.out)) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
        cases = [{"fold": r.fold, "variant": v, **c} for r in results for v in VARIANTS for c in r.cases[v]]
        (tmp / "cases.json").write_text(json.dumps(cases, indent=1, default=float) + "\n")
        table.to_csv(tmp / "clinical.csv", index=False)
        text = [f"# Evaluation: {len(results)} patients, folds {sorted({r.fold for r in results})}\n"]
        for v in VARIANTS:
            label = VARIANT_TITLES[v]
            text += [
                f"## {label}{' (headline)' if v == cfg.postprocess else ''}\n",
                table1_markdown(summaries[v]),
            ]
        (tmp / "table1.md").write_text("\n".join(text))
        curves = {r.patient: {"pred": r.curves_pred, "ref": r.curves_ref} for r in results if r.curves_pred}
        (tmp / "volume_curves.json").write_text(json.dumps(curves) + "\n")
        _figures(results, rows, cfg, tmp)
    _track(params, metrics, Path(args.out), Path(args.models).parent / "metrics.json")
    dice = metrics["dice"]
    log.info("mean Dice %.4f (%s) | %s", metrics["mean_dice"], cfg.postprocess,
             " ".join(f"{k} {v:.3f}" for k, v in dice.items()))  # fmt: skip
    print(f"evaluate: mean Dice {metrics['mean_dice']:.4f}, mean HD {metrics['mean_hd']:.2f} mm, "
          f"mean ASSD {metrics['mean_assd']:.2f} mm over {len(results)} held-out patients "
          f"({cfg.postprocess}, tta {cfg.tta}; raw: Dice {metrics['variants']['raw']['mean_dice']:.4f}, "
          f"HD {metrics['variants']['raw']['mean_hd']:.2f} mm)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--raw", default=paths.RAW)
    p.add_argument("--split", default=paths.SPLIT)
    p.add_argument("--models", default=paths.MODELS)
    p.add_argument("--out", default=paths.EVALUATION)
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
