"""Every stage, run as DVC runs it, with one bad param: exit 1 and one line naming the key, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

BAD = {
    "download": ({"download": {"source": "ftp"}}, "download.source"),
    "preprocess": ({"preprocess": {"size": 60}}, "preprocess"),
    "validate": ({"validate": {"frames": [60, 8]}}, "validate"),
    "split": ({"split": {"n_folds": 1}}, "split"),
    "tune": ({"tune": {"enabled": True, "pruner": "sometimes"}}, "tune.pruner"),
    "train": ({"train": {"folds": [9], "model_args": {"base_channels": 4, "depth": 2}}}, "train.folds"),
    "evaluate": ({"evaluate": {"tta": "sideways"}}, "evaluate"),
    "register": ({"register": {"min_margin": -1.0}}, "register"),
}


@pytest.mark.parametrize("stage", list(BAD))
def test_a_bad_param_gives_one_line_naming_the_key(stage: str, tiny_data: Path, tmp_path: Path) -> None:
    params, key = BAD[stage]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "tracking": {"enabled": False}}))
    args = {
        "train": ["--store", tiny_data / "pre", "--split", tiny_data / "folds.json", "--checkpoints",
                  tmp_path / "ck", "--out", tmp_path / "out", "--tuned", tmp_path / "none.yaml"],
        "tune": ["--store", tiny_data / "pre", "--split", tiny_data / "folds.json", "--out", tmp_path / "tune"],
        "evaluate": ["--raw", tiny_data / "raw", "--split", tiny_data / "folds.json", "--models", tmp_path],
    }.get(stage, [])  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--params", "params.yaml", *map(str, args)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()
