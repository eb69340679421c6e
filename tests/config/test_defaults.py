"""One source of defaults: every params section's dataclass defaults equal params.yaml's values."""

from __future__ import annotations

import pytest

from pipeline.config import from_dict, load_params
from pipeline.data.config import DownloadConfig
from pipeline.evaluation.config import EvaluateConfig
from pipeline.orchestration.config import OrchestrateConfig
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.promotion.config import RegisterConfig
from pipeline.splitting.config import SplitConfig
from pipeline.tracking.config import TrackingConfig
from pipeline.training.config import TrainConfig
from pipeline.tuning.config import TuneConfig
from pipeline.validation.config import ValidateConfig
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
