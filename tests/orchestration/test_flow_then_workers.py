"""Training with DataLoader workers in a process that has run a Prefect flow: forked workers inherited
Prefect's threads and at-fork hooks and exited with code 1 at the end of each epoch (seen in CI, in the GPU
check's dry run after the orchestration tests). Workers now start from a forkserver."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from prefect import flow

from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.training.config import TrainConfig
from pipeline.training.trainer import train_fold

pytestmark = pytest.mark.usefixtures("prefect_server")
CFG = TrainConfig(model="unet", model_args={"base_channels": 4, "depth": 2}, max_epochs=2, batch_size=8,
                  patience=2, seed=3, threads=1, warmup_epochs=0)  # fmt: skip


@flow
def _answer() -> int:
    return 42


def test_workers_after_an_in_process_flow_train_exactly_like_no_workers(
    tiny_data: Path, tmp_path: Path
) -> None:
    assert _answer() == 42  # Prefect's client, event loop and services now live in this process
    store, spec = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")["folds"][0]
    # the store travels to the workers as its path, not as copies of the memory-mapped arrays
    assert len(pickle.dumps(store)) < 1000 < store.frames.nbytes
    same = pickle.loads(pickle.dumps(store))
    assert (same.clip(3, 1) == store.clip(3, 1)).all() and (same.label(3) == store.label(3)).all()
    runs = {}
    for workers in (0, 2):
        cfg = replace(CFG, num_workers=workers)
        runs[workers] = train_fold(store, spec["train"], spec["val"], cfg, tmp_path / str(workers), 0,
                                   progress=False)  # fmt: skip
    assert runs[2].epochs_run == runs[0].epochs_run == 2
    a, b = (torch.load(tmp_path / w / "final.pt", weights_only=True)["state_dict"] for w in ("0", "2"))
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0)
