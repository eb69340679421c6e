"""train.loader "device": the fold's clips on the device, batches augmented there in one grid per sample.

Batched augmentation equals ``augment.apply`` sample by sample (exactly for flips and quarter turns, to
rounding for rotations and zooms); the device loader trains reproducibly and resumes exactly on the CPU;
validation Dice counted on the device equals the per-batch count on the host; checkpoint writes in the
background surface their errors.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.errors import DataError
from pipeline.models import build_model, class_map
from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.training.augment import AugmentConfig, AugmentParams, apply
from pipeline.training.batch_augment import augment_batch, epoch_params, epoch_table, param_table
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import ClipDataset
from pipeline.training.device_data import DeviceClips
from pipeline.training.trainer import resolve_loader, train_fold, validation_dice
from pipeline.training.writer import CheckpointWriter
from pipeline.vocabulary import STRUCTURES

CPU = torch.device("cpu")
CFG = TrainConfig(model="unet", model_args={"base_channels": 4, "depth": 2}, max_epochs=2, batch_size=8,
                  patience=3, seed=2, threads=1, device="cpu", loader="device")  # fmt: skip


def _images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random clips (n, 3, S, S) and blob labels (n, S, S): realistic for interpolation."""
    g = torch.Generator().manual_seed(seed)
    clip = F.interpolate(torch.randn(n, 3, 6, 6, generator=g), size=(size, size), mode="bilinear")
    coarse = torch.randint(0, 4, (n, 1, 5, 5), generator=g).float()
    label = F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    return clip, label


def _params(n: int, rng: np.random.Generator, warp: bool, crop: int) -> list[AugmentParams]:
    return [AugmentParams(mirror=bool(rng.random() < 0.5), flip=bool(rng.random() < 0.5), k90=int(rng.integers(4)),
                          angle_deg=float(rng.uniform(-20, 20)) if warp and i % 3 else 0.0,
                          gain=float(rng.uniform(0.9, 1.1)), offset=float(rng.uniform(-0.1, 0.1)),
                          zoom=float(rng.uniform(0.7, 1.4)) if warp and i % 2 else 1.0,
                          crop_at=(float(rng.random()), float(rng.random())) if crop else (0.5, 0.5))
            for i in range(n)]  # fmt: skip


@pytest.mark.parametrize("crop", [0, 12])
@pytest.mark.parametrize("warp", [False, True])
def test_batched_augmentation_equals_apply_per_sample(crop: int, warp: bool) -> None:
    """30 px (not a power of two: grid coordinates are inexact); with ``warp`` a batch mixes rotated or
    zoomed samples (every sample with i % 6 != 0) and pure flips / quarter turns (i % 6 == 0)."""
    n, size = 12, 30
    clip, label = _images(n, size)
    params = _params(n, np.random.default_rng(crop + warp), warp, crop)
    out, out_label = augment_batch(clip, label, param_table(params, size, crop, CPU))
    side = crop or size
    assert (
        out.shape == (n, 3, side, side)
        and out_label.shape == (n, side, side)
        and out_label.dtype == torch.int64
    )
    for i, p in enumerate(params):
        ref, ref_label = apply(clip[i], label[i], p, crop)
        if p.angle_deg or p.zoom != 1.0:
            torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-4)
            assert (out_label[i] == ref_label).float().mean() >= 0.99
        else:  # a pixel permutation: bit for bit
            assert torch.equal(out[i], ref) and torch.equal(out_label[i], ref_label), p


def test_device_batches_replay_the_dataset(tiny_data: Path) -> None:
    """Unaugmented batches are ClipDataset's items; with flips, quarter turns, intensity and crop (no
    rotation or zoom) the epoch's table reproduces ClipDataset's augmented items exactly."""
    store = ClipStore(tiny_data / "pre")
    indices = np.arange(3, 15)
    clips = DeviceClips(store, indices, 2, CPU)
    pos = torch.tensor([5, 0, 11, 5])
    clip, label = clips.batch(pos)
    plain = ClipDataset(store, indices, 2)
    for b, i in enumerate(pos.tolist()):
        assert torch.equal(clip[b], plain[i][0]) and torch.equal(label[b], plain[i][1])
    cfg = AugmentConfig(rotate_deg=0.0, scale=0.0, crop=16)
    table = epoch_table(indices, 4, 3, cfg, store.size, CPU)
    params = epoch_params(indices, 4, 3, cfg)
    out, out_label = augment_batch(clip, label, table.take(pos, pos.numpy()))
    for b, i in enumerate(pos.tolist()):
        ref, ref_label = apply(*plain[i], params[i], cfg.crop)
        assert torch.equal(out[b], ref) and torch.equal(out_label[b], ref_label)
    assert sum(len(c) for c, _ in clips.batches(5)) == len(indices)
    with pytest.raises(ValueError, match="exceeds the store's max_radius 3"):
        DeviceClips(store, indices, 4, CPU)


def test_loader_auto_is_workers_on_the_cpu() -> None:
    assert resolve_loader(replace(CFG, loader="auto"), CPU) == "workers"
    assert resolve_loader(replace(CFG, loader="auto"), torch.device("cuda", 0)) == "device"
    assert resolve_loader(CFG, CPU) == "device"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_device_loader_trains_reproducibly(tiny_data: Path, tmp_path: Path) -> None:
    store, spec = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")["folds"][0]
    runs = [train_fold(store, spec["train"], spec["val"], CFG, tmp_path / f"run{k}", 0, progress=False)
            for k in range(2)]  # fmt: skip
    a, b = _weights(tmp_path / "run0" / "final.pt"), _weights(tmp_path / "run1" / "final.pt")
    for key, value in a.items():
        assert torch.equal(b[key], value), key
    timing = ("seconds", "train_s")
    strip = [[{k: v for k, v in row.items() if k not in timing} for row in r.history] for r in runs]
    assert strip[0] == strip[1]
    row = runs[0].history[-1]
    assert row["clips"] == len(store.indices_for(spec["train"])) and 0 < row["train_s"] <= row["seconds"]
    assert 0 <= row["val_dice"] <= 1 and math.isfinite(row["train_loss"])


class _Stop(Exception):
    pass


def test_device_loader_resumes_exactly(tiny_data: Path, tmp_path: Path) -> None:
    """Killed after epoch 1 (its checkpoint written in the background is on disk when train_fold
    returns), resumed: the same final weights as an uninterrupted run, with crop windows and deep
    supervision on."""
    store, spec = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")["folds"][0]
    cfg = replace(CFG, deep_supervision=1, augment=AugmentConfig(crop=16))
    clean = train_fold(store, spec["train"], spec["val"], cfg, tmp_path / "clean", 0, progress=False)

    def stop(row: dict[str, float]) -> None:
        if row["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train_fold(store, spec["train"], spec["val"], cfg, tmp_path / "cut", 0, stop, progress=False)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = train_fold(store, spec["train"], spec["val"], cfg, tmp_path / "cut", 0, progress=False)
    assert resumed.resumed_from == 1 and resumed.epochs_run == clean.epochs_run == 2
    a, b = _weights(tmp_path / "clean" / "final.pt"), _weights(tmp_path / "cut" / "final.pt")
    for key, value in a.items():
        assert torch.equal(b[key], value), key


def test_checkpoint_every_s_writes_last_only_when_due_and_at_the_end(tiny_data: Path, tmp_path: Path) -> None:
    """With a long interval a killed run finds no last.pt after epoch 1 (the best one is there, scored),
    and a finished run leaves last.pt of its last epoch; 0 (the default) writes it every epoch."""
    store, spec = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")["folds"][0]
    cfg = replace(CFG, max_epochs=3, checkpoint_every_s=1e6)
    seen: list[bool] = []

    def stop(row: dict[str, float]) -> None:
        seen.append((tmp_path / "cut" / "last.pt").exists())
        if row["epoch"] == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train_fold(store, spec["train"], spec["val"], cfg, tmp_path / "cut", 0, stop, progress=False)
    assert seen == [False, False] and (tmp_path / "cut" / "best.pt").is_file()
    assert not (tmp_path / "cut" / "last.pt").exists()
    done = train_fold(store, spec["train"], spec["val"], cfg, tmp_path / "cut", 0, progress=False)
    assert done.resumed_from is None and done.epochs_run == 3
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 3
    with pytest.raises(ValueError, match="checkpoint_every_s must be >= 0"):
        replace(CFG, checkpoint_every_s=-1.0)


@torch.no_grad()
def _per_batch_dice(model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
    """validation_dice as it was: each batch's prediction moved to the host and counted there."""
    model.eval()
    inter = torch.zeros(4, dtype=torch.float64)
    total = torch.zeros(4, dtype=torch.float64)
    for clip, label in loader:
        pred = class_map(model(clip)).cpu()
        for c in STRUCTURES.values():
            p, g = pred == c, label == c
            inter[c] += (p & g).sum()
            total[c] += p.sum() + g.sum()
    scores = {name: float(2 * inter[c] / total[c]) if total[c] else 1.0 for name, c in STRUCTURES.items()}
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def test_validation_dice_counts_on_the_device_as_per_batch(tiny_data: Path) -> None:
    store = ClipStore(tiny_data / "pre")
    torch.manual_seed(0)
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    indices = np.arange(len(store))[:20]
    loader = DataLoader(ClipDataset(store, indices, 1), batch_size=6)
    expected = _per_batch_dice(model, loader)
    assert validation_dice(model, loader, CPU, bf16=False) == expected
    clips = DeviceClips(store, indices, 1, CPU)
    assert validation_dice(model, clips.batches(24), CPU, bf16=False) == expected


def test_background_writer_raises_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = {"model_name": "unet", "state_dict": {"w": torch.ones(2)}}
    with CheckpointWriter() as writer:
        writer.submit([(tmp_path / "a.pt", payload)])
    assert torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]["w"].sum() == 2

    def full_disk(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    writer = CheckpointWriter()
    writer.submit([(tmp_path / "b.pt", payload), (tmp_path / "c.pt", payload)])
    with pytest.raises(DataError, match=r"b\.pt: cannot write checkpoint \(No space left on device"):
        writer.submit([(tmp_path / "d.pt", payload)])  # the previous error, raised before d.pt starts
    writer.close()  # d.pt was never started: nothing left to wait for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]  # nothing partial, c.pt never attempted


def test_an_error_leaving_the_loop_is_not_hidden_by_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(KeyError, match="from the loop"), CheckpointWriter() as writer:
        writer.submit([(tmp_path / "e.pt", {"state_dict": {}})])
        raise KeyError("from the loop")
    assert not list(tmp_path.iterdir())


def test_epoch_table_is_seeded_per_epoch_and_sample_and_matches_its_params() -> None:
    """The vectorised draw replays for the same (seed, epoch), does not depend on which samples are asked
    for, differs between epochs, and equals the table of the same parameters built one by one."""
    cfg = AugmentConfig(crop=16)
    indices = np.array([7, 2, 30, 11])
    table = epoch_table(indices, 1, 5, cfg, 32, CPU)
    again = epoch_table(np.array([30, 7]), 1, 5, cfg, 32, CPU)
    assert torch.equal(again.theta, table.theta[[2, 0]]) and torch.equal(again.corner, table.corner[[2, 0]])
    assert not torch.equal(epoch_table(indices, 1, 6, cfg, 32, CPU).theta, table.theta)
    one_by_one = param_table(epoch_params(indices, 1, 5, cfg), 32, cfg.crop, CPU)
    for name in ("theta", "gain", "offset", "corner", "warp"):
        assert torch.allclose(getattr(one_by_one, name).double(), getattr(table, name).double(), atol=1e-6), (
            name
        )
    assert np.array_equal(one_by_one.warp_host, table.warp_host) and table.warp_host.any()
    draws = epoch_params(np.arange(400), 0, 1, cfg)
    assert 150 < sum(p.mirror for p in draws) < 250 and {p.k90 for p in draws} == {0, 1, 2, 3}
    assert all(abs(p.angle_deg) <= cfg.rotate_deg and 1 / 1.4 <= p.zoom <= 1.4 for p in draws)
