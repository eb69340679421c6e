"""Augmentation replays from its seed and moves clip and labels together; checkpoints rebuild and refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.checkpoint.io import (
    check_compatible,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from pipeline.errors import DataError
from pipeline.models import build_model
from pipeline.preprocessing.store import ClipStore
from pipeline.training.augment import AugmentConfig, AugmentParams, apply, sample_params, sample_rng
from pipeline.training.dataset import ClipDataset


def test_same_seed_epoch_index_replays_exactly() -> None:
    cfg = AugmentConfig()
    a = sample_params(sample_rng(3, 5, 17), cfg)
    assert a == sample_params(sample_rng(3, 5, 17), cfg)
    draws = {sample_params(sample_rng(3, e, 17), cfg) for e in range(20)}
    assert len(draws) > 15  # other epochs draw other transforms


def test_geometry_is_shared_by_clip_and_labels() -> None:
    label = torch.zeros(16, 16, dtype=torch.long)
    label[2:6, 3:12] = 3
    label[9:14, 1:4] = 1
    clip = label.float()[None].repeat(3, 1, 1)
    for k90 in range(4):
        p = AugmentParams(mirror=True, flip=k90 == 1, k90=k90, angle_deg=0.0, gain=1.0, offset=0.0)
        c, lab = apply(clip, label, p)
        for f in range(3):
            assert torch.equal(c[f], lab.float())
        assert not torch.equal(lab, label)
    # a small rotation moves labels and image alike (nearest vs bilinear: agree away from edges)
    c, lab = apply(clip, label, AugmentParams(False, False, 0, 10.0, 1.0, 0.0))
    assert (c[1].round() == lab.float()).float().mean() > 0.9


def test_dataset_items_replay(tiny_data: Path) -> None:
    store = ClipStore(tiny_data / "pre")
    ds = ClipDataset(store, np.arange(6), radius=2, augment=AugmentConfig(), seed=1)
    ds.set_epoch(4)
    clip, lab = ds[3]
    assert clip.shape == (5, 32, 32) and lab.shape == (32, 32) and lab.dtype == torch.int64
    ds.set_epoch(4)
    again, lab2 = ds[3]
    assert torch.equal(clip, again) and torch.equal(lab, lab2)
    with pytest.raises(ValueError, match="exceeds the store's max_radius 3"):
        ClipDataset(store, np.arange(3), radius=4)


def test_checkpoint_rebuilds_and_refuses_other_model_or_radius(tmp_path: Path) -> None:
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, None, epoch=3)
    ckpt = load_checkpoint(path)
    again = model_from_checkpoint(ckpt)
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    assert torch.equal(again(x), model(x)) and ckpt["epoch"] == 3
    with pytest.raises(DataError, match="checkpoint is for model 'unet', not 'deunet'"):
        check_compatible(path, ckpt, "deunet", dict(model.config))
    other_r = {**model.config, "radius": 2}
    with pytest.raises(DataError, match="radius: checkpoint 1 vs requested 2"):
        check_compatible(path, ckpt, "unet", other_r)


def test_corrupt_or_foreign_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"bad\.pt: cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="not a pipeline checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="checkpoint is missing"):
        load_checkpoint(tmp_path / "none.pt")


def test_learning_rate_schedules() -> None:
    from pipeline.training.schedule import learning_rate

    assert learning_rate(1e-3, "constant", 5.5, 10) == 1e-3
    assert learning_rate(1e-3, "poly", 0.0, 10) == pytest.approx(1e-3)
    assert learning_rate(1e-3, "poly", 5.0, 10) == pytest.approx(1e-3 * 0.5**0.9)
    assert learning_rate(1e-3, "cosine", 5.0, 10) == pytest.approx(0.5e-3)
    assert learning_rate(1e-3, "cosine", 9.999, 10) < 1e-8
    warm = [learning_rate(1e-3, "poly", e, 10, warmup_epochs=2) for e in (0.0, 1.0, 1.999, 2.0)]
    assert warm[0] < 1e-5 and warm[1] == pytest.approx(0.5e-3, rel=1e-2) and warm[3] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="schedule must be one of"):
        learning_rate(1e-3, "step", 1.0, 10)


def test_deep_supervision_hooks_the_segmentation_decoder() -> None:
    import torch

    from pipeline.models import DiceCELoss, build_model
    from pipeline.training.deep_supervision import DeepSupervision

    torch.manual_seed(0)
    model = build_model("deunet", radius=1, base_channels=4, depth=3)
    ds = DeepSupervision(model, 2, 4)
    clip, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    logits = model(clip)
    loss = ds.loss(logits, labels, DiceCELoss())
    loss.backward()
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in ds.heads)
    assert ds.weights.tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    with pytest.raises(ValueError, match="has none"):
        DeepSupervision(build_model("gridnet", radius=1, base_channels=4, depth=2), 1, 4)
    with pytest.raises(ValueError, match=r"deep_supervision must be in 1\.\.2"):
        DeepSupervision(model, 3, 4)


def test_scale_augmentation_zooms_clip_and_labels_together() -> None:
    cfg = AugmentConfig(scale=0.4)
    zooms = [sample_params(np.random.default_rng([0, 1, i]), cfg).zoom for i in range(200)]
    assert min(zooms) >= 1 / 1.4 - 1e-9 and max(zooms) <= 1.4 + 1e-9 and np.std(zooms) > 0.05
    assert sample_params(np.random.default_rng(0), AugmentConfig(scale=0.0)).zoom == 1.0
    label = torch.zeros(64, 64, dtype=torch.long)
    label[24:40, 24:40] = 3
    clip = (label[None].float() * 2.0).repeat(3, 1, 1)
    params = AugmentParams(mirror=False, flip=False, k90=0, angle_deg=0.0, gain=1.0, offset=0.0, zoom=1.5)
    out_clip, out_label = apply(clip, label, params)
    assert (out_label == 3).sum().item() == pytest.approx(256 * 1.5**2, rel=0.1)
    assert ((out_clip[1] > 3.0) == (out_label == 3)).float().mean() > 0.98
    with pytest.raises(ValueError, match="scale must be in"):
        AugmentConfig(scale=1.5)


def test_crop_takes_one_window_of_clip_and_labels_and_replays() -> None:
    cfg = AugmentConfig(crop=16)
    starts = {sample_params(np.random.default_rng([0, 2, i]), cfg).crop_at for i in range(50)}
    assert len(starts) == 50 and all(0 <= y < 1 and 0 <= x < 1 for y, x in starts)
    # off: the draws of every other parameter are those of earlier versions (crop_at is drawn last)
    plain = sample_params(np.random.default_rng(7), AugmentConfig())
    cropped = sample_params(np.random.default_rng(7), cfg)
    assert plain.crop_at == (0.5, 0.5) and cropped.zoom == plain.zoom and cropped.k90 == plain.k90
    label = torch.arange(32 * 32).view(32, 32) % 4
    clip = label[None].float().repeat(3, 1, 1)
    identity = dict(mirror=False, flip=False, k90=0, angle_deg=0.0, gain=1.0, offset=0.0)
    for (fy, fx), (y0, x0) in (((0.0, 0.0), (0, 0)), ((0.99, 0.99), (16, 16)), ((0.5, 0.25), (8, 4))):
        c, lab = apply(clip, label, AugmentParams(**identity, crop_at=(fy, fx)), crop=16)
        assert c.shape == (3, 16, 16) and lab.shape == (16, 16)
        assert torch.equal(lab, label[y0 : y0 + 16, x0 : x0 + 16])
        assert torch.equal(c[2], lab.float())
    with pytest.raises(ValueError, match="crop must be 0"):
        AugmentConfig(crop=-1)
