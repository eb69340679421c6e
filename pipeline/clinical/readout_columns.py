"""The read-out as table columns: the served model's request and answer columns, shared by the pyfunc
model, the MLflow signature and the local CLI (which reads a logged model's answer, and must not import
mlflow or pandas to predict from a checkpoint). The limits on a request's bytes are
:mod:`pipeline.data.image_bytes`'."""

from __future__ import annotations

from pipeline.clinical.indices import CLINICAL_KEYS

#: Input columns: one of them per row, each base64 text (or bytes, in process).
INPUT_COLUMN = "nifti"  # a single-file NIfTI, gzip-compressed or not
DICOM_ZIP_COLUMN = "dicom_zip"  # a zip of one DICOM cine series (or one study: the cine is picked)
CURVE_COLUMNS = {"LV": "lv_volume_ml", "RV": "rv_volume_ml", "MYO": "myo_volume_ml"}
#: Quality-control columns (pipeline.clinical.quality_control): no flag, the score, the flags space-separated.
QC_COLUMNS = ("qc_ok", "qc_score", "qc_flags")
OUTPUT_COLUMNS = (
    "labels_nifti", *CURVE_COLUMNS.values(), "ed_frame", "es_frame", *CLINICAL_KEYS, "status", *QC_COLUMNS
)  # fmt: skip
