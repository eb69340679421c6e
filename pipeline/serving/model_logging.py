"""Log a trained checkpoint as the serving pyfunc (weights, constructor arguments, preprocessing, code).

The checkpoint file carries the model's registry name, constructor arguments, weights and preprocessing
(``preprocess.size``, ``preprocess.percentiles``); the model logs it as the ``checkpoint`` artifact and
copies the ``pipeline`` package next to it (``code_paths``) so ``mlflow models serve --env-manager local``
runs the code version the model was logged with.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from pipeline.checkpoint.io import load_checkpoint
from pipeline.clinical.indices import CLINICAL_KEYS
from pipeline.clinical.readout_columns import CURVE_COLUMNS, DICOM_ZIP_COLUMN, INPUT_COLUMN
from pipeline.data.image_bytes import MAX_ZIP_MEMBERS

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
MODEL_CODE = Path(__file__).resolve().with_name("model_code.py")
#: What the serving environment needs beyond the Python standard library (mlflow adds itself).
PIP_REQUIREMENTS = ["torch", "torchvision", "numpy", "scipy", "pandas", "nibabel", "pydicom", "matplotlib"]

SIGNATURE = ModelSignature(
    # Each request row fills one of the two: a NIfTI, or a zip of one DICOM series.
    inputs=Schema(
        [ColSpec("string", INPUT_COLUMN, required=False), ColSpec("string", DICOM_ZIP_COLUMN, required=False)]
    ),
    outputs=Schema(
        [
            ColSpec("string", "labels_nifti"),
            *(ColSpec("string", c) for c in CURVE_COLUMNS.values()),
            ColSpec("long", "ed_frame"),
            ColSpec("long", "es_frame"),
            *(ColSpec("double", k) for k in CLINICAL_KEYS),
            ColSpec("string", "status"),
            ColSpec("boolean", "qc_ok"),
            ColSpec("double", "qc_score"),
            ColSpec("string", "qc_flags"),
        ]
    ),
)


def log_pyfunc_model(
    checkpoint_path: Path | Sequence[Path],
    *,
    max_request_bytes: int,
    max_zip_members: int = MAX_ZIP_MEMBERS,
    artifact_name: str = "model",
    device: str = "auto",
    batch_size: int = 16,
    tta: str = "none",
    postprocess: str = "raw",
) -> ModelInfo:
    """Log checkpoint(s) as a ``CineSegmentationModel`` (model from code) in the active MLflow run.

    Args:
        checkpoint_path: one checkpoint written by ``save_checkpoint``, or several (a fold ensemble:
            every fold travels in the model as ``checkpoint_00``, ``checkpoint_01``, ...). Each records
            its preprocessing; an ensemble must share it (and r and the classes).
        max_request_bytes: largest image a request may carry (bytes, before gunzip); larger ones get 400.
        max_zip_members: most members a ``dicom_zip`` request may hold; more get 400.
        artifact_name: the logged model's name.
        device: default device of the served model (``auto`` picks CUDA when visible).
        batch_size: clips per forward pass when serving.
        tta: test-time augmentation of the served Segmenter (none | flips | dihedral).
        postprocess: its post-processing (raw | lcc | lcc_fill), as evaluate's headline variant.

    Returns:
        The ModelInfo (``model_uri`` is what ``mlflow.register_model`` takes).

    Raises:
        DataError: a checkpoint is missing, unreadable, lacks its preprocessing or does not match the
            ensemble's first member (the message names the file).
        ValueError: ``max_request_bytes`` is not a positive integer, or tta/postprocess is unknown.
    """
    from pipeline.inference.postprocess import POSTPROCESS_MODES
    from pipeline.inference.predict import Segmenter
    from pipeline.inference.tta import TTA_MODES

    paths = (
        [Path(checkpoint_path)]
        if isinstance(checkpoint_path, str | Path)
        else [Path(p) for p in checkpoint_path]
    )
    if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int) or max_request_bytes < 1:
        raise ValueError(f"max_request_bytes must be a positive integer, got {max_request_bytes!r}")
    if tta not in TTA_MODES or postprocess not in POSTPROCESS_MODES:
        raise ValueError(
            f"tta must be one of {list(TTA_MODES)} and postprocess one of {list(POSTPROCESS_MODES)}"
        )
    ckpts = [load_checkpoint(p) for p in paths]  # fail here, not in the server
    Segmenter.from_checkpoint(ckpts, names=[str(p) for p in paths])  # refuses a mismatched ensemble
    config: dict[str, Any] = {
        "max_request_bytes": max_request_bytes,
        "max_zip_members": int(max_zip_members),
        "device": device,
        "batch_size": batch_size,
        "tta": tta,
        "postprocess": postprocess,
    }
    with tempfile.TemporaryDirectory() as tmp:
        # the package's code without the shipped models' weights (pipeline/pretrained: megabytes that the
        # logged model does not use, since it carries its own checkpoints) and without bytecode caches
        code = Path(tmp) / PACKAGE_DIR.name
        shutil.copytree(PACKAGE_DIR, code, ignore=shutil.ignore_patterns("pretrained", "__pycache__"))
        info = _log(code, paths, ckpts, config, artifact_name)
    log.info(
        "logged %s (%s, %d checkpoint(s)) as %s", paths[0], ckpts[0]["model_name"], len(paths), info.model_uri
    )
    return info


def _log(code: Path, paths: list[Path], ckpts: list[dict[str, Any]], config: dict[str, Any],
         artifact_name: str) -> ModelInfo:  # fmt: skip
    return mlflow.pyfunc.log_model(
        name=artifact_name,
        python_model=str(MODEL_CODE),  # model from code: nothing is unpickled on load
        artifacts={f"checkpoint_{i:02d}": str(p) for i, p in enumerate(paths)},
        code_paths=[str(code)],
        model_config=config,
        signature=SIGNATURE,
        pip_requirements=PIP_REQUIREMENTS,
        metadata={
            "model_name": ckpts[0]["model_name"],
            "model_config": dict(ckpts[0]["model_config"]),
            "folds": [c.get("fold") for c in ckpts],
            "preprocess": dict(ckpts[0]["preprocess"]),
        },
    )
