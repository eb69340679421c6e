"""Published reference ranges: sex-specific bounds, the union when the sex is unknown, no range where none
was verified, and the report and its page marking what falls outside."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.clinical.readout import Readout
from pipeline.clinical.reference_ranges import SOURCES, mark, reference_range
from pipeline.clinical.report import Subject, clinical_report
from pipeline.clinical.report_html import report_html


def test_ranges_are_mean_plus_minus_1_96_sd_per_sex() -> None:
    assert reference_range("LV", "EDV_ml", "M") == (103.2, 216.8, "hudsmith2005")  # 160 +- 1.96 x 29
    assert reference_range("LV", "EDV_ml", "F") == (84.0, 186.0, "hudsmith2005")  # 135 +- 1.96 x 26
    assert reference_range("LV", "EDV_ml", None) == (84.0, 216.8, "hudsmith2005")  # either sex: the union
    assert reference_range("LV", "EF_pct", "F") == (51.2, 70.8, "petersen2017")  # 61 +- 1.96 x 5
    assert reference_range("myocardium", "mass_g_per_m2", "M") == (35.4, 70.6, "petersen2017")
    assert reference_range("RV", "EF_pct", "M") is None and reference_range("LV", "SV_ml", None) is None


@pytest.mark.parametrize(("value", "sex", "status"), [
    (200.0, "F", "high"),    # above a woman's range ...
    (200.0, "M", "within"),  # ... within a man's
    (200.0, None, "within"),  # unknown sex: marked only outside both
    (230.0, None, "high"),
    (80.0, None, "low"),
])  # fmt: skip
def test_marking_depends_on_sex_only_where_known(value: float, sex: str | None, status: str) -> None:
    assert mark("LV", "EDV_ml", value, sex).status == status


def test_not_assessed_carries_a_reason() -> None:
    assert mark("RV", "EF_pct", 20.0, "M").as_record() == {
        "status": "not_assessed", "reason": "no verified published range in this release"}  # fmt: skip
    assert mark("LV", "EDV_ml", None, "M").as_record()["reason"] == "no value"


def test_report_marks_a_dilated_lv_and_the_page_shows_it() -> None:
    indices = {"LV_EDV": 310.0, "LV_ESV": 250.0, "LV_EF": 19.4, "RV_EDV": 160.0, "RV_ESV": 80.0, "RV_EF": 50.0,
               "MYO_mass": 160.0}  # fmt: skip
    subject = Subject(height_cm=180.0, weight_kg=80.0, sex="M", source="DICOM header")  # BSA 2.0 m^2
    report = clinical_report(Readout({}, 0, 9, indices), subject, 25)
    reference = report["reference"]
    assert reference["outside"] == ["LV_EDV_ml", "LV_EF_pct", "LV_ESV_ml", "myocardium_mass_g_per_m2"]
    assert reference["indices"]["LV_EF_pct"] == {"status": "low", "range": [48.2, 67.8], "sex": "M",
                                                 "source": "petersen2017"}  # fmt: skip
    assert reference["indices"]["myocardium_mass_g_per_m2"]["status"] == "high"  # 160 g / 2.0 m^2 = 80 g/m^2
    assert reference["indices"]["RV_EDV_ml"]["status"] == "within"
    assert set(reference["sources"]) == set(SOURCES)
    report["quality"] = {"ok": True, "flags": [], "score": 0.0}
    page = report_html(
        "case", report, np.zeros((10, 2, 8, 8), np.float32), np.zeros((10, 2, 8, 8), np.uint8), {}
    )
    assert '<td class="out" id="LV_EDV_ml" title="high: reference 103.2-216.8">310.0 &uarr;</td>' in page
    assert '<td id="RV_EDV_ml">160.0</td>' in page
    assert "LV EDV_ml high (reference 103.2-216.8, M)" in page and "J Cardiovasc Magn Reson 2005" in page
