"""Segment a cine (T, Z, Y, X) with a trained model: the preprocessing of training, clips around every
requested frame (wrapping around the cycle), batched inference, and the mapping back to the original grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.models import SegmentationModel
from pipeline.preprocessing.clips import clip_frames
from pipeline.preprocessing.intensity import normalise
from pipeline.preprocessing.resize import resize_images, resize_probabilities_back


class Segmenter:
    """A trained model plus the preprocessing it was trained with.

    Args:
        model: a model from the registry (its ``radius`` sets the clip length).
        size: in-plane input size used in training (preprocess.size).
        percentiles: intensity clipping percentiles used in training.
        device: where to run; bf16 autocast is used on CUDA when ``bf16``.
        batch_size: clips per forward pass.
    """

    def __init__(self, model: SegmentationModel, size: int, percentiles: Sequence[float] = (0.5, 99.5),
                 device: str | torch.device = "cpu", batch_size: int = 32, bf16: bool = True) -> None:  # fmt: skip
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.size, self.batch_size, self.bf16 = size, batch_size, bf16
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], **kwargs: Any) -> Segmenter:
        from pipeline.training.checkpoint import model_from_checkpoint

        pre = ckpt.get("preprocess") or {}
        if "size" not in pre:
            raise ValueError("checkpoint does not record its preprocessing (size, percentiles); retrain it")
        return cls(
            model_from_checkpoint(ckpt), size=int(pre["size"]), percentiles=pre["percentiles"], **kwargs
        )

    @torch.no_grad()
    def predict(self, cine: np.ndarray, frames: Sequence[int] | None = None) -> np.ndarray:
        """Labels (len(frames), Z, Y, X) uint8 for the 0-based ``frames`` of ``cine`` (all when None)."""
        if cine.ndim != 4:
            raise ValueError(f"expected a cine (T, Z, Y, X), got shape {cine.shape}")
        t, z, y, x = cine.shape
        frames = list(range(t)) if frames is None else [int(f) for f in frames]
        norm, _ = normalise(cine.astype(np.float32, copy=False), self.percentiles)
        resized = torch.from_numpy(resize_images(norm.reshape(t * z, y, x), self.size)).view(
            t, z, self.size, self.size
        )
        r = self.model.radius
        keys = [(f, s) for f in frames for s in range(z)]
        out = np.empty((len(frames) * z, y, x), np.uint8)
        autocast = self.bf16 and self.device.type == "cuda"
        for start in range(0, len(keys), self.batch_size):
            chunk = keys[start : start + self.batch_size]
            clips = torch.stack([resized[clip_frames(f, t, r), s] for f, s in chunk]).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = self.model(clips)
            probs = torch.softmax(logits.float(), dim=1)
            out[start : start + len(chunk)] = (
                resize_probabilities_back(probs, (y, x)).argmax(1).to(torch.uint8).cpu().numpy()
            )
        return out.reshape(len(frames), z, y, x)
