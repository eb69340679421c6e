"""Model tests run torch on one thread.

On a small shared CPU, torch's default of one OpenMP thread per core is fragile: when another process
holds a core, the threads wait on each other and a 20 ms forward pass took over 1 s here (measured with
the data-layer tests running beside these). One thread is slower only by the parallel speed-up.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
