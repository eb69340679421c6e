"""Patients that share their images: a quirk of real datasets, told apart from a copied folder.

ACDC's patient074 and patient076 have the same ED and ES images voxel for voxel, with two different expert
annotations. That is a property of the release, not a fault: validation reports it as a warning and the
split keeps such patients in one fold, so no image is in both training and validation. A folder copied
whole (the same images *and* the same labels under a new id) is still a fault: the GX suite fails on it.
"""

from __future__ import annotations

import pandas as pd


def duplicate_image_groups(manifest: pd.DataFrame) -> list[list[str]]:
    """Sets (sorted, then sorted by first id) of >= 2 patients whose images are equal at some phase.

    Args:
        manifest: the preprocessing manifest, one row per (patient, phase) with ``image_sha1``.
    """
    if manifest.empty or "image_sha1" not in manifest:
        return []
    parent: dict[str, str] = {}

    def find(p: str) -> str:
        while parent.setdefault(p, p) != p:
            p = parent[p]
        return p

    for _, rows in manifest.groupby(["image_sha1", "phase"], sort=True):
        ids = sorted(set(rows["patient"].astype(str)))
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    sets: dict[str, set[str]] = {}
    for p in parent:
        sets.setdefault(find(p), set()).add(p)
    return sorted((sorted(s) for s in sets.values() if len(s) > 1), key=lambda s: s[0])
