"""Cross-validation folds by patient, stratified by ACDC group, seeded and reproducible byte for byte."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_write_text
from pipeline.errors import ConfigError, DataError
from pipeline.splitting.config import SplitConfig


def make_split(
    groups: dict[str, str], cfg: SplitConfig, linked: list[list[str]] | tuple[()] = ()
) -> dict[str, Any]:
    """Assign patients to an optional test set and ``n_folds`` validation folds.

    Args:
        groups: patient id -> ACDC group (the stratum).
        linked: sets of patient ids that must share a fold (the same images under two ids, as patients
            074 and 076 of ACDC): each set is placed as one unit where its first member is drawn, so no
            image is ever in both the training and the validation (or test) patients.

    Returns:
        ``{"seed", "n_folds", "test": [...], "folds": [{"fold", "train": [...], "val": [...]}]}``, with
        every list sorted. Each group is shuffled with the seed and dealt round-robin over the folds,
        continuing where the previous group stopped, so fold sizes differ by at most one.
    """
    unknown = sorted(set(cfg.test_patients) - set(groups))
    if unknown:
        raise ConfigError(f"split.test_patients: not in the dataset: {unknown[:5]}")
    rng = np.random.default_rng(cfg.seed)
    by_group: dict[str, list[str]] = defaultdict(list)
    for pid in sorted(groups):
        by_group[groups[pid]].append(pid)

    unit_of: dict[str, tuple[str, ...]] = {}
    for members in linked:
        unit = tuple(sorted(set(members) & set(groups)))
        for pid in unit:
            unit_of[pid] = tuple(sorted(set(unit_of.get(pid, ())) | set(unit)))
    explicit_test = set(cfg.test_patients)
    for pid in list(explicit_test):
        explicit_test |= set(unit_of.get(pid, ()))

    test: list[str] = sorted(explicit_test)
    placed: set[str] = set(test)
    pool: dict[str, list[tuple[str, ...]]] = {}
    for group in sorted(by_group):
        members = [by_group[group][i] for i in rng.permutation(len(by_group[group]))]
        units = []
        for pid in members:
            if pid not in placed:
                unit = unit_of.get(pid, (pid,))
                placed.update(unit)
                units.append(unit)
        if not cfg.test_patients and cfg.test_fraction > 0:
            n_test = round(cfg.test_fraction * len(units))
            test += [p for unit in units[:n_test] for p in unit]
            units = units[n_test:]
        pool[group] = units

    n_left = sum(len(v) for v in pool.values())
    if n_left < cfg.n_folds:
        raise ConfigError(
            f"split.n_folds = {cfg.n_folds} but only {n_left} patients remain for cross-validation"
        )
    val: list[list[str]] = [[] for _ in range(cfg.n_folds)]
    cursor = 0
    for group in sorted(pool):
        for unit in pool[group]:
            val[cursor % cfg.n_folds].extend(unit)
            cursor += 1
    every = sorted(p for units in pool.values() for unit in units for p in unit)
    folds = [{"fold": k, "train": sorted(set(every) - set(v)), "val": sorted(v)} for k, v in enumerate(val)]
    return {"seed": cfg.seed, "n_folds": cfg.n_folds, "test": sorted(test), "folds": folds}


def write_split(split: dict[str, Any], path: Path) -> None:
    """Write the split as canonical JSON (sorted keys, fixed indentation) so equal splits are equal bytes."""
    atomic_write_text(path, json.dumps(split, indent=1, sort_keys=True) + "\n")


def read_split(path: Path) -> dict[str, Any]:
    """Read a split written by :func:`write_split`."""
    try:
        split = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(path, "split file is missing; run the split stage") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    if not isinstance(split, dict) or "folds" not in split:
        raise DataError(path, "not a split file (no 'folds' key)")
    return split
