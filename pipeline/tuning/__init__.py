"""Optuna tuning of the learning rate and the temporal radius r (optionally the batch size).

``TuneConfig`` is the ``tune`` params section; ``run_study`` runs (or continues) a study in one or
several worker processes against SQLite or an RDB such as PostgreSQL, and writes the best trial's
``train`` overrides (data/tune/best_params.yaml) that the train stage reads back
(``stages.train.tuned_overrides``).
"""

from typing import Any

from pipeline.tuning.config import TuneConfig, resolve_storage

# The study module imports torch and optuna: load it on first use, so reading TuneConfig (or the train
# stage's TUNABLE) stays light.
_STUDY = ("StudyResult", "run_study", "run_worker", "study_key")


def __getattr__(name: str) -> Any:
    if name in _STUDY:
        from pipeline.tuning import study

        return getattr(study, name)
    raise AttributeError(f"module 'pipeline.tuning' has no attribute {name!r}")


__all__ = ["StudyResult", "TuneConfig", "resolve_storage", "run_study", "run_worker", "study_key"]
