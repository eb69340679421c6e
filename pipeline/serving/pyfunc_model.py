"""The trained segmenter as an MLflow pyfunc: NIfTI or zipped DICOM (base64) in, label NIfTI and clinical
read-out out.

Input: a DataFrame, one row per cine, with one of two string columns filled in each row, as base64 text
(or raw bytes, for in-process callers):

- ``nifti``: a single-file NIfTI, gzip-compressed or not, 4D ``(X, Y, Z, T)`` or 3D (one frame);
- ``dicom_zip``: a zip of one DICOM cine series (or of one study, whose cine series is picked). The
  zip's size, member count, member names (zip-slip) and compression ratios (zip bombs) are checked
  before anything is decompressed, and nothing is extracted to disk.

The model never reads a path: the column carries the image itself.

Output, one row per input row (:data:`OUTPUT_COLUMNS`): ``labels_nifti`` (base64 of a gzip NIfTI
``(X, Y, Z, T)`` uint8 with the input's affine), ``lv_volume_ml`` / ``rv_volume_ml`` / ``myo_volume_ml``
(JSON lists, one volume per frame, ml), ``ed_frame`` / ``es_frame`` (0-based, from the volume curves),
LV/RV EDV, ESV (ml), EF (%), ``MYO_mass`` (g), ``status`` (see :class:`~pipeline.clinical.readout.Readout`),
and quality control (pipeline.clinical.quality_control): ``qc_ok`` (no flag), ``qc_score``, ``qc_flags``
(space-separated names; a flagged case is answered like any other, never dropped).

Bad input raises ``MlflowException(error_code=INVALID_PARAMETER_VALUE)``, which the scoring server
answers with HTTP 400 and the message in the JSON body.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext

from pipeline.clinical.indices import CLINICAL_KEYS
from pipeline.clinical.quality_control import qc_columns
from pipeline.clinical.readout import Readout, segmented_readout
from pipeline.clinical.readout_columns import CURVE_COLUMNS, DICOM_ZIP_COLUMN, INPUT_COLUMN, OUTPUT_COLUMNS
from pipeline.clinical.report import case_quality
from pipeline.data.image_bytes import (
    DECOMPRESSION_FACTOR,
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_ZIP_MEMBERS,
    decode_dicom_zip,
    decode_nifti,
    encode_labels,
)
from pipeline.errors import RequestError

log = logging.getLogger(__name__)

__all__ = ["CURVE_COLUMNS", "INPUT_COLUMN", "OUTPUT_COLUMNS", "CineSegmentationModel", "bad_request"]


def bad_request(message: str) -> MlflowException:
    """The exception the scoring server turns into HTTP 400 with ``message`` in the body."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def decode_payload(value: Any, max_request_bytes: int, column: str = INPUT_COLUMN) -> bytes:
    """The bytes of one ``column`` cell (base64 text, or bytes), checked against the size limit."""
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str):
        # base64 is 4/3 of the payload: refuse oversize text before decoding it.
        if len(value) > (max_request_bytes // 3 + 1) * 4 + 4:
            raise RequestError(f"image is larger than the limit of {max_request_bytes} bytes")
        try:
            raw = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"column {column!r} is not valid base64 text") from None
    else:
        raise RequestError(f"column {column!r} must hold base64 text, got {type(value).__name__}")
    if len(raw) > max_request_bytes:
        raise RequestError(f"image of {len(raw)} bytes is larger than the limit of {max_request_bytes} bytes")
    return raw


#: The input columns; each row fills exactly one.
INPUT_COLUMNS = (INPUT_COLUMN, DICOM_ZIP_COLUMN)


def _empty(value: Any) -> bool:
    """A missing cell: None, or pandas' NaN for a column another row filled."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def readout_row(labels: np.ndarray, affine: np.ndarray, result: Readout) -> dict[str, Any]:
    """One output row (see :data:`OUTPUT_COLUMNS`) from labels ``(T, Z, Y, X)`` and their read-out."""
    row: dict[str, Any] = {"labels_nifti": base64.b64encode(encode_labels(labels, affine)).decode("ascii")}
    for name, column in CURVE_COLUMNS.items():
        row[column] = json.dumps([round(float(v), 6) for v in result.curves[name]])
    row["ed_frame"], row["es_frame"] = result.ed_frame, result.es_frame
    row.update({k: float(result.indices[k]) for k in CLINICAL_KEYS})
    row["status"] = result.status
    row.update(qc_columns(case_quality(labels, result).as_record()))
    return row


class CineSegmentationModel(PythonModel):
    """Pyfunc wrapper of :class:`pipeline.inference.predict.Segmenter`.

    Artifacts: ``checkpoint_00``, ``checkpoint_01``, ... (pipeline checkpoints, read with
    ``weights_only=True``; several are a fold ensemble; an older model's single ``checkpoint`` works too).
    model_config: ``max_request_bytes`` (int), ``max_zip_members`` (int), ``device`` (``auto`` | ``cpu`` | ``cuda``),
    ``batch_size`` (int), ``tta``, ``postprocess`` and ``locate`` (the Segmenter's options), ``precision``
    (``auto``: bf16 on CUDA, fp32 on the CPU | ``fp32`` | ``bf16``).
    """

    def load_context(self, context: PythonModelContext) -> None:
        from pipeline.checkpoint.io import load_checkpoint
        from pipeline.inference.network import PRECISIONS
        from pipeline.inference.predict import Segmenter
        from pipeline.models.device import resolve_device

        config = dict(context.model_config or {})
        self.max_request_bytes = int(config.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES))
        self.max_zip_members = int(config.get("max_zip_members", MAX_ZIP_MEMBERS))
        device = str(resolve_device(str(config.get("device", "auto"))))
        names = sorted(k for k in context.artifacts if k.startswith("checkpoint"))
        ckpts = [load_checkpoint(context.artifacts[k]) for k in names]
        self.segmenter = Segmenter.from_checkpoint(
            ckpts, names=[context.artifacts[k] for k in names], device=device,
            batch_size=int(config.get("batch_size", 16)), tta=str(config.get("tta", "none")),
            postprocess=str(config.get("postprocess", "raw")), locate=str(config.get("locate", "auto")),
            bf16=PRECISIONS[str(config.get("precision", "auto"))],
        )  # fmt: skip
        log.info("loaded %d x %s on %s (tta %s, %s; limit %d bytes)", len(ckpts), ckpts[0]["model_name"], device,
                 self.segmenter.tta, self.segmenter.postprocess, self.max_request_bytes)  # fmt: skip

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Segment every row's cine; see the module docstring for the columns."""
        columns = [
            c for c in INPUT_COLUMNS if isinstance(model_input, pd.DataFrame) and c in model_input.columns
        ]
        if not columns:
            got = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input)
            raise bad_request(f"input must be a table with a column {' or '.join(map(repr, INPUT_COLUMNS))}, "
                              f"got {got}")  # fmt: skip
        rows = []
        for i, values in enumerate(model_input[columns].itertuples(index=False, name=None)):
            given = {c: v for c, v in zip(columns, values, strict=True) if not _empty(v)}
            try:
                if len(given) != 1:
                    raise RequestError(
                        f"give exactly one of the columns {list(INPUT_COLUMNS)}, got {list(given)}"
                    )
                ((column, value),) = given.items()
                limit = self.max_request_bytes * DECOMPRESSION_FACTOR
                raw = decode_payload(value, self.max_request_bytes, column)
                if column == DICOM_ZIP_COLUMN:
                    cine, spacing, affine = decode_dicom_zip(
                        raw, max_members=self.max_zip_members, max_bytes=limit
                    )
                else:
                    cine, spacing, affine = decode_nifti(raw, max_image_bytes=limit)
            except RequestError as exc:
                raise bad_request(f"row {i}: {exc}") from None
            labels = self.segmenter.predict(cine, spacing=spacing)
            rows.append(readout_row(labels, affine, segmented_readout(self.segmenter, cine, labels, spacing)))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
