"""Checkpoints that rebuild their own model and resume their own training.

A checkpoint holds the model's registry name and constructor arguments, the weights, the optimizer
state, the epoch, the training params, the best score so far, the history and library versions. It is
written atomically (temporary file, then rename) so a kill mid-write never leaves a corrupt file, and it
is read with ``torch.load(weights_only=True)``: no pickled code runs on load.
"""

from __future__ import annotations

import os
import platform
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pipeline
from pipeline.errors import DataError
from pipeline.models import SegmentationModel, build_model


def versions() -> dict[str, str]:
    return {"pipeline": pipeline.__version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}  # fmt: skip


def checkpoint_payload(model: SegmentationModel, optimizer: torch.optim.Optimizer | None = None,
                       **state: Any) -> dict[str, Any]:  # fmt: skip
    """What a checkpoint holds: the model's name, config, weights, the optimizer state, the library versions
    and any extra ``state``. The tensors are the live ones, where they live (copied to the CPU when the
    checkpoint is written): see :func:`snapshot` before handing the payload to another thread."""
    return {
        "model_name": model.name,
        "model_config": dict(model.config),
        "state_dict": {k: v.detach() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "versions": versions(),
        **state,
    }


def _tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor (dicts, lists and tuples rebuilt)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj.detach())
    if isinstance(obj, dict):
        return {k: _tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_tensors(v, fn) for v in obj)
    return obj


def snapshot(obj: Any) -> Any:
    """A deep copy of ``obj`` with every tensor copied where it lives (dicts, lists and tuples rebuilt).

    Training goes on updating weights and optimizer state in place while a background thread writes the
    checkpoint, so the writer must get copies taken at the end of the epoch. On a GPU the copy is a
    device-to-device clone queued behind the epoch's last step, which the host does not wait for; the
    writer thread then brings it to the CPU (``write_checkpoint``), waiting there instead of the loop.
    """
    return _tensors(obj, lambda t: t.clone())


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (see :func:`checkpoint_payload`) to ``path`` atomically.

    A full disk or an unwritable folder raises DataError naming ``path``; the previous file at ``path``
    (the last good checkpoint) is left as it was, and no temporary file stays behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(path, f"cannot create the checkpoint folder ({exc.strerror or exc})") from None
    # the thread id too: a background writer and the main thread never share a temporary file
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        torch.save(_tensors(payload, lambda t: t.cpu()), tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write (disk full) as RuntimeError
        tmp.unlink(missing_ok=True)
        reason = (getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1])[:200]
        try:
            free = f"; {shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
        except OSError:
            free = ""
        kept = "the previous checkpoint is kept" if path.exists() else "nothing was written"
        raise DataError(path, f"cannot write checkpoint ({reason}{free}); {kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, model: SegmentationModel, optimizer: torch.optim.Optimizer | None = None,
                    **state: Any) -> None:  # fmt: skip
    """Write ``path`` atomically with the model's name, config, weights and any extra ``state``.

    A full disk or an unwritable folder raises DataError naming ``path``; the previous file at ``path``
    (the last good checkpoint) is left as it was, and no temporary file stays behind.
    """
    write_checkpoint(path, checkpoint_payload(model, optimizer, **state))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint is missing")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise DataError(path, f"cannot read checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(ckpt, dict) or "model_name" not in ckpt or "state_dict" not in ckpt:
        raise DataError(path, "not a pipeline checkpoint (no model_name/state_dict)")
    return ckpt


def check_compatible(path: Path, ckpt: dict[str, Any], model_name: str, model_config: dict[str, Any]) -> None:
    """Refuse a checkpoint made for another model or other constructor arguments (e.g. another r)."""
    if ckpt["model_name"] != model_name:
        raise DataError(path, f"checkpoint is for model {ckpt['model_name']!r}, not {model_name!r}")
    theirs = ckpt["model_config"]
    diffs = [f"{k}: checkpoint {theirs.get(k)!r} vs requested {model_config.get(k)!r}"
             for k in sorted(set(theirs) | set(model_config)) if theirs.get(k) != model_config.get(k)]  # fmt: skip
    if diffs:
        raise DataError(path, f"checkpoint was trained with other model arguments ({'; '.join(diffs)})")


def model_from_checkpoint(ckpt: dict[str, Any]) -> SegmentationModel:
    """Rebuild the model a checkpoint describes and load its weights (eval mode, CPU)."""
    model = build_model(ckpt["model_name"], **ckpt["model_config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
