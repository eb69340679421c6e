"""Segmentation loss: cross-entropy + soft Dice over the three cardiac structures (RV, MYO, LV).

Soft Dice for class c is computed over the whole batch ("batch Dice"): slices without a structure
(apex, base) then do not produce a 0/0 per sample, and the gradient does not explode on tiny objects.
    dice_c = (2 sum p_c g_c + smooth) / (sum p_c + sum g_c + smooth),  p = softmax(logits), g = one-hot
    loss   = ce_weight * CE(logits, target) + dice_weight * (1 - mean_{c in classes} dice_c)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.base import InputShapeError, ModelConfigError, check_int
from pipeline.vocabulary import STRUCTURE_LABELS


def soft_dice_per_class(
    logits: Tensor, target: Tensor, classes: Sequence[int], smooth: float = 1e-5
) -> Tensor:
    """Soft Dice of each class in ``classes``: logits (B, C, H, W), target (B, H, W) int -> (len(classes),)."""
    probs = torch.softmax(logits.float(), dim=1)
    num_classes = logits.shape[1]
    onehot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    # the classes' channels gathered by an index made on the device: indexing with a Python list would copy
    # the list from the host, which a CUDA graph cannot capture (pipeline.training.steps); the same values
    idx = torch.empty(len(classes), dtype=torch.int64, device=probs.device)
    for i, c in enumerate(classes):
        idx[i] = c
    p, g = probs.index_select(1, idx), onehot.index_select(1, idx)
    dims = (0, 2, 3)
    intersection = (p * g).sum(dims)
    return (2 * intersection + smooth) / (p.sum(dims) + g.sum(dims) + smooth)


class DiceCELoss(nn.Module):
    """CE + soft Dice loss: logits (B, C, H, W), target (B, H, W) integer labels -> scalar."""

    def __init__(
        self,
        num_classes: int = 4,
        classes: Sequence[int] = STRUCTURE_LABELS,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.classes = tuple(classes)
        if not self.classes or any(not 0 <= c < num_classes for c in self.classes):
            raise ModelConfigError(
                f"classes must be a non-empty subset of 0..{num_classes - 1}, got {list(classes)}"
            )
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight == 0:
            raise ModelConfigError(
                f"ce_weight and dice_weight must be >= 0 and not both 0, got {ce_weight} and {dice_weight}"
            )
        if smooth <= 0:
            raise ModelConfigError(f"smooth must be > 0 (it keeps empty classes finite), got {smooth}")
        self.ce_weight, self.dice_weight, self.smooth = ce_weight, dice_weight, smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise InputShapeError(
                f"logits must be (B, {self.num_classes}, H, W), got shape {tuple(logits.shape)}"
            )
        if target.shape != (logits.shape[0], *logits.shape[2:]):
            raise InputShapeError(
                f"target must be (B, H, W) = {(logits.shape[0], *logits.shape[2:])} to match the logits, "
                f"got shape {tuple(target.shape)}"
            )
        if target.is_floating_point():
            raise InputShapeError(f"target must hold integer class labels, got dtype {target.dtype}")
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits.float(), target.long())
        if self.dice_weight:
            dice = soft_dice_per_class(logits, target, self.classes, self.smooth)
            loss = loss + self.dice_weight * (1 - dice.mean())
        return loss
