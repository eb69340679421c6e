"""Run keys: a training run (or tuning study) is identified by its params, its data, its split and the
code that trains it, so checkpoints or trials of one never leak into another."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.preprocessing.store import ClipStore
from pipeline.training.config import TrainConfig

_PIPELINE = Path(__file__).resolve().parents[1]


def code_digest() -> str:
    """Digest of the model, checkpoint and training code, so a code change never resumes an older run's checkpoints."""
    digest = hashlib.sha256()
    files = [*(_PIPELINE / "models").rglob("*.py"), *(_PIPELINE / "checkpoint").rglob("*.py"),
             *(_PIPELINE / "training").rglob("*.py")]  # fmt: skip
    for path in sorted(files):
        digest.update(path.relative_to(_PIPELINE).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def content_key(*parts: Any) -> str:
    """A 16-hex-digit key of JSON-serialisable ``parts`` plus the training code digest."""
    blob = json.dumps([*parts, code_digest()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_key(cfg: TrainConfig, store: ClipStore, split_path: Path) -> str:
    """Identifies a training run: its params, the data it reads, the split and the code. Checkpoints of a
    killed run with the same key are resumed; any change starts afresh in a new folder."""
    return content_key(asdict(cfg), store.meta, split_path.read_text())
