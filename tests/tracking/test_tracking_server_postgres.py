"""Several machines logging to one place: a REAL ``mlflow server`` backed by PostgreSQL, written to by
two processes through the project's tracker (the README's scale-out recipe), then read back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from tests.conftest import free_port

pytestmark = pytest.mark.slow
VENV_BIN = Path(sys.executable).parent

LOG_ONE_RUN = """
import sys
from pathlib import Path
from pipeline.tracking import TrackingConfig, make_tracker
uri, name, out = sys.argv[1:4]
cfg = TrackingConfig(tracking_uri=uri, experiment="shared")
with make_tracker(cfg, Path("."), name, 0, {"machine": name}) as run:
    run.log_params({"train": {"lr": 0.001, "radius": 2}})
    for epoch in (1, 2, 3):
        run.log_metrics({"val_dice": 0.5 + 0.1 * epoch}, step=epoch)
    Path(out).write_text("curve\\n")
    run.log_artifact(out, "curves")
print(run.run_id)
"""


@pytest.fixture
def mlflow_server(postgres_db: Callable[[str], str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
    log = (tmp_path / "server.log").open("w")
    cmd = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", postgres_db("mlflow"),
           "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health in 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_two_processes_log_to_one_postgres_backed_server(mlflow_server: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [
        subprocess.Popen([sys.executable, "-c", LOG_ONE_RUN, mlflow_server, f"machine-{i}", str(tmp_path / f"c{i}.tsv")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in (1, 2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    run_ids = {out.strip().splitlines()[-1] for out, _ in outputs}

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("shared")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_id for r in runs} == run_ids and len(run_ids) == 2
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.params["train.radius"] == "2"
        history = client.get_metric_history(run.info.run_id, "val_dice")
        assert [m.step for m in history] == [1, 2, 3]
        # Artifacts travel through the server (proxied), not through a shared filesystem path.
        assert [a.path for a in client.list_artifacts(run.info.run_id, "curves")] == [
            f"curves/c{run.data.tags['machine'][-1]}.tsv"
        ]
