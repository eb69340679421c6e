"""``deunet models``: list the shipped models (pipeline.inference.pretrained), or register one in the MLflow
registry so that ``mlflow models serve`` serves it without a training run.

    deunet models                         # list them, the default first
    deunet models register acdc-unet      # -> models:/deunet-cardiac@shipped
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import DataError
from pipeline.inference.pretrained import CARD, shipped_model, shipped_models


def register(name: str | None, model_name: str, alias: str = "shipped") -> str:
    """Log the shipped model's checkpoints as the serving pyfunc in MLflow (the tracking URI set in this
    process, else MLFLOW_TRACKING_URI, else ./mlflow.db), register it as a version of ``model_name`` with ``alias``; returns the
    ``models:/`` URI to serve. No training run is needed."""
    import mlflow

    from pipeline.data.image_bytes import DEFAULT_MAX_REQUEST_BYTES
    from pipeline.serving.model_logging import log_pyfunc_model

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
