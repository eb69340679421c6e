"""fp32 vs bf16 CPU inference of a trained acdc_cv fold: accuracy, label agreement and time.

Scores the fold's published model on its own validation patients (evaluate's headline variant:
lcc_fill post-processing, the given TTA) once in fp32 and once with bf16 autocast on the CPU, and
counts the voxels whose label differs between the two at ED and ES. bf16 is opt-in
(``deunet predict --precision bf16``) until numbers like these say it costs nothing.

    python -m benchmarks.acdc_cv run --models deunet --folds 0      # a trained fold first
    python -m benchmarks.precision_check --tag base --model deunet --fold 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import yaml

from benchmarks.acdc_cv import ROOT, WORK, headline
from pipeline.data.acdc import read_patient
from pipeline.evaluation.runner import EvaluateConfig, evaluate_patients
from pipeline.inference.predict import Segmenter
from pipeline.splitting.folds import read_split
from pipeline.vocabulary import PHASES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default="base")
    parser.add_argument("--model", default="deunet")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--tta", default="flips")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = WORK / args.tag / args.model / f"fold{args.fold}"
    timing = json.loads((work / "timing.json").read_text())
    run_params = yaml.safe_load((work / "params.yaml").read_text())
    spec = read_split(ROOT / timing["store"] / "folds.json")["folds"][args.fold]
    raw = (ROOT / run_params["download"]["local_path"]).resolve()
    files = [work / timing["model_file"]]
    cfg = EvaluateConfig(whole_cycle=False, tta=args.tta)
    labels: dict[bool, list[np.ndarray]] = {}
    print(f"{args.tag}/{args.model}/fold{args.fold}: {len(spec['val'])} validation patients, tta {args.tta}, "
          f"{args.threads} thread(s)")  # fmt: skip
    print("| precision | mean Dice | mean HD mm | mean ASSD mm | RV ES Dice | evaluate s |")
    print("|---|---|---|---|---|---|")
    for bf16 in (False, True):
        seg = Segmenter.from_files(files, tta=args.tta, postprocess="lcc_fill", batch_size=32, bf16=bf16)
        start = time.perf_counter()
        results = evaluate_patients(seg, raw, spec["val"], args.fold, cfg, progress=False)
        seconds = time.perf_counter() - start
        h = headline([c for r in results for c in r.cases["lcc_fill"]])
        print(f"| {'bf16' if bf16 else 'fp32'} | {h['mean_dice']:.4f} | {h['mean_hd']:.2f} | {h['mean_assd']:.3f} | "
              f"{h['dice_RV_ES']:.3f} | {seconds:.0f} |")  # fmt: skip
        labels[bf16] = []
        for pid in spec["val"]:
            rec = read_patient(raw / pid, with_cine_labels=False)
            labels[bf16].append(
                seg.predict(rec.cine, [rec.frame_index(p) for p in PHASES], spacing=rec.spacing)
            )
    changed = sum(int((a != b).sum()) for a, b in zip(labels[False], labels[True], strict=True))
    foreground = sum(int((a > 0).sum()) for a in labels[False])
    print(f"labels that differ between fp32 and bf16 at ED/ES: {changed} voxels, "
          f"{100 * changed / max(foreground, 1):.3f} % of the fp32 foreground")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
