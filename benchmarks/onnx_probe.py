"""Would ONNX Runtime make a cold CPU predict faster? Import and compute of the default model, torch vs ORT.

The question behind it: a cold ``deunet predict`` on 2 cores spends ~2 s importing torch before it does
anything (benchmarks/predict_bench.py). ONNX Runtime imports in a fraction of that, so a torch-free
predict path would start sooner, if ORT ran the model about as fast. This measures both halves on the
params.yaml model (random weights; time does not depend on them) for the 210 clips of a 30-frame,
7-slice cine, with the batch size and the two-batches-at-once threading the Segmenter uses on a CPU:

- ``import torch`` and ``import onnxruntime``, each in a fresh process (median of ``--runs``);
- the forward passes in torch (channels_last, as the Segmenter runs them) and in ORT (the model exported
  with ``torch.onnx.export``), and the largest difference between their logits.

It is a probe, not a project path: onnx and onnxruntime are not dependencies of the project.

    .venv/bin/pip install onnx onnxruntime      # first, into the project's venv
    python -m benchmarks.onnx_probe
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.predict_bench import import_seconds, settings
from pipeline.models import build_model


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
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("onnxruntime is not installed: .venv/bin/pip install onnx onnxruntime") from None
    params = settings("default")
    size = params["preprocess"]["size"]
    torch.manual_seed(0)
    model = build_model(
        params["train"]["model"], radius=params["train"]["radius"], **params["train"]["model_args"]
    )
    model = model.eval().requires_grad_(False)
    # Trained-like offsets: the offset heads start at zero, which would make every deformable sample a
    # plain grid point.
    for name, p in model.named_parameters():
        if "offset" in name:
            p.normal_(0, 0.05)
    frames = 2 * params["train"]["radius"] + 1
    clips = np.random.default_rng(0).standard_normal((args.clips, frames, size, size)).astype(np.float32)
    print(f"{params['train']['model']} {params['train']['model_args']} at {size} px (params.yaml, random "
          f"weights), {args.clips} clips in batches of {args.batch}, torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}, {torch.get_num_threads()} torch threads")  # fmt: skip
    env = dict(os.environ)
    torch_s, ort_s = (statistics.median(import_seconds(m, env, args.runs)) for m in ("torch", "onnxruntime"))
    print(
        f"import torch: {torch_s:.2f} s; import onnxruntime: {ort_s:.2f} s (fresh processes, median of {args.runs})"
    )

    cl = model.to(memory_format=torch.channels_last)

    def torch_forward(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return cl(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.from_numpy(clips[: args.batch]),), str(path), input_names=["clips"],
                              output_names=["logits"], dynamic_axes={"clips": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=18, dynamo=False)  # fmt: skip
        sessions = {}
        for intra in (1, 2):
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = intra, 1
            start = time.perf_counter()
            sessions[intra] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            created = time.perf_counter() - start
        print(f"ORT session from the exported file: {created:.2f} s")
        ref = in_batches(torch_forward, clips, args.batch, 1)
        print(
            f"{'runtime':>8} | {'intra-op threads':>16} | {'batches at once':>15} | {'s for all clips':>15} | max |logit diff|"
        )
        for workers in (1, 2):
            seconds = timed(lambda w=workers: in_batches(torch_forward, clips, args.batch, w), args.runs)
            print(f"{'torch':>8} | {torch.get_num_threads():>16} | {workers:>15} | {seconds:15.2f} | 0")
        for intra, session in sessions.items():

            def ort_forward(batch: np.ndarray, s: ort.InferenceSession = session) -> np.ndarray:
                return s.run(None, {"clips": batch})[0]

            for workers in (1, 2):
                seconds = timed(
                    lambda w=workers, f=ort_forward: in_batches(f, clips, args.batch, w), args.runs
                )
                diff = float(np.abs(in_batches(ort_forward, clips, args.batch, workers) - ref).max())
                print(f"{'ORT':>8} | {intra:>16} | {workers:>15} | {seconds:15.2f} | {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
