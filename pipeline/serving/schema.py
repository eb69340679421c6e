"""The served model's columns and request limits: light constants shared by the pyfunc model, the MLflow
signature and the local CLI (which must not import mlflow or pandas to predict from a checkpoint)."""

from __future__ import annotations

from pipeline.evaluation.clinical import CLINICAL_KEYS

#: Input columns: one of them per row, each base64 text (or bytes, in process).
INPUT_COLUMN = "nifti"  # a single-file NIfTI, gzip-compressed or not
DICOM_ZIP_COLUMN = "dicom_zip"  # a zip of one DICOM cine series (or one study: the cine is picked)
CURVE_COLUMNS = {"LV": "lv_volume_ml", "RV": "rv_volume_ml", "MYO": "myo_volume_ml"}
#: Quality-control columns (pipeline.evaluation.quality): no flag, the score, the flags space-separated.
QC_COLUMNS = ("qc_ok", "qc_score", "qc_flags")
OUTPUT_COLUMNS = (
    "labels_nifti", *CURVE_COLUMNS.values(), "ed_frame", "es_frame", *CLINICAL_KEYS, "status", *QC_COLUMNS
)  # fmt: skip
#: Default cap on one decoded request (bytes, before gunzip or unzip) when model_config has none.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: The decompressed image (or the zip's members together) may be this many times larger than the request.
DECOMPRESSION_FACTOR = 16
#: Most members a DICOM zip may hold (a 60-frame, 30-slice cine is 1,800 files).
MAX_ZIP_MEMBERS = 10_000
