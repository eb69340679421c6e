"""Cross-validation of DeU-Net and U-Net on real ACDC-layout data (acdc-roi), with the same budget.

    python -m benchmarks.acdc_cv run --models deunet unet --folds 0 1 2 --jobs 2    # train, evaluate, report
    python -m benchmarks.acdc_cv train --model unet --fold 0 --tag base              # one training
    python -m benchmarks.acdc_cv train --model unet --fold 0 --tag constant --set train.schedule=constant
    python -m benchmarks.acdc_cv evaluate --tag base --model unet --folds 0 1 --tta none flips dihedral
    python -m benchmarks.acdc_cv report                                              # the tables

Settings come from ``--profile`` (profiles/acdc-roi-cpu.yaml) over params.yaml, then ``--set`` overrides
(``section.key=value``, YAML values). Work goes to ``data/bench/acdc_cv/`` (pipeline.experiments.workspace:
one clip store per preprocessing, a split grouped by duplicate images, ``<tag>/<model>/fold<k>/`` per
training). A single ``train`` uses the profile's ``train.threads`` (2: one fold on both cores); ``run --jobs 2``
gives each of two trainings side by side one core.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.experiments.params import merged_params
from pipeline.experiments.tables import cv_report
from pipeline.experiments.workspace import TTA_ORDER, Workspace

ROOT = Path(__file__).resolve().parents[1]


def run_all(args: argparse.Namespace, ws: Workspace) -> int:
    """Train every (model, fold) with ``--jobs`` processes side by side (each a ``train`` of this script), then
    evaluate each; returns the number of failed trainings."""
    params = merged_params(ROOT / "params.yaml", args.profile, args.set)
    ws.split(ws.store(params), params)  # preprocess and split once, before the parallel trainings
    # The cores are shared out among the trainings side by side (one each on 2 cores with --jobs 2),
    # unless --set names train.threads: more threads than cores slow every training several-fold.
    threads = [] if any(i.startswith("train.threads=") for i in args.set) else \
        ["--set", f"train.threads={max(1, (os.cpu_count() or 1) // args.jobs)}"]  # fmt: skip
    common = ["--profile", str(args.profile), "--tag", args.tag, "--work", str(ws.root), *threads,
              *(a for item in args.set for a in ("--set", item))]  # fmt: skip

    def train(job: tuple[str, int]) -> int:
        model, fold = job
        if (ws.run_dir(args.tag, model, fold) / "timing.json").is_file():
            return 0  # trained already (delete the folder to retrain)
        command = [
            sys.executable,
            "-m",
            "benchmarks.acdc_cv",
            "train",
            *common,
            "--model",
            model,
            "--fold",
            str(fold),
        ]
        return subprocess.call(command, cwd=ROOT)

    with ThreadPoolExecutor(args.jobs) as pool:
        failed = sum(1 for code in pool.map(train, [(m, f) for f in args.folds for m in args.models]) if code)
    if not failed:
        for model in args.models:
            for fold in args.folds:
                ws.evaluate(model, fold, args.tag, args.tta)
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", type=Path, default=ROOT / "profiles" / "acdc-roi-cpu.yaml")
    common.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    common.add_argument("--tag", default="base")
    common.add_argument("--work", type=Path, default=ROOT / "data" / "bench" / "acdc_cv", help="work folder")
    t = sub.add_parser("train", parents=[common])
    t.add_argument("--model", required=True)
    t.add_argument("--fold", type=int, required=True, help="a fold of the split, or -1: every patient")
    e = sub.add_parser("evaluate", parents=[common])
    e.add_argument("--model", required=True)
    e.add_argument("--folds", type=int, nargs="+", required=True)
    e.add_argument("--tta", nargs="+", default=["none", "flips"])
    e.add_argument("--members", nargs="+", default=None, help="score the ensemble of these tags' runs")
    e.add_argument("--data", type=Path, default=None, help="score on this ACDC-layout folder's patients")
    a = sub.add_parser("run", parents=[common])
    a.add_argument("--models", nargs="+", default=["deunet", "unet"])
    a.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    a.add_argument("--jobs", type=int, default=2, help="trainings side by side (the cores shared among them)")
    a.add_argument("--tta", nargs="+", default=["none", "flips", "dihedral"])
    r = sub.add_parser("report", parents=[common])
    r.add_argument("--tags", nargs="+", default=["base"])
    r.add_argument("--models", nargs="+", default=["deunet", "unet"])
    r.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ws = Workspace(args.work, ROOT)
    if args.cmd == "train":
        t = ws.train(
            merged_params(ROOT / "params.yaml", args.profile, args.set), args.model, args.fold, args.tag
        )
        print(f"{args.tag}/{args.model}/fold{args.fold}: val Dice final {t['final_val_dice']:.4f} best "
              f"{t['best_val_dice']:.4f} (epoch {t['best_epoch']}/{t['epochs']}), {t['wall_s'] / 60:.1f} min wall, "
              f"{t['cpu_s'] / 60:.1f} CPU min")  # fmt: skip
        return 0
    if args.cmd == "evaluate":
        for fold in args.folds:
            ws.evaluate(args.model, fold, args.tag, args.tta, args.members, args.data)
        print(f"{args.tag}/{args.model}: evaluated folds {args.folds} x {args.tta}")
        return 0
    if args.cmd == "run" and (failed := run_all(args, ws)):
        raise SystemExit(f"error: {failed} training(s) failed")
    tags = [args.tag] if args.cmd == "run" else args.tags
    text = cv_report({(t, m): ws.collect(t, m) for t in tags for m in args.models}, TTA_ORDER)
    if getattr(args, "out", None):
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
