"""Package a model trained on every acdc-roi patient as a shipped model, with the card of its recipe.

    python -m benchmarks.acdc_cv run --tag ship --models unet --folds 0 1 2 3 4 --tta flips dihedral \
        --set train.model=unet                                   # the recipe's 5-fold cross-validation
    python -m benchmarks.acdc_cv train --model unet --fold -1 --tag ship --set train.model=unet   # all 79
    python -m benchmarks.ship_model --name acdc-unet --model unet --tag ship --default
    python -m benchmarks.ship_model --name acdc-unet --model unet --tag ship --default \
        --cv-json docs/ship/acdc-unet-cv.json         # the recipe's cross-validation measured before

The model is ``data/bench/acdc_cv/<tag>/<model>/all``'s published checkpoint; the card's figures are the
pooled cross-validation of the same recipe (``<cv-tag>/<model>/fold*``, each fold scored on its own
validation patients) with the shipped settings (TTA and post-processing), or those given in
``--cv-json`` (with their source and command). Written into pipeline/pretrained/<name> by
pipeline.inference.pretrained.package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.experiments.folds import ALL
from pipeline.experiments.scoring import fold_headlines, headline
from pipeline.experiments.workspace import Workspace
from pipeline.inference import pretrained

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = Workspace.default(ROOT)

CITATION = (
    'O. Bernard, A. Lalande, C. Zotti, F. Cervenansky, et al., "Deep Learning Techniques for Automatic MRI '
    'Cardiac Multi-structures Segmentation and Diagnosis: Is the Problem Solved?", IEEE Transactions on '
    "Medical Imaging, 37(11), 2514-2525, 2018."
)
DATA_ROI = """The 79 patients of acdc-roi: real cines of the ACDC training set (MICCAI 2017 Automated Cardiac Diagnosis
Challenge, University Hospital of Dijon; normal, DCM, HCM, MINF and abnormal-RV groups), cropped in-plane
to the heart (100 x 95 px, at most 7 slices)"""
DATA_EVERY_SLICE = """The 79 patients of acdc-roi (real scans of the ACDC training set, MICCAI 2017 Automated Cardiac
Diagnosis Challenge, University Hospital of Dijon; normal, DCM, HCM, MINF and abnormal-RV groups), every
slice of their ED and ES volumes (6-18 slices, from acdc-fullfov, cut in-plane as acdc-roi is: 100 x 95 px
around the heart; `python -m benchmarks.allslices`), so it also sees the slices above the base and below
the apex"""
LIMIT_ROI = """- Trained on heart crops: on whole-field-of-view scans it relies on the heart locator, and it can label
  ventricles on slices above the base, which the crops never showed it."""
LIMIT_EVERY_SLICE = """- Trained on heart crops (every slice, but 100 x 95 px in-plane): on whole-field-of-view scans it relies
  on the heart locator; at end-systole it can still label the atrium above the base as ventricle."""
FULLFOV_EVAL = ROOT / "data" / "bench" / "fullfov_eval"
ARCHITECTURES = {"unet": "U-Net", "deunet": "DeU-Net (TDAM + DGPA)"}


def cross_validation(cv_tag: str, model: str, tta: str, variant: str) -> dict[str, Any]:
    """Pooled and per-fold figures of the recipe's cross-validation with the shipped settings."""
    got = WORKSPACE.collect(cv_tag, model)
    if not got["folds"]:
        raise SystemExit(f"error: no evaluated folds under {WORKSPACE.root / cv_tag / model}")
    pooled = headline(got["cases"][(tta, variant)])
    per_fold = fold_headlines({fold: cases[(tta, variant)] for fold, cases in got["by_fold"].items()})
    others = {}  # the other TTA mode, for the card's "with TTA ... instead"
    for mode in ("flips", "dihedral"):
        if mode != tta and (mode, variant) in got["cases"]:
            h = headline(got["cases"][(mode, variant)])
            others[mode] = {"mean_dice": round(h["mean_dice"], 4), "mean_hd_mm": round(h["mean_hd"], 2),
                            "mean_assd_mm": round(h["mean_assd"], 2), "rv_es_dice": round(h["dice_RV_ES"], 4)}  # fmt: skip
    return others | {"folds": got["folds"], "patients": len({c["patient"] for c in got["cases"][(tta, variant)]}),
            "tta": tta, "postprocess": variant, "mean_dice": round(pooled["mean_dice"], 4),
            "mean_hd_mm": round(pooled["mean_hd"], 2), "mean_assd_mm": round(pooled["mean_assd"], 2),
            "rv_es_dice": round(pooled["dice_RV_ES"], 4),
            "per_fold": {str(f): {"mean_dice": round(h["mean_dice"], 4), "mean_hd_mm": round(h["mean_hd"], 2)}
                         for f, h in per_fold.items()},
            "cpu_minutes_per_fold": round(sum(got["cpu_minutes"]) / len(got["cpu_minutes"]), 1),
            **whole_volumes(cv_tag, model)}  # fmt: skip


def whole_volumes(cv_tag: str, model: str) -> dict[str, Any]:
    """The recipe's folds on acdc-fullfov's whole volumes (benchmarks.fullfov_eval's summary), if measured."""
    path = FULLFOV_EVAL / f"{cv_tag}-{model}.json"
    if not path.is_file():
        return {}
    s = json.loads(path.read_text())["summary"]
    return {"whole_volumes": {"mean_dice": s["mean_dice"], "mean_hd_mm": s["mean_hd_mm"],
                              "mean_assd_mm": s["mean_assd_mm"], "above_base": s["volumes_ventricle_above_base"],
                              "command": f"python -m benchmarks.fullfov_eval --tag {cv_tag} --model {model}"}}  # fmt: skip


def card(name: str, model: str, recipe: dict[str, Any], cv: dict[str, Any], cv_command: str,
         trained_on: str) -> str:  # fmt: skip
    train = recipe["train"]
    per_fold = cv.get("per_fold") or cv.get("per_fold_dihedral") or {}
    fold_tta = "" if "per_fold" in cv else " (TTA dihedral, lcc_fill)"
    folds = "\n".join(f"| {f} | {v['mean_dice']:.4f} | {v['mean_hd_mm']:.2f} |" for f, v in per_fold.items())
    source = f"\n\nSource: {cv['source']}." if cv.get("source") else ""
    others = "".join(f"\n\nWith TTA `{mode}` instead: mean Dice {cv[mode]['mean_dice']:.4f}, HD {cv[mode]['mean_hd_mm']:.2f} mm, "
                     f"ASSD {cv[mode]['mean_assd_mm']:.2f} mm, RV ES Dice {cv[mode]['rv_es_dice']:.3f} "
                     f"(`deunet predict --tta {mode}`)."
                     for mode in ("flips", "dihedral") if mode != cv["tta"] and mode in cv)  # fmt: skip
    wv = cv.get("whole_volumes")
    whole = "" if not wv else (
        f"\n\nOn whole volumes (acdc-fullfov: the same folds' models on their validation patients' ED and ES "
        f"volumes, full field of view, every slice, the heart located first): mean Dice {wv['mean_dice']:.3f}, "
        f"HD {wv['mean_hd_mm']:.2f} mm, ASSD {wv['mean_assd_mm']:.2f} mm; volumes with a ventricle on a slice "
        f"above the experts' base: {wv['above_base']} (`{wv['command']}`).")  # fmt: skip
    every_slice = "allslices" in str(recipe.get("download", {}).get("local_path", ""))
    data = DATA_EVERY_SLICE if every_slice else DATA_ROI
    crop_limit = LIMIT_EVERY_SLICE if every_slice else LIMIT_ROI
    scored_on = " (acdc-roi's crops and cines, as every recipe here is scored)" if every_slice else ""
    return f"""# {name}: {ARCHITECTURES.get(model, model)} for LV, myocardium and RV in short-axis cine MRI

**Research use only: not for clinical decisions.** It is not a medical device and was not validated for
diagnosis or treatment.

## What it does
Segments the left-ventricular cavity (label 3), the myocardium (2) and the right-ventricular cavity (1)
in every frame and slice of a short-axis cine MRI, from which `deunet predict` derives the volume curves,
ED and ES, EDV, ESV, EF and myocardial mass. Input: any NIfTI or DICOM cine; a field of view larger than
the heart is searched for the heart first (`--locate auto`). Settings it ships with: TTA
`{cv["tta"]}`, post-processing `{cv["postprocess"]}`.

## Training data and licence
{data}, with the experts' labels at ED and ES. ACDC is released
for non-commercial scientific research under **CC BY-NC-SA 4.0**; these weights are derived from it and
carry the same terms. Any use must cite: {CITATION}

## Recipe
`profiles/acdc-roi-cpu.yaml` with `train.model={model}`: {ARCHITECTURES.get(model, model)}, r = {train["radius"]}
(3-frame clips), {train["model_args"]}, images resized to {recipe["preprocess"]["size"]} px, trained on random
{train["augment"]["crop"]} x {train["augment"]["crop"]} windows, {train["max_epochs"]} epochs, Adam lr {train["lr"]},
{train["schedule"]} schedule, batch {train["batch_size"]}, CE + soft Dice, mirror/flip/rot90/rotation/zoom/intensity
augmentation, bf16 autocast where the CPU has native bf16 (fp32 elsewhere), the last epoch published.
This model: {trained_on}.

## Cross-validation of this recipe
5-fold cross-validation by patient (stratified by group, seed 0, patient074 and patient076, which share
their images, in one fold); each fold's model trained on 63 patients (62 for fold 3) and scored on its
own validation patients{scored_on}, at ED and ES, in 3D at the original resolution. Pooled over
{cv["patients"]} patients ({2 * cv["patients"]} volumes), TTA `{cv["tta"]}`, `{cv["postprocess"]}`:

| mean Dice | mean HD (mm) | mean ASSD (mm) | RV ES Dice |
|---|---|---|---|
| {cv["mean_dice"]:.4f} | {cv["mean_hd_mm"]:.2f} | {cv["mean_assd_mm"]:.2f} | {cv["rv_es_dice"]:.4f} |{others}

| fold{fold_tta} | mean Dice | mean HD (mm) |
|---|---|---|
{folds}

Command: `{cv_command}` (docs/experiments.md has the full tables).{source} The shipped model, trained on
every patient, has no held-out figures of its own.{whole}

## Known limits
- One centre, one vendor family (ACDC: Dijon, 1.5 T and 3 T Siemens), adults; other centres, children and
  congenital hearts are untested.
{crop_limit}
- Slices of 5-10 mm; thin-slice or 3D acquisitions are outside its training.
- The RV at end-systole and the basal and apical slices are its weakest parts, as for every ACDC model.
"""


def _native_bf16() -> bool:
    from pipeline.models.precision import cpu_has_native_bf16

    return cpu_has_native_bf16()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--tag", required=True, help="acdc_cv tag of the all-patients training")
    p.add_argument(
        "--cv-tag", default=None, help="acdc_cv tag of the recipe's cross-validation (default: --tag)"
    )
    p.add_argument("--tta", default="flips")
    p.add_argument("--postprocess", default="lcc_fill")
    p.add_argument("--default", action="store_true")
    p.add_argument("--summary", default=None)
    p.add_argument("--out", type=Path, default=pretrained.ROOT)
    p.add_argument("--cv-json", type=Path, default=None,
                   help="the recipe's cross-validation figures (with source and command) instead of --cv-tag's")  # fmt: skip
    args = p.parse_args(argv)
    run = WORKSPACE.run(args.tag, args.model, ALL)
    timing, recipe = run.timing, run.params
    cv_tag = args.cv_tag or args.tag
    if args.cv_json is not None:
        cv = json.loads(args.cv_json.read_text())
        command = cv["command"]
    else:
        cv = cross_validation(cv_tag, args.model, args.tta, args.postprocess)
        command = (f"python -m benchmarks.acdc_cv run --tag {cv_tag} --models {args.model} --folds 0 1 2 3 4 "
                   f"--tta {args.tta} --set train.model={args.model}")  # fmt: skip
    precision = "bf16 autocast" if _native_bf16() else "fp32 (this CPU has no native bf16)"
    local = recipe.get("download", {}).get("local_path")
    data_flag = f" --set download.local_path={local}" if local and "allslices" in str(local) else ""
    if data_flag and args.cv_json is None:  # trained on every slice, scored on acdc-roi's cines
        command = (f"python -m benchmarks.allslices; python -m benchmarks.acdc_cv train --model {args.model} "
                   f"--fold K --tag {cv_tag} --set train.threads=1{data_flag} (K = 0..4); python -m "
                   f"benchmarks.acdc_cv evaluate --tag {cv_tag} --model {args.model} --folds 0 1 2 3 4 "
                   f"--tta flips dihedral --data ../shared/data/acdc-roi")  # fmt: skip
    threads = recipe["train"].get("threads") or 2
    trained_on = (f"trained on all 79 patients with `python -m benchmarks.acdc_cv train --model {args.model} --fold -1 "
                  f"--tag {args.tag} --set train.model={args.model} --set train.threads={threads}{data_flag}`, "
                  f"{timing['epochs']} epochs, {timing['wall_s'] / 60:.0f} min on {threads} CPU "
                  f"thread{'s' if threads > 1 else ''}, {precision}")  # fmt: skip
    summary = args.summary or (f"{ARCHITECTURES.get(args.model, args.model)} trained on the 79 acdc-roi patients"
                               f"{' (every slice)' if data_flag else ''}; research use only")  # fmt: skip
    shipped = pretrained.package(
        args.name, run.files, args.out, summary=summary,
        card=card(args.name, args.model, recipe, cv, command, trained_on), default=args.default,
        settings={"tta": args.tta, "postprocess": args.postprocess}, cross_validation=cv,
    )  # fmt: skip
    print(shipped.describe())
    print(f"{shipped.folder}: {sum(f['bytes'] for f in shipped.manifest['files']) / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
