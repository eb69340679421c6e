"""The register stage in-process on a real SQLite registry: first version becomes champion, the same
checkpoint is not registered twice, and a registration that fails half-way leaves the registry as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.checkpoint.io import save_checkpoint
from pipeline.models import build_model
from stages import register


def _workspace(root: Path, seed: int, dice: float) -> None:
    import torch

    torch.manual_seed(seed)
    models = root / "data/train/models"
    models.mkdir(parents=True, exist_ok=True)
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    save_checkpoint(models / "fold0.pt", model, None, preprocess={"size": 32, "percentiles": [0.5, 99.5]})
    (root / "data/train/metrics.json").write_text(json.dumps({"folds": {"0": {"best_val_dice": 0.5}}}))
    (root / "data/evaluation").mkdir(parents=True, exist_ok=True)
    (root / "data/evaluation/metrics.json").write_text(json.dumps({"mean_dice": dice, "mean_hd": 3.0}))


def test_register_gate_idempotence_and_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", uri
    )  # mlflow.set_tracking_uri writes it; restored after the test
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tracking": {"tracking_uri": uri}}))
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def versions() -> list[str]:
        return sorted(str(v.version) for v in client.search_model_versions("name = 'deunet-cardiac'"))

    _workspace(tmp_path, seed=0, dice=0.80)
    assert register.main([]) == 0
    record = json.loads((tmp_path / "data/registry/registration.json").read_text())
    assert record["champion"] == "1" and record["decision"]["promoted"]
    assert register.main([]) == 0  # same checkpoint: nothing new
    assert versions() == ["1"]

    _workspace(tmp_path, seed=1, dice=0.90)  # a better model, but moving the alias fails
    real = MlflowClient.set_registered_model_alias

    def fail_champion(self, name, alias, version):  # type: ignore[no-untyped-def]
        if alias == "champion":
            raise RuntimeError("registry went away")
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", fail_champion)
    with pytest.raises(RuntimeError, match="registry went away"):
        register.main([])
    assert versions() == ["1"]  # the half-made version 2 was removed
    assert str(client.get_model_version_by_alias("deunet-cardiac", "champion").version) == "1"

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real)
    assert register.main([]) == 0
    record = json.loads((tmp_path / "data/registry/registration.json").read_text())
    assert record["champion"] == record["version"] != "1"
    assert client.get_model_version("deunet-cardiac", record["version"]).tags["gate_decision"] == "promoted"


def test_locked_or_unreachable_store_fails_with_a_message_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tracking": {"tracking_uri": uri}}))
    _workspace(tmp_path, seed=0, dice=0.80)
    assert register.main([]) == 0
    record = (tmp_path / "data/registry/registration.json").read_bytes()

    _workspace(tmp_path, seed=1, dice=0.95)  # a better model arrives while another process holds the lock
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert register.main([]) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert (
        f"error: MLflow tracking store {uri}: cannot open {tmp_path}/mlflow.db as a SQLite database (database is locked)"
        in err
    )
    assert (
        tmp_path / "data/registry/registration.json"
    ).read_bytes() == record  # the stage's output as it was

    # An unreachable tracking server: the same one-line error, no retry storm.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = "http://127.0.0.1:9"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tracking": {"tracking_uri": down}}))
    assert register.main([]) == 1
    assert f"error: MLflow tracking store {down}: " in capsys.readouterr().err
    assert (tmp_path / "data/registry/registration.json").read_bytes() == record

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'deunet-cardiac'")] == ["1"]
    assert str(client.get_model_version_by_alias("deunet-cardiac", "champion").version) == "1"


def test_registered_model_carries_every_fold_and_the_evaluated_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import torch

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tracking": {"tracking_uri": uri}}))
    models = tmp_path / "data/train/models"
    models.mkdir(parents=True)
    for fold in (0, 1):
        torch.manual_seed(fold)
        save_checkpoint(models / f"fold{fold}.pt", build_model("unet", radius=1, base_channels=4, depth=2), None,
                        preprocess={"size": 32, "percentiles": [0.5, 99.5]}, fold=fold)  # fmt: skip
    folds = {"0": {"best_val_dice": 0.5}, "1": {"best_val_dice": 0.6}}
    (tmp_path / "data/train/metrics.json").write_text(json.dumps({"folds": folds}))
    (tmp_path / "data/evaluation").mkdir(parents=True)
    (tmp_path / "data/evaluation/metrics.json").write_text(
        json.dumps({"mean_dice": 0.8, "mean_hd": 3.0, "tta": "flips", "postprocess": "lcc_fill"})
    )
    assert register.main([]) == 0
    record = json.loads((tmp_path / "data/registry/registration.json").read_text())
    assert [Path(p).name for p in record["checkpoints"]] == ["fold0.pt", "fold1.pt"]
    loaded = mlflow.pyfunc.load_model("models:/deunet-cardiac@champion")
    segmenter = loaded.unwrap_python_model().segmenter
    assert len(segmenter.models) == 2 and (segmenter.tta, segmenter.postprocess) == ("flips", "lcc_fill")
    assert loaded.metadata.metadata["folds"] == [0, 1]

    # a fold trained with other preprocessing cannot join: the stage names the file, the registry is unchanged
    save_checkpoint(models / "fold1.pt", build_model("unet", radius=1, base_channels=4, depth=2), None,
                    preprocess={"size": 48, "percentiles": [0.5, 99.5]}, fold=1)  # fmt: skip
    assert register.main([]) == 1
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert len(client.search_model_versions("name = 'deunet-cardiac'")) == 1
