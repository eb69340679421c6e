"""One source of defaults: every params section's dataclass defaults equal params.yaml's values."""

from __future__ import annotations

import pytest

from pipeline.config import from_dict, load_params
from pipeline.data.sources import DownloadConfig
from pipeline.evaluation.runner import EvaluateConfig
from pipeline.orchestration.config import OrchestrateConfig
from pipeline.preprocessing.patient import PreprocessConfig
from pipeline.promotion.gate import RegisterConfig
from pipeline.splitting.folds import SplitConfig
from pipeline.tracking.config import TrackingConfig
from pipeline.training.trainer import TrainConfig
from pipeline.tuning.config import TuneConfig
from pipeline.validation.manifest_suite import ValidateConfig
from tests.conftest import REPO

SECTIONS = {"download": DownloadConfig, "preprocess": PreprocessConfig, "validate": ValidateConfig,
            "split": SplitConfig, "tune": TuneConfig, "train": TrainConfig, "evaluate": EvaluateConfig,
            "tracking": TrackingConfig, "register": RegisterConfig, "orchestrate": OrchestrateConfig}  # fmt: skip


@pytest.mark.parametrize("name", list(SECTIONS))
def test_dataclass_defaults_are_params_yaml(name: str) -> None:
    params = load_params(REPO / "params.yaml")
    assert set(params) == set(SECTIONS)
    cls = SECTIONS[name]
    assert from_dict(cls, params[name], name) == from_dict(cls, {}, name), (
        f"{cls.__name__}'s defaults differ from params.yaml's {name} section"
    )
