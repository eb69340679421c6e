"""MLflow tracking: one logging facade for train, evaluate and tuning.

``make_tracker`` is the entry point: it returns a real ``Tracker`` on rank 0 when tracking is enabled
and a do-nothing ``NullTracker`` otherwise, so callers never branch on rank or config. ``mlflow`` itself
is imported lazily (it takes seconds), only when a real run starts.
"""

from pipeline.tracking.config import TrackingConfig, resolve_tracking_uri
from pipeline.tracking.errors import TrackingError
from pipeline.tracking.provenance import dvc_data_hashes, git_commit, provenance_tags
from pipeline.tracking.tracker import NullTracker, Tracker, make_tracker

__all__ = [
    "NullTracker",
    "Tracker",
    "TrackingConfig",
    "TrackingError",
    "dvc_data_hashes",
    "git_commit",
    "make_tracker",
    "provenance_tags",
    "resolve_tracking_uri",
]
