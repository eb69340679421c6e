"""The fold's clips held on the training device, batches assembled by index gathering there.

The DataLoader path reads every sample from the memory-mapped store and builds it on the CPU; on a fast
GPU that caps an epoch at a fraction of the model's speed. Here the frames and labels one fold needs are
copied to the device once (fp16 frames on CUDA, exactly the store's values; float32 on the CPU, where
half-precision indexing is slow), and a batch is two gathers:

    rows  (N, 2r+1)  int64   frame rows of each sample's clip, into ``frames``
    frames (U, S, S) float16 / float32   each frame the fold uses, once
    labels (N, S, S) uint8

so ``batch(pos)`` returns the same (B, 2r+1, S, S) float32 clips and (B, S, S) int64 labels as
ClipDataset without augmentation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from pipeline.preprocessing.clips import narrow
from pipeline.preprocessing.store import ClipStore


class DeviceClips:
    """Samples ``indices`` of ``store`` at temporal radius ``radius``, held on ``device``.

    Position ``i`` (0 <= i < len) is store sample ``indices[i]``, as in ClipDataset, so the epoch orders
    and augmentation seeds of the two paths agree.

    Raises:
        ValueError: ``radius`` exceeds the store's max_radius.
    """

    def __init__(self, store: ClipStore, indices: np.ndarray, radius: int, device: torch.device) -> None:
        if radius > store.max_radius:
            raise ValueError(
                f"radius {radius} exceeds the store's max_radius {store.max_radius}; raise preprocess.max_radius"
            )
        self.indices = np.asarray(indices, dtype=np.int64)
        self.size, self.device = store.size, device
        rows = narrow(np.asarray(store.clip_rows[self.indices]), radius).astype(np.int64)
        used = np.unique(rows)  # sorted: reads the memory map front to back
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        frames = torch.from_numpy(np.ascontiguousarray(store.frames[used]))  # float16, the store's values
        self.frames = frames.to(device).to(dtype)  # upload the half-size copy, widen there if at all
        self.rows = torch.from_numpy(np.searchsorted(used, rows)).to(device)
        self.labels = torch.from_numpy(np.ascontiguousarray(store.labels[self.indices])).to(device)

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (B, 2r+1, S, S) float32 and labels (B, S, S) int64 of positions ``pos`` (B,) on the device."""
        return self.frames[self.rows[pos]].float(), self.labels[pos].long()

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sample in position order, ``batch_size`` at a time (validation: no augmentation)."""
        pos = torch.arange(len(self), device=self.device)
        for start in range(0, len(self), batch_size):
            yield self.batch(pos[start : start + batch_size])
