"""Models shipped with the package: trained by this project on ACDC, ready to segment without training.

    deunet models                                         # list them
    deunet predict --input cine.nii.gz --out out/         # no --model: the default shipped model
    deunet predict --model shipped:acdc-unet --input cine.nii.gz --out out/     # pick one by name
    deunet models register acdc-unet                      # into the MLflow registry, to serve it

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

import argparse
import hashlib
import json
import shutil
import sys
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
    from pipeline.inference.onnx_network import export_onnx
    from pipeline.training.checkpoint import load_checkpoint, write_checkpoint

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


def register(name: str | None, model_name: str, alias: str = "shipped") -> str:
    """Log the shipped model's checkpoints as the serving pyfunc in MLflow (the tracking URI set in this
    process, else MLFLOW_TRACKING_URI, else ./mlflow.db), register it as a version of ``model_name`` with ``alias``; returns the
    ``models:/`` URI to serve. No training run is needed."""
    import mlflow

    from pipeline.serving.model_logging import log_pyfunc_model
    from pipeline.serving.schema import DEFAULT_MAX_REQUEST_BYTES

    model = shipped_model(name)
    settings = model.manifest.get("settings", {})
    if (
        not mlflow.is_tracking_uri_set()
    ):  # as the pipeline's stages resolve it: MLFLOW_TRACKING_URI, else ./mlflow.db
        from pipeline.tracking.config import TrackingConfig, resolve_tracking_uri

        mlflow.set_tracking_uri(resolve_tracking_uri(TrackingConfig(), Path.cwd()))
    mlflow.set_experiment("shipped-models")
    with mlflow.start_run(run_name=f"shipped {model.name}") as run:
        mlflow.set_tags({"shipped_model": model.name, "source": str(model.folder)})
        mlflow.log_dict(model.manifest, "shipped_manifest.json")
        info = log_pyfunc_model(model.files("torch"), max_request_bytes=DEFAULT_MAX_REQUEST_BYTES,
                                tta=settings.get("tta", "none"), postprocess=settings.get("postprocess", "raw"))  # fmt: skip
    version = mlflow.register_model(info.model_uri, model_name)
    mlflow.MlflowClient().set_registered_model_alias(model_name, alias, version.version)
    mlflow.MlflowClient().set_model_version_tag(model_name, version.version, "shipped_model", model.name)
    return f"models:/{model_name}@{alias} (version {version.version}, run {run.info.run_id})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deunet models", description="List the shipped models, or register one."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="the shipped models (the default)")
    reg = sub.add_parser("register", help="register a shipped model in the MLflow registry, to serve it")
    reg.add_argument("name", nargs="?", default=None, help="a shipped model (default: the default one)")
    reg.add_argument(
        "--model-name", default="deunet-cardiac", help="the registered model (params: register.model_name)"
    )
    reg.add_argument("--alias", default="shipped")
    args = parser.parse_args(argv)
    try:
        if args.command == "register":
            uri = register(args.name, args.model_name, args.alias)
            print(
                f"registered: serve it with `mlflow models serve -m {uri.split(' ')[0]} --env-manager local`"
            )
            print(uri)
            return 0
        for model in shipped_models():
            print(model.describe())
            print(f"    {model.folder}  ({sum(f['bytes'] for f in model.manifest['files']) / 2**20:.1f} MiB; "
                  f"card: {model.folder / CARD})")  # fmt: skip
        return 0
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
