"""The phantom and its preprocessed store are byte-identical for the same params on any x86-64 machine.

Another machine is simulated by switching off the SIMD code paths this CPU has, in numpy
(NPY_DISABLE_CPU_FEATURES) and in torch (ATEN_CPU_CAPABILITY=default): float32 transcendental functions
and interpolation kernels differ in their last bits between those paths, which used to change the files
DVC hashes (a fresh clone's `make repro` rewrote dvc.lock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("hash_phantom.py")
#: sha256 over every file of the small phantom (2 patients) and its 32 x 32 store, at the pinned versions.
PINNED = "d7bc01b8becfc3ab9a2e1e565b26b4c39f494678e439fa828c79561d3b39fe60"


def _digest(tmp: Path, env: dict[str, str]) -> dict:
    tmp.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _other_simd() -> dict[str, str]:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    present = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    return {
        "ATEN_CPU_CAPABILITY": "default",
        **({"NPY_DISABLE_CPU_FEATURES": " ".join(present)} if present else {}),
    }


def test_phantom_and_store_are_byte_identical_across_simd_paths(tmp_path: Path) -> None:
    here = _digest(tmp_path / "native", {})
    other = _digest(tmp_path / "baseline", _other_simd())
    differ = sorted(k for k in here["files"] if here["files"][k] != other["files"].get(k))
    assert not differ, f"files differ between SIMD paths: {differ}"
    assert here["digest"] == PINNED, json.dumps(here["files"], indent=1)
