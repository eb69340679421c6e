"""Great Expectations (1.x) checks of the preprocessing manifest: one row per (patient, phase).

The readers already refuse broken files; this suite is the dataset-level contract that a new download
or a new site's data must meet before training: schema, label values, ED/ES consistency, plausible
spacing and shape ranges, image/label agreement, finite intensities, structures present. A failure
produces a report that names the patient, the phase and the expectation.

Great Expectations takes seconds to import, so it is imported inside :func:`validate_manifest` only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.data.acdc import GROUPS, UNKNOWN_GROUP
from pipeline.validation.config import ValidateConfig
from pipeline.validation.duplicates import duplicate_image_groups
from pipeline.vocabulary import LABELS, PHASES

COLUMNS = [
    "patient", "group", "phase", "frame", "nb_frames", "cine_frames", "slices", "rows", "cols",
    "label_slices", "label_rows", "label_cols", "spacing_z_mm", "spacing_y_mm", "spacing_x_mm",
    "label_min", "label_max", "intensity_min", "intensity_max", "intensity_finite",
    "height_cm", "weight_kg", "label_file", "image_sha1", "label_sha1", "rv_ml", "myo_ml", "lv_ml",
]  # fmt: skip
ID_COLUMNS = ["patient", "phase"]
# A patient copied under a new id (the same image and the same labels) is a fault. The same image annotated
# twice under two ids is a quirk of real data (ACDC 074/076): a warning, and the split keeps them together.
DUPLICATE_COLUMNS = ["image_sha1", "label_sha1", "phase"]


def build_expectations(cfg: ValidateConfig) -> list[Any]:
    """The list of GX expectation objects of the manifest suite."""
    import great_expectations.expectations as gxe

    def between(column: str, lo: float | None, hi: float | None) -> Any:
        return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi)

    exps: list[Any] = [gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=True)]
    exps += [
        gxe.ExpectColumnValuesToNotBeNull(column=c) for c in COLUMNS if c not in ("height_cm", "weight_kg")
    ]
    exps += [
        gxe.ExpectCompoundColumnsToBeUnique(column_list=ID_COLUMNS),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=DUPLICATE_COLUMNS),
        gxe.ExpectColumnValuesToBeInSet(column="phase", value_set=list(PHASES)),
        gxe.ExpectColumnValuesToBeInSet(column="group", value_set=[*GROUPS, UNKNOWN_GROUP]),
        gxe.ExpectColumnValuesToBeInSet(column="label_min", value_set=list(LABELS)),
        gxe.ExpectColumnValuesToBeInSet(column="label_max", value_set=list(LABELS)),
        between("frame", 1, None),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="nb_frames", column_B="frame", or_equal=True),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="nb_frames", column_B="cine_frames"),
        between("nb_frames", *cfg.frames),
        between("slices", *cfg.slices),
        between("rows", *cfg.inplane_pixels),
        between("cols", *cfg.inplane_pixels),
        between("spacing_y_mm", *cfg.inplane_spacing_mm),
        between("spacing_x_mm", *cfg.inplane_spacing_mm),
        between("spacing_z_mm", *cfg.slice_spacing_mm),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="slices", column_B="label_slices"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="rows", column_B="label_rows"),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="cols", column_B="label_cols"),
        gxe.ExpectColumnValuesToBeInSet(column="intensity_finite", value_set=[True]),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="intensity_max", column_B="intensity_min"),
        between("lv_ml", cfg.min_structure_ml, None),
        between("myo_ml", cfg.min_structure_ml, None),
    ]
    return exps


@dataclass
class ValidationReport:
    """Outcome of the suite: overall success and one entry per expectation."""

    success: bool
    n_rows: int
    checks: list[dict[str, Any]]
    duplicate_images: list[list[str]] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [
            f"patients {' and '.join(ids)} share the same images (different labels); the split keeps them "
            "in one fold"
            for ids in self.duplicate_images
        ]

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "n_rows": self.n_rows, "n_checks": len(self.checks),
                "n_failed": len(self.failures), "checks": self.checks, "warnings": self.warnings,
                "duplicate_images": self.duplicate_images}  # fmt: skip

    def to_text(self) -> str:
        """A readable summary: one line per failed expectation and the offending (patient, phase) rows."""
        head = f"data validation: {len(self.checks) - len(self.failures)}/{len(self.checks)} expectations passed on {self.n_rows} rows"
        lines = [head, *(f"WARNING {w}" for w in self.warnings)]
        for c in self.failures:
            lines.append(f"FAILED {c['expectation']}({c['kwargs']})")
            for row in c["failing_rows"][:20]:
                lines.append(f"    {row}")
            if len(c["failing_rows"]) > 20:
                lines.append(f"    ... and {len(c['failing_rows']) - 20} more rows")
        return "\n".join(lines)


def _describe(result: Any, frame: pd.DataFrame) -> dict[str, Any]:
    cfg = result.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    res = result.result or {}
    failing: list[str] = []
    index = res.get("unexpected_index_list") or []
    for item in index:
        if isinstance(item, dict) and "patient" in item:
            failing.append(f"{item['patient']} {item.get('phase', '')}".strip())
    if not failing and not result.success and res.get("observed_value") is not None:
        failing.append(f"observed {res['observed_value']}")
    if not result.success and result.exception_info and result.exception_info.get("raised_exception"):
        failing.append(f"error: {result.exception_info.get('exception_message')}")
    return {
        "expectation": cfg.type,
        "kwargs": kwargs,
        "success": bool(result.success),
        "failing_rows": failing,
    }


def validate_manifest(frame: pd.DataFrame, cfg: ValidateConfig) -> ValidationReport:
    """Run the suite on a manifest table with an ephemeral GX context (no files written by GX)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # GX resets it on import
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas("manifest")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="acdc_manifest"))
    for exp in build_expectations(cfg):
        suite.add_expectation(exp)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="acdc_manifest_check", data=batch_def, suite=suite)
    )
    ids = [c for c in ID_COLUMNS if c in frame.columns]
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ids},
    )
    checks = [_describe(r, frame) for r in result.results]
    return ValidationReport(success=bool(result.success), n_rows=len(frame), checks=checks,
                            duplicate_images=duplicate_image_groups(frame))  # fmt: skip
