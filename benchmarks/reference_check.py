"""The report's reference ranges on the experts' own labels: how many patients of each ACDC group have an index
marked outside the published adult range (a check that the ranges separate normal from diseased hearts).

    python -m benchmarks.reference_check                       # ../shared/data/acdc-fullfov: every slice
    python -m benchmarks.reference_check --data ../shared/data/acdc-roi

ACDC gives no sex, so every value is marked only outside both sexes' ranges, as the report does without it.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from pipeline.clinical.indices import clinical_indices
    from pipeline.clinical.reference_ranges import mark_report
    from pipeline.data.acdc import parse_info_cfg
    from pipeline.data.imageio import spacing_zyx, to_memory

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "acdc-fullfov")
    args = p.parse_args(argv)
    marked: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    patients: collections.Counter = collections.Counter()
    for folder in sorted(d for d in args.data.iterdir() if (d / "Info.cfg").is_file()):
        info = parse_info_cfg(folder / "Info.cfg")
        labels = {}
        for phase in ("ED", "ES"):
            img = nib.load(folder / f"{folder.name}_frame{info.frame(phase):02d}_gt.nii.gz")
            labels[phase], spacing = (
                to_memory(np.asarray(img.dataobj, np.uint8)),
                spacing_zyx(img.header.get_zooms()),
            )
        ix = clinical_indices(labels["ED"], labels["ES"], spacing)
        bsa = math.sqrt(info.height_cm * info.weight_kg / 3600.0)
        sections = {side: {"EDV_ml": ix[f"{side}_EDV"], "ESV_ml": ix[f"{side}_ESV"], "EF_pct": ix[f"{side}_EF"]}
                    for side in ("LV", "RV")}  # fmt: skip
        sections["myocardium"] = {"mass_g_per_m2": ix["MYO_mass"] / bsa}
        reference = mark_report(sections, None)
        patients[info.group] += 1
        marked[info.group]["any index"] += bool(reference["outside"])
        for key in reference["outside"]:
            marked[info.group][f"{key} {reference['indices'][key]['status']}"] += 1
    print(f"{args.data}: patients with an index outside the adult reference range, by ACDC group")
    for group in sorted(patients):
        details = ", ".join(f"{k} {v}" for k, v in sorted(marked[group].items()) if k != "any index")
        print(f"{group}: {marked[group]['any index']} of {patients[group]} ({details})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
