"""A registry model run by torch, behind the :class:`~pipeline.inference.network.Network` interface."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.inference.network import Network
from pipeline.models import SegmentationModel
from pipeline.models.precision import bf16_enabled


class TorchNetwork(Network):
    """``model`` on ``device`` in eval mode; probabilities of a batch of clips as numpy, or as tensors on
    the device (:meth:`probabilities`: the device-resident path, pipeline.inference.resident).

    On a CPU the weights and inputs are channels_last: oneDNN's CPU convolutions run ~20-25 % faster on
    it (DeU-Net, 64-96 px, benchmarks/predict_bench.py), with the same fp32 arithmetic, so the same labels.

    Args:
        bf16: bf16 autocast; None: on CUDA only; True: also on a CPU with native bf16
            (pipeline.models.precision); False: fp32 everywhere. Softmax runs in fp32.
    """

    def __init__(self, model: SegmentationModel | torch.nn.Module, device: str | torch.device = "cpu",
                 bf16: bool | None = None) -> None:  # fmt: skip
        self.device = torch.device(device)
        self.on_cpu = self.device.type == "cpu"
        self.memory_format = torch.channels_last if self.on_cpu else torch.contiguous_format
        self.module = model.to(self.device).eval().to(memory_format=self.memory_format)
        self.radius = int(model.radius)  # type: ignore[arg-type]
        self.num_classes = int(getattr(model, "num_classes", 4))
        self.autocast = self.device.type == "cuda" if bf16 is None else bf16_enabled(self.device, bf16)
        self.tensor_device = str(self.device)

    @torch.no_grad()  # per call: the grad mode is per thread, and the Segmenter calls from its workers
    def probabilities(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 2r+1, S, S) float32 clips on the device -> (B, C, S, S) float32 softmax probabilities there."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.module(clips.contiguous(memory_format=self.memory_format))
        return torch.softmax(logits.float(), dim=1)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32)).to(self.device)
        return self.probabilities(x).cpu().numpy()
