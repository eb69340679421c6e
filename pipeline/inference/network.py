"""The network behind a :class:`~pipeline.inference.predict.Segmenter`: clips in, probabilities out, in numpy.

The Segmenter does everything around the network (normalisation, geometry, clips, batches, test-time
augmentation, the map back, post-processing) in numpy, and asks a :class:`Network` only for the softmax
probabilities of a batch of clips. Two runtimes implement it:

- :class:`pipeline.inference.torch_network.TorchNetwork`: a registry model in torch (CPU or CUDA), what
  training, evaluate and the served model use;
- :class:`pipeline.inference.onnx_network.OnnxNetwork`: the same model exported to ONNX
  (``deunet export-onnx``) and run by ONNX Runtime on the CPU, so a cold ``deunet predict`` never imports
  torch (docs/experiments.md, "A torch-free predict").

This module imports neither.
"""

from __future__ import annotations

import numpy as np

#: Inference's ``precision`` option (``deunet predict --precision``, the served model's config) -> the
#: Segmenter's ``bf16``: auto = bf16 on CUDA only, fp32 everywhere, bf16 also on a CPU with native bf16.
PRECISIONS: dict[str, bool | None] = {"auto": None, "fp32": False, "bf16": True}


class Network:
    """(B, 2r+1, S, S) float32 clips -> (B, C, S, S) float32 softmax probabilities, both numpy.

    Attributes:
        radius: r, the temporal radius of the clips it takes.
        num_classes: C.
        on_cpu: whether it computes on the CPU (the Segmenter then runs ``cpu_workers`` batches at once).
        tensor_device: the torch device (e.g. "cuda:0") of a network that also takes torch tensors there
            (``TorchNetwork.probabilities``), so the Segmenter can keep its whole path on that device
            (pipeline.inference.resident); None: numpy only (ONNX Runtime).
    """

    radius: int
    num_classes: int
    on_cpu: bool
    tensor_device: str | None = None

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        raise NotImplementedError
