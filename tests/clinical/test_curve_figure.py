"""The volume-curve figure (``<name>_volumes.png`` of the predict CLI, and evaluate's figures)."""

from __future__ import annotations

from pipeline.clinical.curve_figure import volume_curve_figure
from pipeline.clinical.indices import volume_curves
from tests.conftest import make_record
from tests.evaluation.test_report_figures import assert_png


def test_volume_curve_figure(tmp_path):
    rec = make_record(t=8)
    curves = volume_curves(rec.cine_labels, rec.spacing)
    pred = {k: v * 1.05 for k, v in curves.items()}
    assert_png(volume_curve_figure(pred, curves, {"ED": 0, "ES": 4}, tmp_path / "curves.png", "p1"))
    assert_png(volume_curve_figure(pred, None, None, tmp_path / "curves_pred_only.png"))
