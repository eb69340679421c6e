"""Is dvc.lock current? A check that needs no run: ``dvc status`` must not report a modified code or params
dependency of any stage.

    python -m pipeline.orchestration.lock_status          # exit 1, naming each stage and path, when stale

A dependency is *code or params* when it is not (inside) another stage's output: on a fresh clone the data
outputs do not exist and show as deleted, which is expected, while a changed ``pipeline/...`` folder or a
changed section of params.yaml means the committed lock no longer matches the code, and a newcomer's
``dvc repro`` would re-run stages and rewrite it. ``make test`` (the CI's command) runs this first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def stage_outputs(dvc_yaml: Mapping[str, Any]) -> list[str]:
    """Every output path (``outs``, ``metrics``, ``plots``) of every stage of a parsed dvc.yaml (entries may
    be strings or one-key dicts)."""
    paths = []
    for stage in (dvc_yaml.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind) or []:
                paths.extend([out] if isinstance(out, str) else list(out))
    return [p.rstrip("/") for p in paths]


def _inside(path: str, folders: Iterable[str]) -> bool:
    return any(path == f or path.startswith(f + "/") for f in folders)


def stale_dependencies(status: Mapping[str, Any], outputs: Iterable[str]) -> list[str]:
    """``stage: path`` (or ``stage: params.yaml: section``) for each code or params dependency that
    ``dvc status --json``'s ``status`` reports changed; dependencies inside ``outputs`` (data) are skipped."""
    outputs = list(outputs)
    found: list[str] = []
    for stage, entries in status.items():
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            for path, change in (entry.get("changed deps") or {}).items():
                if _inside(path, outputs):
                    continue
                if isinstance(
                    change, dict
                ):  # a params file: {section or key: "modified" | "new" | "deleted"}
                    found.extend(f"{stage}: {path}: {key} {what}" for key, what in change.items())
                else:
                    found.append(f"{stage}: {path} {change}")
    return found


def check(root: Path = ROOT) -> list[str]:
    """The stale code and params dependencies of the DVC pipeline in ``root`` (empty: the lock is current).

    Raises:
        RuntimeError: ``dvc`` cannot be run or its status is not JSON.
    """
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([dvc, "status", "--json"], cwd=root, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status failed in {root}: {proc.stderr.strip() or proc.stdout.strip()}")
    try:
        status = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"dvc status --json gave no JSON in {root}: {exc}") from None
    return stale_dependencies(status, stage_outputs(yaml.safe_load((root / "dvc.yaml").read_text())))


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else ROOT
    stale = check(root)
    if stale:
        print("dvc.lock is stale: these stages' code or params changed since the last `dvc repro`:")
        for line in stale:
            print(f"  {line}")
        print("run `make repro` and commit dvc.lock (stage outputs must not change for a pure refactor)")
        return 1
    print("dvc.lock matches the code and params of every stage")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
