"""Deep supervision (nnU-Net's default): auxiliary 1x1 heads on the lower decoder levels, training only.

The heads are hooked onto the model's U-Net decoder (the last ``UNetCore`` of the model: the segmentation
backbone, after TDAM's offset U-Net), so no model class changes and checkpoints for inference stay as they
are. The loss is a weighted sum over scales, weights halving per level and normalised to 1:

    loss = sum_l w_l * loss(head_l(decoder_l), labels at 1 / 2**l),   w_l ~ 2**-l,  l = 0 (the output) .. L

The heads' weights live in the training checkpoint (``aux_heads``) so a killed training resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.blocks import UNetCore


class DeepSupervision(nn.Module):
    """``levels`` auxiliary heads on decoder levels 1..levels of ``model``'s U-Net.

    Raises:
        ValueError: the model has no U-Net decoder, or fewer than ``levels`` levels below the output.
    """

    def __init__(self, model: nn.Module, levels: int, num_classes: int) -> None:
        super().__init__()
        cores = [m for m in model.modules() if isinstance(m, UNetCore)]
        if not cores:
            raise ValueError(f"deep supervision needs a U-Net decoder; {type(model).__name__} has none")
        core = cores[-1]
        if not 1 <= levels < len(core.decoders):
            raise ValueError(
                f"deep_supervision must be in 1..{len(core.decoders) - 1} for this depth, got {levels}"
            )
        self.levels = levels
        self.heads = nn.ModuleList(
            [
                nn.Conv2d(cast(nn.ConvTranspose2d, core.ups[lv]).out_channels, num_classes, 1)
                for lv in range(1, levels + 1)
            ]
        )
        self._features: dict[int, Tensor] = {}
        for lv in range(1, levels + 1):
            core.decoders[lv].register_forward_hook(self._keep(lv))
        self.weights: Tensor  # a buffer
        weights = torch.tensor([2.0**-lv for lv in range(levels + 1)])
        self.register_buffer("weights", weights / weights.sum(), persistent=False)

    def _keep(self, level: int) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
            self._features[level] = output

        return hook

    def loss(self, logits: Tensor, labels: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """The weighted multi-scale loss of the last forward pass (``logits`` is its full-size output)."""
        total = self.weights[0] * loss_fn(logits.float(), labels)
        for lv, head in enumerate(self.heads, start=1):
            # the decoder ran under autocast (bf16 features); the heads and the loss run in fp32
            aux = head(self._features.pop(lv).to(cast(nn.Conv2d, head).weight.dtype))
            small = F.interpolate(labels[:, None].float(), size=aux.shape[-2:], mode="nearest")[:, 0].long()
            total = total + self.weights[lv] * loss_fn(aux.float(), small)
        return total
