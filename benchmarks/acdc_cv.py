"""Cross-validation of DeU-Net and U-Net on real ACDC-layout data (acdc-roi), with the same budget.

    python -m benchmarks.acdc_cv run --models deunet unet --folds 0 1 2 --jobs 2    # train, evaluate, report
    python -m benchmarks.acdc_cv train --model unet --fold 0 --tag base              # one training
    python -m benchmarks.acdc_cv train --model unet --fold 0 --tag constant --set train.schedule=constant
    python -m benchmarks.acdc_cv evaluate --tag base --model unet --folds 0 1 --tta none flips dihedral
    python -m benchmarks.acdc_cv report                                              # the tables

Settings come from ``--profile`` (profiles/acdc-roi-cpu.yaml) over params.yaml, then ``--set`` overrides
(``section.key=value``, YAML values). Work goes to ``data/bench/acdc_cv/``: one clip store per
preprocessing, a split grouped by duplicate images, and ``<tag>/<model>/fold<k>/`` per training with its
``timing.json`` (CPU seconds and wall seconds). A single ``train`` uses the profile's ``train.threads``
(2: one fold on both cores); ``run --jobs 2`` gives each of two trainings side by side one core.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import load_params, section

ROOT = Path(__file__).resolve().parents[1]
TTA_ORDER = ("none", "flips", "dihedral")
WORK = ROOT / "data" / "bench" / "acdc_cv"
log = logging.getLogger("benchmarks.acdc_cv")


def merged_params(profile: Path, overrides: list[str]) -> dict[str, Any]:
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    for name, value in (yaml.safe_load(profile.read_text()) or {}).items():
        params[name] = {**params.get(name, {}), **value}
    for item in overrides:
        key, _, raw = item.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return params


def store_for(params: dict[str, Any]) -> Path:
    """Preprocess the profile's data once per preprocessing config; returns the store folder."""
    from pipeline.preprocessing.config import PreprocessConfig
    from pipeline.preprocessing.run import preprocess_dataset

    cfg = section(params, "preprocess", PreprocessConfig)
    raw = (ROOT / params["download"]["local_path"]).resolve()
    key = hashlib.sha1(json.dumps([str(raw), repr(cfg)]).encode(), usedforsecurity=False).hexdigest()[:10]
    out = WORK / "stores" / f"{cfg.geometry}-{cfg.size}-{key}"
    if not (out / "meta.json").is_file():
        preprocess_dataset(raw, out, cfg, progress=False)
    return out


def split_for(store: Path, params: dict[str, Any]) -> Path:
    """The split of the store's patients, duplicate-image patients in one fold."""
    import pandas as pd

    from pipeline.splitting.config import SplitConfig
    from pipeline.splitting.folds import make_split, write_split
    from pipeline.validation.duplicates import duplicate_image_groups

    path = store / "folds.json"
    if not path.is_file():
        patients = json.loads((store / "patients.json").read_text())
        linked = duplicate_image_groups(pd.read_csv(store / "manifest.csv"))
        split = make_split(
            {p["patient"]: p["group"] for p in patients}, section(params, "split", SplitConfig), linked
        )
        write_split(split, path)
    return path


def train_one(params: dict[str, Any], model: str, fold: int, tag: str) -> dict[str, Any]:
    """Train ``model`` on ``fold`` of the split; fold -1: on every patient (a model to ship; its validation
    patients, fold 0's, are then among its training ones, a progress monitor only: the recipe's
    cross-validation is what measures it)."""
    import torch

    from pipeline.preprocessing.store import ClipStore
    from pipeline.splitting.folds import read_split
    from pipeline.training.config import TrainConfig
    from pipeline.training.trainer import train_fold

    params["train"] = {**params["train"], "model": model, "folds": [fold]}
    cfg = section(params, "train", TrainConfig)
    store_dir = store_for(params)
    split = read_split(split_for(store_dir, params))
    work = WORK / tag / model / (f"fold{fold}" if fold >= 0 else "all")
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=True))
    torch.set_num_threads(max(cfg.threads, 1))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if fold >= 0:
        spec = split["folds"][fold]
    else:
        folds = split["folds"]
        spec = {"train": sorted(p for f in folds for p in (*f["train"], *f["val"]) if p in f["val"]),
                "val": folds[0]["val"]}  # fmt: skip
    seed_fold = fold if fold >= 0 else len(split["folds"])  # the seeds want a fold number >= 0
    result = train_fold(
        ClipStore(store_dir), spec["train"], spec["val"], cfg, work, seed_fold, progress=False
    )
    timing = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
              "epochs": result.epochs_run, "best_val_dice": result.best_dice, "best_epoch": result.best_epoch,
              "final_val_dice": result.history[-1]["val_dice"], "model_file": result.model_file,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "store": str(store_dir.relative_to(ROOT) if store_dir.is_relative_to(ROOT) else store_dir)}  # fmt: skip
    (work / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    print(f"{tag}/{model}/fold{fold}: val Dice final {timing['final_val_dice']:.4f} best {result.best_dice:.4f} "
          f"(epoch {result.best_epoch}/{result.epochs_run}), {timing['wall_s'] / 60:.1f} min wall, "
          f"{timing['cpu_s'] / 60:.1f} CPU min")  # fmt: skip
    return timing


def evaluate_one(params: dict[str, Any], model: str, fold: int, tag: str, tta_modes: list[str],
                 members: list[str] | None = None, data: Path | None = None) -> Path:  # fmt: skip
    """Score one fold's published model on its own validation patients: every TTA mode x post-processing.

    With ``members`` (tags of runs of the same model and fold, e.g. other seeds), score their ensemble
    instead, written under ``tag``: what averaging models is worth, measured without leaking patients.
    ``data``: score on this ACDC-layout folder's copies of the validation patients rather than the data
    the runs trained on (e.g. models trained on every slice, scored on acdc-roi's crops).
    """
    import torch

    from pipeline.evaluation.config import EvaluateConfig
    from pipeline.evaluation.runner import evaluate_patients
    from pipeline.inference.predict import Segmenter
    from pipeline.splitting.folds import read_split

    work = WORK / tag / model / f"fold{fold}"
    sources = [WORK / m / model / f"fold{fold}" for m in members] if members else [work]
    timings = [json.loads((src / "timing.json").read_text()) for src in sources]
    files = [src / t["model_file"] for src, t in zip(sources, timings, strict=True)]
    if members:
        work.mkdir(parents=True, exist_ok=True)
        merged = {**timings[0], "cpu_s": sum(t["cpu_s"] for t in timings), "members": members}
        (work / "timing.json").write_text(json.dumps(merged, indent=1) + "\n")
    timing = timings[0]
    run_params = yaml.safe_load((sources[0] / "params.yaml").read_text())
    store_dir = ROOT / timing["store"]  # relative to the repo, or absolute
    spec = read_split(store_dir / "folds.json")["folds"][fold]
    raw = (data or ROOT / run_params["download"]["local_path"]).resolve()
    torch.set_num_threads(max(int(run_params["train"].get("threads") or 1), 1))
    out: dict[str, Any] = {"model": model, "fold": fold, "tag": tag, "val": spec["val"], "tta": {}}
    for tta in tta_modes:
        seg = Segmenter.from_files(files, tta=tta, batch_size=32)
        cfg = EvaluateConfig(whole_cycle=False, tta=tta)
        start = time.perf_counter()
        results = evaluate_patients(seg, raw, spec["val"], fold, cfg, progress=False)
        out["tta"][tta] = {"seconds": time.perf_counter() - start,
                           "cases": {v: [c for r in results for c in r.cases[v]] for v in results[0].cases}}  # fmt: skip
    path = work / "evaluation.json"
    path.write_text(json.dumps(out, default=float) + "\n")
    print(f"{tag}/{model}/fold{fold}: evaluated {len(spec['val'])} patients x {tta_modes}")
    return path


def collect(tag: str, model: str) -> dict[str, Any]:
    """Pooled CV cases of every evaluated fold of ``tag/model``: {(tta, variant): cases}, folds, minutes,
    and the same cases per fold (``by_fold``: {fold: {(tta, variant): cases}})."""
    pooled: dict[tuple[str, str], list[dict[str, Any]]] = {}
    by_fold: dict[int, dict[tuple[str, str], list[dict[str, Any]]]] = {}
    folds, minutes = [], []
    for work in sorted((WORK / tag / model).glob("fold*")):
        ev_path = work / "evaluation.json"
        if not ev_path.is_file():
            continue
        ev = json.loads(ev_path.read_text())
        folds.append(ev["fold"])
        minutes.append(json.loads((work / "timing.json").read_text())["cpu_s"] / 60)
        for tta, body in ev["tta"].items():
            for variant, cases in body["cases"].items():
                pooled.setdefault((tta, variant), []).extend(cases)
                by_fold.setdefault(ev["fold"], {})[(tta, variant)] = cases
    return {"cases": pooled, "folds": folds, "cpu_minutes": minutes, "by_fold": by_fold}


def fold_table(rows: list[tuple[str, str, dict[int, dict[tuple[str, str], list[dict[str, Any]]]]]],
               tta: str, variant: str) -> str:  # fmt: skip
    """Markdown: mean Dice / HD / ASSD / RV ES Dice of each fold alone, then the mean and std over folds."""
    import numpy as np

    folds = sorted({fold for _, _, by_fold in rows for fold in by_fold})  # the split's n_folds, as evaluated
    lines = [f"Per fold, TTA {tta}, {variant}: mean Dice / mean HD (mm) / mean ASSD (mm) / RV ES Dice",
             "", "| run | model | " + " | ".join(f"fold {f}" for f in folds) + " | mean ± std over folds |",
             "|---|---|" + "---|" * (len(folds) + 1)]  # fmt: skip
    for tag, model, by_fold in rows:
        cells, values = [], []
        for fold in folds:
            cases = by_fold.get(fold, {}).get((tta, variant))
            if not cases:
                cells.append("")
                continue
            h = headline(cases)
            values.append([h["mean_dice"], h["mean_hd"], h["mean_assd"], h["dice_RV_ES"]])
            cells.append(
                f"{h['mean_dice']:.4f} / {h['mean_hd']:.2f} / {h['mean_assd']:.2f} / {h['dice_RV_ES']:.3f}"
            )
        if not values:
            continue
        m, s = np.mean(values, axis=0), np.std(values, axis=0)
        spread = f"{m[0]:.4f} ± {s[0]:.4f} / {m[1]:.2f} ± {s[1]:.2f} / {m[2]:.2f} ± {s[2]:.2f} / {m[3]:.3f} ± {s[3]:.3f}"
        lines.append(f"| {tag} | {model} | " + " | ".join(cells) + f" | {spread} |")
    return "\n".join(lines)


def headline(cases: list[dict[str, Any]]) -> dict[str, float]:
    from pipeline.evaluation import summarise
    from pipeline.evaluation.report import headline_means

    return headline_means(summarise(cases))


def report(tags: list[str], models: list[str]) -> str:
    """Markdown: one row per (tag, model, tta, post-processing) with the CV means, then Table 1s."""
    from pipeline.evaluation import summarise, table1_markdown

    lines = ["| run | model | folds | CPU min/fold | TTA | post-processing | mean Dice | mean HD (mm) | mean ASSD (mm) | RV ES Dice |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    tables = []
    fold_rows = []
    for tag in tags:
        for model in models:
            got = collect(tag, model)
            if not got["folds"]:
                continue
            fold_rows.append((tag, model, got["by_fold"]))
            per_fold = sum(got["cpu_minutes"]) / len(got["cpu_minutes"])
            for (tta, variant), cases in sorted(got["cases"].items()):
                h = headline(cases)
                lines.append(f"| {tag} | {model} | {','.join(map(str, got['folds']))} | {per_fold:.1f} | {tta} | {variant} | "
                             f"{h['mean_dice']:.4f} | {h['mean_hd']:.2f} | {h['mean_assd']:.2f} | {h['dice_RV_ES']:.4f} |")  # fmt: skip
                strongest = [t for t in TTA_ORDER if any(t == k for k, _ in got["cases"])][-1]
                if variant in ("raw", "lcc_fill") and tta in ("none", strongest):
                    tables.append(f"### {model} ({tag}), folds {got['folds']}, TTA {tta}, {variant}\n\n"
                                  + table1_markdown(summarise(cases)))  # fmt: skip
    folds = "\n\n".join(
        fold_table(fold_rows, tta, variant) for tta, variant in (("none", "raw"), ("flips", "lcc_fill"))
    )
    return "\n".join(lines) + "\n\n" + folds + "\n\n" + "\n\n".join(tables)


def run_all(args: argparse.Namespace, params: dict[str, Any]) -> str:
    """Train every (model, fold) with ``--jobs`` processes side by side, evaluate each, then report."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    store_for(params)  # preprocess once, before the parallel trainings
    split_for(store_for(params), params)
    base = [sys.executable, "-m", "benchmarks.acdc_cv"]
    # The cores are shared out among the trainings side by side (one each on 2 cores with --jobs 2),
    # unless --set names train.threads: more threads than cores slow every training several-fold.
    threads = [] if any(i.startswith("train.threads=") for i in args.set) else \
        ["--set", f"train.threads={max(1, (os.cpu_count() or 1) // args.jobs)}"]  # fmt: skip
    common = ["--profile", str(args.profile), "--tag", args.tag, "--work", str(WORK), *threads,
              *(a for item in args.set for a in ("--set", item))]  # fmt: skip

    def train(job: tuple[str, int]) -> int:
        model, fold = job
        if (WORK / args.tag / model / f"fold{fold}" / "timing.json").is_file():
            return 0  # trained already (delete the folder to retrain)
        return subprocess.call([*base, "train", *common, "--model", model, "--fold", str(fold)], cwd=ROOT)

    jobs = [(m, f) for f in args.folds for m in args.models]
    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(train, jobs))
    if any(codes):
        raise SystemExit(f"error: {sum(1 for c in codes if c)} training(s) failed")
    for model in args.models:
        for fold in args.folds:
            evaluate_one(params, model, fold, args.tag, args.tta)
    return report([args.tag], args.models)


def main(argv: list[str] | None = None) -> int:
    global WORK
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", type=Path, default=ROOT / "profiles" / "acdc-roi-cpu.yaml")
    common.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    common.add_argument("--tag", default="base")
    common.add_argument("--work", type=Path, default=WORK, help=f"work folder (default {WORK})")
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
    WORK = args.work.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    params = merged_params(args.profile, args.set)
    if args.cmd == "train":
        train_one(params, args.model, args.fold, args.tag)
    elif args.cmd == "evaluate":
        for fold in args.folds:
            evaluate_one(params, args.model, fold, args.tag, args.tta, args.members, args.data)
    elif args.cmd == "run":
        print(run_all(args, params))
    else:
        text = report(args.tags, args.models)
        if args.out:
            args.out.write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
