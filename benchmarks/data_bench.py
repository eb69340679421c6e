"""Data-half benchmarks: phantom generation, preprocessing of the real acdc-roi sample, no-op `dvc repro`.

    .venv/bin/python -m benchmarks.data_bench [--acdc ../shared/data/acdc-roi] [--size 128] [--workers 2]

Prints wall times; nothing is asserted (targets live in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.data.acdc import list_patients
from pipeline.data.phantom import PhantomConfig, generate_dataset
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.run import preprocess_dataset


def _timed(label: str, fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    took = time.perf_counter() - start
    print(f"{label:<58s} {took:8.2f} s", flush=True)
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--acdc", default=str(Path(__file__).resolve().parents[2] / "shared/data/acdc-roi"))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"cpus: {os.cpu_count()}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PhantomConfig()
        _timed(
            f"phantom: generate {cfg.n_patients} patients (params default)",
            lambda: generate_dataset(Path(tmp) / "syn", cfg),
        )
        n = len(list_patients(args.acdc))
        pcfg = PreprocessConfig(size=args.size, workers=args.workers)
        for i in range(args.repeats):
            _timed(f"preprocess: {n} acdc-roi patients, size {args.size}, {args.workers} workers (run {i + 1})",
                   lambda: preprocess_dataset(Path(args.acdc), Path(tmp) / "pre", pcfg, progress=False))  # fmt: skip
    repo = Path(__file__).resolve().parents[1]
    if (repo / "dvc.lock").is_file():
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for i in range(args.repeats):
            _timed(f"dvc repro, nothing changed (run {i + 1})",
                   lambda: subprocess.run(["dvc", "repro"], cwd=repo, env=env, check=True, capture_output=True))  # fmt: skip


if __name__ == "__main__":
    main()
