"""End to end: the real stages under real `dvc repro`, in a throw-away copy of the project."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from pipeline.data.acdc import write_patient
from tests.conftest import copy_pipeline, make_record, set_params

pytestmark = pytest.mark.slow
BIN = str(Path(sys.executable).parent)


def _env() -> dict[str, str]:
    # The project's own default tracking database, whatever an earlier test left in the environment.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PATH": f"{BIN}:{os.environ['PATH']}", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1"}


def _run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


_set_params = set_params


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git+DVC copy of the project's pipeline with a tiny synthetic default."""
    dst = copy_pipeline(tmp_path / "proj")
    _run(dst, "git", "init", "-q")
    _run(dst, "dvc", "init", "-q")
    _run(dst, "dvc", "config", "core.analytics", "false")
    return dst


def _ran(out: str) -> list[str]:
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def test_repro_synthetic_then_only_changed_stage_reruns(project: Path) -> None:
    first = _run(project, "dvc", "repro")
    stages = ["download", "preprocess", "validate", "split", "tune", "train", "evaluate", "register"]
    assert _ran(first.stdout) == stages
    assert "evaluate: mean Dice" in first.stdout and "register: deunet-cardiac v1" in first.stdout
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(stages)
    assert json.loads((project / "data/registry/registration.json").read_text())["champion"] == "1"
    metrics = json.loads((project / "data/evaluation/metrics.json").read_text())
    assert metrics["n_patients"] == 1 and 0.0 <= metrics["mean_dice"] <= 1.0
    assert lock["stages"]["preprocess"]["params"]["params.yaml"]["preprocess.size"] == 32
    assert len(list((project / "data/raw").glob("patient*/patient*_4d_gt.nii.gz"))) == 5
    report = json.loads((project / "data/validation/report.json").read_text())
    assert report["success"] and report["n_rows"] == 10
    split = json.loads((project / "data/split/folds.json").read_text())
    assert sorted(p for f in split["folds"] for p in f["val"]) == [f"patient{i:03d}" for i in range(1, 6)]
    folds_before = (project / "data/split/folds.json").read_bytes()

    assert _ran(_run(project, "dvc", "repro").stdout) == []  # nothing changed, nothing runs

    # Fold 0 may hold the same patients under another seed: then the model, its evaluation and the
    # registration are unchanged, and DVC rightly stops after evaluate.
    _set_params(project, split={"seed": 11})
    assert _ran(_run(project, "dvc", "repro").stdout)[:4] == ["split", "tune", "train", "evaluate"]
    assert (project / "data/split/folds.json").read_bytes() != folds_before

    _set_params(project, train={"seed": 5})  # another model for sure
    # tune reads train.seed too (a study depends on it); with tuning off it only rewrites empty overrides
    assert _ran(_run(project, "dvc", "repro").stdout) == ["tune", "train", "evaluate", "register"]
    second = json.loads((project / "data/registry/registration.json").read_text())
    assert second["version"] == "2"  # a new model: a new version, promoted only through the gate
    assert second["champion"] == ("2" if second["decision"]["promoted"] else "1")
    # Registering the same checkpoint again changes nothing (DVC may re-run or restore stages).
    again = _run(project, "python", "-m", "stages.register")
    assert "already registered: nothing changed" in again.stdout
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    versions = client.search_model_versions("name = 'deunet-cardiac'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert client.get_model_version("deunet-cardiac", "2").tags["gate_compared_with"] == "1"

    _set_params(project, split={"seed": 0}, train={"seed": 0})  # back to the first seeds: same bytes again
    _run(project, "dvc", "repro")
    assert (project / "data/split/folds.json").read_bytes() == folds_before

    # The manifest and patient table do not depend on the size: validate and split are not re-run.
    _set_params(project, preprocess={"size": 40})
    assert _ran(_run(project, "dvc", "repro").stdout)[:4] == ["preprocess", "tune", "train", "evaluate"]
    assert json.loads((project / "data/preprocessed/meta.json").read_text())["config"]["size"] == 40


def test_tuning_prunes_and_its_best_params_reach_train(project: Path) -> None:
    tune = {"enabled": True, "n_trials": 4, "epochs": 3, "lr": [1e-6, 1e-1], "radius": [0, 1, 2],
            "startup_trials": 1, "warmup_epochs": 0}  # fmt: skip
    _set_params(project, tune=tune)
    first = _run(project, "dvc", "repro", "train")
    assert _ran(first.stdout) == ["download", "preprocess", "validate", "split", "tune", "train"]
    summary = json.loads((project / "data/tune/summary.json").read_text())
    assert summary["n_complete"] + summary["n_pruned"] == 4 and summary["n_fail"] == 0
    assert summary["n_pruned"] >= 1  # at least one bad trial was stopped early
    best = yaml.safe_load((project / "data/tune/best_params.yaml").read_text())
    assert best["tuned"] and set(best["train"]) == {"lr", "radius"}
    assert best["train"] == summary["best_params"]
    trained = json.loads((project / "data/train/metrics.json").read_text())
    assert (trained["lr"], trained["radius"]) == (best["train"]["lr"], best["train"]["radius"])
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["data/tune/best_params.yaml"]["train"] == best["train"]
    rows = (project / "data/tune/trials.tsv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("number\tstate\tlr\tradius")

    assert _ran(_run(project, "dvc", "repro", "train").stdout) == []  # the study is done: nothing re-runs
    _set_params(project, tune={"enabled": False})  # back to params.yaml's own lr and r
    assert _ran(_run(project, "dvc", "repro", "train").stdout) == ["tune", "train"]
    trained = json.loads((project / "data/train/metrics.json").read_text())
    assert (trained["lr"], trained["radius"]) == (1e-3, 1)


def test_failed_validation_stops_the_pipeline_with_a_report(project: Path) -> None:
    _set_params(project, validate={"inplane_spacing_mm": [0.5, 1.0]})  # the phantom uses 1.2-1.9 mm
    proc = _run(project, "dvc", "repro", check=False)
    assert proc.returncode != 0
    assert "FAILED expect_column_values_to_be_between" in proc.stderr
    assert "patient001 ED" in proc.stderr and "spacing_x_mm" in proc.stderr
    report = json.loads((project / "data/validation/report.json").read_text())
    assert not report["success"]
    assert not (project / "data/split/folds.json").exists()


def test_bad_input_fails_preprocess_naming_the_file(project: Path) -> None:
    _run(project, "python", "-m", "stages.download")
    bad = project / "data/raw/patient003/Info.cfg"
    bad.write_text(bad.read_text().replace("NbFrame:", "NbFrame: 2\nOld:"))
    proc = _run(project, "python", "-m", "stages.preprocess", check=False)
    assert proc.returncode == 1
    assert "error: data/raw/patient003/Info.cfg: ES = " in proc.stderr and "NbFrame = 2" in proc.stderr
    assert not (project / "data/preprocessed").exists()
    assert [p.name for p in (project / "data").iterdir()] == ["raw"]  # no temporary output left


def test_local_source_hard_links_real_acdc(project: Path, acdc_roi: Path) -> None:
    _set_params(project, download={"source": "local", "local_path": str(acdc_roi), "patients": ["patient002", "patient004"]},
                preprocess={"size": 48}, split={"n_folds": 2})  # fmt: skip
    _run(project, "dvc", "repro")
    imported = project / "data/raw/patient002/patient002_4d.nii.gz"
    original = acdc_roi / "patient002/patient002_4d.nii.gz"
    assert imported.read_bytes() == original.read_bytes()
    if imported.stat().st_dev == original.stat().st_dev:
        assert imported.stat().st_ino == original.stat().st_ino  # a hard link, not a copy
    split = json.loads((project / "data/split/folds.json").read_text())
    assert sorted(p for f in split["folds"] for p in f["val"]) == ["patient002", "patient004"]
    metrics = json.loads((project / "data/evaluation/metrics.json").read_text())
    assert metrics["n_patients"] == 1 and "whole_cycle_dice" not in metrics  # real ACDC: labels at ED/ES only
    assert "LV_EF" in metrics["clinical"]


@pytest.fixture
def archive_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Serve a tar.gz of two patients (nested like the official release) on 127.0.0.1."""
    tree = tmp_path / "tree"
    for i in (1, 2):
        write_patient(
            make_record(f"patient{i:03d}", t=10, z=4, y=52, x=56, seed=i), tree / "ACDC/database/training"
        )
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "acdc.tar.gz", "w:gz") as tar:
        tar.add(tree / "ACDC", arcname="ACDC")
    digest = hashlib.sha256((served / "acdc.tar.gz").read_bytes()).hexdigest()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/acdc.tar.gz", digest
    server.shutdown()


def test_url_source_downloads_verifies_and_extracts(project: Path, archive_server: tuple[str, str]) -> None:
    url, digest = archive_server
    _set_params(project, download={"source": "url", "url": url, "sha256": "0" * 64})
    proc = _run(project, "python", "-m", "stages.download", check=False)
    assert proc.returncode == 1 and "sha256" in proc.stderr and digest in proc.stderr
    assert not (project / "data/raw").exists()

    _set_params(project, download={"sha256": digest}, validate={"frames": [8, 60]})
    _run(project, "python", "-m", "stages.download")
    assert sorted(p.name for p in (project / "data/raw").iterdir()) == ["patient001", "patient002"]
    assert (project / "data/raw/patient001/Info.cfg").read_text().startswith("ED: 1")
