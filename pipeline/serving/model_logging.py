"""Log a trained checkpoint as the serving pyfunc (weights, constructor arguments, preprocessing, code).

The checkpoint file carries the model's registry name, constructor arguments, weights and preprocessing
(``preprocess.size``, ``preprocess.percentiles``); the model logs it as the ``checkpoint`` artifact and
copies the ``pipeline`` package next to it (``code_paths``) so ``mlflow models serve --env-manager local``
runs the code version the model was logged with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from pipeline.errors import DataError
from pipeline.evaluation.clinical import CLINICAL_KEYS
from pipeline.serving.pyfunc_model import CURVE_COLUMNS, INPUT_COLUMN
from pipeline.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
MODEL_CODE = Path(__file__).resolve().with_name("model_code.py")
#: What the serving environment needs beyond the Python standard library (mlflow adds itself).
PIP_REQUIREMENTS = ["torch", "torchvision", "numpy", "scipy", "pandas", "nibabel", "matplotlib"]

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", INPUT_COLUMN)]),
    outputs=Schema(
        [
            ColSpec("string", "labels_nifti"),
            *(ColSpec("string", c) for c in CURVE_COLUMNS.values()),
            ColSpec("long", "ed_frame"),
            ColSpec("long", "es_frame"),
            *(ColSpec("double", k) for k in CLINICAL_KEYS),
            ColSpec("string", "status"),
        ]
    ),
)


def log_pyfunc_model(
    checkpoint_path: Path,
    *,
    max_request_bytes: int,
    artifact_name: str = "model",
    device: str = "auto",
    batch_size: int = 16,
) -> ModelInfo:
    """Log ``checkpoint_path`` as a ``CineSegmentationModel`` (model from code) in the active MLflow run.

    Args:
        checkpoint_path: a checkpoint written by ``save_checkpoint`` that records its preprocessing.
        max_request_bytes: largest image a request may carry (bytes, before gunzip); larger ones get 400.
        artifact_name: the logged model's name.
        device: default device of the served model (``auto`` picks CUDA when visible).
        batch_size: clips per forward pass when serving.

    Returns:
        The ModelInfo (``model_uri`` is what ``mlflow.register_model`` takes).

    Raises:
        DataError: the checkpoint is missing, unreadable or lacks its preprocessing.
        ValueError: ``max_request_bytes`` is not a positive integer.
    """
    checkpoint_path = Path(checkpoint_path)
    if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int) or max_request_bytes < 1:
        raise ValueError(f"max_request_bytes must be a positive integer, got {max_request_bytes!r}")
    ckpt = load_checkpoint(checkpoint_path)  # fail here, not in the server
    if "size" not in (ckpt.get("preprocess") or {}):
        raise DataError(checkpoint_path, "checkpoint does not record its preprocessing (size, percentiles)")
    config: dict[str, Any] = {
        "max_request_bytes": max_request_bytes,
        "device": device,
        "batch_size": batch_size,
    }
    info = mlflow.pyfunc.log_model(
        name=artifact_name,
        python_model=str(MODEL_CODE),  # model from code: nothing is unpickled on load
        artifacts={"checkpoint": str(checkpoint_path)},
        code_paths=[str(PACKAGE_DIR)],
        model_config=config,
        signature=SIGNATURE,
        pip_requirements=PIP_REQUIREMENTS,
        metadata={"model_name": ckpt["model_name"], "model_config": dict(ckpt["model_config"])},
    )
    log.info("logged %s (%s) as %s", checkpoint_path, ckpt["model_name"], info.model_uri)
    return info
