"""Data-parallel training under ``torchrun`` (DDP): process group set-up, sharding, rank-0-only output.

Without torchrun (no WORLD_SIZE in the environment) every function is a no-op for one process.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as tdist


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Only rank 0 writes checkpoints, metrics and logs."""
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); False when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or tdist.is_initialized():
        return tdist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    tdist.init_process_group(backend)
    return True


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def shard(order: np.ndarray) -> np.ndarray:
    """This rank's share of an epoch's sample order (every rank sees the same ``order``).

    The order is padded by repeating its start so every rank gets the same number of batches (DDP
    needs the same number of backward passes on every rank).
    """
    n = world_size()
    padded = np.resize(order, -(-len(order) // n) * n)
    return padded[rank() :: n]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when running under torchrun, else ``model`` itself."""
    if not tdist.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()
