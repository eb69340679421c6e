"""Optuna tuning with the real trainer on a tiny phantom store: pruning, continuing a study, MLflow child
runs, the train stage's overrides, and two worker processes sharing one PostgreSQL study."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from pipeline.config import section
from pipeline.errors import ConfigError, DataError
from pipeline.tuning.study import TuningError, WorkerSpec, run_study, spec_from_params
from stages.train import tuned_overrides

TINY_TRAIN = {"model": "unet", "model_args": {"base_channels": 4, "depth": 2}, "lr": 1e-3, "radius": 1,
              "batch_size": 8, "threads": 1, "augment": {"rotate_deg": 0.0}}  # fmt: skip


def _params(tmp_path: Path, storage: str | None = None, **tune: object) -> dict:
    return {
        "tune": {
            "enabled": True,
            "n_trials": 4,
            "epochs": 3,
            "lr": [1e-6, 1e-1],
            "radius": [0, 1, 2],
            "startup_trials": 1,
            "warmup_epochs": 0,
            "storage": storage or f"sqlite:///{tmp_path}/optuna.db",
            **tune,
        },
        "train": dict(TINY_TRAIN),
        "tracking": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "tune-test"},
    }


def _spec(tiny_data: Path, tmp_path: Path, params: dict) -> WorkerSpec:
    return spec_from_params(
        params, tmp_path, tiny_data / "pre", tiny_data / "folds.json", tmp_path / "tune_work"
    )


def _children(tracking_uri: str, parent_run_id: str) -> list:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("tune-test")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_config_refuses_bad_spaces(tiny_data: Path, tmp_path: Path) -> None:
    from pipeline.tuning import TuneConfig

    with pytest.raises(ConfigError, match=r"tune: workers = 2 needs .*PostgreSQL"):
        section({"tune": {"workers": 2}}, "tune", TuneConfig)
    with pytest.raises(ConfigError, match=r"tune: lr range must be positive"):
        section({"tune": {"lr": [0.0, 0.1]}}, "tune", TuneConfig)
    with pytest.raises(ConfigError, match=r"tune.pruner: must be one of"):
        section({"tune": {"pruner": "hyperband"}}, "tune", TuneConfig)
    with pytest.raises(ConfigError, match=r"tune.radius: choices \[4\] exceed .*max_radius = 3"):
        _spec(tiny_data, tmp_path, _params(tmp_path, radius=[1, 4]))
    with pytest.raises(ConfigError, match=r"tune.fold: 5 is out of range"):
        _spec(tiny_data, tmp_path, _params(tmp_path, fold=5))


def test_study_prunes_logs_children_and_continues(tiny_data: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_data, tmp_path, _params(tmp_path))
    result = run_study(spec)

    states = [t["state"] for t in result.trials]
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}
    assert result.counts["pruned"] >= 1, result.trials  # the median pruner stopped a trial that fell behind
    # Trial 0 is params.yaml's own setting, the baseline the search has to beat.
    assert (result.trials[0]["lr"], result.trials[0]["radius"]) == (1e-3, 1)
    complete = [t for t in result.trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    assert result.best_trial == best["number"] and result.best_value == pytest.approx(best["value"])
    assert result.best_params == {"lr": best["lr"], "radius": best["radius"]}
    pruned = [t for t in result.trials if t["state"] == "PRUNED"]
    assert all(t["epochs_run"] < 3 for t in pruned)  # stopped before the last epoch
    # Trials trained in temporary folders under the work folder, removed again.
    assert spec.work == (tmp_path / "tune_work").resolve() and not any(spec.work.iterdir())

    children = _children(f"sqlite:///{tmp_path}/mlflow.db", result.mlflow_run_id)
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == [0, 1, 2, 3]
    assert {r.data.tags["optuna_state"] for r in children} == set(states)
    assert all("val_dice" in r.data.metrics for r in children)

    # The same study again: every trial is there, nothing runs. One more trial asked: exactly one runs.
    assert len(run_study(spec).trials) == 4
    more = run_study(replace(spec, tune=replace(spec.tune, n_trials=5)))
    assert more.study_name == spec.study_name and len(more.trials) == 5
    study = optuna.load_study(study_name=spec.study_name, storage=spec.storage)
    assert len(study.trials) == 5


def test_a_study_with_no_complete_trial_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    spec = _spec(tiny_data, tmp_path, _params(tmp_path, n_trials=1, epochs=1))
    study = optuna.create_study(study_name=spec.study_name, storage=spec.storage, direction="maximize")
    study.enqueue_trial({"lr": 1e-3, "radius": 1})
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    with pytest.raises(TuningError, match=r"no trial completed"):
        run_study(spec)


def test_train_reads_only_tunable_overrides(tmp_path: Path) -> None:
    assert tuned_overrides(tmp_path / "absent.yaml") == {}
    good = tmp_path / "best.yaml"
    good.write_text(yaml.safe_dump({"tuned": True, "study": "s", "train": {"lr": 0.003, "radius": 2}}))
    assert tuned_overrides(good) == {"lr": 0.003, "radius": 2}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"model": "unet"}}))
    with pytest.raises(
        DataError, match=r"bad.yaml: `train` must map a subset of \['lr', 'radius', 'batch_size'\]"
    ):
        tuned_overrides(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {lr: [")
    with pytest.raises(DataError, match=r"broken.yaml: not valid YAML"):
        tuned_overrides(broken)


def test_unreachable_storage_is_a_clear_error(tiny_data: Path, tmp_path: Path) -> None:
    spec = _spec(
        tiny_data, tmp_path, _params(tmp_path, storage="postgresql://nobody:secret@127.0.0.1:9/none")
    )
    with pytest.raises(
        TuningError, match=r"postgresql://nobody:\*\*\*@127.0.0.1:9/none: cannot open"
    ) as info:
        run_study(spec)
    assert "secret" not in str(info.value)


def test_two_workers_on_postgresql_lose_no_trial(tiny_data: Path, tmp_path: Path, postgres_db) -> None:
    params = _params(tmp_path, storage=postgres_db("optuna"), workers=2, n_trials=6, epochs=2)
    # MLflow's store on the same server, several writers. Its own database: Optuna and MLflow both keep
    # an alembic_version table, so they cannot share one.
    params["tracking"]["tracking_uri"] = mlflow_db = postgres_db("mlflow")
    result = run_study(_spec(tiny_data, tmp_path, params))

    numbers = [t["number"] for t in result.trials]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 6  # both workers may finish one more
    assert {t["state"] for t in result.trials} <= {"COMPLETE", "PRUNED"}  # none lost, failed or left running
    children = _children(mlflow_db, result.mlflow_run_id)
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == numbers
    assert {r.data.tags["worker"] for r in children} == {"0", "1"}  # both processes ran trials
