"""The train stage for real: a SIGKILLed training resumes from its checkpoint and ends with the same
weights as an uninterrupted run; the evaluate stage reports metrics, tables and figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow
# An epoch takes ~50 ms here: 40 of them leave the kill seconds of room after epoch 2 (with 5, CI's run
# once finished all its epochs between two polls).
TRAIN = {"model": "unet", "model_args": {"base_channels": 4, "depth": 2}, "radius": 1, "folds": [0],
         "max_epochs": 40, "batch_size": 8, "patience": 40, "seed": 3, "threads": 1}  # fmt: skip


def _stage(name: str, params: Path, *args: str | Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", f"stages.{name}", "--params", str(params), *map(str, args)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _train_args(data: Path, ckpt: Path, out: Path) -> list[str | Path]:
    return ["--store", data / "pre", "--split", data / "folds.json", "--checkpoints", ckpt, "--out", out]


def _last_epoch(ckpt_root: Path) -> int:
    found = list(ckpt_root.glob("*/fold0/last.pt"))
    if not found:
        return 0
    try:
        return int(torch.load(found[0], weights_only=True)["epoch"])
    except Exception:
        return 0


def test_killed_training_resumes_to_identical_weights(tiny_data: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    tracking = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    params.write_text(yaml.safe_dump({"train": TRAIN, "tracking": tracking}))

    clean = _stage("train", params, *_train_args(tiny_data, tmp_path / "ck_clean", tmp_path / "out_clean"))
    assert clean.wait(600) == 0, clean.stdout.read() if clean.stdout else ""

    proc = _stage("train", params, *_train_args(tiny_data, tmp_path / "ck", tmp_path / "out"))
    deadline = time.time() + 300
    while _last_epoch(tmp_path / "ck") < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _last_epoch(tmp_path / "ck")
    assert 2 <= killed_at < TRAIN["max_epochs"]
    assert not (tmp_path / "out").exists()  # nothing published by the killed run

    resumed = _stage("train", params, *_train_args(tiny_data, tmp_path / "ck", tmp_path / "out"))
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, log
    assert "resuming from" in log and f"after epoch {killed_at}" in log

    a = torch.load(tmp_path / "out_clean/models/fold0.pt", weights_only=True)
    b = torch.load(tmp_path / "out/models/fold0.pt", weights_only=True)
    assert a["epoch"] == b["epoch"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["model"] == "unet" and 0.0 <= metrics["val_dice_mean"] <= 1.0
    curves = (tmp_path / "out/curves/fold0.tsv").read_text().splitlines()
    assert curves[0].startswith("epoch\ttrain_loss\tval_dice") and len(curves) == 1 + TRAIN["max_epochs"]

    # Evaluate the trained fold on its validation patients (whole cycle: the phantom labels every frame).
    params.write_text(
        yaml.safe_dump({"train": TRAIN, "tracking": tracking, "evaluate": {"overlays": 1, "batch_size": 16}})
    )
    ev = _stage("evaluate", params, "--raw", tiny_data / "raw", "--split", tiny_data / "folds.json",
                "--models", tmp_path / "out/models", "--out", tmp_path / "eval")  # fmt: skip
    out = ev.communicate(timeout=600)[0]
    assert ev.returncode == 0, out
    assert "evaluate: mean Dice" in out
    result = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert set(result["dice"]) == {f"{s}_{p}" for s in ("LV", "MYO", "RV") for p in ("ED", "ES")}
    assert 0.0 <= result["mean_dice"] <= 1.0 and set(result["whole_cycle_dice"]) == {"LV", "MYO", "RV"}
    assert "| Metric (unit) | LV ED | LV ES |" in (tmp_path / "eval/table1.md").read_text()
    figures = sorted(p.name for p in (tmp_path / "eval/figures").iterdir())
    assert "bland_altman_LV_EF.png" in figures and any(f.startswith("overlay_") for f in figures)

    # Both stages logged to MLflow: per-epoch curves on the training run, held-out metrics linked to it.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking["tracking_uri"])
    train_run = client.get_run(metrics["mlflow_run_id"])
    assert train_run.data.params["train.model"] == "unet" and train_run.data.tags["stage"] == "train"
    history = client.get_metric_history(train_run.info.run_id, "fold0/val_dice")
    assert [m.step for m in history] == list(range(killed_at + 1, TRAIN["max_epochs"] + 1))  # the resumed run
    evaluation = client.search_runs([train_run.info.experiment_id], "tags.stage = 'evaluate'")
    assert len(evaluation) == 1 and evaluation[0].data.tags["train_run_id"] == train_run.info.run_id
    assert evaluation[0].data.metrics["mean_dice"] == pytest.approx(result["mean_dice"])
    assert {a.path for a in client.list_artifacts(evaluation[0].info.run_id)} >= {"table1.md", "figures"}


def test_checkpoint_of_another_radius_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {**TRAIN, "max_epochs": 1}, "tracking": {"enabled": False}}))
    first = _stage("train", params, *_train_args(tiny_data, tmp_path / "ck", tmp_path / "out"))
    assert first.wait(600) == 0
    # Plant that checkpoint where a radius-2 run would resume from: it must be refused, not loaded.
    run_dir = next((tmp_path / "ck").iterdir())
    params.write_text(
        yaml.safe_dump({"train": {**TRAIN, "max_epochs": 1, "radius": 2}, "tracking": {"enabled": False}})
    )
    probe = _stage("train", params, *_train_args(tiny_data, tmp_path / "ck", tmp_path / "out2"))
    probe.wait(600)
    new_dir = next(p for p in (tmp_path / "ck").iterdir() if p != run_dir)
    assert (new_dir / "fold0/last.pt").is_file()  # another r -> another run folder, trained afresh
    (new_dir / "fold0/last.pt").unlink()
    (new_dir / "fold0/last.pt").hardlink_to(run_dir / "fold0/last.pt")
    refused = _stage("train", params, *_train_args(tiny_data, tmp_path / "ck", tmp_path / "out3"))
    log = refused.communicate(timeout=600)[0]
    assert refused.returncode == 1
    assert (
        "last.pt: checkpoint was trained with other model arguments (radius: checkpoint 1 vs requested 2)"
        in log
    )


def test_torchrun_two_cpu_processes_gloo(tiny_data: Path, tmp_path: Path) -> None:
    """DDP with the gloo backend: both ranks train, only rank 0 writes the outputs."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {**TRAIN, "max_epochs": 2}, "tracking": {"enabled": False}}))
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "stages.train", "--params", str(params),
           *map(str, _train_args(tiny_data, tmp_path / "ck", tmp_path / "out"))]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    assert log.count("fold 0: best validation Dice") == 1  # rank 0 alone reports
    ckpt = torch.load(tmp_path / "out/models/fold0.pt", weights_only=True)
    assert ckpt["model_name"] == "unet" and not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert len((tmp_path / "out/curves/fold0.tsv").read_text().splitlines()) == 3
