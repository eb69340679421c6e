"""Stage ``tune``: Optuna search over lr and r (and optionally the batch size); its best params go to train.

Writes ``best_params.yaml`` (the ``train`` overrides, a DVC params dependency of the train stage),
``summary.json`` (DVC metrics) and ``trials.tsv``. With ``tune.enabled: false`` the overrides are empty
and train uses params.yaml as it is. ``--worker`` joins a running study from another machine or shell
(needs the same data, params and an RDB storage such as PostgreSQL) and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_directory
from pipeline.config import section
from pipeline.tracking import provenance_tags
from pipeline.tuning.config import TuneConfig
from stages import paths
from stages._common import parser, repo_root, run

log = logging.getLogger("stages.tune")
HEADER = (
    "# Written by the tune stage (Optuna); the train stage applies `train` on top of params.yaml.\n"
    "# Do not edit: set tune.enabled in params.yaml and run `dvc repro` instead.\n"
)


def _write(
    out: Path, overrides: dict[str, Any], summary: dict[str, Any], trials: list[dict[str, Any]]
) -> None:
    with atomic_directory(out) as tmp:
        doc = {"tuned": summary["enabled"], "study": summary.get("study"), "train": overrides}
        (tmp / "best_params.yaml").write_text(HEADER + yaml.safe_dump(doc, sort_keys=False))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        cols = ["number", "state", "lr", "radius", "batch_size", "value", "epochs_run", "best_epoch"]
        lines = ["\t".join(cols)] + [
            "\t".join("" if t.get(c) is None else str(t[c]) for c in cols) for t in trials
        ]
        (tmp / "trials.tsv").write_text("\n".join(lines) + "\n")


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    cfg = section(params, "tune", TuneConfig)
    out = Path(args.out)
    if not cfg.enabled and not args.worker:
        _write(out, {}, {"enabled": False}, [])
        log.info("tune.enabled is false: no study; train uses params.yaml as it is")
        return 0
    from pipeline.tuning.study import run_study, run_worker, spec_from_params

    spec = spec_from_params(params, repo_root(), Path(args.store), Path(args.split), Path(args.work))
    if args.worker:
        ran = run_worker(spec)
        print(f"tune worker: ran {ran} trials of study {spec.study_name}")
        return 0
    result = run_study(spec, provenance_tags(repo_root(), "tune"))
    summary = {
        "enabled": True,
        "study": result.study_name,
        "storage": result.storage,
        "best_trial": result.best_trial,
        "best_val_dice": result.best_value,
        "best_params": result.best_params,
        "n_trials": len(result.trials),
        **{f"n_{k}": v for k, v in result.counts.items()},
        "mlflow_run_id": result.mlflow_run_id,
    }
    _write(out, result.best_params, summary, result.trials)
    print(
        f"tune: study {result.study_name}: {result.counts.get('complete', 0)} complete, "
        f"{result.counts.get('pruned', 0)} pruned; best trial {result.best_trial} "
        f"(validation Dice {result.best_value:.4f}): {result.best_params}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--store", default=paths.PREPROCESSED)
    p.add_argument("--split", default=paths.SPLIT)
    p.add_argument("--out", default=paths.TUNE, help="best_params.yaml, summary.json, trials.tsv")
    p.add_argument("--work", default=paths.TUNE_WORK, help="scratch folder where the trials train")
    p.add_argument("--worker", action="store_true", help="join the running study as one more worker")
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
