"""Typed errors of the pipeline.

Every error that a user can cause (bad files, bad params, failed checks) is a subclass of
``PipelineError`` and its message names the file (or key) and what is wrong with it, so that a
stage fails with one readable line instead of a traceback from deep inside a library.
"""

from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class ConfigError(PipelineError):
    """A params.yaml key is missing, has the wrong type or an invalid value."""


class DataError(PipelineError):
    """A data file (NIfTI, Info.cfg, array) is missing, unreadable or inconsistent.

    The message always starts with the offending path, then states the problem, e.g.
    ``data/raw/patient001/patient001_4d.nii.gz: expected a 4D image (X, Y, Z, T), got 3D shape (10, 10, 8)``.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # keep (path, problem) when raised in a worker process
        return (type(self), (self.path, self.problem))


class DownloadError(PipelineError):
    """Fetching or extracting the dataset archive failed."""


class ChecksumError(DownloadError):
    """The downloaded archive's sha256 differs from the one in params."""


class UnsafeArchiveError(DownloadError):
    """An archive member would be written outside the extraction target (zip-slip) or is a link/device."""


class RequestError(PipelineError, ValueError):
    """An image handed to the pipeline in memory or over HTTP is unusable (not NIfTI, wrong
    dimensionality, too large, NaN, ...). A ValueError too, for callers that catch those."""
