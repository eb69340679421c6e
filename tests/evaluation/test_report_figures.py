"""Summary statistics, the Table 1 markdown, and the PNG figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation.figures import bland_altman_figure, overlay_figure
from pipeline.evaluation.metrics import evaluate_case
from pipeline.evaluation.report import summarise, table1_markdown
from tests.conftest import make_record

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metric(dice, hd, hd95, assd, status="ok") -> dict:
    return {"dice": dice, "hd": hd, "hd95": hd95, "assd": assd, "status": status}


def cases() -> list[dict]:
    ok = metric(0.9, 4.0, 3.0, 1.0)
    return [
        {"patient": "p1", "phase": "ED", "metrics": {"LV": metric(0.8, 2.0, 1.5, 0.5), "MYO": ok, "RV": ok}},
        {
            "patient": "p2",
            "phase": "ED",
            "metrics": {
                "LV": metric(1.0, 6.0, 4.5, 1.5),
                "MYO": ok,
                "RV": metric(0.0, math.nan, math.nan, math.nan, "pred_empty"),
            },
        },
        {
            "patient": "p1",
            "phase": "ES",
            "metrics": {"LV": metric(1.0, 0.0, 0.0, 0.0, "both_empty"), "MYO": ok, "RV": ok},
        },
    ]


def test_summarise_means_stds_and_counts():
    s = summarise(cases())
    lv_ed = s["by_phase"]["ED"]["LV"]
    assert lv_ed["dice"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.1), "n": 2}
    assert lv_ed["hd"]["mean"] == pytest.approx(4.0) and lv_ed["hd"]["std"] == pytest.approx(2.0)
    rv_ed = s["by_phase"]["ED"]["RV"]
    assert rv_ed["dice"]["n"] == 2 and rv_ed["dice"]["mean"] == pytest.approx(0.45)  # Dice 0 counts
    assert rv_ed["hd"]["n"] == 1 and rv_ed["hd"]["mean"] == pytest.approx(4.0)  # NaN distance left out
    assert s["counts"]["ED"]["RV"] == {"ok": 1, "both_empty": 0, "pred_empty": 1, "gt_empty": 0}
    assert s["counts"]["ES"]["LV"]["both_empty"] == 1
    assert s["n_cases"] == {"ED": 2, "ES": 1}
    # average pools every defined value: 9 Dice values, 8 finite HDs
    assert s["average"]["all"]["dice"]["n"] == 9
    assert s["average"]["all"]["hd"]["n"] == 8
    assert s["average"]["ES"]["assd"]["mean"] == pytest.approx((0.0 + 1.0 + 1.0) / 3)


def test_summarise_rejects_bad_cases():
    bad = cases()
    bad.append(dict(bad[0]))
    with pytest.raises(ValueError, match="more than once"):
        summarise(bad)
    with pytest.raises(ValueError, match="phase"):
        summarise([{**cases()[0], "phase": "MID"}])
    with pytest.raises(ValueError, match="keys"):
        summarise([{**cases()[0], "metrics": {"LV": metric(1, 0, 0, 0)}}])


def test_table1_markdown_layout_and_values():
    table = table1_markdown(summarise(cases()))
    lines = table.splitlines()
    assert lines[0] == "| Metric (unit) | LV ED | LV ES | MYO ED | MYO ES | RV ED | RV ES | Average |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:6]}
    assert list(rows) == ["ASSD (mm)", "HD (mm)", "HD95 (mm)", "Dice"]
    assert rows["Dice"].split(" | ")[1] == "0.900 ± 0.100"  # LV ED
    assert rows["HD (mm)"].split(" | ")[1] == "4.00 ± 2.00"
    assert "3D per patient at original resolution, header spacing" in table
    assert "RV ED 0/1/0" in table and "LV ES 1/0/0" in table
    assert "Cases: ED 2, ES 1" in table


def test_table_marks_phases_without_cases():
    rec = make_record()
    pred = np.roll(rec.labels["ED"], 1, axis=2)
    s = summarise(
        [
            {
                "patient": rec.patient_id,
                "phase": "ED",
                "metrics": evaluate_case(pred, rec.labels["ED"], rec.spacing),
            }
        ]
    )
    table = table1_markdown(s)
    # ES has no cases: its three columns are "n/a" in each of the four rows; every ED cell has a value
    assert table.count("n/a") == 12
    assert "LV ED 0/0/0" in table


def assert_png(path: Path, min_bytes: int = 2000) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]  # atomic write left nothing behind


def test_overlay_figure(tmp_path):
    rec = make_record(z=3, y=40, x=48)
    gt = rec.labels["ED"]
    pred = np.roll(gt, 2, axis=1)
    out = overlay_figure(
        rec.cine[0], gt, pred, [0, 2], tmp_path / "fig" / "overlay.png", "patient001 ED", spacing=rec.spacing
    )
    assert out == tmp_path / "fig" / "overlay.png"
    assert_png(out)
    with pytest.raises(ValueError, match="slices"):
        overlay_figure(rec.cine[0], gt, pred, [5], tmp_path / "bad.png", "")


def test_bland_altman_figure(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.uniform(40, 70, 20)
    pred = ref + rng.normal(1, 3, 20)
    pred[3] = np.nan
    assert_png(bland_altman_figure(pred, ref, "LV EF", "%", tmp_path / "ba.png"))
