"""The Prefect flows on tiny DVC projects and on the real pipeline, against one temporary Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.orchestration.cli import main
from pipeline.orchestration.config import OrchestrateConfig
from pipeline.orchestration.flows import (
    StageFailed,
    StageResult,
    pipeline_flow,
    retrain_deployment,
    retrain_flow,
    select_stages,
    stage_names,
)
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")
FAKE = ["prepare", "clean", "fit", "report"]
MakeProject = Callable[..., Path]
# fit fails on its first attempt only: it counts its attempts in a file that DVC does not track.
FLAKY = (
    "import pathlib, sys; c = pathlib.Path('attempts.txt'); "
    "n = int(c.read_text()) + 1 if c.exists() else 1; c.write_text(str(n)); "
    "n > 1 or sys.exit('error: model.txt: transient failure on attempt 1'); "
    "pathlib.Path('model.txt').write_text('fitted')"
)


def task_runs(flow_run_id: UUID, expected: int) -> list[Any]:
    """The task runs of a flow run, by start time, once ``expected`` of them reached a final state.

    Task-run states reach the server as events shortly after the tasks end: poll for up to a minute.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = len(runs) >= expected and all(r.state is not None and r.state.is_final() for r in runs)
            if done or time.monotonic() > deadline:
                return sorted(runs, key=lambda r: r.start_time or r.expected_start_time)
            time.sleep(0.5)


def states(flow_run_id: UUID, expected: int) -> dict[str, str]:
    """{task run name: final state name} of a flow run, in start order."""
    return {r.name: r.state.name for r in task_runs(flow_run_id, expected)}


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    # mlflow.set_tracking_uri in an earlier test leaks into the environment the stages inherit.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_flow_runs_every_stage_in_order_then_dvc_finds_nothing_to_do(make_project: MakeProject) -> None:
    project = make_project()
    state = pipeline_flow(repo=str(project), return_state=True)
    assert state.is_completed()
    results = state.result()
    assert [r.stage for r in results] == FAKE
    assert all(r.ran and not r.restored and r.upstream == () for r in results)
    assert (project / "report.txt").read_text() == "DATA+fit+report"
    flow_run_id = state.state_details.flow_run_id
    assert states(flow_run_id, 4) == {f"repro-{s}": "Completed" for s in FAKE}

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        assert client.read_flow(run.flow_id).name == "deunet-pipeline"
        assert run.parameters["repo"] == str(project)

    again = pipeline_flow(repo=str(project), return_state=True)
    assert [(r.stage, r.ran) for r in again.result()] == [(s, False) for s in FAKE]  # DVC: up to date
    assert states(again.state_details.flow_run_id, 4) == {f"repro-{s}": "Completed" for s in FAKE}


def test_failing_stage_fails_the_flow_naming_it_and_stops(make_project: MakeProject) -> None:
    project = make_project(fit="import sys; sys.exit('error: clean.txt: no model can be fitted')")
    state = pipeline_flow(repo=str(project), return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed) as failed:
        state.result()
    assert failed.value.stage == "fit" and failed.value.returncode != 0
    assert "stage 'fit' failed" in str(failed.value)
    assert "error: clean.txt: no model can be fitted" in str(failed.value)
    assert "error: clean.txt: no model can be fitted" in failed.value.tail
    # retries: 0 -> one attempt; report never starts
    runs = task_runs(state.state_details.flow_run_id, 3)
    assert {r.name: r.state.name for r in runs} == {
        "repro-prepare": "Completed",
        "repro-clean": "Completed",
        "repro-fit": "Failed",
    }
    assert runs[-1].run_count == 1
    assert not (project / "model.txt").exists() and not (project / "report.txt").exists()


def test_a_stage_that_fails_once_completes_on_retry(make_project: MakeProject) -> None:
    project = make_project(retries=1, fit=FLAKY)
    state = pipeline_flow(repo=str(project), return_state=True)
    assert state.is_completed()
    assert [(r.stage, r.ran) for r in state.result()] == [(s, True) for s in FAKE]
    assert (project / "attempts.txt").read_text() == "2"
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id, 4)}
    assert runs["repro-fit"].state.name == "Completed" and runs["repro-fit"].run_count == 2
    assert runs["repro-report"].run_count == 1
    assert (project / "report.txt").read_text() == "fitted+report"


def test_subset_brings_upstream_up_to_date_and_force_reruns_one_stage(make_project: MakeProject) -> None:
    project = make_project()
    (only,) = pipeline_flow(repo=str(project), stages=["clean"])
    assert only == StageResult("clean", ran=True, seconds=only.seconds, upstream=("prepare",))
    assert not (project / "model.txt").exists()

    # Forced, prepare writes the same bytes: DVC then has no reason to re-run clean.
    results = pipeline_flow(repo=str(project), stages=["clean", "prepare"], force=["prepare"])
    assert [(r.stage, r.ran) for r in results] == [("prepare", True), ("clean", False)]


def test_unknown_stage_fails_the_flow_before_any_task(make_project: MakeProject) -> None:
    project = make_project()
    state = pipeline_flow(repo=str(project), stages=["fitt"], return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match=r"no stage 'fitt' in dvc.yaml \(did you mean 'fit'\?\)"):
        state.result()
    assert task_runs(state.state_details.flow_run_id, 0) == []


def test_select_stages_checks_names_and_keeps_dvc_yaml_order() -> None:
    assert select_stages(FAKE, ["report", "prepare"], ["prepare"]) == (["prepare", "report"], {"prepare"})
    assert select_stages(FAKE) == (FAKE, set())
    with pytest.raises(ConfigError, match=r"force: no stage 'x' in dvc.yaml; its stages: prepare, clean"):
        select_stages(FAKE, None, ["x"])
    with pytest.raises(ConfigError, match=r"force: stage 'fit' is not among the stages to run \(clean\)"):
        select_stages(FAKE, ["clean"], ["fit"])


def test_stage_names_reads_dvc_yaml_in_file_order(make_project: MakeProject, tmp_path: Path) -> None:
    assert stage_names(make_project()) == FAKE
    with pytest.raises(ConfigError, match=r"dvc\.yaml: dvc\.yaml is missing; the repo must be the root"):
        stage_names(tmp_path / "nowhere")
    assert stage_names(REPO)[-1] == "register"  # the pipeline ends at the registry gate


def test_retrain_deployment_is_scheduled_and_limited_to_one_run(make_project: MakeProject) -> None:
    project = make_project()
    cfg = OrchestrateConfig(deployment="nightly", cron="30 2 * * *", timezone="Europe/Paris")
    deployment = retrain_deployment(project, cfg)
    assert deployment.name == "nightly"
    assert deployment.entrypoint == "pipeline.orchestration.flows.retrain_flow"
    assert deployment.parameters == {"repo": str(project.resolve()), "params": "params.yaml"}

    from prefect.client.orchestration import get_client
    from prefect.utilities.importtools import import_object

    assert import_object(deployment.entrypoint) is retrain_flow  # what the runner will load
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
    assert stored.global_concurrency_limit is not None and stored.global_concurrency_limit.limit == 1
    (schedule,) = stored.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 2 * * *", "Europe/Paris")
    assert stored.parameters["repo"] == str(project.resolve())


def test_cli_run_reports_each_stage_and_failure_exits_1(
    make_project: MakeProject, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project()
    assert main(["run", "--repo", str(project), "--stage", "prepare", "--stage", "clean"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[-2:]] == [["prepare", "ran"], ["clean", "ran"]]

    dvc_yaml = yaml.safe_load((project / "dvc.yaml").read_text())
    dvc_yaml["stages"]["prepare"]["cmd"] = 'python -c "1/0"'
    (project / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    assert main(["run", "--repo", str(project)]) == 1
    err = capsys.readouterr().err
    assert "error: stage 'prepare' failed" in err and "ZeroDivisionError: division by zero" in err


def test_cli_unknown_stage_exits_1_naming_it(
    make_project: MakeProject, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project()
    assert main(["run", "--repo", str(project), "--stage", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: stages: no stage 'nosuch' in dvc.yaml")
    assert "prepare, clean, fit, report" in err


def test_cli_bad_params_exit_1_naming_the_key(
    make_project: MakeProject, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(retries=-1)
    assert main(["run", "--repo", str(project)]) == 1
    assert "error: orchestrate: retries must be >= 0, got -1" in capsys.readouterr().err
    assert main(["retrain", "--repo", str(project)]) == 1  # the fake project has no download stage
    assert "retraining forces the 'download' stage, which it lacks" in capsys.readouterr().err


def test_cli_serve_without_a_server_refuses_and_says_how(make_project: MakeProject, tmp_path: Path) -> None:
    project = make_project()
    # A fresh Prefect home: no profile that could point at a server.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "empty-prefect-home")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "flow", "serve", "--repo", str(project)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: PREFECT_API_URL is not set")
    assert "prefect server start" in proc.stderr
    assert "export PREFECT_API_URL=http://127.0.0.1:4200/api" in proc.stderr


@pytest.mark.slow
def test_real_pipeline_end_to_end_then_retrain_skips_unchanged_data(real_project: Path) -> None:
    names = stage_names(real_project)
    assert names[0] == "download" and names[-1] == "register"
    state = pipeline_flow(repo=str(real_project), return_state=True)
    assert state.is_completed(), state.message
    results = state.result()
    assert [r.stage for r in results] == names and all(r.ran for r in results)
    registration = json.loads((real_project / "data/registry/registration.json").read_text())
    assert registration["champion"] == "1"
    assert states(state.state_details.flow_run_id, len(names)) == {f"repro-{s}": "Completed" for s in names}

    # The phantom is deterministic: the forced download writes the same data, so DVC skips the rest.
    retrain = retrain_flow(repo=str(real_project))
    assert [(r.stage, r.ran) for r in retrain] == [(s, s == "download") for s in names]
    after = json.loads((real_project / "data/registry/registration.json").read_text())
    assert after["champion"] == "1" and after["version"] == registration["version"]
