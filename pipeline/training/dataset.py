"""PyTorch datasets over the preprocessed clip store."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.preprocessing.store import ClipStore
from pipeline.training.augment import AugmentConfig, apply, sample_params, sample_rng


class ClipDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Samples ``indices`` of a :class:`ClipStore` as ((2r+1, S, S) float32 clip, (S, S) int64 labels).

    With ``augment`` set, call :meth:`set_epoch` before each epoch: the transform of sample ``i`` in epoch
    ``e`` is drawn from a generator seeded by (seed, e, i), so it is the same on replay or after a resume.
    """

    def __init__(self, store: ClipStore, indices: np.ndarray, radius: int,
                 augment: AugmentConfig | None = None, seed: int = 0) -> None:  # fmt: skip
        if radius > store.max_radius:
            raise ValueError(
                f"radius {radius} exceeds the store's max_radius {store.max_radius}; raise preprocess.max_radius"
            )
        self.store, self.indices, self.radius = store, np.asarray(indices, dtype=np.int64), radius
        self.augment, self.seed, self.epoch = augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(self.indices[i])
        clip = torch.from_numpy(self.store.clip(index, self.radius))
        label = torch.from_numpy(self.store.label(index).astype(np.int64))
        if self.augment is not None:
            params = sample_params(sample_rng(self.seed, self.epoch, index), self.augment)
            clip, label = apply(clip, label, params, self.augment.crop)
        return clip, label
