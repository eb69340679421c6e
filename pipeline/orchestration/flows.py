"""The DVC pipeline as Prefect flows: one task per stage, each task one ``dvc repro <stage>``.

DVC stays the source of truth for what is stale: the flow never re-implements the stage graph, it takes
the stage names from dvc.yaml in file order (an order DVC accepts, since each stage is written after
the ones it depends on) and asks DVC to bring each one up to date. What Prefect adds is per-stage
retries, logs and states in one run history, and a schedule for retraining (``retrain_deployment``).

Tasks run strictly one after another: two ``dvc repro`` in one workspace would fight over its lock.
"""

from __future__ import annotations

import difflib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from pipeline.config import load_params, read_yaml_mapping, section
from pipeline.errors import ConfigError, PipelineError
from pipeline.orchestration.config import OrchestrateConfig

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DATA_STAGE = "download"  # the stage retraining forces: it fetches the (possibly new) data
TAIL_LINES = 12  # lines of stderr a StageFailed message carries
_RUNNING = re.compile(r"Running stage '([^']+)'")
_RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")


class StageFailed(PipelineError):
    """``dvc repro <stage>`` exited non-zero; ``tail`` holds the last lines it wrote to stderr."""

    def __init__(self, stage: str, returncode: int, tail: Sequence[str]) -> None:
        self.stage = stage
        self.returncode = returncode
        self.tail = tuple(tail)
        detail = "\n".join(f"  {line}" for line in self.tail) or "  (nothing on stderr)"
        super().__init__(
            f"stage {stage!r} failed (dvc repro exited with {returncode}); end of stderr:\n{detail}"
        )

    def __reduce__(self):  # keep the fields when Prefect copies or pickles the exception
        return (type(self), (self.stage, self.returncode, self.tail))


@dataclass(frozen=True)
class StageResult:
    """What one ``dvc repro <stage>`` did.

    ran: DVC ran the stage's command (False: it was up to date, or restored from the run cache).
    restored: DVC checked its outputs out of the run cache instead of running it.
    upstream: other stages DVC had to run first (only when the flow runs a subset of stages).
    seconds: wall time of the whole ``dvc repro`` call.
    """

    stage: str
    ran: bool
    seconds: float
    restored: bool = False
    upstream: tuple[str, ...] = ()


def stage_names(repo: Path | str) -> list[str]:
    """The stage names of ``repo``/dvc.yaml, in file order."""
    path = Path(repo) / "dvc.yaml"
    data = read_yaml_mapping(path, "dvc.yaml", "; the repo must be the root of the DVC project")
    stages = data.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"{path}: expected a non-empty 'stages' mapping")
    return [str(name) for name in stages]


def select_stages(names: Sequence[str], stages: Sequence[str] | None = None,
                  force: Sequence[str] | None = None) -> tuple[list[str], set[str]]:  # fmt: skip
    """The stages to run (in dvc.yaml order) and those to force, checked against ``names``."""

    def check(name: str, what: str) -> None:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{what}: no stage {name!r} in dvc.yaml{hint}; its stages: {', '.join(names)}")

    for name in stages or ():
        check(name, "stages")
    for name in force or ():
        check(name, "force")
    todo = [n for n in names if n in set(stages)] if stages else list(names)
    for name in force or ():
        if name not in todo:
            raise ConfigError(f"force: stage {name!r} is not among the stages to run ({', '.join(todo)})")
    return todo, set(force or ())


def retrain_stages(repo: Path | str) -> tuple[list[str], set[str]]:
    """Every stage of ``repo``'s dvc.yaml, with ``download`` forced (scheduled retraining)."""
    names = stage_names(repo)
    if DATA_STAGE not in names:
        raise ConfigError(f"{Path(repo) / 'dvc.yaml'}: retraining forces the {DATA_STAGE!r} stage, which it lacks; "
                          f"its stages: {', '.join(names)}")  # fmt: skip
    return select_stages(names, None, [DATA_STAGE])


def load_config(repo: Path | str, params: str = "params.yaml") -> OrchestrateConfig:
    """The ``orchestrate`` section of ``params`` (a path relative to ``repo`` unless absolute)."""
    path = Path(params) if Path(params).is_absolute() else Path(repo) / params
    return section(load_params(path), "orchestrate", OrchestrateConfig)


def _subprocess_env() -> dict[str, str]:
    # The stage commands say `python` and `dvc`: the ones of this interpreter's environment, first.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"}


def _stream(proc: subprocess.Popen[str], on_line: Callable[[str, str], None]) -> None:
    """Call ``on_line(stream, line)`` for every line of the process's stdout and stderr, as they come."""
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def pump(name: str, pipe: IO[str]) -> None:
        for line in pipe:
            lines.put((name, line))
        lines.put((name, None))

    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=pump, args=("stdout", proc.stdout), daemon=True),
        threading.Thread(target=pump, args=("stderr", proc.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    open_streams = len(readers)
    while open_streams:
        name, line = lines.get()
        if line is None:
            open_streams -= 1
            continue
        # Progress bars redraw with carriage returns: keep the last state of the line.
        text = line.rstrip("\n").split("\r")[-1].rstrip() if "\r" in line else line.rstrip()
        if text:
            on_line(name, text)
    for reader in readers:
        reader.join()


@task(name="dvc-repro", task_run_name="repro-{stage}", cache_policy=NO_CACHE, persist_result=False)
def run_stage(stage: str, repo: str, force: bool = False) -> StageResult:
    """Run ``dvc repro [--force --single-item] <stage>`` in ``repo``, logging its output line by line.

    Raises StageFailed (naming the stage, with the end of stderr) when DVC exits non-zero.
    """
    logger = get_run_logger()
    # --force alone would force every upstream stage too; --single-item limits it to this one.
    cmd = ["dvc", "repro", *(["--force", "--single-item"] if force else []), stage]
    logger.info("$ %s", " ".join(cmd))
    running: list[str] = []
    restored: list[str] = []
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def on_line(stream: str, line: str) -> None:
        logger.info("%s", line)
        if stream == "stderr":
            tail.append(line)
        elif match := _RUNNING.search(line):
            running.append(match.group(1))
        elif match := _RESTORED.search(line):
            restored.append(match.group(1))

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=_subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
    try:
        _stream(proc, on_line)
        returncode = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted (e.g. the flow run was cancelled): do not leave DVC running
            proc.terminate()
            proc.wait()
    seconds = time.perf_counter() - start
    if returncode != 0:
        raise StageFailed(stage, returncode, list(tail))
    result = StageResult(stage=stage, ran=stage in running, seconds=round(seconds, 3),
                         restored=stage in restored, upstream=tuple(s for s in running if s != stage))  # fmt: skip
    state = "ran" if result.ran else "restored from the run cache" if result.restored else "up to date"
    logger.info("%s: %s (%.1f s)", stage, state, seconds)
    return result


def _run_stages(root: Path, todo: list[str], forced: set[str], params: str) -> list[StageResult]:
    logger = get_run_logger()
    cfg = load_config(root, params)
    stage_task = run_stage.with_options(retries=cfg.retries, retry_delay_seconds=cfg.retry_delay_s)
    logger.info(
        "%s: stages %s%s", root, ", ".join(todo), f" (forced: {', '.join(sorted(forced))})" if forced else ""
    )
    results = [stage_task(name, str(root), force=name in forced) for name in todo]
    ran = [r.stage for r in results if r.ran]
    logger.info("ran: %s", ", ".join(ran) if ran else "nothing (DVC: everything up to date)")
    return results


@flow(name="deunet-pipeline", log_prints=True)
def pipeline_flow(repo: str = ".", stages: list[str] | None = None, force: list[str] | None = None,
                  params: str = "params.yaml") -> list[StageResult]:  # fmt: skip
    """Bring the DVC pipeline of ``repo`` up to date, one task per stage in dvc.yaml order.

    stages: run only these (default: all; the last one in dvc.yaml is ``register``, the registry gate).
    force: stages DVC must re-run even if nothing changed.
    params: file with the ``orchestrate`` section (retries), relative to ``repo``.
    Returns one StageResult per stage run; a failing stage fails the flow with StageFailed.
    """
    root = Path(repo).resolve()
    return _run_stages(root, *select_stages(stage_names(root), stages, force), params)


@flow(name="deunet-retrain", log_prints=True)
def retrain_flow(repo: str = ".", params: str = "params.yaml") -> list[StageResult]:
    """Scheduled retraining: re-fetch the data (``download`` is forced), then run every later stage.

    DVC re-runs preprocessing, training and evaluation only if the data changed, and ``register``
    promotes a new model to champion only through its gate.
    """
    root = Path(repo).resolve()
    return _run_stages(root, *retrain_stages(root), params)


def retrain_deployment(
    repo: Path | str, cfg: OrchestrateConfig, params: str = "params.yaml"
) -> RunnerDeployment:
    """The scheduled deployment of ``retrain_flow`` on ``repo``: ``cfg.cron`` in ``cfg.timezone``, one run at a time.

    Call it outside an event loop (``to_deployment`` returns a coroutine inside one).
    """
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    root = Path(repo).resolve()
    parameters: dict[str, Any] = {"repo": str(root), "params": params}
    deployment = retrain_flow.to_deployment(
        cfg.deployment,
        schedules=[Cron(cfg.cron, timezone=cfg.timezone)],
        concurrency_limit=1,  # a run that comes due while one is running waits for it
        parameters=parameters,
        description=f"Retrain {root}: force the {DATA_STAGE} stage, then `dvc repro` the rest",
        tags=["deunet", "retrain"],
        # Runs import the flow by module name (the package is installed), whatever the runner's cwd.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return cast("RunnerDeployment", deployment)
