"""Tracker against a real MLflow SQLite store (one module-scoped database: MLflow's first init migrates)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import section
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.tracking import NullTracker, Tracker, TrackingConfig, TrackingError, make_tracker
from pipeline.tracking.tracker import sanitize_key


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrackingConfig, Path, MlflowClient]:
    root = tmp_path_factory.mktemp("repo")
    cfg = TrackingConfig(tracking_uri="sqlite:///mlruns/mlflow.db", experiment="tests")  # relative
    with Tracker.start(cfg, root, "warm-up"):  # pays the schema migration once
        pass
    return cfg, root, MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def _runs(client: MlflowClient, experiment: str = "tests") -> int:
    exp = client.get_experiment_by_name(experiment)
    return len(client.search_runs([exp.experiment_id])) if exp else 0


def test_relative_sqlite_path_lands_under_repo_root_with_artifacts_beside_it(store) -> None:
    _, root, client = store
    assert (root / "mlruns" / "mlflow.db").is_file()
    exp = client.get_experiment_by_name("tests")
    assert exp.artifact_location == (root / "mlruns" / "mlartifacts").as_uri()


def test_params_are_flattened_stringified_and_truncated(store) -> None:
    cfg, root, client = store
    with Tracker.start(cfg, root, "params") as t:
        t.log_params({"train": {"lr": 2e-4, "folds": [0, 1], "aug": {"flip": True}}, "model": "deunet"})
        t.log_params({"note": "x" * 7000})
    params = client.get_run(t.run_id).data.params
    assert params["train.lr"] == "0.0002"
    assert params["train.folds"] == "[0, 1]"
    assert params["train.aug.flip"] == "True"
    assert params["model"] == "deunet"
    assert len(params["note"]) == 6000


def test_epoch_metrics_history_skips_nan_and_sanitises_keys(store) -> None:
    cfg, root, client = store
    losses = [0.9, 0.5, 0.3]
    with Tracker.start(cfg, root, "epochs") as t:
        for epoch, loss in enumerate(losses, start=1):  # what the trainer's on_epoch callback sends
            t.log_metrics({"train_loss": loss, "val_dice": 0.5 + epoch / 10, "hd(LV)": math.nan}, step=epoch)
        t.log_metrics({"dice/ED/LV": 0.91, "dice/ES/RV": None})
    history = client.get_metric_history(t.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(losses)
    metrics = client.get_run(t.run_id).data.metrics
    assert metrics["dice/ED/LV"] == pytest.approx(0.91)
    assert not any(k.startswith("hd") for k in metrics)  # NaN never logged, under either spelling
    assert "dice/ES/RV" not in metrics


def test_non_numeric_metric_is_a_type_error_naming_the_key(store) -> None:
    cfg, root, _ = store
    with pytest.raises(TypeError, match="'model'"), Tracker.start(cfg, root, "bad-metric") as t:
        t.log_metrics({"model": "deunet"})  # type: ignore[dict-item]


def test_sanitize_key_follows_mlflow_rules() -> None:
    assert sanitize_key("hd(LV) [mm]") == "hd_LV_ _mm_"
    assert sanitize_key("/a//./b/../c/") == "a/b/c"
    assert sanitize_key("dice/ED/LV") == "dice/ED/LV"
    assert len(sanitize_key("k" * 300)) == 250


def test_artifacts_file_and_folder(store, tmp_path: Path) -> None:
    cfg, root, client = store
    report = tmp_path / "table1.md"
    report.write_text("| structure | Dice |\n")
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "curve.png").write_bytes(b"\x89PNG")
    with Tracker.start(cfg, root, "artifacts") as t:
        t.log_artifact(report)
        t.log_artifacts(figures, "figures")
        with pytest.raises(DataError, match=r"missing\.md"):
            t.log_artifact(tmp_path / "missing.md")
    top = {a.path for a in client.list_artifacts(t.run_id)}
    assert top == {"table1.md", "figures"}
    assert [a.path for a in client.list_artifacts(t.run_id, "figures")] == ["figures/curve.png"]


def test_status_finished_or_failed(store) -> None:
    cfg, root, client = store
    with Tracker.start(cfg, root, "ok") as ok:
        pass
    with pytest.raises(RuntimeError, match="boom"), Tracker.start(cfg, root, "fails") as bad:
        raise RuntimeError("boom")
    assert client.get_run(ok.run_id).info.status == "FINISHED"
    assert client.get_run(bad.run_id).info.status == "FAILED"


def test_tags_and_nested_child_run(store) -> None:
    cfg, root, client = store
    with Tracker.start(cfg, root, "study", tags={"git_commit": "abc123", "data.data/split": "9f"}) as t:
        t.set_tags({"stage": "tune"})
        with t.child("trial-0", tags={"trial": 0}) as child:
            child.log_metrics({"val_dice": 0.8}, step=1)
    tags = client.get_run(t.run_id).data.tags
    assert tags["git_commit"] == "abc123"
    assert tags["data.data/split"] == "9f"
    assert tags["stage"] == "tune"
    child_run = client.get_run(child.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == t.run_id
    assert child_run.data.tags["trial"] == "0"
    assert child_run.info.status == "FINISHED"


def test_rank_nonzero_and_disabled_create_no_run(store) -> None:
    cfg, root, client = store
    before = _runs(client)
    disabled = TrackingConfig(enabled=False, tracking_uri=cfg.tracking_uri, experiment="tests")
    for tracker in (make_tracker(cfg, root, "rank1", rank=1), make_tracker(disabled, root, "off", rank=0)):
        assert isinstance(tracker, NullTracker)
        with tracker as t:
            t.log_params({"a": 1})
            t.log_metrics({"loss": 1.0}, step=1)
            assert t.run_id is None
    assert _runs(client) == before
    with make_tracker(cfg, root, "rank0", rank=0) as t0:
        assert isinstance(t0, Tracker)
    assert _runs(client) == before + 1


def test_telemetry_switched_off(store) -> None:
    from mlflow.telemetry.utils import is_telemetry_disabled

    assert is_telemetry_disabled()


def test_corrupt_database_is_a_tracking_error_naming_the_uri(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database" * 100)
    uri = f"sqlite:///{db}"
    with pytest.raises(TrackingError) as info:
        Tracker.start(TrackingConfig(tracking_uri=uri), tmp_path, "x")
    assert uri in str(info.value)
    assert "MLFLOW_TRACKING_URI" in str(info.value) and "tracking.tracking_uri" in str(info.value)
    assert isinstance(info.value, PipelineError)


def test_database_path_that_is_a_directory_is_a_tracking_error(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").mkdir()
    with pytest.raises(TrackingError, match="is a directory"):
        Tracker.start(TrackingConfig(tracking_uri="sqlite:///mlflow.db"), tmp_path, "x")


def test_tracking_section_is_typed_and_checked() -> None:
    cfg = section({"tracking": {"enabled": False, "experiment": "acdc"}}, "tracking", TrackingConfig)
    assert cfg == TrackingConfig(enabled=False, tracking_uri=None, experiment="acdc")
    with pytest.raises(ConfigError, match="did you mean 'tracking_uri'"):
        section({"tracking": {"tracking_url": "x"}}, "tracking", TrackingConfig)
    with pytest.raises(ConfigError, match="experiment"):
        section({"tracking": {"experiment": " "}}, "tracking", TrackingConfig)


def test_unreachable_database_fails_fast_and_never_shows_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import time

    from pipeline.tracking.config import redact_uri

    uri = "postgresql://me:s3cret@127.0.0.1:9/mlflow"
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(TrackingError) as info:
        make_tracker(TrackingConfig(tracking_uri=uri), Path("."), "run", 0, {})
    assert "postgresql://me:***@127.0.0.1:9/mlflow: cannot connect to the database" in str(info.value)
    assert time.monotonic() - start < 60  # not MLflow's ~100 s of retries
    assert "s3cret" not in str(info.value) and "s3cret" not in caplog.text
    assert redact_uri("http://bot:tok3n@mlflow.example:5000/") == "http://bot:***@mlflow.example:5000/"
    assert redact_uri("sqlite:////repo/mlflow.db") == "sqlite:////repo/mlflow.db"


def test_the_run_log_line_shows_no_credentials(store, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    # The same logging path as a real store: the URI is logged redacted when a run starts.
    _, _, client = store
    experiment_id = client.get_experiment_by_name("tests").experiment_id
    with caplog.at_level(logging.INFO, logger="pipeline.tracking.tracker"):
        run = Tracker._create(client, "postgresql://me:s3cret@db/mlflow", experiment_id, "r", {}, None)
    run.end()
    assert "started in postgresql://me:***@db/mlflow" in caplog.text and "s3cret" not in caplog.text
