"""The ``tune`` params section and where the Optuna study is stored."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config import check_pair
from pipeline.tracking.config import SQLITE_PREFIX, absolute_sqlite_uri

DEFAULT_DB_NAME = "optuna.db"
# The train params a study may override; train reads exactly these back from the tune stage's output.
TUNABLE = ("lr", "radius", "batch_size")


@dataclass(frozen=True)
class TuneConfig:
    """``tune`` section of params.yaml.

    enabled: run the study; false writes an empty override file, so train uses params.yaml as is.
    n_trials: finished (complete or pruned) trials the study should hold; a re-run of the same study
        only runs the missing ones.
    epochs: epochs per trial. lr: log-uniform range. radius: choices of r. batch_size: optional choices.
    fold: the fold whose validation Dice is maximised (None: the first of ``train.folds``).
    pruner: median | halving | none, fed the per-epoch validation Dice after ``warmup_epochs`` and once
        ``startup_trials`` trials have finished.
    enqueue_current: trial 0 uses params.yaml's lr and radius (skipped if they are outside the space).
    storage: Optuna storage URL; None: ``sqlite:///<repo>/optuna.db``. workers: local worker processes;
        more than one needs an RDB that takes concurrent writers (PostgreSQL, MySQL), not SQLite.
    """

    enabled: bool = False
    n_trials: int = 12
    epochs: int = 6
    lr: tuple[float, float] = (1e-5, 1e-2)
    radius: tuple[int, ...] = (0, 1, 2, 3)
    batch_size: tuple[int, ...] = ()
    fold: int | None = None
    sampler_seed: int = 0
    pruner: Literal["median", "halving", "none"] = "median"
    startup_trials: int = 2
    warmup_epochs: int = 1
    enqueue_current: bool = True
    storage: str | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        for name, low in (("n_trials", 1), ("epochs", 1), ("workers", 1), ("startup_trials", 0),
                          ("warmup_epochs", 0)):  # fmt: skip
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        check_pair("lr", self.lr, low=0.0)
        if self.lr[0] <= 0:
            raise ValueError(f"lr range must be positive (log scale), got {list(self.lr)}")
        if not self.radius or any(r < 0 for r in self.radius) or len(set(self.radius)) != len(self.radius):
            raise ValueError(f"radius must list distinct choices >= 0, got {list(self.radius)}")
        if any(b < 1 for b in self.batch_size) or len(set(self.batch_size)) != len(self.batch_size):
            raise ValueError(f"batch_size must list distinct choices >= 1, got {list(self.batch_size)}")
        if self.storage is not None and "://" not in self.storage:
            raise ValueError(
                f"storage must be a database URL such as sqlite:///optuna.db, got {self.storage!r}"
            )
        if self.workers > 1 and (self.storage or SQLITE_PREFIX).startswith(SQLITE_PREFIX):  # None: SQLite
            raise ValueError(
                f"workers = {self.workers} needs a storage that takes concurrent writers: set storage to a "
                "PostgreSQL URL (postgresql://user@host/db); SQLite is for one worker"
            )


def resolve_storage(cfg: TuneConfig, repo_root: Path) -> str:
    """The study's storage URL: ``cfg.storage`` (a relative SQLite path made absolute against
    ``repo_root``, like the MLflow default), else ``sqlite:///<repo_root>/optuna.db``."""
    if cfg.storage is None:
        return f"{SQLITE_PREFIX}{Path(repo_root).resolve() / DEFAULT_DB_NAME}"
    return absolute_sqlite_uri(cfg.storage, Path(repo_root).resolve())
