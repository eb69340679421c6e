"""The trained segmenter as an MLflow pyfunc: NIfTI (base64) in, label NIfTI and clinical read-out out.

Input: a DataFrame with a string column ``nifti``, one row per cine, each the base64 text (or raw bytes,
for in-process callers) of a single-file NIfTI, gzip-compressed or not, 4D ``(X, Y, Z, T)`` or 3D (one
frame). The model never reads a path: the column carries the image itself.

Output, one row per input row (:data:`OUTPUT_COLUMNS`): ``labels_nifti`` (base64 of a gzip NIfTI
``(X, Y, Z, T)`` uint8 with the input's affine), ``lv_volume_ml`` / ``rv_volume_ml`` / ``myo_volume_ml``
(JSON lists, one volume per frame, ml), ``ed_frame`` / ``es_frame`` (0-based, from the LV curve),
LV/RV EDV, ESV (ml), EF (%), ``MYO_mass`` (g), and ``status`` (see :class:`~pipeline.serving.readout.Readout`).

Bad input raises ``MlflowException(error_code=INVALID_PARAMETER_VALUE)``, which the scoring server
answers with HTTP 400 and the message in the JSON body.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext

from pipeline.evaluation.clinical import CLINICAL_KEYS
from pipeline.serving.codec import RequestError, decode_nifti, encode_labels
from pipeline.serving.readout import Readout, readout

log = logging.getLogger(__name__)

INPUT_COLUMN = "nifti"
CURVE_COLUMNS = {"LV": "lv_volume_ml", "RV": "rv_volume_ml", "MYO": "myo_volume_ml"}
OUTPUT_COLUMNS = (
    "labels_nifti", *CURVE_COLUMNS.values(), "ed_frame", "es_frame", *CLINICAL_KEYS, "status"
)  # fmt: skip
#: Default cap on one decoded request image (bytes, before gunzip) when model_config has none.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: The decompressed image may be this many times larger than the request limit.
DECOMPRESSION_FACTOR = 16


def bad_request(message: str) -> MlflowException:
    """The exception the scoring server turns into HTTP 400 with ``message`` in the body."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values pass through checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA GPU is visible")
    return device


def decode_payload(value: Any, max_request_bytes: int) -> bytes:
    """The NIfTI bytes of one ``nifti`` cell (base64 text, or bytes), checked against the size limit."""
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str):
        # base64 is 4/3 of the payload: refuse oversize text before decoding it.
        if len(value) > (max_request_bytes // 3 + 1) * 4 + 4:
            raise RequestError(f"image is larger than the limit of {max_request_bytes} bytes")
        try:
            raw = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"column {INPUT_COLUMN!r} is not valid base64 text") from None
    else:
        raise RequestError(f"column {INPUT_COLUMN!r} must hold base64 text, got {type(value).__name__}")
    if len(raw) > max_request_bytes:
        raise RequestError(f"image of {len(raw)} bytes is larger than the limit of {max_request_bytes} bytes")
    return raw


def readout_row(labels: np.ndarray, affine: np.ndarray, result: Readout) -> dict[str, Any]:
    """One output row (see :data:`OUTPUT_COLUMNS`) from labels ``(T, Z, Y, X)`` and their read-out."""
    row: dict[str, Any] = {"labels_nifti": base64.b64encode(encode_labels(labels, affine)).decode("ascii")}
    for name, column in CURVE_COLUMNS.items():
        row[column] = json.dumps([round(float(v), 6) for v in result.curves[name]])
    row["ed_frame"], row["es_frame"] = result.ed_frame, result.es_frame
    row.update({k: float(result.indices[k]) for k in CLINICAL_KEYS})
    row["status"] = result.status
    return row


class CineSegmentationModel(PythonModel):
    """Pyfunc wrapper of :class:`pipeline.inference.predict.Segmenter`.

    Artifacts: ``checkpoint_00``, ``checkpoint_01``, ... (pipeline checkpoints, read with
    ``weights_only=True``; several are a fold ensemble; an older model's single ``checkpoint`` works too).
    model_config: ``max_request_bytes`` (int), ``device`` (``auto`` | ``cpu`` | ``cuda``),
    ``batch_size`` (int), ``tta`` and ``postprocess`` (the Segmenter's options).
    """

    def load_context(self, context: PythonModelContext) -> None:
        from pipeline.inference.predict import Segmenter
        from pipeline.training.checkpoint import load_checkpoint

        config = dict(context.model_config or {})
        self.max_request_bytes = int(config.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES))
        device = resolve_device(str(config.get("device", "auto")))
        names = sorted(k for k in context.artifacts if k.startswith("checkpoint"))
        ckpts = [load_checkpoint(context.artifacts[k]) for k in names]
        self.segmenter = Segmenter.from_checkpoint(
            ckpts, names=[context.artifacts[k] for k in names], device=device,
            batch_size=int(config.get("batch_size", 16)), tta=str(config.get("tta", "none")),
            postprocess=str(config.get("postprocess", "raw")),
        )  # fmt: skip
        log.info("loaded %d x %s on %s (tta %s, %s; limit %d bytes)", len(ckpts), ckpts[0]["model_name"], device,
                 self.segmenter.tta, self.segmenter.postprocess, self.max_request_bytes)  # fmt: skip

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Segment every row's cine; see the module docstring for the columns."""
        if not isinstance(model_input, pd.DataFrame) or INPUT_COLUMN not in model_input.columns:
            got = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input)
            raise bad_request(f"input must be a table with a column {INPUT_COLUMN!r}, got {got}")
        rows = []
        for i, value in enumerate(model_input[INPUT_COLUMN].tolist()):
            try:
                raw = decode_payload(value, self.max_request_bytes)
                cine, spacing, affine = decode_nifti(
                    raw, max_image_bytes=self.max_request_bytes * DECOMPRESSION_FACTOR
                )
            except RequestError as exc:
                raise bad_request(f"row {i}: {exc}") from None
            labels = self.segmenter.predict(cine, spacing=spacing)
            rows.append(readout_row(labels, affine, readout(labels, spacing)))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
