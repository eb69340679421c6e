"""ED/ES detection from predicted volume curves, against Info.cfg, on every acdc-roi cine (cross-validated).

    python -m benchmarks.acdc_cv train --model unet --fold K --tag phase40 --set train.max_epochs=40 ...  # K = 0..4
    python -m benchmarks.phase_detection collect --tag phase40 --model unet   # whole-cycle curves of each fold's
                                                                              # validation patients (its own model)
    python -m benchmarks.phase_detection score                                # each rule against Info.cfg

``collect`` segments every frame of each validation patient with its fold's published model (lcc_fill;
TTA none unless ``--tta`` names one, e.g. the shipped models' flips) and writes the LV, RV and MYO volume curves with Info.cfg's ED and
ES to ``data/bench/phase_detection/<tag>-<model>.json``. ``score`` applies each rule of
:data:`pipeline.evaluation.clinical.PHASE_RULES` and counts the cines whose ED, ES and both are within one
frame of Info.cfg, the distance measured around the cycle (a cine covers one cycle: its last frame is next
to its first, as for the clips), as the issue's "the training frames' neighbours count as right".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.experiments.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "bench" / "phase_detection"


def image_change(cine: np.ndarray) -> np.ndarray:
    """(T,) how far each frame's image is from the first's: the mean absolute difference of the in-plane
    smoothed (sigma 1.5 px) intensities, scaled by the cine's 99th percentile. The heart contracts away
    from ED, so the image moves furthest from the first frame near ES, whatever a network makes of it."""
    from scipy import ndimage

    cine = np.asarray(cine, dtype=np.float32)
    smooth = ndimage.gaussian_filter(cine / max(float(np.percentile(cine, 99)), 1e-6), (0, 0, 1.5, 1.5))
    return np.abs(smooth - smooth[:1]).mean(axis=(1, 2, 3))


def es_with_image(lv: np.ndarray, change: np.ndarray) -> int:
    """ES where the LV has emptied most and the image has moved furthest from ED, on equal terms: the
    smoothed LV curve's fall from its maximum over its range plus the smoothed image change over its
    maximum (an experiment: not a rule of the library)."""
    from pipeline.clinical.indices import _smooth_cycle

    lv, change = _smooth_cycle(np.asarray(lv, float)), _smooth_cycle(np.asarray(change, float))
    fall = (lv.max() - lv) / max(float(np.ptp(lv)), 1e-9)
    return int(np.argmax(fall + change / max(float(change.max()), 1e-9)))


def collect(tag: str, model: str, folds: list[int], tta: str = "none", data: Path | None = None) -> Path:
    from pipeline.clinical.indices import volume_curves
    from pipeline.data.acdc import read_patient
    from pipeline.inference.predict import Segmenter
    from pipeline.vocabulary import STRUCTURES

    cases: dict[str, Any] = {}
    for fold in folds:
        run = Workspace.default(ROOT).run(tag, model, fold)
        raw = (data or run.raw).resolve()  # data: the cines, if not trained on
        seg = Segmenter.from_files(run.files, tta=tta, postprocess="lcc_fill")
        for pid in run.val:
            rec = read_patient(raw / pid, with_cine_labels=False)
            labels = seg.predict(rec.cine, spacing=rec.spacing)
            curves = volume_curves(labels, rec.spacing)
            per_slice = {
                f"{k}_slices": (labels == v).sum(axis=(2, 3)).tolist() for k, v in STRUCTURES.items()
            }
            cases[pid] = {"fold": fold, "n_frames": rec.n_frames, "ed": rec.frame_index("ED"),
                          "es": rec.frame_index("ES"), **{k: v.round(3).tolist() for k, v in curves.items()},
                          **per_slice,  # (T, Z) voxels of each structure on each slice
                          "image_change": image_change(rec.cine).round(5).tolist()}  # fmt: skip
            print(f"fold {fold} {pid}: {rec.n_frames} frames", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / (f"{tag}-{model}.json" if tta == "none" else f"{tag}-{model}-{tta}.json")
    if path.is_file():  # folds collected earlier (as their trainings finished) stay
        earlier = json.loads(path.read_text())
        cases = {**earlier["cases"], **cases}
        folds = sorted({*earlier["folds"], *folds})
    path.write_text(json.dumps({"tag": tag, "model": model, "folds": folds, "cases": cases}) + "\n")
    return path


def score(path: Path) -> dict[str, Any]:
    from pipeline.clinical.indices import PHASE_RULES, cycle_distance, phases_from_curves

    data = json.loads(path.read_text())
    cases = data["cases"]
    out: dict[str, Any] = {"curves": str(path), "cines": len(cases), "rules": {}}
    for rule in PHASE_RULES:
        hits = {"ED": 0, "ES": 0, "both": 0, "ED_exact": 0, "ES_exact": 0}
        misses = []
        for pid, c in sorted(cases.items()):
            ed, es = phases_from_curves({k: np.asarray(c[k]) for k in ("LV", "RV", "MYO")}, rule=rule)
            d_ed, d_es = (
                cycle_distance(ed, c["ed"], c["n_frames"]),
                cycle_distance(es, c["es"], c["n_frames"]),
            )
            hits["ED"] += d_ed <= 1
            hits["ES"] += d_es <= 1
            hits["both"] += d_ed <= 1 and d_es <= 1
            hits["ED_exact"] += ed == c["ed"]
            hits["ES_exact"] += es == c["es"]
            if d_ed > 1 or d_es > 1:
                misses.append(f"{pid} ED {ed} vs {c['ed']}, ES {es} vs {c['es']} of {c['n_frames']}")
        out["rules"][rule] = {k: v / len(cases) for k, v in hits.items()} | {"misses": misses}
    with_image = [c for c in cases.values() if "image_change" in c]
    if with_image:  # the experiment: ES from the LV curve and the image change together
        es_hits = sum(cycle_distance(es_with_image(np.asarray(c["LV"]), np.asarray(c["image_change"])), c["es"],
                                     c["n_frames"]) <= 1 for c in with_image)  # fmt: skip
        image_hits = sum(cycle_distance(int(np.argmax(np.asarray(c["image_change"]))), c["es"], c["n_frames"]) <= 1
                         for c in with_image)  # fmt: skip
        out["es_experiments"] = {"cines": len(with_image), "lv_and_image": es_hits / len(with_image),
                                 "image_only": image_hits / len(with_image)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="whole-cycle curves of each fold's validation patients")
    c.add_argument("--tag", default="phase40")
    c.add_argument("--model", default="unet")
    c.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    c.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    c.add_argument("--tta", default="none", help="the TTA of the segmentation (the shipped models: flips)")
    c.add_argument(
        "--data", type=Path, default=None, help="the cines' ACDC-layout folder (default: the runs' data)"
    )
    s = sub.add_parser("score", help="each ED/ES rule against Info.cfg")
    s.add_argument("--curves", type=Path, default=OUT / "phase40-unet.json")
    args = p.parse_args(argv)
    if args.cmd == "collect":
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(collect(args.tag, args.model, args.folds, args.tta, args.data))
        return 0
    result = score(args.curves)
    print(f"{result['cines']} cines, {result['curves']}; within one frame of Info.cfg (around the cycle):")
    for rule, r in result["rules"].items():
        print(f"  {rule:12s} ED {r['ED']:.3f}  ES {r['ES']:.3f}  both {r['both']:.3f}  "
              f"(exact: ED {r['ED_exact']:.3f}, ES {r['ES_exact']:.3f})")  # fmt: skip
        for miss in r["misses"]:
            print(f"      {miss}")
    if "es_experiments" in result:
        print(f"ES experiments (within one frame): {result['es_experiments']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
