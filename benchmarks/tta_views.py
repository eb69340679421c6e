"""More test-time views on the saved cross-validation models: input scales and time-reversed clips.

    python -m benchmarks.tta_views --tag e112bf16 --model deunet --sizes 80 96 112 --reverse
    python -m benchmarks.tta_views --tag e112bf16 --model unet --sizes 80 96 112

For every fold of ``data/bench/acdc_cv/<tag>/<model>/`` (trained by ``benchmarks.acdc_cv``), each
validation patient's ED and ES are segmented with the 8 dihedral views at every network input size in
``--sizes`` (the resize geometry at another size: the heart seen larger or smaller, as scale
augmentation showed it in training) and, with ``--reverse``, with the clip's frames in reverse order
(DeU-Net's TDAM sees the cycle run backwards). The probabilities of each group are cached under
``<tag>/<model>/views/<sizes>/``; every combination of groups is then scored like ``acdc_cv evaluate`` (3D,
original grid, raw and lcc_fill) and printed as one table. Nothing here changes the pipeline's defaults.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from pipeline.data.acdc import read_patient
from pipeline.evaluation.metrics import evaluate_case
from pipeline.experiments.scoring import headline
from pipeline.experiments.workspace import FoldRun, Workspace
from pipeline.inference.network import Network
from pipeline.inference.postprocess import postprocess
from pipeline.inference.predict import Segmenter
from pipeline.preprocessing.geometry import Geometry
from pipeline.vocabulary import PHASES

ROOT = Path(__file__).resolve().parents[1]


class TimeReversed(Network):
    """A network that sees each clip's frames in reverse order (DeU-Net's TDAM then sees the cycle run backwards)."""

    def __init__(self, inner: Network) -> None:
        self.inner, self.radius, self.num_classes, self.on_cpu = (
            inner,
            inner.radius,
            inner.num_classes,
            inner.on_cpu,
        )

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        return self.inner(np.ascontiguousarray(clips[:, ::-1]))


def cache_views(run: FoldRun, sizes: list[int], reverse: bool) -> list[Path]:
    """Per validation patient: ``<size>_<0|1>`` dihedral-mean probabilities of ED and ES (float16)."""
    base = Segmenter.from_files(run.files)
    out = run.path.parent / "views" / ("-".join(map(str, sizes)) + ("-reverse" if reverse else ""))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for pid in run.val:
        path = out / f"{pid}.npz"
        paths.append(path)
        if path.is_file():
            continue
        rec = read_patient(run.raw / pid, with_cine_labels=False)
        frames = [rec.frame_index(p) for p in PHASES]
        arrays = {}
        for size, rev in itertools.product(sizes, (0, 1) if reverse else (0,)):
            networks = [TimeReversed(m) for m in base.models] if rev else base.models
            seg = Segmenter(
                networks, geometry=Geometry("resize", size), percentiles=base.percentiles, tta="dihedral"
            )
            arrays[f"{size}_{rev}"] = seg.probabilities(rec.cine, frames, spacing=rec.spacing).astype(
                np.float16
            )
        labels = {f"gt_{p}": rec.labels[p] for p in PHASES}
        np.savez_compressed(path, spacing=np.asarray(rec.spacing), fold=run.fold, **labels, **arrays)
    return paths


def score(paths: list[Path], groups: list[str]) -> dict[str, list[dict]]:
    """Cases (as evaluate writes them) of the averaged probabilities of ``groups``, raw and lcc_fill."""
    cases: dict[str, list[dict]] = {"raw": [], "lcc_fill": []}
    for path in paths:
        a = np.load(path)
        labels = (sum(a[g].astype(np.float32) for g in groups) / len(groups)).argmax(2)
        for i, phase in enumerate(PHASES):
            for mode in cases:
                metrics = evaluate_case(postprocess(labels[i], mode), a[f"gt_{phase}"], tuple(a["spacing"]))
                cases[mode].append(
                    {"patient": path.stem, "phase": phase, "metrics": metrics, "fold": int(a["fold"])}
                )
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--model", required=True)
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[96], help="network input sizes (first: training's)"
    )
    p.add_argument("--reverse", action="store_true", help="also time-reversed clips")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = Workspace.default(ROOT).runs(args.tag, args.model, args.folds)
    paths = [q for run in runs for q in cache_views(run, args.sizes, args.reverse)]
    names = [f"{s}_{r}" for s in args.sizes for r in ((0, 1) if args.reverse else (0,))]
    combos = [[names[0]]] + [
        list(c) for n in range(2, len(names) + 1) for c in itertools.combinations(names, n)
    ]
    print("| views (size_reversed) | post-processing | mean Dice | mean HD (mm) | mean ASSD (mm) | RV ES Dice | "
          "Dice per fold |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for combo in combos:
        for mode, cases in score(paths, combo).items():
            h = headline(cases)
            per_fold = [headline([c for c in cases if c["fold"] == f])["mean_dice"] for f in args.folds]
            print(f"| {' + '.join(combo)} | {mode} | {h['mean_dice']:.4f} | {h['mean_hd']:.2f} | {h['mean_assd']:.2f} "
                  f"| {h['dice_RV_ES']:.3f} | {' '.join(f'{d:.4f}' for d in per_fold)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
