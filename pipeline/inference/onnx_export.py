"""Export checkpoints to ONNX, checked against torch, for the torch-free predict (pipeline.inference.onnx_network).

    deunet export-onnx --model data/train/models/fold0.pt --out fold0.onnx     # one file per checkpoint
    deunet export-onnx --model data/train/models/fold*.pt --out exports/       # <checkpoint name>.onnx each

An export is one ``.onnx`` file: the network followed by its softmax, plus the checkpoint's plain-data
entries as JSON metadata (see pipeline.inference.onnx_network). It is checked against torch on random
clips, at another batch size than the trace's, before it is written (atomically).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError, PipelineError
from pipeline.inference.onnx_network import METADATA_KEY, _session

#: ONNX opset of the export: GridSample (deformable convolutions, ToFlow's warping) needs >= 16 and
#: AffineGrid (GridNet) 20; all eight registry models export at 20 (ONNX Runtime >= 1.17).
OPSET = 20
#: Largest difference from torch's probabilities an export may show on its check clips.
EXPORT_TOLERANCE = 1e-4


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
