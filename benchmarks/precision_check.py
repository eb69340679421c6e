"""fp32 vs bf16 vs ONNX Runtime CPU inference of a trained acdc_cv fold: accuracy, label agreement, time.

Scores the fold's published model on its own validation patients (evaluate's headline variant:
lcc_fill post-processing, the given TTA) in fp32, with bf16 autocast on the CPU, and (``--onnx``) as its
``deunet export-onnx`` export run by ONNX Runtime, and counts the voxels whose label differs from fp32
torch at ED and ES. bf16 is opt-in (``deunet predict --precision bf16``) until numbers like these say it
costs nothing.

    python -m benchmarks.acdc_cv run --models deunet --folds 0      # a trained fold first
    python -m benchmarks.precision_check --tag base --model deunet --fold 0 --onnx
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.acdc import read_patient
from pipeline.evaluation.config import EvaluateConfig
from pipeline.experiments.scoring import headline, pooled_cases, score_fold
from pipeline.experiments.workspace import Workspace
from pipeline.inference.predict import Segmenter
from pipeline.vocabulary import PHASES

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="base")
    parser.add_argument("--model", default="deunet")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--tta", default="flips")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--onnx", action="store_true", help="also score the model's ONNX export")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Workspace.default(ROOT).run(args.tag, args.model, args.fold)
    cfg = EvaluateConfig(whole_cycle=False, tta=args.tta, postprocess="lcc_fill")
    labels: dict[str, list[np.ndarray]] = {}
    print(f"{args.tag}/{args.model}/fold{args.fold}: {len(run.val)} validation patients, tta {args.tta}, "
          f"{args.threads} thread(s)")  # fmt: skip
    print("| runtime | mean Dice | mean HD mm | mean ASSD mm | RV ES Dice | evaluate s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"fp32": (run.files, False), "bf16": (run.files, True)}
        if args.onnx:
            from pipeline.inference.onnx_export import export_onnx

            export_onnx(run.files[0], Path(tmp) / "model.onnx")
            variants["onnx"] = ([Path(tmp) / "model.onnx"], False)
        for name, (paths, bf16) in variants.items():
            start = time.perf_counter()
            results = score_fold(paths, run.raw, run.val, args.fold, cfg, bf16=bf16)
            seconds = time.perf_counter() - start
            h = headline(pooled_cases(results, "lcc_fill"))
            print(f"| {name} | {h['mean_dice']:.4f} | {h['mean_hd']:.2f} | {h['mean_assd']:.3f} | "
                  f"{h['dice_RV_ES']:.3f} | {seconds:.0f} |")  # fmt: skip
            seg = Segmenter.from_files(paths, tta=args.tta, postprocess="lcc_fill", bf16=bf16)
            labels[name] = []
            for pid in run.val:
                rec = read_patient(run.raw / pid, with_cine_labels=False)
                labels[name].append(
                    seg.predict(rec.cine, [rec.frame_index(p) for p in PHASES], spacing=rec.spacing)
                )
    foreground = sum(int((a > 0).sum()) for a in labels["fp32"])
    for name in [n for n in labels if n != "fp32"]:
        changed = sum(int((a != b).sum()) for a, b in zip(labels["fp32"], labels[name], strict=True))
        print(f"labels that differ between fp32 and {name} at ED/ES: {changed} voxels, "
              f"{100 * changed / max(foreground, 1):.3f} % of the fp32 foreground")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
