"""Stage ``evaluate``: each fold's model on its validation patients, ACDC metrics, clinical indices, figures."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.atomic import atomic_directory
from pipeline.config import section
from pipeline.errors import DataError
from pipeline.evaluation.config import EvaluateConfig
from pipeline.evaluation.runner import VARIANTS
from pipeline.experiments.scoring import cv_metrics, draw_figures, score_folds
from pipeline.experiments.tables import variants_markdown
from pipeline.models.device import resolve_device
from pipeline.splitting.folds import read_split
from pipeline.tracking import TrackingConfig, make_tracker, provenance_tags
from pipeline.training.config import TrainConfig
from stages import paths
from stages._common import parser, repo_root, run

log = logging.getLogger("stages.evaluate")


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
    models = {int(p.stem.removeprefix("fold")): [p] for p in sorted(Path(args.models).glob("fold*.pt"))}
    if not models:
        raise DataError(args.models, "no fold*.pt models; run the train stage")
    device = resolve_device(section(params, "train", TrainConfig).device)
    results = score_folds(models, Path(args.raw), read_split(Path(args.split)), cfg, device=device)
    score = cv_metrics(results, cfg)
    metrics = score.metrics
    with atomic_directory(Path(args.out)) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
        cases = [{"fold": r.fold, "variant": v, **c} for r in results for v in VARIANTS for c in r.cases[v]]
        (tmp / "cases.json").write_text(json.dumps(cases, indent=1, default=float) + "\n")
        pd.DataFrame(score.rows).to_csv(tmp / "clinical.csv", index=False)
        title = f"# Evaluation: {len(results)} patients, folds {sorted({r.fold for r in results})}"
        (tmp / "table1.md").write_text(variants_markdown(score.summaries, cfg.postprocess, title))
        curves = {r.patient: {"pred": r.curves_pred, "ref": r.curves_ref} for r in results if r.curves_pred}
        (tmp / "volume_curves.json").write_text(json.dumps(curves) + "\n")
        draw_figures(score, cfg.overlays, tmp / "figures")
    _track(params, metrics, Path(args.out), Path(args.models).parent / "metrics.json")
    log.info("mean Dice %.4f (%s) | %s", metrics["mean_dice"], cfg.postprocess,
             " ".join(f"{k} {v:.3f}" for k, v in metrics["dice"].items()))  # fmt: skip
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
