"""One temporary Prefect server for the orchestration tests, and tiny git+DVC projects to run flows on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import copy_pipeline, set_params

BIN = str(Path(sys.executable).parent)
QUIET = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # the server takes 15-30 s to start here
    "PREFECT_TELEMETRY_ENABLED": "false",  # not a setting of prefect 3.8 itself; harmless, for other versions
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no test touches the network
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
}

# The default project: four stages chained through their files (write, transform, transform, transform).
STAGES = {
    "prepare": "import pathlib; pathlib.Path('raw.txt').write_text('data')",
    "clean": "import pathlib; pathlib.Path('clean.txt').write_text(pathlib.Path('raw.txt').read_text().upper())",
    "fit": "import pathlib; pathlib.Path('model.txt').write_text(pathlib.Path('clean.txt').read_text() + '+fit')",
    "report": "import pathlib; pathlib.Path('report.txt').write_text(pathlib.Path('model.txt').read_text() + '+report')",
}
FILES = {"prepare": ([], "raw.txt"), "clean": (["raw.txt"], "clean.txt"), "fit": (["clean.txt"], "model.txt"),
         "report": (["model.txt"], "report.txt")}  # fmt: skip


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's test harness (a temporary server on a temporary database), started once per session."""
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        # The environment for the server subprocess and for anything the flows start ...
        for key, value in {**QUIET, "PREFECT_HOME": str(home)}.items():
            mp.setenv(key, value)
        mp.delenv("PREFECT_API_URL", raising=False)
        from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        # ... and this process's settings, which Prefect read when it was first imported.
        updates: dict[Any, Any] = {PREFECT_HOME: home, PREFECT_SERVER_ANALYTICS_ENABLED: False}
        with temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=120):
            yield


def subprocess_env() -> dict[str, str]:
    # The project's own default MLflow store, whatever an earlier test left in the environment.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, **QUIET, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def sh(cwd: Path, *args: str) -> str:
    proc = subprocess.run(args, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def init_repo(path: Path) -> None:
    sh(path, "git", "init", "-q")
    sh(path, "dvc", "init", "-q")
    sh(path, "dvc", "config", "core.analytics", "false")


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """``make_project(retries=0, fit="<python code>")``: a git+DVC project of the four STAGES.

    Keyword arguments named like a stage replace that stage's ``python -c`` code; ``retries`` goes to
    params.yaml's orchestrate section (with no retry delay).
    """

    def make(retries: int = 0, **code: str) -> Path:
        path = tmp_path / "fake"
        path.mkdir()
        init_repo(path)
        stages = {}
        for name, default in STAGES.items():
            deps, out = FILES[name]
            stage: dict[str, Any] = {"cmd": f'python -c "{code.get(name, default)}"'}
            if deps:
                stage["deps"] = deps
            stages[name] = {**stage, "outs": [out]}
        (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
        set_params(path, orchestrate={"retries": retries, "retry_delay_s": 0})
        return path

    return make


@pytest.fixture
def real_project(tmp_path: Path) -> Path:
    """A git+DVC copy of the project's pipeline with tiny synthetic params (as tests/stages uses)."""
    dst = copy_pipeline(tmp_path / "proj")
    init_repo(dst)
    set_params(dst, orchestrate={"retries": 0})
    return dst
