"""Print one digest of a small phantom and its preprocessed store (run by tests/data/test_byte_identical.py
in a fresh process, so CPU-feature environment variables take effect)."""

import hashlib
import json
import sys
from pathlib import Path

from pipeline.data.phantom import PhantomConfig, generate_dataset
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.run import preprocess_dataset

# relative paths, as DVC runs the stages (patients.json and the manifest record them)
generate_dataset(Path("raw"), PhantomConfig(n_patients=2, matrix=(48, 48), n_frames=(8, 10), n_slices=(4, 5)))
preprocess_dataset(Path("raw"), Path("pre"), PreprocessConfig(size=32, workers=1), progress=False)
files = {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(Path().rglob("*")) if f.is_file()}
json.dump({"digest": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(), "files": files},
          sys.stdout)  # fmt: skip
