"""The ``deunet`` console script: run any pipeline stage by name (``deunet preprocess --help``).

DVC calls the stage modules directly (``python -m stages.<name>``); this entry point is the same code
for people who run a stage by hand.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

STAGES = ("download", "preprocess", "validate", "split", "train", "evaluate")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: deunet {{{','.join(STAGES)}}} [stage options]\n\n{__doc__}")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in STAGES:
        print(f"error: unknown stage {name!r}; choose one of {', '.join(STAGES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"stages.{name}")
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
