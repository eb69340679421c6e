"""Stage ``download``: make ``data/raw`` hold the dataset (synthetic phantom, local folder or URL)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.config import section
from pipeline.data.config import DownloadConfig
from pipeline.data.sources import acquire
from stages import paths
from stages._common import parser, run

log = logging.getLogger("stages.download")


def _main(args: argparse.Namespace, params: dict[str, Any]) -> int:
    cfg = section(params, "download", DownloadConfig)
    folders = acquire(cfg, Path(args.out), Path(args.cache))
    log.info("download (%s): %d patients in %s", cfg.source, len(folders), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__ or "")
    p.add_argument("--out", default=paths.RAW, help="output folder in the ACDC layout")
    p.add_argument("--cache", default=paths.CACHE, help="archive download and extraction cache (url source)")
    return run(_main, p, argv)


if __name__ == "__main__":
    sys.exit(main())
