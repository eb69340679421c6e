"""Where the stages read and write by default, relative to the repository root.

The stage modules' argument defaults come from here, and dvc.yaml passes these same paths explicitly on
every command line (tests/stages/test_stage_paths.py keeps the two equal), so a stage run by hand
(``python -m stages.train``) reads and writes what ``dvc repro`` does.
"""

from __future__ import annotations

RAW = "data/raw"  # the dataset in the ACDC layout (download)
CACHE = "data/cache"  # archive download and extraction cache (download, url source)
PREPROCESSED = "data/preprocessed"  # the clip store (preprocess)
MANIFEST = f"{PREPROCESSED}/manifest.csv"
PATIENTS = f"{PREPROCESSED}/patients.json"
VALIDATION = "data/validation"  # report.json, report.txt (validate)
VALIDATION_REPORT = f"{VALIDATION}/report.json"
SPLIT = "data/split/folds.json"  # (split)
TUNE = "data/tune"  # best_params.yaml, summary.json, trials.tsv (tune)
TUNED = f"{TUNE}/best_params.yaml"
TUNE_WORK = "data/tune_work"  # scratch folder of the tuning trials, not a DVC output
CHECKPOINTS = "data/checkpoints"  # resumable per-run checkpoints (train), not a DVC output
TRAIN = "data/train"  # models/, curves/, metrics.json (train)
MODELS = f"{TRAIN}/models"
EVALUATION = "data/evaluation"  # metrics.json, table1.md, ... (evaluate)
EVALUATION_METRICS = f"{EVALUATION}/metrics.json"
REGISTRATION = "data/registry/registration.json"  # (register)
