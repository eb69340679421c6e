"""Register a training's folds as one MLflow model version and gate its promotion.

What the register stage does, as a function: choose the folds to ship (every fold, an ensemble, or the best
one), checksum them, and either find the version that already holds those checkpoints or log the pyfunc in a
new MLflow run, create the version and apply the gate (:mod:`pipeline.promotion.gate`). A failure after the
version was created deletes it again, so the registry is left as it was.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

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

log = logging.getLogger(__name__)


def chosen_checkpoints(train_metrics: dict[str, Any], models: Path, ensemble: bool) -> list[Path]:
    """Every trained fold's model (an ensemble), or the fold with the best validation Dice; DataError naming
    the file when the training recorded no fold or a fold's model is missing."""
    folds = train_metrics.get("folds") or {}
    if not folds:
        raise DataError(models.parent / "metrics.json", "no folds recorded; run the train stage")
    chosen = sorted(folds, key=int) if ensemble else [max(folds, key=lambda k: folds[k]["best_val_dice"])]
    paths = [models / f"fold{k}.pt" for k in chosen]
    for path in paths:
        if not path.is_file():
            raise DataError(path, "model of a trained fold is missing; run the train stage")
    return paths


def digest(paths: list[Path]) -> str:
    """sha256 of one checkpoint, or of the ordered list of an ensemble's checkpoint digests."""
    shas = [sha256_file(p) for p in paths]
    return shas[0] if len(shas) == 1 else hashlib.sha256(" ".join(shas).encode()).hexdigest()


def _register_new(client: Any, cfg: RegisterConfig, tracking: TrackingConfig, root: Path, checkpoints: list[Path],
                  sha: str, score: float, evaluation: dict[str, Any], train_run: str | None) -> str:  # fmt: skip
    """Log the pyfunc in a new MLflow run and create a registry version (removed again on failure)."""
    import mlflow

    from pipeline.serving.model_logging import log_pyfunc_model

    tags = {**provenance_tags(root, "register"), "stage": "register", "train_run_id": train_run or ""}
    version: str | None = None
    with make_tracker(tracking, root, f"register-{sha[:8]}", tags=tags) as tracker:
        tracker.log_params({"register": asdict(cfg)})
        tracker.log_metrics({cfg.metric: score})
        mlflow.set_tracking_uri(resolve_tracking_uri(tracking, root))
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


def register_folds(cfg: RegisterConfig, tracking: TrackingConfig, root: Path, models: Path,
                   train_metrics: dict[str, Any], evaluation: dict[str, Any], score: float) -> dict[str, Any]:  # fmt: skip
    """Register the chosen folds of ``models`` (unless their checkpoints already are a version), gate the new
    version on ``score`` and return the record the register stage writes: version, checkpoints and their
    sha256, the decision, the champion and the command that serves it."""
    from mlflow import MlflowClient

    checkpoints = chosen_checkpoints(train_metrics, models, cfg.ensemble)
    sha = digest(checkpoints)
    uri = resolve_tracking_uri(tracking, root)
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
        version = _register_new(client, cfg, tracking, root, checkpoints, sha, score, evaluation,
                                train_metrics.get("mlflow_run_id"))  # fmt: skip
        try:
            decision = decide(client, cfg.model_name, version, score, cfg)
            apply_decision(client, cfg.model_name, decision, cfg)
        except BaseException:
            client.delete_model_version(cfg.model_name, version)  # leave the registry as it was
            raise
    champ = champion_of(client, cfg.model_name)
    return {
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
