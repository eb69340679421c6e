"""Training steps replayed from a CUDA graph (pipeline.training.steps), checked on the CPU.

No CUDA exists here, so the graph is a stand-in with a real graph's contract: capture records the work
without its effect on the weights, and a replay rewrites the captured loss and the same gradient tensors
in place. Against it, the step's bookkeeping must give exactly the eager run: warm-up steps, the capture
at the right batch, short batches run eagerly without losing the graph's gradient tensors, and a failed
capture that goes on eagerly and says why. The real capture is measured on the GPU (benchmarks.gpu_check).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models import DiceCELoss, build_model
from pipeline.training.config import TrainConfig
from pipeline.training.steps import EagerStep, GraphedStep, make_step
from pipeline.training.trainer import resolve_cuda_graph

CPU = torch.device("cpu")


class FakeGraph:
    """Replays the captured work as a CUDA graph would: same loss tensor, same gradient tensors, rewritten."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net, self.params = net, list(net.parameters())
        self.work: Callable[[], torch.Tensor] | None = None
        self.loss: torch.Tensor | None = None
        self.replayed = 0

    def capture(self, work: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A capture runs nothing: the gradient and loss tensors it makes exist, every buffer (batch norm's
        running statistics) is as before."""
        buffers = {k: v.clone() for k, v in self.net.named_buffers()}
        self.work, self.loss = work, work()
        with torch.no_grad():
            for k, v in self.net.named_buffers():
                v.copy_(buffers[k])
        return self.loss

    def replay(self) -> None:
        assert self.work is not None and self.loss is not None
        with torch.no_grad():
            for p in self.params:
                if p.grad is not None:
                    p.grad.zero_()  # the graph's backward writes them, it does not add
        loss = self.work()  # accumulates into the same gradient tensors
        self.loss.copy_(loss)
        self.replayed += 1


def _setup(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, Callable[..., torch.Tensor]]:
    torch.manual_seed(seed)
    net = build_model("unet", radius=1, base_channels=4, depth=2, norm="batch")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = DiceCELoss()

    def loss_of(clip: torch.Tensor, label: torch.Tensor, cache: bool) -> torch.Tensor:
        return loss_fn(net(clip), label)

    return net, optimizer, loss_of


def _batches(sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n, 16, 16), generator=g)) for n in sizes
    ]


def _graphed(optimizer: torch.optim.Optimizer, loss_of: Callable[..., torch.Tensor], net: torch.nn.Module,
             fail: bool = False) -> tuple[GraphedStep, list[FakeGraph]]:  # fmt: skip
    graphs: list[FakeGraph] = []

    def new_graph() -> FakeGraph:
        graphs.append(FakeGraph(net))
        return graphs[-1]

    def capture(graph: FakeGraph, work: Callable[[], torch.Tensor]) -> torch.Tensor:
        if fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return graph.capture(work)

    return GraphedStep(optimizer, loss_of, 4, CPU, warmup=2, graph_factory=new_graph, capture=capture), graphs


@pytest.mark.parametrize("fail", [False, True])
def test_graphed_steps_train_exactly_like_eager_steps(fail: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Two epochs of batches 4, 4, 4, 4, 2 (a short last batch): the same losses and the same weights."""
    batches = _batches([4, 4, 4, 4, 2]) * 2
    net_e, opt_e, loss_e = _setup()
    eager = EagerStep(opt_e, loss_e)
    losses_e = [float(eager(c, label)) for c, label in batches]

    net_g, opt_g, loss_g = _setup()
    step, graphs = _graphed(opt_g, loss_g, net_g, fail)
    with caplog.at_level(logging.WARNING, logger="pipeline.training.steps"):
        losses_g = [float(step(c, label)) for c, label in batches]

    assert losses_g == pytest.approx(losses_e, rel=1e-5, abs=1e-6)
    for a, b in zip(net_e.state_dict().values(), net_g.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if fail:
        assert step.graph is None and "operation not permitted" in (step.failed or "")
        assert step.replays == 0 and step.eager_steps == len(batches)
        assert "capture failed" in caplog.text
    else:
        # 2 warm-up steps, the capture on batch 3 (replayed at once), then every full batch replays;
        # the two short batches run eagerly
        assert step.failed is None and len(graphs) == 1
        assert step.eager_steps == 2 + 2 and step.replays == len(batches) - 4 == graphs[0].replayed


def test_the_graph_keeps_its_gradient_tensors_through_a_short_batch() -> None:
    """An eager step after the capture zeroes the gradients in place instead of dropping them: a replay
    writes into the tensors it captured, and the optimizer must read those."""
    net, opt, loss_of = _setup()
    step, _ = _graphed(opt, loss_of, net)
    for c, label in _batches([4, 4, 4]):
        step(c, label)
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    for c, label in _batches([2, 4]):
        step(c, label)
    assert all(p.grad is g for p, g in zip(net.parameters(), grads, strict=True))


def test_make_step_and_the_cuda_graph_setting() -> None:
    _net, opt, loss_of = _setup()
    assert isinstance(make_step(opt, loss_of, graph=False, batch_size=4, device=CPU), EagerStep)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        make_step(opt, loss_of, graph=True, batch_size=4, device=CPU)
    cfg = TrainConfig(device="cpu", loader="device")
    assert resolve_cuda_graph(cfg, CPU) is False  # auto: no CUDA here
    assert resolve_cuda_graph(replace(cfg, cuda_graph="off"), CPU) is False
    with pytest.raises(ConfigError, match="cuda_graph: on needs one CUDA process"):
        resolve_cuda_graph(replace(cfg, cuda_graph="on"), CPU)
    with pytest.raises(ValueError, match="cuda_graph must be auto, on or off"):
        TrainConfig(cuda_graph="yes")  # type: ignore[arg-type]
