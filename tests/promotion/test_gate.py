"""The promotion gate on a real MLflow SQLite registry: challenger first, champion only when better."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.promotion.config import RegisterConfig
from pipeline.promotion.gate import (
    CHALLENGER,
    CHAMPION,
    HASH_TAG,
    SCORE_TAG,
    apply_decision,
    beats,
    decide,
    find_version_by_hash,
)

os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


def test_beats_respects_direction_and_margin() -> None:
    cfg = RegisterConfig(min_margin=0.01)
    assert beats(0.90, 0.88, cfg) and not beats(0.885, 0.88, cfg) and beats(0.5, float("nan"), cfg)
    assert not beats(float("nan"), 0.1, cfg)
    lower = RegisterConfig(metric="mean_hd", higher_is_better=False, min_margin=0.5)
    assert beats(3.0, 4.0, lower) and not beats(3.8, 4.0, lower)
    with pytest.raises(ValueError, match="max_request_bytes"):
        RegisterConfig(max_request_bytes=10)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    return MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")


def _register(client, name: str, sha: str, score: float, tmp: Path) -> str:  # type: ignore[no-untyped-def]
    if client.search_registered_models(f"name = '{name}'") == []:
        client.create_registered_model(name)
    source = tmp / sha
    source.mkdir(exist_ok=True)
    version = client.create_model_version(
        name, source=str(source), tags={HASH_TAG: sha, SCORE_TAG: str(score)}
    )
    return str(version.version)


def test_gate_promotes_only_a_better_model(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = RegisterConfig(min_margin=0.01)
    name = "gate-test"
    v1 = _register(client, name, "aaa", 0.80, tmp_path)
    d1 = decide(client, name, v1, 0.80, cfg)
    assert d1.promoted and d1.reason == "no champion yet"
    apply_decision(client, name, d1, cfg)
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == v1

    v2 = _register(client, name, "bbb", 0.805, tmp_path)  # better, but not by the margin
    d2 = decide(client, name, v2, 0.805, cfg)
    apply_decision(client, name, d2, cfg)
    assert not d2.promoted
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == v1
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == v2
    tags = client.get_model_version(name, v2).tags
    assert tags["gate_decision"] == "kept challenger" and tags["gate_compared_with"] == v1

    v3 = _register(client, name, "ccc", 0.85, tmp_path)
    d3 = decide(client, name, v3, 0.85, cfg)
    apply_decision(client, name, d3, cfg)
    assert d3.promoted and d3.champion_before == v1 and d3.champion_score == pytest.approx(0.80)
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == v3
    assert str(find_version_by_hash(client, name, "bbb").version) == v2
    assert find_version_by_hash(client, name, "zzz") is None
