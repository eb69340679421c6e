"""Where the tracking store is: params, then MLFLOW_TRACKING_URI, then an absolute default in the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.tracking import TrackingConfig, resolve_tracking_uri


def test_default_is_absolute_sqlite_under_repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path.parent)  # the working directory must not matter
    uri = resolve_tracking_uri(TrackingConfig(), tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert Path(uri.removeprefix("sqlite:///")).is_absolute()


def test_env_used_when_params_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert resolve_tracking_uri(TrackingConfig(), tmp_path) == "http://mlflow.internal:5000"


def test_params_win_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    cfg = TrackingConfig(tracking_uri="postgresql://u@db/mlflow")
    assert resolve_tracking_uri(cfg, tmp_path) == "postgresql://u@db/mlflow"


def test_relative_sqlite_made_absolute_against_repo_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path.parent)
    cfg = TrackingConfig(tracking_uri="sqlite:///runs/mlflow.db")
    assert resolve_tracking_uri(cfg, tmp_path) == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(TrackingConfig(), tmp_path) == f"sqlite:///{tmp_path.resolve()}/env.db"


def test_absolute_sqlite_unchanged(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    assert resolve_tracking_uri(TrackingConfig(tracking_uri=uri), Path("/nonexistent")) == uri


def test_blank_uri_rejected() -> None:
    with pytest.raises(ValueError, match="tracking_uri"):
        TrackingConfig(tracking_uri="  ")
