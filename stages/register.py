"""Stage ``register``: log the trained folds (an ensemble) as an MLflow pyfunc, register it, gate promotion.

The logged model carries every fold's checkpoint and preprocessing, and evaluate's TTA and post-processing
(from data/evaluation/metrics.json), so the served model answers what evaluate scored.

The new version gets the alias ``challenger``; it becomes ``champion`` (what serving loads) only if it
beats the current champion on the held-out metric by ``register.min_margin``. Re-running registers
nothing new for a checkpoint already in the registry (matched by its sha256), and a failure after the
version was created removes it again, so the registry is left as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_text
from pipeline.config import section
from pipeline.data.download import sha256_file
from pipeline.errors import DataError
from pipeline.promotion.config import RegisterConfig
from pipeline.promotion.gate import (
    CHAMPION,
    HASH_TAG,
    SCORE_TAG,
    Decision,
    apply_decision,
    champion_of,
    decide,
    find_version_by_hash,
)
from pipeline.tracking import TrackingConfig, make_tracker, provenance_tags, resolve_tracking_uri
from stages import paths
from stages._common import parser, repo_root, run

log = logging.getLogger("stages.register")


def _checkpoints(train_metrics: dict[str, Any], models: Path, ensemble: bool) -> list[Path]:
    """Every trained fold's model (an ensemble), or the fold with the best validation Dice."""
    folds = train_metrics.get("folds") or {}
    if not folds:
        raise DataError(models.parent / "metrics.json", "no folds recorded; run the train stage")
    chosen = sorted(folds, key=int) if ensemble else [max(folds, key=lambda k: folds[k]["best_val_dice"])]
    paths = [models / f"fold{k}.pt" for k in chosen]
    for path in paths:
        if not path.is_file():
            raise DataError(path, "model of a trained fold is missing; run the train stage")
    return paths


def _digest(paths: list[Path]) -> str:
    """sha256 of one checkpoint, or of the ordered list of an ensemble's checkpoint digests."""
    shas = [sha256_file(p) for p in paths]
    return shas[0] if len(shas) == 1 else hashlib.sha256(" ".join(shas).encode()).hexdigest()


def _register_new(client: Any, cfg: RegisterConfig, tracking: TrackingConfig, checkpoints: list[Path], sha: str,
                  score: float, evaluation: dict[str, Any], train_run: str | None) -> str:  # fmt: skip
    """Log the pyfunc in a new MLflow run and create a registry version (removed again on failure)."""
    import mlflow

    from pipeline.serving.model_logging import log_pyfunc_model

    tags = {**provenance_tags(repo_root(), "register"), "stage": "register", "train_run_id": train_run or ""}
    version: str | None = None
    with make_tracker(tracking, repo_root(), f"register-{sha[:8]}", tags=tags) as tracker:
        tracker.log_params({"register": asdict(cfg)})
        tracker.log_metrics({cfg.metric: score})
        mlflow.set_tracking_uri(resolve_tracking_uri(tracking, repo_root()))
        try:
            with mlflow.start_run(run_id=tracker.run_id):
                info = log_pyfunc_model(checkpoints, max_request_bytes=cfg.max_request_bytes,
                                        tta=str(evaluation.get("tta", "none")),
                                        postprocess=str(evaluation.get("postprocess", "raw")))  # fmt: skip
            created = mlflow.register_model(info.model_uri, cfg.model_name, await_registration_for=0)
            version = str(created.version)
            for key, value in {HASH_TAG: sha, SCORE_TAG: repr(score), "heldout_metric": cfg.metric,
                               "source_run_id": tracker.run_id or "", "train_run_id": train_run or "",
                               "mean_hd_mm": repr(evaluation.get("mean_hd"))}.items():  # fmt: skip
                client.set_model_version_tag(cfg.model_name, version, key, value)
        except BaseException:
            if version is not None:  # leave the registry as it was
                client.delete_model_version(cfg.model_name, version)
            raise
    return version


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    cfg = section(params, "register", RegisterConfig)
    tracking = section(params, "tracking", TrackingConfig)
    if not tracking.enabled:
        raise DataError(args.out, "tracking.enabled is false: the register stage needs the MLflow registry")
    evaluation = json.loads(Path(args.evaluation).read_text())
    if cfg.metric not in evaluation:
        numeric = [k for k, v in evaluation.items() if isinstance(v, int | float)]
        raise DataError(
            args.evaluation, f"register.metric {cfg.metric!r} is not in it; choose one of {numeric}"
        )
    score = float(evaluation[cfg.metric])
    train_metrics = json.loads((Path(args.models).parent / "metrics.json").read_text())
    checkpoints = _checkpoints(train_metrics, Path(args.models), cfg.ensemble)
    sha = _digest(checkpoints)

    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking, repo_root())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    existing = find_version_by_hash(client, cfg.model_name, sha)
    if existing is not None:
        version = str(existing.version)
        champ = champion_of(client, cfg.model_name)
        decision = Decision(version, champ is not None and str(champ.version) == version,
                            "already registered: nothing changed", None, None, score)  # fmt: skip
        log.info(
            "checkpoint %s is already version %s of %s; registry unchanged", sha[:12], version, cfg.model_name
        )
    else:
        version = _register_new(
            client, cfg, tracking, checkpoints, sha, score, evaluation, train_metrics.get("mlflow_run_id")
        )
        try:
            decision = decide(client, cfg.model_name, version, score, cfg)
            apply_decision(client, cfg.model_name, decision, cfg)
        except BaseException:
            client.delete_model_version(cfg.model_name, version)  # leave the registry as it was
            raise
    champ = champion_of(client, cfg.model_name)
    record = {
        "model_name": cfg.model_name,
        "version": version,
        "checkpoint": str(checkpoints[0]),
        "checkpoints": [str(p) for p in checkpoints],
        "checkpoint_sha256": sha,
        "metric": cfg.metric,
        "score": score,
        "decision": decision.to_dict(),
        "champion": str(champ.version) if champ is not None else None,
        "serve": f"mlflow models serve -m models:/{cfg.model_name}@{CHAMPION} --env-manager local",
    }
    atomic_write_text(Path(args.out), json.dumps(record, indent=1) + "\n")
    print(f"register: {cfg.model_name} v{version} ({cfg.metric} {score:.4f}) -> "
          f"{'champion' if decision.promoted else 'challenger'}: {decision.reason}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--evaluation", default=paths.EVALUATION_METRICS)
    p.add_argument("--models", default=paths.MODELS)
    p.add_argument("--out", default=paths.REGISTRATION)
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
