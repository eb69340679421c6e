"""benchmarks.acdc_cv end to end at a toy size on real acdc-roi: train, evaluate (TTA x post-processing), report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import acdc_cv

pytestmark = pytest.mark.slow


def test_benchmark_trains_evaluates_and_reports(
    acdc_roi: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "bench"
    toy = ["--set", f"download.local_path={acdc_roi}", "--set", "preprocess.size=32", "--set", "train.max_epochs=1",
           "--set", "train.model_args={base_channels: 4, depth: 2}", "--set", "train.augment.crop=16", "--work", str(work), "--tag", "toy"]  # fmt: skip
    assert acdc_cv.main(["train", *toy, "--model", "unet", "--fold", "1"]) == 0
    timing = json.loads((work / "toy/unet/fold1/timing.json").read_text())
    assert timing["epochs"] == 1 and timing["cpu_s"] > 0 and timing["model_file"] == "final.pt"
    assert acdc_cv.main(["evaluate", *toy, "--model", "unet", "--folds", "1", "--tta", "none", "flips"]) == 0
    ev = json.loads((work / "toy/unet/fold1/evaluation.json").read_text())
    folds = json.loads(next((work / "stores").glob("*/folds.json")).read_text())["folds"]
    assert ev["val"] == folds[1]["val"]  # the fold's own validation patients, nobody else
    assert set(ev["tta"]) == {"none", "flips"} and set(ev["tta"]["none"]["cases"]) == {
        "raw",
        "lcc",
        "lcc_fill",
    }
    assert len(ev["tta"]["none"]["cases"]["raw"]) == 2 * len(folds[1]["val"])
    capsys.readouterr()
    assert acdc_cv.main(["report", *toy, "--tags", "toy", "--models", "unet"]) == 0
    table = capsys.readouterr().out
    assert "| toy | unet | 1 |" in table and "| flips | lcc_fill |" in table and "ASSD (mm)" in table
