"""Running ONNX exports of checkpoints with ONNX Runtime: a predict that never imports torch.

    deunet export-onnx --model data/train/models/fold0.pt --out fold0.onnx     # pipeline.inference.onnx_export
    deunet predict --model fold0.onnx --input cine.nii.gz --out out/           # then predict as usual

Why: a cold ``deunet predict`` on a CPU spends ~2 s importing torch before it reads anything, more than
the forward passes of a whole cine take; ``import onnxruntime`` takes ~0.1 s (docs/experiments.md,
"A torch-free predict"). Everything around the network is numpy already (the Segmenter), so an export is
the same model, preprocessing and post-processing, with the network run by another runtime. The export
itself (torch, onnx) lives in :mod:`pipeline.inference.onnx_export`.

An export is one ``.onnx`` file: the network followed by its softmax (input ``clips`` (B, 2r+1, S, S)
float32, output ``probabilities`` (B, C, S, S), any batch size), plus the checkpoint's plain-data entries
(model name and arguments, preprocessing, field of view, fold, versions) as JSON in the model's metadata
under ``deunet_checkpoint``, which is what the Segmenter reads from a checkpoint. The export is checked
against torch on random clips before it is written (atomically). ONNX Runtime runs on the CPU only;
checkpoints stay the way to a GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.inference.network import Network

#: The metadata key holding the checkpoint's plain-data entries.
METADATA_KEY = "deunet_checkpoint"


class OnnxNetwork(Network):
    """An exported model run by ONNX Runtime on the CPU; ``checkpoint`` is its recorded metadata.

    Args:
        threads: ONNX Runtime's intra-op threads (None: half the cores, at least 1: the Segmenter runs two
            batches at once on a CPU, and on 2 cores one thread each beat two each by 1.1 vs 1.4-1.7 s for
            a 30 x 7 cine's forward passes, measured in docs/experiments.md).

    Raises:
        DataError: onnxruntime is missing, the file cannot be read as ONNX, or it is not an export of this
            project (no checkpoint metadata).
    """

    on_cpu = True

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "ONNX model file is missing")
        self.session = _session(path, path, threads)
        record = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if record is None:
            raise DataError(path, f"is not a deunet export (no {METADATA_KEY!r} metadata); make one with "
                                  "deunet export-onnx --model CHECKPOINT.pt")  # fmt: skip
        try:
            self.checkpoint: dict[str, Any] = json.loads(record)
            config = self.checkpoint["model_config"]
            self.radius = int(config["radius"])
            self.num_classes = int(config.get("num_classes", 4))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(path, f"records malformed checkpoint metadata ({exc})") from None

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"clips": np.ascontiguousarray(clips, dtype=np.float32)})[0]


def is_export(path: Path | str) -> bool:
    """Whether a model file is an ONNX export (run by :class:`OnnxNetwork`) rather than a checkpoint."""
    return Path(path).suffix == ".onnx"


def _session(model: Path | bytes, where: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``model`` (a file or its bytes); ``where`` names it in errors.

    ``threads``: intra-op threads, None: half the cores, at least 1 (see :class:`OnnxNetwork`).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise DataError(where, "running an ONNX model needs onnxruntime (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are about graph fusions, not the user's data
    options.intra_op_num_threads = int(threads) if threads is not None else max(1, (os.cpu_count() or 2) // 2)
    source = str(model) if isinstance(model, Path) else model
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise DataError(
            where, f"cannot read the ONNX model ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
