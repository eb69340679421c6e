"""Profiles: one step from the phantom to real data; every profile's keys exist in params.yaml and parse."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import profiles
from pipeline.config import load_params, section
from pipeline.evaluation.config import EvaluateConfig
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.training.config import TrainConfig
from tests.conftest import REPO


@pytest.mark.parametrize("name", profiles.available())
def test_every_profile_applies_to_params_yaml_and_parses(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy2(REPO / "params.yaml", params)
    assert profiles.main([name, "--apply", "--params", str(params)]) == 0
    applied = load_params(params)
    wanted = yaml.safe_load((REPO / "profiles" / f"{name}.yaml").read_text())
    for sec, values in wanted.items():
        for key, value in values.items():
            assert applied[sec][key] == value, (sec, key)
    assert "# Every knob of the pipeline" in params.read_text()  # comments survive
    section(applied, "preprocess", PreprocessConfig)
    section(applied, "train", TrainConfig)
    section(applied, "evaluate", EvaluateConfig)
    assert applied["split"] == load_params(REPO / "params.yaml")["split"]  # untouched sections stay


def test_overrides_are_dvc_set_params_and_typos_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = profiles.overrides("acdc-roi-cpu")
    assert "download.source=local" in items and "train.folds=[0,1,2,3,4]" in items
    assert "train.model_args.base_channels=8" in items
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"download": {"source": "synthetic"}}))
    assert profiles.main(["acdc-roi-cpu", "--params", str(tmp_path / "params.yaml")]) == 1
    assert "is not a key of params.yaml" in capsys.readouterr().err
    assert profiles.main(["no-such-profile"]) == 1
    assert "no such profile" in capsys.readouterr().err
