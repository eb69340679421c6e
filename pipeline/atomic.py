"""Atomic outputs: write into a temporary sibling, then swap it into place.

A crash or an error part-way leaves the previous output (or nothing) behind, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(target: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` tree to ``target``, keeping the old target until that succeeded."""
    old = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))
    had_old = target.exists() or target.is_symlink()
    if had_old:
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if had_old:
            os.replace(old, target)
        raise
    if had_old:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write a file via a temporary sibling and an atomic rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write a UTF-8 text file atomically (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, text.encode("utf-8"))
