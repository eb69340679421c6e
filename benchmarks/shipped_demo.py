"""The shipped model on a real ACDC cine, as a new user runs it: cold ``deunet predict`` with no --model.

    python -m benchmarks.shipped_demo                    # patient002 of acdc-roi, 3 cold runs
    python -m benchmarks.shipped_demo --patient patient042 --runs 5
    python -m benchmarks.shipped_demo --model shipped:acdc-deunet   # another shipped model (no figure)

Prints the wall time of each cold predict (a fresh process: imports, model load and checksums, read,
segmentation, every output including report.json) and the ED/ES Dice against the expert labels, and draws
docs/figures/shipped_acdc_cine.png: the expert contours (solid) and the shipped model's (dashed) on the
ED and ES slices. The shipped model was trained on every acdc-roi patient, this one included: the figure
shows what the output looks like, not held-out accuracy (the model card has the cross-validation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ACDC_ROI = ROOT.parent / "shared" / "data" / "acdc-roi"
FIGURE = ROOT / "docs" / "figures" / "shipped_acdc_cine.png"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ACDC_ROI)
    p.add_argument("--patient", default="patient002")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", default=None, help="predict's --model (default: none, the default model)")
    p.add_argument("--figure", type=Path, default=None, help=f"default: {FIGURE} without --model, else none")
    args = p.parse_args(argv)
    figure = args.figure or (FIGURE if args.model is None else None)
    chosen = [] if args.model is None else ["--model", args.model]
    from pipeline.data.acdc import parse_info_cfg
    from pipeline.evaluation.figures import overlay_figure
    from pipeline.vocabulary import STRUCTURES

    folder = args.data / args.patient
    cine_path = folder / f"{args.patient}_4d.nii.gz"
    info = parse_info_cfg(folder / "Info.cfg")
    deunet = Path(sys.executable).with_name("deunet")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            out = Path(tmp) / f"run{run}"
            start = time.perf_counter()
            proc = subprocess.run([str(deunet), "predict", *chosen, "--input", str(cine_path), "--out", str(out)],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 1
        print(*proc.stderr.strip().splitlines()[:1], sep="")  # "no --model: using ..." without --model
        print(proc.stdout.strip())
        stem = f"{args.patient}_4d"
        labels = np.asarray(nib.load(out / f"{stem}_labels.nii.gz").dataobj).transpose(
            3, 2, 1, 0
        )  # (T, Z, Y, X)
        report = json.loads((out / f"{stem}_report.json").read_text())
    image = np.asarray(nib.load(cine_path).dataobj, dtype=np.float32).transpose(3, 2, 1, 0)
    rows = {}
    for phase, frame in (("ED", info.ed), ("ES", info.es)):
        gt = np.asarray(nib.load(folder / f"{args.patient}_frame{frame:02d}_gt.nii.gz").dataobj).transpose(
            2, 1, 0
        )
        pred = labels[frame - 1]
        rows[phase] = (
            image[frame - 1],
            gt,
            pred,
            {n: _dice(gt == v, pred == v) for n, v in STRUCTURES.items()},
        )
    print(f"cold predict, {args.runs} runs: " + ", ".join(f"{t:.2f}" for t in times)
          + f" s (median {statistics.median(times):.2f} s)")  # fmt: skip
    for phase, (_, _, _, dice) in rows.items():
        print(f"{phase} (frame {info.ed if phase == 'ED' else info.es}, Info.cfg): Dice "
              + ", ".join(f"{n} {d:.3f}" for n, d in dice.items()))  # fmt: skip
    print(f"found ED {report['phases']['ed_frame'] + 1}, ES {report['phases']['es_frame'] + 1} (1-based; Info.cfg "
          f"{info.ed}, {info.es}); BSA {report['body']['bsa_m2']} m^2; LV EF {report['LV']['EF_pct']} %")  # fmt: skip
    if figure is None:
        return 0
    z = image.shape[1]
    picks = sorted({max(z // 2 - 2, 0), z // 2, min(z // 2 + 2, z - 1)})
    stack = {k: np.concatenate([rows["ED"][i], rows["ES"][i]]) for i, k in enumerate(("image", "gt", "pred"))}
    slices = [*picks, *(z + s for s in picks)]
    titles = [f"ED slice {s}" for s in picks] + [f"ES slice {s}" for s in picks]
    spacing = nib.load(cine_path).header.get_zooms()[:3][::-1]
    overlay_figure(stack["image"], stack["gt"], stack["pred"], slices, figure, spacing=spacing,
                   title=f"acdc-roi {args.patient}: expert (solid) and the shipped model (dashed)",
                   panel_titles=titles)  # fmt: skip
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
