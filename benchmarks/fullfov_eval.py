"""The cross-validated models on whole real volumes: acdc-fullfov's ED/ES frames, every slice, full field of view.

    python -m benchmarks.fullfov_eval --tag phase40 --model unet          # acdc_cv's trained folds
    python -m benchmarks.fullfov_eval --tag shipped:acdc-unet             # the shipped model, every patient

Each fold's published model (trained on acdc-roi's heart crops) segments its own validation patients' ED and
ES volumes of ../shared/data/acdc-fullfov as they come from the scanner (locate auto: the heart is found
first; TTA flips, lcc_fill), so the split is the cross-validation's. Per volume and structure: Dice, HD and
ASSD against the experts; how many slices beyond the reference's base and apex hold a predicted ventricle
(LV or RV), the base being the end of the reference's labelled slices with the larger ventricular area;
the quality-control verdict, so one sees whether QC flags the basal failures (and, scored as qc_validation
scores the crops, how well its score finds the bad volumes); and per patient the clinical indices of the
predicted ED/ES volumes against the experts' (MAE, Bland-Altman bias and limits): on whole hearts, unlike
acdc-roi's crops of at most 7 slices, the volumes and EFs are the real ones. Printed and written to
data/bench/fullfov_eval/<tag>-<model>.json, the labels to data/bench/fullfov_eval/<tag>-<model>/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.evaluation.agreement import AGREEMENT_KEYS
from pipeline.experiments.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "bench" / "fullfov_eval"
FULLFOV = ROOT.parent / "shared" / "data" / "acdc-fullfov"


def beyond_reference(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int]:
    """Slices of (Z, Y, X) ``pred`` with LV or RV beyond the reference's base and beyond its apex."""
    ventricles_ref = np.isin(ref, (1, 3)).sum(axis=(1, 2))
    ventricles_pred = np.isin(pred, (1, 3)).any(axis=(1, 2))
    labelled = np.flatnonzero(ventricles_ref)
    if not labelled.size:
        return int(ventricles_pred.sum()), 0
    first, last = int(labelled[0]), int(labelled[-1])
    before, after = int(ventricles_pred[:first].sum()), int(ventricles_pred[last + 1 :].sum())
    base_first = ventricles_ref[first] >= ventricles_ref[last]
    return (before, after) if base_first else (after, before)


def _runs(tag: str, model: str, folds: list[int] | None) -> list[tuple[int, list[str], list[Path]]]:
    """(fold, validation patients, model files) of each finished fold of ``tag``; for ``shipped:NAME``
    one run, fold -1: that shipped model (its ONNX export) on every patient of acdc-fullfov."""
    from pipeline.inference.pretrained import is_shipped, shipped_model

    if is_shipped(tag):
        patients = sorted(d.name for d in FULLFOV.iterdir() if (d / "Info.cfg").is_file())
        return [(-1, patients, shipped_model(tag).files("onnx"))]
    return [(run.fold, run.val, run.files) for run in Workspace.default(ROOT).runs(tag, model, folds)]


def volumes(tag: str, model: str, tta: str, folds: list[int] | None = None, limit: int | None = None,
            save: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """One row per validation volume; with ``save``, each volume's predicted (post-processed and raw) and
    reference labels go there as ``<patient>_<phase>.npz`` (for looking at the failures)."""
    from pipeline.clinical.indices import clinical_indices
    from pipeline.clinical.quality_control import assess, estimated_dice, volume_consistency
    from pipeline.data.acdc import parse_info_cfg
    from pipeline.data.imageio import spacing_zyx, to_memory
    from pipeline.evaluation.metrics import evaluate_case
    from pipeline.inference.predict import Segmenter, postprocess_volume

    rows = []
    for fold, val, files in _runs(tag, model, folds):
        val = val[:limit]
        seg = Segmenter.from_files(files, tta=tta)
        start = time.perf_counter()
        for pid in val:
            folder = FULLFOV / pid
            info = parse_info_cfg(folder / "Info.cfg")
            labels, refs, consistency, slice_estimates, spacing = {}, {}, {}, {}, (1.0, 1.0, 1.0)
            for phase in ("ED", "ES"):
                stem = folder / f"{pid}_frame{info.frame(phase):02d}"
                img = nib.load(f"{stem}.nii.gz")
                volume = to_memory(np.asarray(img.dataobj, dtype=np.float32))
                spacing = spacing_zyx(img.header.get_zooms())
                refs[phase] = to_memory(np.asarray(nib.load(f"{stem}_gt.nii.gz").dataobj, dtype=np.uint8))
                probs = seg.probabilities(volume[None], [0], spacing)[0]
                raw_labels = probs.argmax(1).astype(np.uint8)
                labels[phase] = postprocess_volume(raw_labels, "lcc_fill")
                consistency.update(
                    {phase + k: v for k, v in volume_consistency(probs, labels[phase]).items()}
                )
                slice_estimates[phase] = [round(estimated_dice(probs[z : z + 1], labels[phase][z : z + 1]), 4)
                                          for z in range(len(probs))]  # fmt: skip
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    np.savez_compressed(save / f"{pid}_{phase}.npz", labels=labels[phase], ref=refs[phase],
                                        raw=raw_labels)  # fmt: skip
            indices = clinical_indices(labels["ED"], labels["ES"], spacing)
            reference = clinical_indices(refs["ED"], refs["ES"], spacing)
            quality = assess(labels, indices, None, consistency)
            for phase in ("ED", "ES"):
                m = evaluate_case(labels[phase], refs[phase], spacing)
                above, below = beyond_reference(labels[phase], refs[phase])
                rows.append({"patient": pid, "fold": fold, "phase": phase, "slices": int(refs[phase].shape[0]),
                             "shape": list(refs[phase].shape[1:]), "metrics": m, "above_base": above,
                             "below_apex": below, "slice_estimated_dice": slice_estimates[phase],
                             "qc_score": quality.phase_scores[phase], "qc_measures": quality.measures[phase],
                             "qc_flags": quality.phase_flags(phase),
                             "clinical_pred": {k: indices[k] for k in AGREEMENT_KEYS},
                             "clinical_ref": {k: reference[k] for k in AGREEMENT_KEYS}})  # fmt: skip
        print(f"fold {fold}: {len(val)} patients in {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def quality_readout(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the QC score and flags separate the bad volumes (pipeline.evaluation.quality.qc_readout)."""
    from pipeline.clinical.quality_control import qc_readout

    return qc_readout([np.mean([r["metrics"][s]["dice"] for s in r["metrics"]]) for r in rows],
                      [np.mean([r["metrics"][s]["hd"] for s in r["metrics"]]) for r in rows],
                      [r["qc_score"] for r in rows], [bool(r["qc_flags"]) for r in rows])  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from pipeline.evaluation.agreement import agreement_summary

    def mean(key: str, structure: str, phase: str | None = None) -> float:
        values = [r["metrics"][structure][key] for r in rows if phase in (None, r["phase"])]
        finite = [v for v in values if np.isfinite(v)]
        return round(float(np.mean(finite)), 4) if finite else float("nan")

    table = {f"{s} {p}": {k: mean(k, s, p) for k in ("dice", "hd", "assd")}
             for p in ("ED", "ES") for s in ("LV", "MYO", "RV")}  # fmt: skip
    above = [r for r in rows if r["above_base"]]
    patients = [r for r in rows if r["phase"] == "ED"]
    return {"volumes": len(rows), "per_structure_phase": table,
            "mean_dice": round(float(np.mean([v["dice"] for v in table.values()])), 4),
            "mean_hd_mm": round(float(np.mean([v["hd"] for v in table.values()])), 2),
            "mean_assd_mm": round(float(np.mean([v["assd"] for v in table.values()])), 3),
            "volumes_ventricle_above_base": f"{len(above)} of {len(rows)} ({len(above) / len(rows):.1%})",
            "volumes_ventricle_below_apex": sum(bool(r["below_apex"]) for r in rows),
            "above_base_flagged_by_qc": f"{sum(bool(r['qc_flags']) for r in above)} of {len(above)}",
            "flags_of_above_base": sorted({f.split("@")[0] for r in above for f in r["qc_flags"]}),
            "quality_control": quality_readout(rows),
            "clinical_agreement": {k: agreement_summary([r["clinical_pred"][k] for r in patients],
                                                        [r["clinical_ref"][k] for r in patients])
                                   for k in AGREEMENT_KEYS}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--model", default="unet")
    p.add_argument("--tta", default="flips")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--folds", type=int, nargs="+", help="only these folds (default: every trained one)")
    p.add_argument(
        "--limit", type=int, help="only the first N validation patients of each fold (a smoke run)"
    )
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = volumes(
        args.tag,
        args.model,
        args.tta,
        args.folds,
        args.limit,
        OUT / f"{args.tag.replace(':', '-')}-{args.model}",
    )
    summary = summarise(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{args.tag.replace(':', '-')}-{args.model}.json"
    path.write_text(json.dumps({"summary": summary, "volumes": rows}, indent=1) + "\n")
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
