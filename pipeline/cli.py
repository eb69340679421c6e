"""The ``deunet`` console script: run any pipeline stage by name (``deunet preprocess --help``),
segment cines with ``deunet predict --input cine.nii.gz|DICOM_DIR|FOLDER --out DIR`` (with a shipped model
unless ``--model`` names one; ``deunet models`` lists the shipped ones), turn
DICOM studies into the ACDC layout with ``deunet import-dicom``, export checkpoints for a torch-free
predict with ``deunet export-onnx``, or run the Prefect flows with
``deunet flow run|retrain|serve``.

DVC calls the stage modules directly (``python -m stages.<name>``); this entry point is the same code
for people who run a stage by hand.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence

STAGES = ("download", "preprocess", "validate", "split", "tune", "train", "evaluate", "register")
# Commands that are not DVC stages, and the modules that implement them.
EXTRA = {"predict": "pipeline.inference.predict_cli", "import-dicom": "pipeline.data.dicom_import",
         "export-onnx": "pipeline.inference.onnx_export", "flow": "pipeline.orchestration.cli",
         "profile": "pipeline.profiles", "models": "pipeline.serving.shipped"}  # fmt: skip
COMMANDS = (*STAGES, *EXTRA)
#: Commands that leave the process with os._exit once done (only as a console script, never in-process).
FAST_EXIT = ("predict",)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: deunet {{{','.join(COMMANDS)}}} [options]\n\n{__doc__}")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(EXTRA.get(name, f"stages.{name}"))
    code = int(module.main(rest))
    if argv is None and name in FAST_EXIT:
        # A process that imported torch spends ~0.8 s tearing the interpreter down (measured here, of a
        # ~3 s predict); every output is written atomically and closed by now, so skip the teardown.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
