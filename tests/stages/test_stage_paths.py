"""dvc.yaml passes every stage exactly the paths its command-line defaults (stages.paths) name."""

from __future__ import annotations

import argparse
import importlib
import shlex

import pytest
import yaml

from pipeline.cli import STAGES
from tests.conftest import REPO

DVC_STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _stage_parser(module: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser a stage's ``main`` hands to ``stages._common.run`` (nothing runs)."""
    stage = importlib.import_module(module)
    built: list[argparse.ArgumentParser] = []
    monkeypatch.setattr(stage, "run", lambda _main, p, _argv=None: built.append(p) or 0)
    stage.main([])
    return built[0]


def test_every_stage_is_in_dvc_yaml() -> None:
    assert list(DVC_STAGES) == list(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_command_passes_the_default_paths(stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    python, dash_m, module, *args = shlex.split(DVC_STAGES[stage]["cmd"])
    assert (python, dash_m, module) == ("python", "-m", f"stages.{stage}")
    p = _stage_parser(module, monkeypatch)
    given, defaults = vars(p.parse_args(args)), vars(p.parse_args([]))
    assert given == defaults, f"dvc.yaml's {stage} command differs from stages.paths: {given} vs {defaults}"
    # dvc.yaml passes every path the stage takes, except tune's scratch folder (no DVC dependency or output).
    path_options = {f"--{k}" for k, v in defaults.items() if isinstance(v, str) and v.startswith("data/")}
    assert path_options and path_options - set(args) <= {"--work"}, (
        f"{stage}: dvc.yaml leaves paths to defaults"
    )
