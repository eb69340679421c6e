"""Prefect orchestration: the DVC pipeline as a flow of ``dvc repro <stage>`` tasks, and scheduled retraining.

DVC stays the source of truth for what is stale; Prefect adds retries, logs, run history and a schedule.
``flows`` (which imports prefect, seconds) is not imported here: ``from pipeline.orchestration.flows import
pipeline_flow``.
"""

from pipeline.orchestration.config import OrchestrateConfig

__all__ = ["OrchestrateConfig"]
