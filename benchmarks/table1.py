"""The paper's Table 1: train and evaluate every model on the same folds, seeds and budget.

Uses the pipeline's current data (``data/preprocessed``, ``data/raw``, ``data/split/folds.json``: run
``dvc repro split`` first; the embedded phantom by default, acdc-roi with ``download.source: local``)
and params.yaml's ``train`` section as the shared budget, overriding only the model, the seed, the fold
and (optionally) the epochs. Each run trains with the real trainer (resumable: a killed benchmark
continues; finished runs are reused) and is evaluated like the evaluate stage (3D, header spacing, raw
predictions). The table gives mean ± std over folds x seeds of each run's per-patient mean, in the
paper's layout (ASSD, HD, Dice per structure at ED and ES, and their average), plus the whole-cycle
Dice where every frame is labelled (the phantom). Every run is an MLflow child run of one parent run.

    python -m benchmarks.table1 --seeds 0 1 2 --epochs 12          # all eight models
    python -m benchmarks.table1 --models unet deunet --folds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import atomic_directory
from pipeline.checkpoint.io import load_checkpoint, model_from_checkpoint
from pipeline.config import load_params, section
from pipeline.evaluation.config import EvaluateConfig
from pipeline.evaluation.report import summarise
from pipeline.experiments.folds import fold_dir, fold_patients, train_folds
from pipeline.experiments.scoring import pooled_cases, score_fold, whole_cycle_means
from pipeline.experiments.tables import run_metrics, runs_table
from pipeline.models import available_models
from pipeline.models.device import resolve_device
from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.tracking import TrackingConfig, make_tracker, provenance_tags
from pipeline.training.config import TrainConfig
from pipeline.training.runkey import run_key

log = logging.getLogger("benchmarks.table1")


def _one_run(model: str, seed: int, fold: int, base: TrainConfig, args: argparse.Namespace, store: ClipStore,
             split: dict[str, Any], device: torch.device) -> dict[str, Any]:  # fmt: skip
    cfg = replace(base, model=model, seed=seed, folds=(fold,), resume=True,
                  **({"max_epochs": args.epochs} if args.epochs else {}),
                  **({"patience": args.patience} if args.patience else {}))  # fmt: skip
    work = Path(args.out) / "checkpoints" / run_key(cfg, store, Path(args.split))
    (result,) = train_folds(store, split, cfg, work)
    published = fold_dir(work, fold) / result.model_file
    train_seconds = sum(row["seconds"] for row in result.history)
    ev = EvaluateConfig(whole_cycle=args.whole_cycle, overlays=0, tta="none", postprocess="raw")
    results = score_fold(
        [published], Path(args.raw), fold_patients(split, fold)["val"], fold, ev, device=device
    )
    metrics = run_metrics(summarise(pooled_cases(results, "raw")))
    if (cycle := whole_cycle_means(results)) is not None:
        metrics.update({f"cycle_dice/{s}": v for s, v in cycle.items()})
        metrics["cycle_dice/mean"] = float(np.mean(list(cycle.values())))
    log.info("%s seed %d fold %d: Dice %.4f HD %.2f ASSD %.2f (%d epochs, %.0f s train)", model, seed, fold,
             metrics["dice/average"], metrics["hd/average"], metrics["assd/average"], result.epochs_run, train_seconds)  # fmt: skip
    model_net = model_from_checkpoint(load_checkpoint(published))
    return {"model": model, "seed": seed, "fold": fold, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "val_dice": result.best_dice, "train_seconds": train_seconds, "params": asdict(cfg),
            "n_parameters": sum(p.numel() for p in model_net.parameters()), "metrics": metrics}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--models", nargs="+", default=available_models(), choices=available_models())
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--folds", nargs="+", type=int, default=None, help="default: train.folds")
    p.add_argument("--epochs", type=int, default=0, help="max epochs per run (0: train.max_epochs)")
    p.add_argument("--patience", type=int, default=0, help="early-stopping patience (0: train.patience)")
    p.add_argument("--store", default="data/preprocessed")
    p.add_argument("--raw", default="data/raw")
    p.add_argument("--split", default="data/split/folds.json")
    p.add_argument("--out", default="data/bench/table1")
    p.add_argument("--whole-cycle", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip
    params = load_params(args.params)
    base = section(params, "train", TrainConfig)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    store, split = ClipStore(args.store), read_split(Path(args.split))
    folds = args.folds if args.folds is not None else list(base.folds)
    device = resolve_device(base.device)
    tags = {**provenance_tags(Path.cwd(), None), "benchmark": "table1"}
    runs = []
    with make_tracker(section(params, "tracking", TrackingConfig), Path.cwd(), "table1", 0, tags) as parent:
        parent.log_params({"models": args.models, "seeds": args.seeds, "folds": folds, "train": asdict(base),
                           "epochs": args.epochs or base.max_epochs, "device": str(device)})  # fmt: skip
        for model in args.models:
            for seed in args.seeds:
                for fold in folds:
                    run = _one_run(model, seed, fold, base, args, store, split, device)
                    runs.append(run)
                    with parent.child(
                        f"{model}-s{seed}-f{fold}", {"model": model, "benchmark": "table1"}
                    ) as child:
                        child.log_params({"model": model, "seed": seed, "fold": fold, "epochs": run["epochs"],
                                          "n_parameters": run["n_parameters"]})  # fmt: skip
                        child.log_metrics(
                            {k.replace("/", "_"): v for k, v in run["metrics"].items()}
                            | {"train_seconds": run["train_seconds"], "val_dice": run["val_dice"]}
                        )
        table = runs_table(runs, args.models)
        with atomic_directory(Path(args.out) / "report") as tmp:
            (tmp / "runs.json").write_text(json.dumps(runs, indent=1, default=str) + "\n")
            (tmp / "table1.md").write_text(table)
        parent.log_artifacts(Path(args.out) / "report", "table1")
        for model in args.models:
            mine = [r["metrics"]["dice/average"] for r in runs if r["model"] == model]
            parent.log_metrics(
                {f"{model}_dice_mean": float(np.mean(mine)), f"{model}_dice_std": float(np.std(mine))}
            )
    print(table)
    print(f"written: {Path(args.out) / 'report' / 'table1.md'} and runs.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
