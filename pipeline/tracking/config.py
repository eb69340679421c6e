"""The ``tracking`` params section and where the tracking store lives."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SQLITE_PREFIX = "sqlite:///"
DEFAULT_DB_NAME = "mlflow.db"


@dataclass(frozen=True)
class TrackingConfig:
    """``tracking`` section of params.yaml.

    enabled: log runs to MLflow at all (false: every tracker is a no-op).
    tracking_uri: MLflow tracking URI; None falls back to MLFLOW_TRACKING_URI, then to
        ``sqlite:///<repo>/mlflow.db`` (see ``resolve_tracking_uri``).
    experiment: MLflow experiment name the runs go to.
    """

    enabled: bool = True
    tracking_uri: str | None = None
    experiment: str = "deunet"

    def __post_init__(self) -> None:
        if self.tracking_uri is not None and not self.tracking_uri.strip():
            raise ValueError("tracking_uri must be a URI or null (null: MLFLOW_TRACKING_URI or the default)")
        if not self.experiment.strip():
            raise ValueError("experiment must be a non-empty name")


def absolute_sqlite_uri(uri: str, repo_root: Path) -> str:
    """``uri`` with a relative SQLite path made absolute against ``repo_root``; other URIs unchanged."""
    if not uri.startswith(SQLITE_PREFIX):
        return uri
    path = uri[len(SQLITE_PREFIX) :]
    if not path or path.startswith(":memory:") or Path(path).is_absolute():
        return uri
    return f"{SQLITE_PREFIX}{(repo_root / path).resolve()}"


def resolve_tracking_uri(cfg: TrackingConfig, repo_root: Path) -> str:
    """The tracking URI to use: ``cfg.tracking_uri``, else MLFLOW_TRACKING_URI, else the repo's SQLite file.

    The default is ``sqlite:////<absolute repo_root>/mlflow.db`` because MLflow 3 has the file store
    off and because a relative path would move with the working directory: DVC runs stages from the
    repo root, but torchrun workers, Prefect flows and notebooks may start elsewhere and would silently
    write to a second, empty database. For the same reason a relative SQLite path (``sqlite:///x.db``,
    three slashes then a relative path) from params or the environment is made absolute against
    ``repo_root``, not against the current directory. Other URIs (``http://...``,
    ``postgresql://...``, absolute ``sqlite:////...``) are returned as given.
    """
    repo_root = Path(repo_root).resolve()
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return f"{SQLITE_PREFIX}{repo_root / DEFAULT_DB_NAME}"
    return absolute_sqlite_uri(uri, repo_root)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory databases)."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = uri[len(SQLITE_PREFIX) :].split("?", 1)[0]
    if not path or path.startswith(":memory:"):
        return None
    return Path(path)


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (``postgresql://me:***@db/mlflow``), for logs,
    error messages and output files: a tracking or storage URI may carry credentials."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # unparsable (a bad port, say): keep only the scheme
        return uri.split("://", 1)[0] + "://***"
