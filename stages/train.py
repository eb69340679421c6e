"""Stage ``train``: train the params' model on the split's folds; resumable, CPU or CUDA, torchrun-ready."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_directory
from pipeline.config import section
from pipeline.errors import ConfigError, DataError
from pipeline.experiments.folds import fold_dir, train_folds
from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.tracking import TrackingConfig, make_tracker, provenance_tags
from pipeline.training import distributed as dist
from pipeline.training.config import TrainConfig
from pipeline.training.runkey import run_key
from pipeline.training.trainer import FoldResult
from pipeline.tuning.config import TUNABLE
from stages import paths
from stages._common import parser, repo_root, run

log = logging.getLogger("stages.train")


def _write_curves(path: Path, history: list[dict[str, float]]) -> None:
    cols = list(history[0]) if history else ["epoch"]
    lines = ["\t".join(cols)] + ["\t".join(f"{row[c]:.6g}" for c in cols) for row in history]
    path.write_text("\n".join(lines) + "\n")


def _publish(
    out: Path, work: Path, cfg: TrainConfig, results: list[FoldResult], run_id: str | None
) -> dict[str, Any]:
    """Copy each fold's best checkpoint and curves into the stage output, atomically; returns metrics.json."""
    with atomic_directory(out) as tmp:
        (tmp / "models").mkdir()
        (tmp / "curves").mkdir()
        for r in results:
            shutil.copy2(fold_dir(work, r.fold) / r.model_file, tmp / "models" / f"fold{r.fold}.pt")
            _write_curves(tmp / "curves" / f"fold{r.fold}.tsv", r.history)
        metrics = {
            "model": cfg.model,
            "radius": cfg.radius,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "val_dice_mean": sum(r.best_dice for r in results) / len(results),
            "folds": {
                str(r.fold): {
                    "best_val_dice": r.best_dice,
                    "published": r.model_file,
                    "final_val_dice": r.history[-1]["val_dice"] if r.history else None,
                    "best_epoch": r.best_epoch,
                    "epochs": r.epochs_run,
                }
                for r in results
            },
            "mlflow_run_id": run_id,
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def tuned_overrides(path: Path) -> dict[str, Any]:
    """The ``train`` overrides the tune stage wrote (empty when tuning is off or the file is absent)."""
    if not path.is_file():
        log.info("%s does not exist: training with params.yaml as it is", path)
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(path, f"not valid YAML ({exc}); re-run the tune stage") from None
    overrides = doc.get("train") or {} if isinstance(doc, dict) else None
    if not isinstance(overrides, dict) or set(overrides) - set(TUNABLE):
        raise DataError(path, f"`train` must map a subset of {list(TUNABLE)} to values, got {overrides!r}")
    if overrides:
        log.info("tuned params from %s (study %s): %s", path, doc.get("study"), overrides)
    return overrides


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    overrides = tuned_overrides(Path(args.tuned))
    cfg = section({"train": {**params.get("train", {}), **overrides}}, "train", TrainConfig)
    dist.init_from_env()
    store = ClipStore(args.store)
    split = read_split(Path(args.split))
    n_folds = len(split["folds"])
    bad = [f for f in cfg.folds if not 0 <= f < n_folds]
    if bad:
        raise ConfigError(f"train.folds: {bad} out of range; {args.split} has folds 0..{n_folds - 1}")
    work = Path(args.checkpoints) / run_key(cfg, store, Path(args.split))
    if not cfg.resume and dist.is_main() and work.exists():
        log.info("train.resume is false: removing %s and training from scratch", work)
        shutil.rmtree(work)
    dist.barrier()
    key = work.name
    tags = {**provenance_tags(repo_root(), "train"), "stage": "train", "run_key": key, "model": cfg.model,
            **({"tuned": ",".join(sorted(overrides))} if overrides else {})}  # fmt: skip
    tracking = section(params, "tracking", TrackingConfig)
    with make_tracker(tracking, repo_root(), f"train-{cfg.model}-{key[:8]}", dist.rank(), tags) as tracker:
        tracker.log_params({"train": asdict(cfg), "preprocess": store.meta["config"]})

        def log_epoch(fold: int, row: dict[str, float]) -> None:
            tracker.log_metrics(
                {f"fold{fold}/{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])
            )

        results = train_folds(store, split, cfg, work, on_epoch=log_epoch)
        if dist.is_main():
            metrics = _publish(Path(args.out), work, cfg, results, tracker.run_id)
            tracker.log_metrics({"val_dice_mean": metrics["val_dice_mean"]})
            tracker.log_artifacts(Path(args.out) / "curves", "curves")
            tracker.log_artifact(Path(args.out) / "metrics.json")
            for r in results:
                log.info(
                    "fold %d: best validation Dice %.4f at epoch %d (%d epochs)",
                    r.fold,
                    r.best_dice,
                    r.best_epoch,
                    r.epochs_run,
                )
    dist.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--store", default=paths.PREPROCESSED)
    p.add_argument("--split", default=paths.SPLIT)
    p.add_argument("--checkpoints", default=paths.CHECKPOINTS, help="resumable per-run checkpoints (kept)")
    p.add_argument("--out", default=paths.TRAIN, help="models/foldK.pt, curves/foldK.tsv, metrics.json")
    p.add_argument("--tuned", default=paths.TUNED, help="the tune stage's train overrides")
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
