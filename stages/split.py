"""Stage ``split``: 5-fold (params) cross-validation by patient, stratified by group, plus an optional test set."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.config import section
from pipeline.errors import DataError
from pipeline.splitting.config import SplitConfig
from pipeline.splitting.folds import make_split, write_split
from stages import paths
from stages._common import parser, run

log = logging.getLogger("stages.split")


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    cfg = section(params, "split", SplitConfig)
    report = json.loads(Path(args.validation).read_text()) if Path(args.validation).is_file() else None
    if not report or not report.get("success"):
        raise DataError(args.validation, "data validation has not passed; run the validate stage")
    patients = json.loads(Path(args.patients).read_text())
    linked = report.get("duplicate_images") or []  # the same images under two ids: one fold
    split = make_split({p["patient"]: p["group"] for p in patients}, cfg, linked)
    write_split(split, Path(args.out))
    sizes = [len(f["val"]) for f in split["folds"]]
    for ids in linked:
        log.info("split: %s share their images and were kept in one fold", " and ".join(ids))
    log.info(
        "split: %d folds of %s patients, %d test patients -> %s",
        cfg.n_folds,
        sizes,
        len(split["test"]),
        args.out,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--patients", default=paths.PATIENTS)
    p.add_argument("--validation", default=paths.VALIDATION_REPORT)
    p.add_argument("--out", default=paths.SPLIT)
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
