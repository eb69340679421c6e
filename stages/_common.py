"""What every stage shares: argument parsing, the repository root, logging and turning pipeline errors into
exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import load_params
from pipeline.errors import PipelineError


def repo_root() -> Path:
    """The repository root: the folder DVC runs every stage in (dvc.yaml's), which the relative paths of
    the arguments and ``--params`` resolve against too. Databases, git provenance and dvc.lock are found
    here."""
    return Path.cwd()


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def run(main: Callable[[argparse.Namespace, dict[str, Any]], int | None], p: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:  # fmt: skip
    """Parse ``argv``, load params, run ``main``; a PipelineError prints one line and exits 1."""
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("great_expectations", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(main(args, load_params(args.params)) or 0)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
