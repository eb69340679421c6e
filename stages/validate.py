"""Stage ``validate``: Great Expectations checks of the preprocessing manifest; fails the pipeline on errors."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.atomic import atomic_write_text
from pipeline.config import section
from pipeline.errors import DataError
from pipeline.validation.config import ValidateConfig
from pipeline.validation.manifest_suite import validate_manifest
from stages import paths
from stages._common import parser, run

log = logging.getLogger("stages.validate")


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    cfg = section(params, "validate", ValidateConfig)
    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise DataError(manifest, "manifest is missing; run the preprocess stage first")
    report = validate_manifest(pd.read_csv(manifest), cfg)
    out = Path(args.out)
    atomic_write_text(out / "report.json", json.dumps(report.to_dict(), indent=1) + "\n")
    atomic_write_text(out / "report.txt", report.to_text() + "\n")
    for warning in report.warnings:
        log.warning("%s: %s", manifest, warning)
    if not report.success:
        print(report.to_text(), file=sys.stderr)
        print(f"error: data validation failed; full report in {out / 'report.json'}", file=sys.stderr)
        return 1
    log.info("%s", report.to_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--manifest", default=paths.MANIFEST)
    p.add_argument("--out", default=paths.VALIDATION, help="folder for report.json and report.txt")
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
