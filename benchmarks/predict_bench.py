"""Wall time of ``deunet predict`` on one cine, from a cold process, split into imports and phases.

The cine is the synthetic phantom at the size of a real acdc-roi cine (default 30 frames x 7 slices of
95 x 100 at ~1.5 mm), written as NIfTI; the model is the one a settings file trains (``--settings``:
params.yaml, the embedded default, DeU-Net at 64 px; or a profile such as acdc-roi-cpu, DeU-Net at 96 px)
with random weights, since time does not depend on the weights. Each run is a fresh
``python -m pipeline.cli predict ... --timing`` process, as a user runs it; the imports are measured in
a separate fresh process that only imports the CLI module. ``--runtime`` chooses torch (the checkpoint)
and/or ONNX Runtime (the checkpoint's ``deunet export-onnx`` export; torch is never imported then).

    python -m benchmarks.predict_bench                      # default TTA (flips) and none, torch and ONNX
    python -m benchmarks.predict_bench --settings acdc-roi-cpu --tta none --runs 5 --threads 2
    python -m benchmarks.predict_bench --tta none --precision fp32 bf16     # bf16 autocast on the CPU

``--batching`` times ``Segmenter.predict`` in this process instead (no TTA, lcc_fill), for batch sizes
16 and 32, one batch at a time or two at once on the CPU (``cpu_workers``), the settings alternating
round by round so drift hits them alike, and checks that all give the same labels. ``--checkpoint``
uses a trained model instead of the settings' random one (its own size; trained offsets):

    python -m benchmarks.predict_bench --batching --runs 4
    python -m benchmarks.predict_bench --batching --runs 4 --checkpoint data/bench/acdc_cv/base/deunet/fold0/final.pt
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.experiments.params import merged_params
from pipeline.experiments.speed import import_seconds

REPO = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, profile: dict[str, Any], frames: int, slices: int,
                matrix: tuple[int, int]) -> tuple[Path, Path]:  # fmt: skip
    """The settings' model checkpoint (random weights) and a phantom cine NIfTI."""
    import torch

    from pipeline.checkpoint.io import save_checkpoint
    from pipeline.data import imageio
    from pipeline.data.phantom import PhantomConfig, iter_records
    from pipeline.models import build_model

    torch.manual_seed(0)
    model = build_model(
        profile["train"]["model"], radius=profile["train"]["radius"], **profile["train"]["model_args"]
    )
    preprocess = {"size": profile["preprocess"]["size"], "percentiles": [0.5, 99.5],
                  "geometry": profile["preprocess"]["geometry"], "spacing_mm": profile["preprocess"]["spacing_mm"]}  # fmt: skip
    checkpoint = folder / "model.pt"
    save_checkpoint(checkpoint, model, None, preprocess=preprocess, fold=0)
    cfg = PhantomConfig(n_patients=1, matrix=matrix, n_frames=(frames, frames), n_slices=(slices, slices),
                        inplane_spacing_mm=(1.5, 1.5))  # fmt: skip
    record = next(iter_records(cfg))
    cine = folder / "cine.nii.gz"
    imageio.save_nifti(record.cine.astype("int16"), record.affine, cine)
    return checkpoint, cine


def run_predict(
    model: Path, cine: Path, out: Path, tta: str, precision: str, env: dict[str, str]
) -> tuple[float, dict[str, float]]:
    """Wall seconds of one cold ``deunet predict`` process and its ``--timing`` phases."""
    cmd = [sys.executable, "-m", "pipeline.cli", "predict", "--model", str(model), "--input", str(cine),
           "--out", str(out), "--device", "cpu", "--tta", tta, "--precision", precision, "--timing"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("timing: "))
    phases = {k: float(v) for k, v in re.findall(r"([a-z ]+) ([\d.]+) s", line[len("timing: ") :])}
    return wall, {k.strip(): v for k, v in phases.items()}


def batching_table(checkpoint: Path, cine: Path, rounds: int) -> None:
    """Print the median ``Segmenter.predict`` seconds per (batch size, CPU workers); the labels must agree."""
    import numpy as np

    from pipeline.data import imageio
    from pipeline.inference.predict import Segmenter

    image = imageio.read_nifti_cine(cine)
    settings_ = [(batch, workers) for batch in (32, 16) for workers in (1, 2)]
    segmenters = {key: Segmenter.from_files([checkpoint], batch_size=key[0], cpu_workers=key[1],
                                            postprocess="lcc_fill") for key in settings_}  # fmt: skip
    seconds: dict[tuple[int, int], list[float]] = {key: [] for key in settings_}
    reference = None
    for _ in range(rounds):
        for key, segmenter in segmenters.items():
            start = time.perf_counter()
            labels = segmenter.predict(image.array, spacing=image.spacing)
            seconds[key].append(time.perf_counter() - start)
            reference = labels if reference is None else reference
            if not np.array_equal(labels, reference):
                raise SystemExit(f"batch {key[0]}, {key[1]} worker(s): the labels differ")
    print(f"Segmenter.predict of {checkpoint} on the cine, median of {rounds} alternating rounds "
          "(labels equal across all settings):")  # fmt: skip
    print(f"{'batch':>5} | {'batches at once':>15} | {'s':>5}")
    for (batch, workers), times in seconds.items():
        print(f"{batch:>5} | {workers:>15} | {statistics.median(times):5.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default="default", help="default (params.yaml) or a profile name")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--slices", type=int, default=7)
    parser.add_argument("--matrix", type=int, nargs=2, default=(95, 100), metavar=("Y", "X"))
    parser.add_argument("--tta", nargs="+", default=["flips", "none"])
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"])
    parser.add_argument("--runtime", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"],
                        help="torch: the checkpoint; onnx: its export, run by ONNX Runtime")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS (default: torch's own)")
    parser.add_argument("--batching", action="store_true",
                        help="time Segmenter.predict in-process per batch size and CPU workers instead")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, default=None, help="--batching: a trained checkpoint")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        profile = merged_params(
            REPO / "params.yaml",
            None if args.settings == "default" else REPO / "profiles" / f"{args.settings}.yaml",
        )
        checkpoint, cine = make_inputs(folder, profile, args.frames, args.slices, tuple(args.matrix))
        if args.batching:
            batching_table(args.checkpoint or checkpoint, cine, args.runs)
            return 0
        models = {"torch": checkpoint}
        if "onnx" in args.runtime:
            from pipeline.inference.onnx_export import export_onnx

            models["onnx"] = folder / "model.onnx"
            export_onnx(checkpoint, models["onnx"])
        imports = import_seconds("pipeline.inference.predict_cli", env, args.runs, REPO)
        print(f"cine {args.frames} frames x {args.slices} slices x {args.matrix[0]} x {args.matrix[1]}, "
              f"{profile['train']['model']} {profile['train']['model_args']} at {profile['preprocess']['size']} px "
              f"({args.settings} settings, random weights), {os.cpu_count()} CPU(s), "
              f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}")  # fmt: skip
        print(
            f"import pipeline.serving.predict_cli: median {statistics.median(imports):.2f} s of {args.runs}"
        )
        print(
            "median run of each row; start: Python and the CLI module; runtime: importing torch or onnxruntime"
        )
        print(f"{'runtime':>7} | {'tta':>6} | {'precision':>9} | {'wall s':>6} | {'start':>5} | {'runtime':>7} | "
              f"{'load model':>10} | {'read':>5} | {'segment':>7} | {'write':>5}")  # fmt: skip
        # ONNX Runtime runs the export in fp32 (predict ignores --precision for it)
        rows = [(runtime, tta, precision) for runtime in args.runtime for tta in args.tta
                for precision in (args.precision if runtime == "torch" else ["fp32"])]  # fmt: skip
        for runtime, tta, precision in rows:
            runs = [run_predict(models[runtime], cine, folder / f"out-{runtime}-{tta}-{precision}-{i}", tta,
                                precision, env) for i in range(args.runs)]  # fmt: skip
            wall, phases = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median run
            start = wall - sum(phases.values())
            print(f"{runtime:>7} | {tta:>6} | {precision:>9} | {wall:6.2f} | {start:5.2f} | "
                  f"{phases.get('import runtime', 0):7.2f} | {phases.get('load model', 0):10.2f} | "
                  f"{phases.get('read', 0):5.2f} | {phases.get('segment', 0):7.2f} | {phases.get('write', 0):5.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
