"""A tiny preprocessed store and split, made once per module, for training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.phantom import PhantomConfig, generate_dataset
from pipeline.preprocessing.patient import PreprocessConfig
from pipeline.preprocessing.run import preprocess_dataset
from pipeline.splitting.folds import SplitConfig, make_split, write_split


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/raw (5 phantom patients), root/pre (32x32 store), root/folds.json (2 folds)."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = PhantomConfig(n_patients=5, matrix=(48, 48), n_frames=(8, 10), n_slices=(4, 5))
    generate_dataset(root / "raw", cfg)
    preprocess_dataset(root / "raw", root / "pre", PreprocessConfig(size=32, workers=1), progress=False)
    groups = {f"patient{i:03d}": g for i, g in enumerate(("NOR", "DCM", "HCM", "MINF", "RV"), 1)}
    write_split(make_split(groups, SplitConfig(n_folds=2)), root / "folds.json")
    return root
