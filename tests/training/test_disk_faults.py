"""Training under a full disk or an unwritable output folder: a clear error naming the checkpoint, the
last good checkpoint untouched, no temporary files, and a clean resume once there is room again."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint.io import load_checkpoint
from pipeline.errors import DataError
from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.training.config import TrainConfig
from pipeline.training.trainer import train_fold

CFG = TrainConfig(model="unet", model_args={"base_channels": 4, "depth": 2}, max_epochs=3, batch_size=8,
                  threads=1, device="cpu")  # fmt: skip


class Stop(Exception):
    pass


def _train(tiny_data: Path, work: Path, stop_after: int | None = None):
    def on_epoch(row: dict[str, float]) -> None:
        if stop_after is not None and row["epoch"] >= stop_after:
            raise Stop  # as if the process had been killed after this epoch's checkpoint

    fold = read_split(tiny_data / "folds.json")["folds"][0]
    return train_fold(
        ClipStore(tiny_data / "pre"), fold["train"], fold["val"], CFG, work, 0, on_epoch, progress=False
    )


def test_disk_full_mid_training_keeps_the_last_checkpoint_and_resumes(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "fold0"
    with pytest.raises(Stop):
        _train(tiny_data, work, stop_after=1)  # epoch 1 is safely on disk
    good = (work / "last.pt").read_bytes()

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        Path(f).write_bytes(b"partial")  # the write started, then the disk filled up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DataError, match=r"(best|last).pt: cannot write checkpoint \(No space left on device; .* MiB free"
                       r" there\); the previous checkpoint is kept"):  # fmt: skip
        _train(tiny_data, work)
    assert (work / "last.pt").read_bytes() == good  # untouched, still loadable
    assert load_checkpoint(work / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in work.iterdir()) == ["best.pt", "last.pt"]  # no temporary file left

    monkeypatch.setattr(torch, "save", real_save)  # room again: the run resumes after epoch 1
    result = _train(tiny_data, work)
    assert result.resumed_from == 1 and result.epochs_run == 3


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (needs mount privileges: root in a container that allows it)."""
    mnt = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[:100]}); the simulated test covers it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_really_full_filesystem_fails_cleanly(tiny_data: Path, tiny_filesystem: Path) -> None:
    work = tiny_filesystem / "fold0"
    with pytest.raises(
        DataError, match=r"fold0/(best|last).pt: cannot write checkpoint .*nothing was written"
    ):
        _train(tiny_data, work)
    # No partial or temporary file fills the disk; what is there (best.pt fits) is a whole checkpoint.
    assert {p.name for p in work.iterdir()} <= {"best.pt"}
    for path in work.iterdir():
        assert load_checkpoint(path)["epoch"] == 1


def test_output_folder_that_cannot_be_created_is_named(tiny_data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should go")
    with pytest.raises(
        DataError, match=r"not-a-folder/fold0/(best|last).pt: cannot create the checkpoint folder"
    ):
        _train(tiny_data, blocker / "fold0")
