"""Checkpoints written in a background thread, so the training loop does not wait for the disk.

The loop hands over payloads already copied to the CPU (pipeline.checkpoint.io.snapshot) and goes
on with the next epoch. One write runs at a time: a new submission first waits for the previous one and
re-raises its error (a full disk still stops training, one epoch later), and leaving the ``with`` block
waits for the last one, so every checkpoint of a finished (or interrupted) ``train_fold`` is on disk when
it returns. Each file is still written atomically by ``write_checkpoint``.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.checkpoint.io import write_checkpoint

log = logging.getLogger(__name__)


def _write_all(files: list[tuple[Path, dict[str, Any]]]) -> None:
    for path, payload in files:  # in order: the first failure stops the rest, as a synchronous save did
        write_checkpoint(path, payload)


class CheckpointWriter:
    """One background thread writing lists of (path, payload) in submission order.

    Use as a context manager: on a normal exit the last write is waited for and its error raised; when the
    block is left by an exception, the last write is still waited for, and its own error (if any) is
    logged rather than hiding the exception that is on its way out.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: Future[None] | None = None

    def submit(self, files: list[tuple[Path, dict[str, Any]]]) -> None:
        """Wait for the previous write (raising its error), then start writing ``files`` in the background."""
        self.wait()
        self._pending = self._pool.submit(_write_all, files)

    def wait(self) -> None:
        """Block until the write in progress (if any) is done; re-raise the error it ended with."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        error = pending.exception()
        # Raised from here, the error's traceback holds this frame: dropping the future first avoids a
        # reference cycle (error -> frame -> future -> error) that would keep the failed write's frames,
        # and the temporary file they hold open, alive until the garbage collector runs.
        del pending
        if error is not None:
            try:
                raise error
            finally:
                del error

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as error:  # the exception already leaving the block is the one to report
            log.error("checkpoint write failed while training stopped on %s: %s", exc_type.__name__, error)
