"""Provenance tags from a real temporary git repository and a hand-written dvc.lock."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.tracking import dvc_data_hashes, git_commit, provenance_tags

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")

DVC_LOCK = """\
schema: '2.0'
stages:
  preprocess:
    cmd: python -m stages.preprocess
    deps:
    - path: data/raw
      hash: md5
      md5: 41b6e8f8bb36fdfbdab58ef361503e4d.dir
      size: 10
    - path: pipeline/preprocessing
      hash: md5
      md5: aaaa.dir
    outs:
    - path: data/preprocessed
      hash: md5
      md5: 5e5e.dir
  train:
    cmd: python -m stages.train
    deps:
    - path: data/preprocessed
      hash: md5
      md5: 5e5e.dir
    - path: data/split/folds.json
      hash: md5
      md5: f01d
    - path: stages/train.py
      md5: c0de
    - path: database/x
      md5: notdata
    outs:
    - path: data/train
      hash: md5
      md5: 7a7a.dir
"""


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    (tmp_path / "dvc.lock").write_text(DVC_LOCK)
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "dvc.lock", "code.py")
    _git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


def test_git_commit_matches_head_and_marks_dirty(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    (repo / "untracked.txt").write_text("scratch")  # untracked files do not make it dirty
    assert git_commit(repo) == head
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo) == f"{head}-dirty"


def test_git_commit_none_outside_git(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "does-not-exist") is None


def test_stage_deps_under_data(repo: Path) -> None:
    assert dvc_data_hashes(repo, "train") == {
        "data.data/preprocessed": "5e5e.dir",
        "data.data/split/folds.json": "f01d",
    }
    assert dvc_data_hashes(repo, "no-such-stage") == {}


def test_all_data_outs_when_no_stage(repo: Path) -> None:
    assert dvc_data_hashes(repo, None) == {
        "data.data/preprocessed": "5e5e.dir",
        "data.data/train": "7a7a.dir",
    }


def test_missing_or_broken_lock_gives_no_hashes(tmp_path: Path) -> None:
    assert dvc_data_hashes(tmp_path, "train") == {}
    (tmp_path / "dvc.lock").write_text("stages: [unclosed")
    assert dvc_data_hashes(tmp_path, "train") == {}


def test_provenance_tags_combine_both(repo: Path) -> None:
    tags = provenance_tags(repo, "preprocess")
    assert tags == {
        "git_commit": _git(repo, "rev-parse", "HEAD"),
        "data.data/raw": "41b6e8f8bb36fdfbdab58ef361503e4d.dir",
    }
