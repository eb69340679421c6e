"""acdc-fullfov's volumes cut as acdc-roi was, but keeping every slice: training data with the basal and apical
slices acdc-roi drops, for per-frame models.

    python -m benchmarks.allslices            # -> data/bench/acdc-allslices (ACDC layout, ignored by git)

Per patient of ../shared/data/acdc-roi (the same 79; acdc-fullfov's README gives the rule): swap the first two
axes and flip the new second one when X > Y, keep [50:150, 85:180, every slice]. The 4D cine of the ACDC layout
is the two labelled volumes, ED then ES (frames 1 and 2 of Info.cfg): acdc-fullfov holds no cine, and a
per-frame model (U-Net) reads only the labelled frame of each clip. Temporal models would see a two-frame
"cycle" here; they should keep training on acdc-roi's cines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FULLFOV = ROOT.parent / "shared" / "data" / "acdc-fullfov"
ROI = ROOT.parent / "shared" / "data" / "acdc-roi"
OUT = ROOT / "data" / "bench" / "acdc-allslices"


def crop(data: np.ndarray) -> np.ndarray:
    """acdc-roi's in-plane cut of an (X, Y, Z) volume, every slice kept."""
    if data.shape[0] > data.shape[1]:
        data = np.flip(np.swapaxes(data, 0, 1), axis=1)
    return np.ascontiguousarray(data[50:150, 85:180])


def derive(pid: str, out: Path) -> None:
    from pipeline.data.acdc import parse_info_cfg

    info = parse_info_cfg(FULLFOV / pid / "Info.cfg")
    folder = out / pid
    folder.mkdir(parents=True, exist_ok=True)
    volumes = []
    for number, phase in ((1, "ED"), (2, "ES")):
        stem = FULLFOV / pid / f"{pid}_frame{info.frame(phase):02d}"
        img = nib.load(f"{stem}.nii.gz")
        zooms = img.header.get_zooms()[:3]
        affine = np.diag([*zooms, 1.0])
        image = crop(np.asarray(img.dataobj))
        label = crop(np.asarray(nib.load(f"{stem}_gt.nii.gz").dataobj, dtype=np.uint8))
        nib.save(nib.Nifti1Image(image, affine), folder / f"{pid}_frame{number:02d}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), folder / f"{pid}_frame{number:02d}_gt.nii.gz")
        volumes.append(image)
    nib.save(nib.Nifti1Image(np.stack(volumes, axis=-1), np.diag([*zooms, 1.0])), folder / f"{pid}_4d.nii.gz")
    (folder / "Info.cfg").write_text(
        f"ED: 1\nES: 2\nGroup: {info.group}\nHeight: {info.height_cm}\nNbFrame: 2\nWeight: {info.weight_kg}\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    patients = sorted(d.name for d in ROI.iterdir() if (d / "Info.cfg").is_file())
    for pid in patients:
        derive(pid, args.out)
    print(f"{len(patients)} patients -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
