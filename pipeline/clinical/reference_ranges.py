"""Published adult reference ranges for the report's ventricular indices, and where a value falls.

Each range is the published healthy-volunteer mean +- 1.96 SD (the central 95 % of a normal population),
sex-specific. Where the sex is unknown (NIfTI input, a DICOM without PatientSex) a value is marked only
when it lies outside both sexes' ranges, so a marking never depends on a guess.

Only ranges whose numbers could be read from the cited publications are used:

- LV and RV EDV and ESV (ml, absolute): Hudsmith et al. 2005, 108 healthy volunteers (63 men, 45 women,
  21-68 years), 1.5 T SSFP, manual contours (the abstract's means and SDs).
- LV EF (%) and LV mass indexed to BSA (g/m^2): Petersen et al. 2017, UK Biobank, 804 healthy Caucasian
  adults aged 45-74, 1.5 T SSFP, manual contours, papillary muscles in the cavity as in ACDC (the
  abstract's means and SDs).

RV EF, stroke volumes, the absolute mass and the indexed volumes have no range here (``status``
"not_assessed", with the reason): a range cited wrongly is worse than none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Citations, by key.
SOURCES = {
    "hudsmith2005": (
        "Hudsmith LE, Petersen SE, Francis JM, Robson MD, Neubauer S. Normal human left and right ventricular "
        "and left atrial dimensions using steady state free precession magnetic resonance imaging. "
        "J Cardiovasc Magn Reson 2005;7(5):775-782. doi:10.1080/10976640500295516"
    ),
    "petersen2017": (
        "Petersen SE, Aung N, Sanghvi MM, Zemrak F, Fung K, Paiva JM, Francis JM, Khanji MY, Lukaschuk E, "
        "Lee AM, Carapella V, Kim YJ, Leeson P, Piechnik SK, Neubauer S. Reference ranges for cardiac structure "
        "and function using cardiovascular magnetic resonance (CMR) in Caucasians from the UK Biobank "
        "population cohort. J Cardiovasc Magn Reson 2017;19:18. doi:10.1186/s12968-017-0327-9"
    ),
}
#: How many SDs either side of the mean a range spans.
Z95 = 1.96
#: (report section, key) -> (source, {sex: (mean, SD)}).
PUBLISHED: dict[tuple[str, str], tuple[str, dict[str, tuple[float, float]]]] = {
    ("LV", "EDV_ml"): ("hudsmith2005", {"M": (160.0, 29.0), "F": (135.0, 26.0)}),
    ("LV", "ESV_ml"): ("hudsmith2005", {"M": (50.0, 16.0), "F": (42.0, 12.0)}),
    ("RV", "EDV_ml"): ("hudsmith2005", {"M": (190.0, 33.0), "F": (148.0, 35.0)}),
    ("RV", "ESV_ml"): ("hudsmith2005", {"M": (78.0, 20.0), "F": (56.0, 18.0)}),
    ("LV", "EF_pct"): ("petersen2017", {"M": (58.0, 5.0), "F": (61.0, 5.0)}),
    ("myocardium", "mass_g_per_m2"): ("petersen2017", {"M": (53.0, 9.0), "F": (42.0, 7.0)}),
}
NO_RANGE = "no verified published range in this release"


@dataclass(frozen=True)
class Marking:
    """Where a value falls: ``status`` "low", "high", "within" or "not_assessed" (then ``reason``)."""

    status: str
    low: float | None = None
    high: float | None = None
    sex: str | None = None
    source: str | None = None
    reason: str | None = None

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"status": self.status}
        if self.status == "not_assessed":
            record["reason"] = self.reason
        else:
            record.update(range=[self.low, self.high], sex=self.sex or "either", source=self.source)
        return record


def reference_range(side: str, key: str, sex: str | None) -> tuple[float, float, str] | None:
    """(low, high, source key) of ``side``'s ``key`` for ``sex`` ("M", "F"; None: the union of both), or
    None where there is no range."""
    published = PUBLISHED.get((side, key))
    if published is None:
        return None
    source, by_sex = published
    bounds = [(m - Z95 * sd, m + Z95 * sd) for s, (m, sd) in by_sex.items() if sex in (None, s)]
    if not bounds:  # a sex the source does not tabulate
        bounds = [(m - Z95 * sd, m + Z95 * sd) for m, sd in by_sex.values()]
    return round(min(b[0] for b in bounds), 1), round(max(b[1] for b in bounds), 1), source


def mark(side: str, key: str, value: float | None, sex: str | None) -> Marking:
    """Where ``value`` falls against the range of ``side``'s ``key``."""
    found = reference_range(side, key, sex)
    if found is None:
        return Marking("not_assessed", reason=NO_RANGE)
    low, high, source = found
    if value is None:
        return Marking("not_assessed", low, high, sex, source, reason="no value")
    status = "low" if value < low else "high" if value > high else "within"
    return Marking(status, low, high, sex, source)


def mark_report(sections: Mapping[str, Mapping[str, Any]], sex: str | None) -> dict[str, Any]:
    """The report's ``reference`` section: every tabulated index of the report's ``sections`` ("LV", "RV",
    "myocardium") marked, the sources cited."""
    marks = {f"{part}_{key}": mark(part, key, sections[part].get(key), sex).as_record()
             for part, key in PUBLISHED}  # fmt: skip
    outside = sorted(k for k, m in marks.items() if m["status"] in ("low", "high"))
    return {"indices": marks, "outside": outside, "sex": sex or "unknown (marked only outside both sexes' ranges)",
            "not_assessed": "RV EF, SV, the absolute mass and the indexed volumes: " + NO_RANGE,
            "method": f"published healthy-adult mean +- {Z95} SD", "sources": dict(SOURCES)}  # fmt: skip
