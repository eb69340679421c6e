"""Does quality control find the bad segmentations? Scored on cross-validated predictions of acdc-roi.

    python -m benchmarks.qc_validation --tag phase40 --model unet         # acdc_cv's trained folds
    python -m benchmarks.qc_validation --tag ship --model unet --tta flips --threads 2
    python -m benchmarks.qc_validation --tag phase40 --model unet --rescore   # the stored volumes, judged again
    python -m benchmarks.qc_validation --tag allslices112 --data ../shared/data/acdc-roi   # every-slice folds

Each fold's published model segments its own validation patients' whole cines (as evaluate does: TTA,
lcc_fill), pipeline.evaluation.quality judges each ED and ES volume, and the truth judges it too. Per
volume: mean Dice and mean HD over LV, MYO and RV against the experts; the phase's QC score and whether
any flag concerns it. Printed and written to data/bench/qc_validation/<tag>-<model>.json:

- Spearman correlation between the QC score and the true mean Dice (negative is right: more wrong, lower);
- AUROC of the score for the bad volumes (mean Dice < 0.85 or mean HD > 15 mm);
- how many volumes with mean Dice < 0.80 are flagged (all should be), and how many good ones are;
- per patient, the clinical indices at the true ED/ES against the experts' (the same predictions): mean
  absolute error of LV and RV EF, and Bland-Altman bias and 95 % limits of agreement of LV/RV EF, LV/RV EDV
  and LV mass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.agreement import AGREEMENT_KEYS
from pipeline.experiments.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "bench" / "qc_validation"


def volumes(
    tag: str, model: str, tta: str, data: Path | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from pipeline.evaluation.config import EvaluateConfig
    from pipeline.experiments.scoring import score_fold

    rows, patients = [], []
    for run in Workspace.default(ROOT).runs(tag, model):
        fold = run.fold
        start = time.perf_counter()
        results = score_fold(run.files, (data or run.raw).resolve(), run.val, fold,
                             EvaluateConfig(whole_cycle=True, tta=tta))  # fmt: skip
        print(f"fold {fold}: {len(run.val)} patients in {time.perf_counter() - start:.0f} s", flush=True)
        for r in results:
            assert r.quality is not None
            patients.append({"patient": r.patient, "pred": {k: r.clinical_pred[k] for k in AGREEMENT_KEYS},
                             "ref": {k: r.clinical_ref[k] for k in AGREEMENT_KEYS},
                             "indices": r.clinical_pred,  # what QC's physiology judges, for --rescore
                             "lv_curve": None if r.curves_pred is None else r.curves_pred["LV"]})  # fmt: skip
            flags = r.quality["flags"]
            for case in r.cases["lcc_fill"]:
                phase, m = case["phase"], case["metrics"]
                rows.append({"patient": r.patient, "fold": fold, "phase": phase,
                             "dice": float(np.mean([m[s]["dice"] for s in m])),
                             "hd": float(np.mean([m[s]["hd"] if np.isfinite(m[s]["hd"]) else np.inf for s in m])),
                             "score": r.quality["phase_scores"][phase],
                             "estimated_dice": r.quality["measures"][phase].get("estimated_dice", float("nan")),
                             "measures": r.quality["measures"][phase],
                             "flags": [f for f in flags if "@" not in f or f.endswith(f"@{phase}")]})  # fmt: skip
    return rows, patients


def rescore(rows: list[dict[str, Any]], patients: list[dict[str, Any]]) -> None:
    """Judge every stored volume again (pipeline.evaluation.quality.judge) under the current thresholds,
    from the measures, indices and LV curve the predictions gave: no segmentation is run again."""
    from pipeline.clinical.quality_control import judge

    by_patient = {p["patient"]: p for p in patients}
    phases: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        phases.setdefault(r["patient"], {})[r["phase"]] = r["measures"]
    for r in rows:
        p = by_patient[r["patient"]]
        quality = judge(phases[r["patient"]], p["indices"], p["lv_curve"])
        r["score"] = quality.phase_scores[r["phase"]]
        r["flags"] = quality.phase_flags(r["phase"])


def clinical_agreement(patients: list[dict[str, Any]]) -> dict[str, Any]:
    """MAE of each index, and its Bland-Altman statistics (pred - ref) over the patients."""
    from pipeline.evaluation.agreement import agreement_summary

    return {key: agreement_summary([p["pred"][key] for p in patients], [p["ref"][key] for p in patients])
            for key in AGREEMENT_KEYS}  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    from pipeline.clinical.quality_control import BAD_DICE, BAD_HD_MM, CONSISTENCY_MEASURES, auroc, qc_readout

    dice = np.array([r["dice"] for r in rows])
    hd = np.array([r["hd"] for r in rows])
    readout = qc_readout(dice, hd, [r["score"] for r in rows], [bool(r["flags"]) for r in rows])
    bad = (dice < BAD_DICE) | ~(hd <= BAD_HD_MM)
    estimated = np.array([r["estimated_dice"] for r in rows])
    alone = {}  # each consistency measure on its own (lower: worse)
    for name in CONSISTENCY_MEASURES.values():  # a measure a volume lacks (no ventricle): nothing doubted
        values = np.array([r["measures"].get(name, 1.0) for r in rows], dtype=np.float64)
        if np.isfinite(values).all():
            alone[name] = {"spearman_vs_dice": round(float(spearmanr(values, dice).statistic), 3),
                           "auroc_bad": round(auroc(-values, bad), 3)}  # fmt: skip
    counts: dict[str, int] = {}
    for r in rows:
        for f in r["flags"]:
            counts[f.split("@")[0]] = counts.get(f.split("@")[0], 0) + 1
    return {"volumes": len(rows), "bad": readout["bad"], "dice_below_0.80": readout["dice_below_0.80"],
            "spearman_score_vs_dice": readout["spearman_score_vs_dice"], "auroc_bad": readout["auroc_bad"],
            "estimated_dice_alone": {"spearman_vs_dice": round(float(spearmanr(estimated, dice).statistic), 3),
                                     "auroc_bad": round(auroc(-estimated, bad), 3)},
            "consistency_alone": alone,
            **{k: readout[k] for k in ("flagged_of_dice_below_0.80", "flagged_of_good", "flagged_of_bad")},
            "worst_unflagged": sorted((round(r["dice"], 3), r["patient"], r["phase"]) for r in rows
                                       if r["dice"] < 0.80 and not r["flags"]),
            "flag_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--model", default="unet")
    p.add_argument("--tta", default="flips")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=None,
                   help="segment this ACDC-layout folder's cines of the validation patients (default: the runs' data)")  # fmt: skip
    p.add_argument("--rescore", action="store_true",
                   help="judge the volumes stored by an earlier run again under the current thresholds")  # fmt: skip
    args = p.parse_args(argv)
    path = OUT / f"{args.tag}-{args.model}.json"
    if args.rescore:
        stored = json.loads(path.read_text())
        rows, patients = stored["volumes"], stored["patients"]
        rescore(rows, patients)
        path = path.with_name(f"{path.stem}-rescored.json")
    else:
        import torch

        torch.set_num_threads(args.threads)
        rows, patients = volumes(args.tag, args.model, args.tta, args.data)
    summary = summarise(rows)
    summary["clinical_agreement"] = clinical_agreement(patients)
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"summary": summary, "volumes": rows, "patients": patients}, indent=1) + "\n")
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
