"""The tracking package's error: the tracking store cannot be used."""

from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.tracking.config import redact_uri

FIX_HINT = (
    "set tracking.tracking_uri in params.yaml or the MLFLOW_TRACKING_URI variable to a usable store "
    "(e.g. sqlite:////abs/path/mlflow.db), or set tracking.enabled: false"
)


class TrackingError(PipelineError):
    """The MLflow tracking store is unreachable, locked or corrupt; the message names the URI and the fix."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        self.problem = problem
        super().__init__(f"MLflow tracking store {redact_uri(uri)}: {problem}; {FIX_HINT}")

    def __reduce__(self):  # keep (uri, problem) when raised in a worker process
        return (type(self), (self.uri, self.problem))
