"""Where a network runs: the one resolver of a ``device`` setting, for training and inference alike."""

from __future__ import annotations

import torch

#: What a ``device`` setting may say: ``auto`` (a GPU when one is visible), ``cpu``, ``cuda`` or ``cuda:N``.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name: str = "auto", index: int | None = None) -> torch.device:
    """The torch device a ``device`` setting names.

    Args:
        name: ``auto`` -> CUDA when a GPU is visible, else the CPU; ``cpu``; ``cuda``; ``cuda:N``.
        index: the GPU for ``cuda`` and ``auto`` (a distributed run's local rank); ``cuda:N`` keeps its N.

    Raises:
        ValueError: another name, or CUDA asked for where no GPU is visible.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but no CUDA GPU is visible; use 'auto' or 'cpu'")
        if name == "cuda" and index is not None:
            return torch.device("cuda", index)
    return torch.device(name)
