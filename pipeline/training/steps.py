"""One optimizer step on a batch: eager, or its forward, loss and backward replayed from a CUDA graph.

A training step is a few hundred small kernels. At the crop's native 96 px an H200 runs a U-Net step's
kernels faster than the host can launch them, so eager training there measures the host, not the GPU.
:class:`GraphedStep` captures forward, loss and backward of a full batch once into a CUDA graph (the
pattern of PyTorch's "whole network capture") and then replays it: one launch per step. The optimizer
step stays eager (fused Adam is one launch per parameter group, and keeping it outside leaves the
optimizer, its learning-rate schedule and its checkpoints exactly as they are).

How a run goes:

1. the first ``warmup`` full batches are ordinary eager steps on a side stream (cuDNN picks its
   algorithms, lazily built state is made): they are real steps of the epoch, not extra ones;
2. the next full batch is captured (capture runs nothing), replayed, and its step taken;
3. every later full batch is copied into the graph's input tensors and replayed;
4. a batch of another shape (an epoch's short last batch) runs eagerly, accumulating into the graph's
   gradient tensors in place, so the graph stays valid.

If the capture fails (a model with a host synchronisation in its forward pass, say), the step says why
once, in the log and in ``failed``, and the run goes on eagerly: a graph is a speed-up, never a
requirement. The same arithmetic either way, kernel for kernel; the CPU never builds a graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import torch

log = logging.getLogger(__name__)

LossOf = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
"""``loss_of(clip, label, cache)``: the loss of a batch, forward included (``cache``: autocast's weight
cache; off inside a graph capture, where cached casts would outlive the capture)."""


class Step(Protocol):
    def __call__(self, clip: torch.Tensor, label: torch.Tensor) -> torch.Tensor: ...


class EagerStep:
    """zero_grad, forward + loss, backward, optimizer step; returns the loss (not synchronised)."""

    def __init__(self, optimizer: torch.optim.Optimizer, loss_of: LossOf) -> None:
        self.optimizer, self.loss_of = optimizer, loss_of

    def __call__(self, clip: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return _take_step(self.optimizer, self.loss_of, clip, label)


def _take_step(optimizer: torch.optim.Optimizer, loss_of: LossOf, clip: torch.Tensor,
               label: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Forward + loss, backward and the optimizer step on gradients already zeroed; the detached loss."""
    loss = loss_of(clip, label, True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class GraphedStep:
    """Training steps of ``batch_size`` batches replayed from one CUDA graph (see the module doc).

    Args:
        optimizer, loss_of: as :class:`EagerStep`.
        batch_size: the full batch; other batch sizes run eagerly.
        device: the CUDA device.
        warmup: eager steps on a side stream before the capture (PyTorch's recipe uses 3 or more).
        graph_factory: makes the graph object (``torch.cuda.CUDAGraph``); ``capture(graph, work)`` captures
            ``work()`` into it and returns what ``work`` returned (:func:`cuda_capture`). Tests pass
            stand-ins for both: no CUDA exists there.

    Attributes:
        failed: why the capture failed (the run then goes on eagerly), or None.
        replays, eager_steps: counts, for reports.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, loss_of: LossOf, batch_size: int, device: torch.device,
                 warmup: int = 3, graph_factory: Callable[[], Any] | None = None,
                 capture: Callable[[Any, Callable[[], torch.Tensor]], torch.Tensor] | None = None) -> None:  # fmt: skip
        self.optimizer, self.loss_of = optimizer, loss_of
        self.batch_size, self.device, self.warmup = batch_size, device, warmup
        self._new_graph = graph_factory or torch.cuda.CUDAGraph
        self._capture = capture or cuda_capture
        self.graph: Any = None
        self.failed: str | None = None
        self.replays = self.eager_steps = 0
        self._static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, clip: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        if self.failed is not None or clip.shape[0] != self.batch_size:
            return self._eager(clip, label)
        if self.graph is None:
            if self.eager_steps < self.warmup:
                return self._eager(clip, label, side_stream=True)
            try:
                self._record(clip, label)
            except Exception as exc:  # any capture failure: go on eagerly, say why
                self.failed = f"{type(exc).__name__}: {exc}"[:500]
                self.graph, self._static = None, None
                log.warning("CUDA graph capture failed, training on eagerly: %s", self.failed)
                return self._eager(clip, label)
        assert self._static is not None
        static_clip, static_label, static_loss = self._static
        static_clip.copy_(clip)
        static_label.copy_(label)
        self.graph.replay()
        self.optimizer.step()
        self.replays += 1
        return static_loss.clone()

    def _record(self, clip: torch.Tensor, label: torch.Tensor) -> None:
        """Capture forward, loss and backward on copies of this batch (their tensors stay the inputs)."""
        static_clip, static_label = clip.clone(), label.clone()
        # gradients made inside the capture live in the graph's memory and are rewritten by every replay
        self.optimizer.zero_grad(set_to_none=True)
        graph = self._new_graph()

        def work() -> torch.Tensor:
            loss = self.loss_of(static_clip, static_label, False)
            loss.backward()
            return loss.detach()

        loss = self._capture(graph, work)
        self.graph, self._static = graph, (static_clip, static_label, loss)

    def _eager(self, clip: torch.Tensor, label: torch.Tensor, side_stream: bool = False) -> torch.Tensor:
        # once a graph exists its gradient tensors must stay: zero them in place, accumulate into them
        self.optimizer.zero_grad(set_to_none=self.graph is None)
        self.eager_steps += 1
        if not side_stream or self.device.type != "cuda":
            return _take_step(self.optimizer, self.loss_of, clip, label)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            loss = _take_step(self.optimizer, self.loss_of, clip, label)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return loss


def cuda_capture(graph: torch.cuda.CUDAGraph, work: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Capture ``work()`` into ``graph`` (nothing runs yet); its output tensor, rewritten by every replay."""
    with torch.cuda.graph(graph):
        return work()


def make_step(optimizer: torch.optim.Optimizer, loss_of: LossOf, *, graph: bool, batch_size: int,
              device: torch.device) -> EagerStep | GraphedStep:  # fmt: skip
    """A :class:`GraphedStep` when ``graph`` (CUDA only), else an :class:`EagerStep`."""
    if graph:
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        return GraphedStep(optimizer, loss_of, batch_size, device)
    return EagerStep(optimizer, loss_of)
