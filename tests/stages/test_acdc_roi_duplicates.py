"""download -> preprocess -> validate -> split on all 79 real acdc-roi patients, through the stage CLIs.

ACDC's patient074 and patient076 share their images voxel for voxel with two different annotations: the
run must go through (a warning, not a failure) and the split must put them in one fold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stages import download, preprocess, split, validate

pytestmark = pytest.mark.slow


def test_duplicate_images_warn_and_share_a_fold(acdc_roi: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    params["download"].update(source="local", local_path=str(acdc_roi))
    params["preprocess"].update(size=32, workers=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    p, d = ["--params", str(tmp_path / "params.yaml")], tmp_path
    assert download.main([*p, "--out", str(d / "raw"), "--cache", str(d / "cache")]) == 0
    assert preprocess.main([*p, "--raw", str(d / "raw"), "--out", str(d / "pre")]) == 0
    assert validate.main([*p, "--manifest", str(d / "pre/manifest.csv"), "--out", str(d / "val")]) == 0
    assert split.main([*p, "--patients", str(d / "pre/patients.json"), "--validation",
                       str(d / "val/report.json"), "--out", str(d / "folds.json")]) == 0  # fmt: skip

    report = json.loads((d / "val/report.json").read_text())
    assert report["success"] and report["n_rows"] == 2 * 79
    assert report["duplicate_images"] == [["patient074", "patient076"]]
    assert any("patient074 and patient076" in w for w in report["warnings"])
    assert "WARNING patients patient074 and patient076" in (d / "val/report.txt").read_text()
    folds = json.loads((d / "folds.json").read_text())["folds"]
    holding = [f["fold"] for f in folds if {"patient074", "patient076"} & set(f["val"])]
    assert len(holding) == 1
    (fold,) = (f for f in folds if f["fold"] == holding[0])
    assert {"patient074", "patient076"} <= set(fold["val"])
    assert not {"patient074", "patient076"} & set(fold["train"])
    assert sorted(p for f in folds for p in f["val"]) == sorted(fold["train"] + fold["val"])
