"""Gated promotion in the MLflow model registry.

A newly registered version gets the alias ``challenger``. It takes the alias ``champion`` (the one that
serving loads) only if it beats the current champion on the held-out metric by at least a margin;
otherwise it stays challenger. The comparison is written as tags on the new version either way.

Registration is idempotent: a version carries the sha256 of its checkpoint, and a checkpoint that is
already registered is not registered again. A failure after the version was created deletes that
version again, and aliases move only as the last step, so a failed registration leaves the registry as
it was.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from pipeline.promotion.config import RegisterConfig

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"
HASH_TAG, SCORE_TAG = "checkpoint_sha256", "heldout_score"


@dataclass
class Decision:
    """What the gate decided for one version."""

    version: str
    promoted: bool
    reason: str
    champion_before: str | None
    champion_score: float | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "promoted": self.promoted, "reason": self.reason,
                "champion_before": self.champion_before, "champion_score": self.champion_score,
                "score": self.score}  # fmt: skip


def beats(score: float, champion: float, cfg: RegisterConfig) -> bool:
    """Whether ``score`` beats ``champion`` by at least ``cfg.min_margin`` in the metric's direction."""
    if not math.isfinite(score):
        return False
    if not math.isfinite(champion):
        return True
    gain = score - champion if cfg.higher_is_better else champion - score
    return gain >= cfg.min_margin


def find_version_by_hash(client: Any, name: str, sha256: str) -> Any | None:
    """The registered version of ``name`` whose checkpoint hash tag is ``sha256``, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for v in versions:
        if v.tags.get(HASH_TAG) == sha256:
            return v
    return None


def champion_of(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def decide(client: Any, name: str, version: str, score: float, cfg: RegisterConfig) -> Decision:
    """Compare ``version`` with the current champion (no change to the registry)."""
    champ = champion_of(client, name)
    if champ is None:
        return Decision(version, True, "no champion yet", None, None, score)
    champ_score = float(champ.tags.get(SCORE_TAG, "nan"))
    if beats(score, champ_score, cfg):
        reason = f"{cfg.metric} {score:.4f} beats {champ_score:.4f} by >= {cfg.min_margin}"
        return Decision(version, True, reason, str(champ.version), champ_score, score)
    reason = f"{cfg.metric} {score:.4f} does not beat champion {champ_score:.4f} by {cfg.min_margin}"
    return Decision(version, False, reason, str(champ.version), champ_score, score)


def apply_decision(client: Any, name: str, decision: Decision, cfg: RegisterConfig) -> None:
    """Record the comparison as version tags, then move the aliases (last, so a failure changes nothing)."""
    tags = {
        "gate_metric": cfg.metric,
        "gate_margin": str(cfg.min_margin),
        "gate_decision": "promoted" if decision.promoted else "kept challenger",
        "gate_reason": decision.reason,
        "gate_compared_with": decision.champion_before or "",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, decision.version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, decision.version)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, decision.version)
