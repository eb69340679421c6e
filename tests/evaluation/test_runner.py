"""The evaluation runner on real files: an empty prediction is a counted, reported case, not a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.acdc import write_patient
from pipeline.evaluation.config import EvaluateConfig
from pipeline.evaluation.report import summarise, table1_markdown
from pipeline.evaluation.runner import clinical_table, evaluate_patient
from tests.conftest import make_record


class _Constant:
    """A segmenter test double that predicts one fixed label map per frame (no model needed)."""

    def __init__(self, labels: np.ndarray | None) -> None:
        self.labels = labels

    def predict(self, cine: np.ndarray, frames: list[int] | None = None, spacing: object = None,
                postprocess: str | None = None) -> np.ndarray:  # fmt: skip
        frames = list(range(cine.shape[0])) if frames is None else frames
        if self.labels is None:
            return np.zeros((len(frames), *cine.shape[1:]), np.uint8)
        return self.labels[frames]

    def probabilities(self, cine: np.ndarray, frames: list[int] | None = None,
                      spacing: object = None) -> np.ndarray:  # fmt: skip
        """Certain probabilities of :meth:`predict`'s labels, (F, Z, C, Y, X)."""
        labels = self.predict(cine, frames, spacing)
        return np.moveaxis(np.eye(4, dtype=np.float32)[labels], -1, 2)


def test_perfect_prediction_scores_one(tmp_path: Path) -> None:
    record = make_record()
    folder = write_patient(record, tmp_path)
    result = evaluate_patient(_Constant(record.cine_labels), folder, 0, EvaluateConfig())  # type: ignore[arg-type]
    for case in result.cases["raw"]:
        assert all(
            case["metrics"][s]["dice"] == 1.0 and case["metrics"][s]["hd"] == 0.0 for s in ("LV", "MYO", "RV")
        )
    assert result.cycle_dice == {"LV": 1.0, "MYO": 1.0, "RV": 1.0}
    assert result.phases_from_curves == (0, 3)  # ED = the first frame, ES = the volume's minimum
    assert result.clinical_pred["LV_EF"] == result.clinical_ref["LV_EF"] > 0
    row = clinical_table([result])[0]
    assert row["ED_curve_off"] == row["ES_curve_off"] == 0
    # certain probabilities that match the labels: the model's own Dice estimate is 1 at both phases
    assert result.quality is not None
    assert [result.quality["measures"][p]["estimated_dice"] for p in ("ED", "ES")] == [1.0, 1.0]


def test_empty_prediction_is_counted_not_crashed(tmp_path: Path) -> None:
    folder = write_patient(make_record(), tmp_path)
    result = evaluate_patient(_Constant(None), folder, 0, EvaluateConfig())  # type: ignore[arg-type]
    summary = summarise(result.cases["raw"])
    assert (
        summary["counts"]["ED"]["LV"]["pred_empty"] == 1 and summary["counts"]["ES"]["RV"]["pred_empty"] == 1
    )
    assert summary["by_phase"]["ED"]["LV"]["dice"]["mean"] == 0.0
    assert summary["by_phase"]["ED"]["LV"]["hd"]["n"] == 0  # no silent distance for an empty prediction
    assert "n/a" in table1_markdown(summary)
    row = clinical_table([result])[0]
    assert np.isnan(row["LV_EF_pred"]) and row["LV_EF_ref"] > 0
    assert result.phases_from_curves is None  # LV empty in every frame: ED/ES undefined, reported
    # quality control says so, and the clinical table carries it
    assert row["qc_ok"] is False and {"missing@ED", "missing@ES"} <= set(row["qc_flags"].split())
