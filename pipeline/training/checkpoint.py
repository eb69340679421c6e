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


def save_checkpoint(path: Path, model: SegmentationModel, optimizer: torch.optim.Optimizer | None = None,
                    **state: Any) -> None:  # fmt: skip
    """Write ``path`` atomically with the model's name, config, weights and any extra ``state``.

    A full disk or an unwritable folder raises DataError naming ``path``; the previous file at ``path``
    (the last good checkpoint) is left as it was, and no temporary file stays behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(path, f"cannot create the checkpoint folder ({exc.strerror or exc})") from None
    payload = {
        "model_name": model.name,
        "model_config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "versions": versions(),
        **state,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
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
