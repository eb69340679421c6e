"""Batches through a network, one after another or a few at once in threads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def run_batches(batch: Callable[[_In], _Out], chunks: Sequence[_In], workers: int) -> list[_Out]:
    """``batch`` of every chunk, in order; ``workers`` > 1 runs that many at once in threads (each op still
    uses the runtime's intra-op threads; see Segmenter's ``cpu_workers``)."""
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(batch, chunks))
    return [batch(chunk) for chunk in chunks]
