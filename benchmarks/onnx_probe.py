"""torch vs ONNX Runtime on the default model: import time and the forward passes of one cine.

The measurement behind the torch-free predict (pipeline.inference.onnx_network): a cold ``deunet
predict`` on 2 cores spent ~2 s importing torch before it did anything (benchmarks/predict_bench.py),
while ONNX Runtime imports in a fraction of that. This measures both halves on the params.yaml model
(random weights with trained-like non-zero offsets; time does not depend on them) for the 210 clips of a
30-frame, 7-slice cine, in batches, one or two batches at once as the Segmenter runs them on a CPU:

- ``import torch`` and ``import onnxruntime``, each in a fresh process (median of ``--runs``);
- the forward passes of the checkpoint in torch (:class:`TorchNetwork`) and of its ``deunet
  export-onnx`` export in ONNX Runtime (:class:`OnnxNetwork`) at 1 and 2 intra-op threads, and the
  largest difference between their probabilities.

    python -m benchmarks.onnx_probe
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from pipeline.checkpoint.io import save_checkpoint
from pipeline.experiments.params import merged_params
from pipeline.experiments.speed import import_seconds
from pipeline.inference.onnx_export import export_onnx
from pipeline.inference.onnx_network import OnnxNetwork
from pipeline.inference.torch_network import TorchNetwork
from pipeline.models import build_model

REPO = Path(__file__).resolve().parents[1]


def timed(run: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` wall times of ``run()`` after one warm-up call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def in_batches(forward: Callable[[np.ndarray], np.ndarray], clips: np.ndarray, batch: int,
               workers: int) -> np.ndarray:  # fmt: skip
    """``forward`` over ``clips`` in batches, ``workers`` batches at once (threads)."""
    chunks = [clips[i : i + batch] for i in range(0, len(clips), batch)]
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(forward, chunks)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=210, help="30 frames x 7 slices")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    import onnxruntime as ort

    params = merged_params(REPO / "params.yaml")
    size = params["preprocess"]["size"]
    torch.manual_seed(0)
    model = build_model(
        params["train"]["model"], radius=params["train"]["radius"], **params["train"]["model_args"]
    )
    # Trained-like offsets: the offset heads start at zero, which would make every deformable sample a
    # plain grid point.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "offset" in name:
                p.normal_(0, 0.05)
    frames = 2 * params["train"]["radius"] + 1
    clips = np.random.default_rng(0).standard_normal((args.clips, frames, size, size)).astype(np.float32)
    print(f"{params['train']['model']} {params['train']['model_args']} at {size} px (params.yaml, random "
          f"weights), {args.clips} clips in batches of {args.batch}, torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}, {torch.get_num_threads()} torch threads")  # fmt: skip
    env = dict(os.environ)
    torch_s, ort_s = (
        statistics.median(import_seconds(m, env, args.runs, REPO)) for m in ("torch", "onnxruntime")
    )
    print(
        f"import torch: {torch_s:.2f} s; import onnxruntime: {ort_s:.2f} s (fresh processes, median of {args.runs})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, exported = Path(tmp) / "model.pt", Path(tmp) / "model.onnx"
        save_checkpoint(checkpoint, model, None, preprocess={"size": size, "percentiles": [0.5, 99.5]})
        export_onnx(checkpoint, exported)
        networks: dict[tuple[str, int], Callable[[np.ndarray], np.ndarray]] = {
            ("torch", torch.get_num_threads()): TorchNetwork(model, "cpu")
        }
        for intra in (1, 2):
            start = time.perf_counter()
            networks["ORT", intra] = OnnxNetwork(exported, threads=intra)
            created = time.perf_counter() - start
        print(f"ORT session from the exported file: {created:.2f} s")
        ref = in_batches(networks["torch", torch.get_num_threads()], clips, args.batch, 1)
        print(f"{'runtime':>8} | {'intra-op threads':>16} | {'batches at once':>15} | {'s for all clips':>15} | "
              "max |probability diff|")  # fmt: skip
        for (runtime, intra), network in networks.items():
            for workers in (1, 2):
                seconds = timed(lambda w=workers, n=network: in_batches(n, clips, args.batch, w), args.runs)
                diff = float(np.abs(in_batches(network, clips, args.batch, workers) - ref).max())
                print(f"{runtime:>8} | {intra:>16} | {workers:>15} | {seconds:15.2f} | {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
