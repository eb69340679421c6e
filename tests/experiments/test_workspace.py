"""pipeline.experiments end to end at a toy size on real acdc-roi: a workspace trains a fold, scores it under
two TTA modes (every post-processing variant), pools the cases and reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.experiments.params import merged_params
from pipeline.experiments.tables import cv_report
from pipeline.experiments.workspace import TTA_ORDER, Workspace
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_workspace_trains_scores_and_reports(acdc_roi: Path, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "bench", REPO)
    params = merged_params(REPO / "params.yaml", REPO / "profiles" / "acdc-roi-cpu.yaml",
                           [f"download.local_path={acdc_roi}", "preprocess.size=32", "train.max_epochs=1",
                            "train.model_args={base_channels: 4, depth: 2}", "train.augment.crop=16"])  # fmt: skip
    assert params["train"]["model_args"] == {"base_channels": 4, "depth": 2}  # YAML values, nested keys
    timing = ws.train(params, "unet", 1, "toy")
    assert timing["epochs"] == 1 and timing["cpu_s"] > 0 and timing["model_file"] == "final.pt"
    assert json.loads((ws.run_dir("toy", "unet", 1) / "timing.json").read_text()) == timing

    ws.evaluate("unet", 1, "toy", ["none", "flips"])
    ev = json.loads((ws.run_dir("toy", "unet", 1) / "evaluation.json").read_text())
    folds = json.loads(next((ws.root / "stores").glob("*/folds.json")).read_text())["folds"]
    assert ev["val"] == folds[1]["val"] == ws.run("toy", "unet", 1).val  # the fold's own validation patients
    assert set(ev["tta"]) == {"none", "flips"}
    assert set(ev["tta"]["none"]["cases"]) == {"raw", "lcc", "lcc_fill"}
    assert len(ev["tta"]["none"]["cases"]["raw"]) == 2 * len(folds[1]["val"])
    assert [r.fold for r in ws.runs("toy", "unet")] == [1] and ws.runs("toy", "unet", [0]) == []

    got = ws.collect("toy", "unet")
    assert got["folds"] == [1] and len(got["cases"][("flips", "lcc_fill")]) == 2 * len(folds[1]["val"])
    table = cv_report({("toy", "unet"): got}, TTA_ORDER)
    assert "| toy | unet | 1 |" in table and "| flips | lcc_fill |" in table and "ASSD (mm)" in table
    assert "### unet (toy), folds [1], TTA flips, lcc_fill" in table  # Table 1 of the strongest TTA evaluated
