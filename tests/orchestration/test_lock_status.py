"""The dvc.lock guard: data outputs missing on a fresh clone are fine; a changed code folder or params
section is named with its stage."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from pipeline.orchestration.lock_status import check, stage_outputs, stale_dependencies
from tests.conftest import REPO

DVC_YAML = {
    "stages": {
        "prep": {
            "deps": ["pipeline/prep", "data/raw"],
            "outs": ["data/pre"],
            "metrics": [{"data/m.json": {}}],
        },
        "fit": {"deps": ["pipeline/fit", "data/pre"], "params": ["fit"], "outs": [{"data/models": {}}]},
    }
}


def test_only_code_and_params_changes_count() -> None:
    outputs = stage_outputs(DVC_YAML)
    assert outputs == ["data/pre", "data/m.json", "data/models"]
    status = {
        "prep": [{"changed deps": {"data/raw": "modified"}}, {"changed outs": {"data/pre": "deleted"}}],
        "fit": [
            {
                "changed deps": {
                    "data/pre": "deleted",
                    "data/pre/x.npy": "modified",
                    "pipeline/fit": "modified",
                    "params.yaml": {"fit": "modified"},
                }
            }
        ],
    }
    assert stale_dependencies(status, outputs) == [
        "prep: data/raw modified",  # not another stage's output: a source the lock recorded
        "fit: pipeline/fit modified",
        "fit: params.yaml: fit modified",
    ]
    assert stale_dependencies({"prep": [{"changed outs": {"data/pre": "not in cache"}}]}, outputs) == []


def test_a_fresh_clone_is_current_until_code_changes(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    assert check(clone) == []  # data missing, code and params as locked
    (clone / "pipeline" / "evaluation" / "agreement.py").write_text("# changed\n", encoding="utf-8")
    params = clone / "params.yaml"
    values = yaml.safe_load(params.read_text())
    values["evaluate"]["overlays"] += 1
    params.write_text(yaml.safe_dump(values))
    stale = check(clone)
    assert "evaluate: pipeline/evaluation modified" in stale
    assert any(line.startswith("evaluate: params.yaml: evaluate") for line in stale), stale
