"""The logging facade: one MLflow run per ``Tracker``, a ``NullTracker`` where nothing should be logged.

Runs are written through ``MlflowClient`` with an explicit run id rather than MLflow's fluent API, so
there is no process-global "active run" to leak between folds, trials or tests, and parent/child runs
(tuning) are plain tags. Only rank 0 of a DDP job logs: ``make_tracker`` hands other ranks a
``NullTracker`` with the same methods.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.errors import DataError
from pipeline.tracking.config import TrackingConfig, redact_uri, resolve_tracking_uri, sqlite_path
from pipeline.tracking.errors import TrackingError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation, 3.x): values are cut here, not rejected there.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_BAD_KEY_CHARS = re.compile(r"[^\w.\- :/]")  # MLflow allows alphanumerics, _ - . space : /
_PARENT_TAG = "mlflow.parentRunId"
_SQLITE_TIMEOUT_S = 5.0
_DB_CONNECT_TIMEOUT_S = 10  # seconds a database server may take to accept the probe connection


def _quiet_mlflow() -> None:
    """Switch MLflow's telemetry off before it is imported (an explicit user setting wins)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow only honours DO_NOT_TRACK == "true" (not "1"), hence MLFLOW_DISABLE_TELEMETRY above.
    os.environ.setdefault("DO_NOT_TRACK", "true")


def sanitize_key(key: str) -> str:
    """``key`` made acceptable to MLflow: bad characters become ``_``, empty/``.``/``..`` path parts go."""
    cleaned = _BAD_KEY_CHARS.sub("_", str(key))
    parts = [p for p in cleaned.split("/") if p not in ("", ".", "..")]
    out = "/".join(parts)[:MAX_KEY_LENGTH].strip("/") or "_"
    if out != key:
        log.debug("metric/param key %r logged as %r", key, out)
    return out


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings flattened with dots: ``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@contextmanager
def _guard(uri: str, action: str) -> Iterator[None]:
    """Turn MLflow / SQLAlchemy / sqlite failures into one TrackingError naming the URI."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    try:
        yield
    except TrackingError:
        raise
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise TrackingError(uri, f"{action} failed ({_first_line(exc)})") from exc


def _check_sqlite(uri: str) -> None:
    """Fail fast on a SQLite store MLflow cannot use.

    MLflow retries a database it cannot open with exponential back-off for about 100 s before it
    gives up with an SQLAlchemy traceback; a direct sqlite3 probe answers in milliseconds.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    if path.is_dir():
        raise TrackingError(uri, f"{path} is a directory, not a SQLite database file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(uri, f"cannot create the folder {path.parent} ({exc})") from exc
    if not path.exists():
        return  # MLflow creates and migrates it
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=_SQLITE_TIMEOUT_S)
        try:
            con.execute("PRAGMA schema_version").fetchone()  # reads the header: fails on non-databases
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise TrackingError(uri, f"cannot open {path} as a SQLite database ({exc})") from exc


_SERVER_DB_SCHEMES = ("postgresql", "mysql", "mssql")


def _check_database_server(uri: str) -> None:
    """Fail fast on a database server that does not answer: MLflow would retry it for ~100 s."""
    if not uri.split("://", 1)[0].startswith(_SERVER_DB_SCHEMES):
        return
    from sqlalchemy import create_engine, text

    connect_args = (
        {"connect_timeout": _DB_CONNECT_TIMEOUT_S} if uri.startswith(("postgresql", "mysql")) else {}
    )
    try:
        engine = create_engine(uri, connect_args=connect_args)
        try:
            with engine.connect() as con:
                con.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # driver missing, bad URL, refused, wrong credentials, unknown database
        raise TrackingError(uri, f"cannot connect to the database ({_first_line(exc)})") from None


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go next to the database file (not under the current directory)."""
    path = sqlite_path(uri)
    return (path.parent / "mlartifacts").as_uri() if path is not None else None


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(name, artifact_location=_artifact_location(uri)))
        except MlflowException:  # another process created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise TrackingError(
            uri, f"experiment {name!r} is deleted (restore it with `mlflow experiments restore` or rename)"
        )
    return str(exp.experiment_id)


def _now_ms() -> int:
    return int(time.time() * 1000)


class RunTracker(Protocol):
    """What train, evaluate and tuning call; ``Tracker`` and ``NullTracker`` both provide it."""

    @property
    def run_id(self) -> str | None: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None: ...
    def log_artifacts(self, directory: Path | str, artifact_path: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> RunTracker: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def __enter__(self) -> RunTracker: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Tracker:
    """One MLflow run. Use as a context manager: the run ends FINISHED, or FAILED if the block raised
    (KILLED on Ctrl-C). Every store failure raises ``TrackingError`` naming the tracking URI."""

    def __init__(self, client: MlflowClient, uri: str, run_id: str, experiment_id: str) -> None:
        self._client = client
        self.uri = uri
        self._run_id = run_id
        self.experiment_id = experiment_id
        self._ended = False

    @classmethod
    def start(
        cls,
        cfg: TrackingConfig,
        repo_root: Path,
        run_name: str,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> Tracker:
        """Open (creating if needed) the store and experiment of ``cfg`` and start a run named ``run_name``.

        ``parent_run_id`` nests the run under another (tuning trials under the study's run).
        """
        uri = resolve_tracking_uri(cfg, repo_root)
        _check_sqlite(uri)
        _check_database_server(uri)
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        with _guard(uri, "opening the store"):
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(client, cfg.experiment, uri)
        return cls._create(client, uri, experiment_id, run_name, tags, parent_run_id)

    @classmethod
    def _create(
        cls,
        client: MlflowClient,
        uri: str,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, Any] | None,
        parent_run_id: str | None,
    ) -> Tracker:
        all_tags = {sanitize_key(k): str(v)[:MAX_TAG_VALUE_LENGTH] for k, v in (tags or {}).items()}
        if parent_run_id is not None:
            all_tags[_PARENT_TAG] = parent_run_id
        with _guard(uri, f"starting run {run_name!r}"):
            run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        log.info("MLflow run %s (%s) started in %s", run_name, run.info.run_id, redact_uri(uri))
        return cls(client, uri, run.info.run_id, experiment_id)

    @property
    def run_id(self) -> str:
        """The MLflow run id."""
        return self._run_id

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> Tracker:
        """A new run nested under this one, in the same experiment (one per tuning trial or fold)."""
        return self._create(self._client, self.uri, self.experiment_id, run_name, tags, self._run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` flattened with dots, as strings cut to MLflow's 6000-character limit."""
        from mlflow.entities import Param

        entries = [
            Param(sanitize_key(k), str(v)[:MAX_PARAM_VALUE_LENGTH]) for k, v in flatten(params).items()
        ]
        with _guard(self.uri, f"logging params to run {self._run_id}"):
            for i in range(0, len(entries), _PARAMS_PER_BATCH):
                self._client.log_batch(self._run_id, params=entries[i : i + _PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Log numeric ``metrics`` at ``step`` (epoch; None: 0). NaN and None values are skipped."""
        from mlflow.entities import Metric

        now = _now_ms()
        entries = []
        for key, value in metrics.items():
            if value is None:
                log.debug("metric %r is None at step %s: not logged", key, step)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric {key!r}: expected a number, got {value!r}") from None
            if math.isnan(number):
                log.debug("metric %r is NaN at step %s: not logged", key, step)
                continue
            entries.append(Metric(sanitize_key(key), number, now, step or 0))
        with _guard(self.uri, f"logging metrics to run {self._run_id}"):
            for i in range(0, len(entries), _METRICS_PER_BATCH):
                self._client.log_batch(self._run_id, metrics=entries[i : i + _METRICS_PER_BATCH])

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Copy the file ``path`` into the run's artifacts (under ``artifact_path`` if given)."""
        if not Path(path).is_file():
            raise DataError(path, "artifact to log is not a file")
        with _guard(self.uri, f"logging artifact {path}"):
            self._client.log_artifact(self._run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path | str, artifact_path: str | None = None) -> None:
        """Copy the contents of ``directory`` into the run's artifacts (under ``artifact_path`` if given)."""
        if not Path(directory).is_dir():
            raise DataError(directory, "artifact folder to log is not a directory")
        with _guard(self.uri, f"logging artifacts from {directory}"):
            self._client.log_artifacts(self._run_id, str(directory), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values stringified, cut to MLflow's 8000-character limit)."""
        from mlflow.entities import RunTag

        entries = [RunTag(sanitize_key(k), str(v)[:MAX_TAG_VALUE_LENGTH]) for k, v in tags.items()]
        with _guard(self.uri, f"setting tags on run {self._run_id}"):
            for i in range(0, len(entries), _PARAMS_PER_BATCH):
                self._client.log_batch(self._run_id, tags=entries[i : i + _PARAMS_PER_BATCH])

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED, FAILED, KILLED); later calls do nothing."""
        if self._ended:
            return
        with _guard(self.uri, f"ending run {self._run_id}"):
            self._client.set_terminated(self._run_id, status)
        self._ended = True

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.end("FINISHED")
            return
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            self.end(status)
        except TrackingError as end_exc:  # never hide the error that ended the block
            log.error("could not mark run %s %s: %s", self._run_id, status, end_exc)


class NullTracker:
    """Same methods as ``Tracker``, logging nothing: tracking disabled, or a DDP rank other than 0."""

    @property
    def run_id(self) -> None:
        """No run: always None."""
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Do nothing."""

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Do nothing."""

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Do nothing."""

    def log_artifacts(self, directory: Path | str, artifact_path: str | None = None) -> None:
        """Do nothing."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Do nothing."""

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> NullTracker:
        """Another NullTracker."""
        return NullTracker()

    def end(self, status: str = "FINISHED") -> None:
        """Do nothing."""

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def make_tracker(
    cfg: TrackingConfig,
    repo_root: Path,
    run_name: str,
    rank: int = 0,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> RunTracker:
    """A started ``Tracker`` on rank 0 with tracking enabled, else a ``NullTracker``.

    Tags typically come from ``provenance_tags(repo_root, stage)``.
    """
    if not cfg.enabled or rank != 0:
        return NullTracker()
    return Tracker.start(cfg, repo_root, run_name, tags=tags, parent_run_id=parent_run_id)
