"""Models shipped with the package: trained by this project on ACDC, ready to segment without training.

    deunet models                                         # list them
    deunet predict --input cine.nii.gz --out out/         # no --model: the default shipped model
    deunet predict --model shipped:acdc-unet --input cine.nii.gz --out out/     # pick one by name
    deunet models register acdc-unet                      # into the MLflow registry, to serve it
                                                          # (pipeline.serving.shipped: that command)

Each lives in ``pipeline/pretrained/<name>/`` with:

    manifest.json    name, summary, architecture, whether it is the default, the settings predict uses
                     (TTA, post-processing), its cross-validation figures, and every file with its sha256
    MODEL_CARD.md    training data and licence, intended use, the recipe's cross-validation, known limits
    *.onnx           the network as an ONNX export (pipeline.inference.onnx_network): predict runs it with
                     ONNX Runtime and never imports torch
    *.pt             the same weights as a checkpoint: for a GPU, for serving, or to fine-tune

Every file's sha256 is checked before the file is used: a damaged or replaced file is one error naming
it. :func:`package` writes such a folder from trained checkpoints (whole, or not at all).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import DataError

#: Where the shipped models live (inside the package, so an installed package has them).
ROOT = Path(__file__).resolve().parents[1] / "pretrained"
#: ``--model shipped:NAME`` names a shipped model.
PREFIX = "shipped:"
MANIFEST = "manifest.json"
CARD = "MODEL_CARD.md"
Kind = Literal["onnx", "torch"]
_SUFFIX = {"onnx": ".onnx", "torch": ".pt"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its folder and its manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def default(self) -> bool:
        return bool(self.manifest.get("default", False))

    def files(self, kind: Kind = "onnx") -> list[Path]:
        """The model's ``kind`` files (an ensemble has several), each checked against its sha256.

        Raises:
            DataError: a file is missing or its sha256 is not the manifest's (naming the file).
        """
        out = []
        for entry in self.manifest["files"]:
            path = self.folder / entry["path"]
            if path.suffix != _SUFFIX[kind]:
                continue
            if not path.is_file():
                raise DataError(
                    path, f"the shipped model {self.name!r} lacks this file; reinstall the package"
                )
            got = sha256(path)
            if got != entry["sha256"]:
                raise DataError(path, f"checksum mismatch: sha256 {got}, the manifest says {entry['sha256']}; "
                                      f"the shipped model {self.name!r} is damaged or was replaced, reinstall the package")  # fmt: skip
            out.append(path)
        if not out:
            raise DataError(self.folder / MANIFEST, f"the shipped model {self.name!r} has no {kind} files")
        return out

    def describe(self) -> str:
        """One line: name, what it is, its cross-validation figures."""
        cv = self.manifest.get("cross_validation") or {}
        figures = ", ".join(f"{k} {v}" for k, v in cv.items() if k in ("mean_dice", "mean_hd_mm"))
        return f"{self.name}{' (default)' if self.default else ''}: {self.manifest['summary']}" + (
            f"; 5-fold CV of its recipe: {figures}" if figures else ""
        )


def shipped_models(root: Path = ROOT) -> list[ShippedModel]:
    """Every shipped model under ``root``, the default first, then by name."""
    models = []
    for manifest in sorted(root.glob(f"*/{MANIFEST}")):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(manifest, f"unreadable manifest of a shipped model ({exc})") from None
        models.append(ShippedModel(manifest.parent, data))
    return sorted(models, key=lambda m: (not m.default, m.name))


def shipped_model(name: str | None = None, root: Path = ROOT) -> ShippedModel:
    """The shipped model ``name`` (``shipped:`` prefix allowed), or the default one for None.

    Raises:
        DataError: no such model (the message lists the shipped ones), or none is shipped.
    """
    models = shipped_models(root)
    if not models:
        raise DataError(root, "no shipped models in this installation")
    if name is None:
        return next((m for m in models if m.default), models[0])
    wanted = name.removeprefix(PREFIX)
    for model in models:
        if model.name == wanted:
            return model
    raise DataError(name, f"no shipped model of this name; shipped: {', '.join(m.name for m in models)}")


def is_shipped(model: str) -> bool:
    return model.startswith(PREFIX)


def package(name: str, checkpoints: Sequence[Path], out_root: Path, *, summary: str, card: str,
            default: bool = False, settings: dict[str, Any] | None = None,
            cross_validation: dict[str, Any] | None = None) -> ShippedModel:  # fmt: skip
    """Write ``out_root/name`` from trained ``checkpoints``: model-only checkpoints (``member{i}.pt``),
    their ONNX exports, ``card`` as MODEL_CARD.md and the manifest with every file's sha256. The folder
    appears whole or not at all (built beside it, then renamed over any previous one)."""
    from pipeline.checkpoint.io import load_checkpoint, write_checkpoint
    from pipeline.inference.onnx_export import export_onnx

    target = out_root / name
    out_root.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=out_root, prefix=f".{name}-") as tmp:
        work = Path(tmp)
        first: dict[str, Any] = {}
        for i, checkpoint in enumerate(checkpoints):
            ckpt = load_checkpoint(checkpoint)
            first = first or ckpt
            # what predicting needs: weights, model, preprocessing, field of view; no training state
            slim = {k: v for k, v in ckpt.items() if k not in ("torch_rng", "aux_heads", "history")}
            slim["optimizer"] = None
            pt = work / f"member{i}.pt"
            write_checkpoint(pt, slim)
            export_onnx(pt, work / f"member{i}.onnx")
        (work / CARD).write_text(card)
        for path in sorted(work.iterdir()):
            files.append({"path": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)})
        manifest = {"name": name, "summary": summary, "default": default,
                    "architecture": {"model": first.get("model_name"), "model_config": first.get("model_config"),
                                     "members": len(checkpoints)},
                    "settings": settings or {}, "cross_validation": cross_validation or {}, "files": files}  # fmt: skip
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        old = out_root / f".{name}-old"
        if target.exists():
            target.rename(old)
        work.rename(target)
        target.chmod(0o755)  # TemporaryDirectory made it private
        shutil.rmtree(old, ignore_errors=True)
        work.mkdir()  # TemporaryDirectory removes its (now empty) folder
    return ShippedModel(target, manifest)
