"""Optuna tuning of the learning rate and the temporal radius r (optionally the batch size).

``TuneConfig`` is the ``tune`` params section; ``run_study`` runs (or continues) a study in one or
several worker processes against SQLite or an RDB such as PostgreSQL; ``best_overrides`` is what the
train stage reads back.
"""

from pipeline.tuning.config import TuneConfig, resolve_storage
from pipeline.tuning.study import StudyResult, run_study, run_worker, study_key

__all__ = ["StudyResult", "TuneConfig", "resolve_storage", "run_study", "run_worker", "study_key"]
