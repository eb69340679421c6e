"""Stage ``preprocess``: normalise, resize and extract clips from ``data/raw`` into the clip store."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import section
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.run import preprocess_dataset
from stages import paths
from stages._common import parser, run

log = logging.getLogger("stages.preprocess")


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    cfg = section(params, "preprocess", PreprocessConfig)
    start = time.perf_counter()
    out = preprocess_dataset(Path(args.raw), Path(args.out), cfg)
    log.info("preprocess: wrote %s in %.1f s", out, time.perf_counter() - start)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--raw", default=paths.RAW, help="input folder in the ACDC layout")
    p.add_argument("--out", default=paths.PREPROCESSED, help="output clip store")
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
