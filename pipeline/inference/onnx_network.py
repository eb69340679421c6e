"""ONNX exports of checkpoints, and running them with ONNX Runtime: a predict that never imports torch.

    deunet export-onnx --model data/train/models/fold0.pt --out fold0.onnx     # one file per checkpoint
    deunet predict --model fold0.onnx --input cine.nii.gz --out out/           # then predict as usual

Why: a cold ``deunet predict`` on a CPU spends ~2 s importing torch before it reads anything, more than
the forward passes of a whole cine take; ``import onnxruntime`` takes ~0.1 s (docs/benchmarks.md,
"A torch-free predict"). Everything around the network is numpy already (the Segmenter), so an export is
the same model, preprocessing and post-processing, with the network run by another runtime.

An export is one ``.onnx`` file: the network followed by its softmax (input ``clips`` (B, 2r+1, S, S)
float32, output ``probabilities`` (B, C, S, S), any batch size), plus the checkpoint's plain-data entries
(model name and arguments, preprocessing, field of view, fold, versions) as JSON in the model's metadata
under ``deunet_checkpoint``, which is what the Segmenter reads from a checkpoint. The export is checked
against torch on random clips before it is written (atomically). ONNX Runtime runs on the CPU only;
checkpoints stay the way to a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError, PipelineError
from pipeline.inference.network import Network

#: The metadata key holding the checkpoint's plain-data entries.
METADATA_KEY = "deunet_checkpoint"
#: ONNX opset of the export: GridSample (deformable convolutions, ToFlow's warping) needs >= 16 and
#: AffineGrid (GridNet) 20; all eight registry models export at 20 (ONNX Runtime >= 1.17).
OPSET = 20
#: Largest difference from torch's probabilities an export may show on its check clips.
EXPORT_TOLERANCE = 1e-4


class OnnxNetwork(Network):
    """An exported model run by ONNX Runtime on the CPU; ``checkpoint`` is its recorded metadata.

    Args:
        threads: ONNX Runtime's intra-op threads (None: half the cores, at least 1: the Segmenter runs two
            batches at once on a CPU, and on 2 cores one thread each beat two each by 1.1 vs 1.4-1.7 s for
            a 30 x 7 cine's forward passes, measured in docs/benchmarks.md).

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


def checkpoint_metadata(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's entries that are plain data (JSON), without weights and training state."""
    out = {}
    for key, value in ckpt.items():
        if key in ("state_dict", "optimizer"):
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue  # tensors (rng state, auxiliary heads), NaN scores: not needed to predict
        out[key] = value
    return out


def export_onnx(checkpoint: Path, out: Path, seed: int = 0) -> float:
    """Export ``checkpoint`` to ``out`` (see the module doc); returns the check's largest difference.

    Raises:
        DataError: the checkpoint cannot be read or lacks its preprocessing, onnx or onnxruntime is
            missing, the model cannot be traced to ONNX, or the export disagrees with torch by more than
            EXPORT_TOLERANCE (nothing is written in any of these cases).
    """
    import torch

    from pipeline.atomic import atomic_write_bytes
    from pipeline.checkpoint.io import load_checkpoint, model_from_checkpoint
    from pipeline.checkpoint.preprocess import checkpoint_preprocess

    try:
        import onnx
    except ImportError:
        raise DataError(out, "exporting to ONNX needs the onnx package (pip install onnx)") from None
    ckpt = load_checkpoint(checkpoint)
    size = checkpoint_preprocess(ckpt, str(checkpoint)).network_geometry().size
    model = model_from_checkpoint(ckpt).eval()
    frames = 2 * int(ckpt["model_config"]["radius"]) + 1
    clips = torch.from_numpy(np.random.default_rng(seed).standard_normal((3, frames, size, size), np.float32))

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(x), dim=1)

    wrapped = Probabilities().eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python ints in shapes
        traced = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(wrapped, (clips[:2],), traced, input_names=["clips"], output_names=["probabilities"],
                              dynamic_axes={"clips": {0: "batch"}, "probabilities": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)  # fmt: skip
        except Exception as exc:  # torch.onnx's errors carry the whole graph: keep their first line
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise DataError(checkpoint, f"cannot be exported to ONNX ({type(exc).__name__}: {first}); "
                                        "nothing written") from None  # fmt: skip
        expected = wrapped(clips).numpy()
        proto = onnx.load(str(traced))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(checkpoint_metadata(ckpt))
    data = proto.SerializeToString()
    diff = _check(data, clips.numpy(), expected, out)
    atomic_write_bytes(out, data)
    return diff


def _check(data: bytes, clips: np.ndarray, expected: np.ndarray, out: Path) -> float:
    """Run the exported bytes on ``clips`` (3 of them: another batch size than the export's 2)."""
    got = _session(data, out).run(None, {"clips": clips})[0]
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else math.inf
    if not diff <= EXPORT_TOLERANCE:
        raise DataError(out, f"the export disagrees with torch (largest probability difference {diff:.2e} > "
                             f"{EXPORT_TOLERANCE:g}); nothing written")  # fmt: skip
    return diff


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export-onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, nargs="+", type=Path, help="checkpoint .pt file(s)")
    parser.add_argument("--out", required=True, type=Path,
                        help="the .onnx file (one checkpoint), or a folder for <checkpoint name>.onnx files")  # fmt: skip
    args = parser.parse_args(argv)
    if len(args.model) > 1 or args.out.is_dir() or args.out.suffix != ".onnx":
        args.out.mkdir(parents=True, exist_ok=True)
        targets = [args.out / f"{m.stem}.onnx" for m in args.model]
    else:
        targets = [args.out]
    failed = 0
    for checkpoint, target in zip(args.model, targets, strict=True):
        try:
            diff = export_onnx(checkpoint, target)
        except (PipelineError, OSError, ValueError) as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(f"{checkpoint} -> {target} (largest probability difference from torch {diff:.1e})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
