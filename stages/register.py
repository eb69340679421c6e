"""Stage ``register``: log the trained folds (an ensemble) as an MLflow pyfunc, register it, gate promotion.

The logged model carries every fold's checkpoint and preprocessing, and evaluate's TTA and post-processing
(from data/evaluation/metrics.json), so the served model answers what evaluate scored.

The new version gets the alias ``challenger``; it becomes ``champion`` (what serving loads) only if it
beats the current champion on the held-out metric by ``register.min_margin``. Re-running registers
nothing new for a checkpoint already in the registry (matched by its sha256), and a failure after the
version was created removes it again, so the registry is left as it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_text
from pipeline.config import section
from pipeline.errors import DataError
from pipeline.promotion.config import RegisterConfig
from pipeline.promotion.register import register_folds
from pipeline.tracking import TrackingConfig
from stages import paths
from stages._common import parser, repo_root, run

log = logging.getLogger("stages.register")


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    cfg = section(params, "register", RegisterConfig)
    tracking = section(params, "tracking", TrackingConfig)
    if not tracking.enabled:
        raise DataError(args.out, "tracking.enabled is false: the register stage needs the MLflow registry")
    evaluation = json.loads(Path(args.evaluation).read_text())
    if cfg.metric not in evaluation:
        numeric = [k for k, v in evaluation.items() if isinstance(v, int | float)]
        raise DataError(
            args.evaluation, f"register.metric {cfg.metric!r} is not in it; choose one of {numeric}"
        )
    score = float(evaluation[cfg.metric])
    train_metrics = json.loads((Path(args.models).parent / "metrics.json").read_text())
    record = register_folds(cfg, tracking, repo_root(), Path(args.models), train_metrics, evaluation, score)
    atomic_write_text(Path(args.out), json.dumps(record, indent=1) + "\n")
    promoted = record["decision"]["promoted"]
    print(f"register: {cfg.model_name} v{record['version']} ({cfg.metric} {score:.4f}) -> "
          f"{'champion' if promoted else 'challenger'}: {record['decision']['reason']}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--evaluation", default=paths.EVALUATION_METRICS)
    p.add_argument("--models", default=paths.MODELS)
    p.add_argument("--out", default=paths.REGISTRATION)
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
