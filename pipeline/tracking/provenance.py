"""Provenance tags for a run: the git commit of the code and the DVC hashes of the data it read."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DATA_DIR = "data"
_GIT_TIMEOUT_S = 10


def _git(repo_root: Path, *args: str) -> str | None:
    """stdout of ``git args`` in ``repo_root``, or None if git is missing, fails or hangs."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git %s in %s failed: %s", " ".join(args), repo_root, exc)
        return None
    if done.returncode != 0:
        log.debug("git %s in %s exited %d: %s", " ".join(args), repo_root, done.returncode, done.stderr)
        return None
    return done.stdout


def git_commit(repo_root: Path) -> str | None:
    """HEAD's commit hash, with ``-dirty`` appended when tracked files differ from it.

    Untracked files do not count (DVC data and scratch files are not code). Returns None outside a git
    checkout, without commits, or without git installed; never raises.
    """
    head = _git(Path(repo_root), "rev-parse", "HEAD")
    if head is None:
        return None
    commit = head.strip()
    status = _git(Path(repo_root), "status", "--porcelain", "--untracked-files=no")
    if status is None:
        log.warning("git status failed in %s: cannot tell whether the checkout is dirty", repo_root)
    elif status.strip():
        commit += "-dirty"
    return commit


def _is_data(path: str) -> bool:
    return path == DATA_DIR or path.startswith(DATA_DIR + "/")


def _entry_hash(entry: dict[str, Any]) -> str | None:
    value = entry.get("md5") or entry.get(str(entry.get("hash", "")))
    return str(value) if value else None


def dvc_data_hashes(repo_root: Path, stage: str | None) -> dict[str, str]:
    """DVC hashes of the data a stage read, from ``repo_root/dvc.lock``: ``{"data.<path>": md5}``.

    With ``stage`` the deps of that stage under ``data/`` (directory hashes keep DVC's ``.dir``
    suffix); with None the outs under ``data/`` of every stage. A missing dvc.lock, an unknown stage or
    an unreadable lock file give ``{}`` (logged): provenance is recorded when known, never a failure.
    """
    lock = Path(repo_root) / "dvc.lock"
    try:
        data = yaml.safe_load(lock.read_text())
    except FileNotFoundError:
        log.debug("%s is missing: no data hashes recorded", lock)
        return {}
    except (OSError, yaml.YAMLError) as exc:
        log.warning("%s is unreadable (%s): no data hashes recorded", lock, exc)
        return {}
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        log.warning("%s has no 'stages' mapping: no data hashes recorded", lock)
        return {}
    if stage is not None:
        if stage not in stages:
            log.warning("%s has no stage %r (known: %s)", lock, stage, ", ".join(stages))
            return {}
        entries = (stages[stage] or {}).get("deps") or []
    else:
        entries = [out for body in stages.values() for out in (body or {}).get("outs") or []]
    hashes = {}
    for entry in entries:
        if not isinstance(entry, dict) or not _is_data(str(entry.get("path", ""))):
            continue
        digest = _entry_hash(entry)
        if digest is not None:
            hashes[f"data.{entry['path']}"] = digest
    return hashes


def provenance_tags(repo_root: Path, stage: str | None) -> dict[str, str]:
    """Tags naming the code and data of a run: ``git_commit`` (if known) and ``data.<path>`` hashes."""
    tags = dvc_data_hashes(repo_root, stage)
    commit = git_commit(repo_root)
    if commit is not None:
        tags["git_commit"] = commit
    return tags
