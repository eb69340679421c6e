"""Folds: by patient, stratified by group, seeded, byte-for-byte reproducible."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.splitting.config import SplitConfig
from pipeline.splitting.folds import make_split, read_split, write_split

GROUPS = {f"patient{i:03d}": ("NOR", "DCM", "HCM", "MINF", "RV")[i % 5] for i in range(1, 51)}


def test_folds_partition_patients_and_stratify() -> None:
    split = make_split(GROUPS, SplitConfig(n_folds=5, seed=3))
    vals = [set(f["val"]) for f in split["folds"]]
    assert set().union(*vals) == set(GROUPS) and sum(map(len, vals)) == 50  # a partition
    for fold in split["folds"]:
        assert set(fold["train"]).isdisjoint(fold["val"])
        assert set(fold["train"]) | set(fold["val"]) == set(GROUPS)
        assert Counter(GROUPS[p] for p in fold["val"]) == dict.fromkeys(
            ("NOR", "DCM", "HCM", "MINF", "RV"), 2
        )


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    write_split(make_split(GROUPS, SplitConfig(seed=7)), tmp_path / "a.json")
    write_split(make_split(dict(reversed(GROUPS.items())), SplitConfig(seed=7)), tmp_path / "b.json")
    write_split(make_split(GROUPS, SplitConfig(seed=8)), tmp_path / "c.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()
    assert read_split(tmp_path / "a.json")["seed"] == 7


def test_test_set_by_fraction_and_by_list() -> None:
    split = make_split(GROUPS, SplitConfig(test_fraction=0.2))
    assert Counter(GROUPS[p] for p in split["test"]) == dict.fromkeys(("NOR", "DCM", "HCM", "MINF", "RV"), 2)
    assert not set(split["test"]) & {p for f in split["folds"] for p in f["val"] + f["train"]}
    fixed = make_split(GROUPS, SplitConfig(test_patients=("patient001", "patient002")))
    assert fixed["test"] == ["patient001", "patient002"]
    assert sum(len(f["val"]) for f in fixed["folds"]) == 48


def test_bad_split_requests() -> None:
    with pytest.raises(ConfigError, match="not in the dataset"):
        make_split(GROUPS, SplitConfig(test_patients=("patient999",)))
    with pytest.raises(ConfigError, match="only 3 patients remain"):
        make_split({"a": "NOR", "b": "NOR", "c": "DCM"}, SplitConfig(n_folds=5))
    with pytest.raises(ValueError, match="n_folds must be >= 2"):
        SplitConfig(n_folds=1)


def test_read_split_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split file is missing"):
        read_split(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_split(tmp_path / "x.json")
