"""The experiment API's pure parts: folds as patient lists, overrides, summaries over folds, tables."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.evaluation.report import summarise
from pipeline.experiments.folds import ALL, fold_dir, fold_patients
from pipeline.experiments.params import merged_params
from pipeline.experiments.scoring import fold_headlines, spread_over_folds
from pipeline.experiments.tables import fold_table, run_metrics, runs_table, variants_markdown
from pipeline.vocabulary import PHASES, STRUCTURE_ORDER

SPLIT = {"folds": [{"train": ["c", "d"], "val": ["a", "b"]}, {"train": ["a", "b"], "val": ["c", "d"]}]}


def _case(patient: str, phase: str, dice: float, hd: float = 5.0) -> dict:
    metrics = {
        s: {"dice": dice, "hd": hd, "hd95": hd, "assd": hd / 5, "status": "ok"} for s in STRUCTURE_ORDER
    }
    return {"patient": patient, "phase": phase, "metrics": metrics}


def test_fold_patients_and_the_all_patients_fold(tmp_path: Path) -> None:
    assert fold_patients(SPLIT, 1) == {"train": ["a", "b"], "val": ["c", "d"]}
    assert fold_patients(SPLIT, ALL) == {"train": ["a", "b", "c", "d"], "val": ["a", "b"]}
    with pytest.raises(ValueError, match=r"fold 2 out of range: the split has folds 0..1"):
        fold_patients(SPLIT, 2)
    assert fold_dir(tmp_path, 3) == tmp_path / "fold3" and fold_dir(tmp_path, ALL) == tmp_path / "all"


def test_merged_params_profile_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train: {lr: 0.1, epochs: 3}\nsplit: {n_folds: 5}\n")
    (tmp_path / "p.yaml").write_text("train: {lr: 0.2}\n")
    got = merged_params(
        tmp_path / "params.yaml", tmp_path / "p.yaml", ["train.epochs=7", "new.deep.key=[1, 2]"]
    )
    assert got == {
        "train": {"lr": 0.2, "epochs": 7},
        "split": {"n_folds": 5},
        "new": {"deep": {"key": [1, 2]}},
    }


def test_fold_summaries_and_their_spread() -> None:
    by_fold = {
        0: [_case(p, ph, 0.8) for p in "ab" for ph in PHASES],
        1: [_case(p, ph, 0.9, 3.0) for p in "cd" for ph in PHASES],
    }
    heads = fold_headlines(by_fold)
    assert heads[0]["mean_dice"] == pytest.approx(0.8) and heads[1]["mean_hd"] == pytest.approx(3.0)
    spread = spread_over_folds(heads)
    assert spread["mean_dice"] == pytest.approx((0.85, 0.05)) and spread["mean_hd"] == pytest.approx(
        (4.0, 1.0)
    )
    table = fold_table([("tag", "unet", by_fold), ("other", "deunet", {})], "TTA none, raw")
    assert (
        "| tag | unet | 0.8000 / 5.00 / 1.00 / 0.800 | 0.9000 / 3.00 / 0.60 / 0.900 | 0.8500 ± 0.0500"
        in table
    )
    assert "deunet" not in table  # a run with no scored fold has no row


def test_run_metrics_and_tables() -> None:
    summary = summarise([_case(p, ph, 0.9) for p in "ab" for ph in PHASES])
    m = run_metrics(summary)
    assert (
        m["dice/LV_ED"] == pytest.approx(0.9) and m["hd/average"] == pytest.approx(5.0) and "assd/RV_ES" in m
    )
    runs = [{"model": "unet", "metrics": m, "train_seconds": 10.0},
            {"model": "unet", "metrics": {**m, "dice/average": 0.8}, "train_seconds": 30.0}]  # fmt: skip
    table = runs_table(runs, ["unet"])
    assert "| U-Net | 0.900 ± 0.000" in table and "0.850 ± 0.050 |" in table and "U-Net 20 s" in table
    assert "Whole-cycle" not in table
    text = variants_markdown({"raw": summary, "lcc_fill": summary}, "lcc_fill", "# Evaluation")
    assert (
        text.startswith("# Evaluation\n")
        and "## largest connected component per structure, holes filled (headline)" in text
    )
    assert math.isfinite(m["dice/average"])
