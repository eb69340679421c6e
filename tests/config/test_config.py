"""Typed params: every section of params.yaml parses, and mistakes are named with their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_params, section
from pipeline.data.config import DownloadConfig
from pipeline.data.phantom import PhantomConfig
from pipeline.errors import ConfigError
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.splitting.config import SplitConfig
from pipeline.validation.config import ValidateConfig
from tests.conftest import REPO


def test_repo_params_parse() -> None:
    params = load_params(REPO / "params.yaml")
    download = section(params, "download", DownloadConfig)
    assert download.source == "synthetic"
    assert isinstance(download.synthetic, PhantomConfig) and download.synthetic.matrix == (96, 96)
    assert section(params, "preprocess", PreprocessConfig).percentiles == (0.5, 99.5)
    assert section(params, "validate", ValidateConfig).frames == (8, 60)
    assert section(params, "split", SplitConfig).n_folds == 5


@pytest.mark.parametrize(
    ("sec", "cls", "value", "message"),
    [
        (
            "preprocess",
            PreprocessConfig,
            {"szie": 64},
            r"preprocess\.szie: unknown key \(did you mean 'size'\?\)",
        ),
        (
            "preprocess",
            PreprocessConfig,
            {"size": "big"},
            r"preprocess\.size: expected an integer, got 'big'",
        ),
        ("preprocess", PreprocessConfig, {"size": 60}, r"preprocess: size must be a multiple of 8"),
        (
            "preprocess",
            PreprocessConfig,
            {"percentiles": [1, 2, 3]},
            r"preprocess\.percentiles: expected 2 values, got 3",
        ),
        (
            "download",
            DownloadConfig,
            {"source": "ftp"},
            r"download\.source: must be one of \['synthetic', 'local', 'url'\]",
        ),
        (
            "download",
            DownloadConfig,
            {"synthetic": {"n_patients": 0}},
            r"download\.synthetic: PhantomConfig\.n_patients must be",
        ),
        ("split", SplitConfig, {"test_fraction": True}, r"split\.test_fraction: expected a number"),
        (
            "validate",
            ValidateConfig,
            {"frames": [60, 8]},
            r"validate: frames must be an ordered \[min, max\]",
        ),
    ],
)
def test_bad_params_are_named(sec: str, cls: type, value: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        section({sec: value}, sec, cls)


def test_params_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file is missing"):
        load_params(tmp_path / "none.yaml")
    (tmp_path / "p.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "q.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_params(tmp_path / "q.yaml")


def test_console_script_dispatches_and_rejects_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["split", "--help"])
    assert exc.value.code == 0
    assert "--validation" in capsys.readouterr().out


def test_yaml11_exponents_are_numbers(tmp_path: Path) -> None:
    """`lr: 3e-4` is a string to PyYAML (YAML 1.1 wants `3.0e-4`); a float field takes it as the number."""
    from pipeline.training.config import TrainConfig

    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 3e-4\n  weight_decay: 1E-5\n")
    params = load_params(path)
    assert params["train"]["lr"] == "3e-4"  # what the YAML reader gives
    cfg = section(params, "train", TrainConfig)
    assert cfg.lr == 3e-4 and cfg.weight_decay == 1e-5
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number, got 'e-4'"):
        section({"train": {"lr": "e-4"}}, "train", TrainConfig)
