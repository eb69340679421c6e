"""Named settings for real data: ``profiles/<name>.yaml`` overrides sections of params.yaml in one step.

    deunet profile acdc-roi-cpu            # print the `dvc exp run -S` overrides of the profile
    deunet profile acdc-roi-cpu --apply    # write them into params.yaml (comments kept), then `dvc repro`
    deunet profile acdc-roi-cpu --exp      # run it as the named DVC experiment acdc-roi-cpu (dvc exp run -S ...)
    make repro PROFILE=acdc-roi-cpu        # the same, after the venv set-up

A profile is a partial params.yaml; its keys are checked against params.yaml, so a typo is an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import load_params, read_yaml_mapping
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"


def available() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no such profile; choose one of {available()}")
    return read_yaml_mapping(path, "profile")


def _flatten(node: dict[str, Any], base: dict[str, Any], prefix: str, where: str) -> list[str]:
    """``prefix.key=value`` for every leaf of ``node``; a key unknown to params.yaml is an error."""
    out = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{where}: {name} is not a key of params.yaml")
        if isinstance(value, dict) and isinstance(base[key], dict) and base[key]:
            out += _flatten(value, base[key], f"{name}.", where)
        else:
            out.append(f"{name}={_scalar(value)}")
    return out


def _scalar(value: Any) -> str:
    """A value in Hydra's override grammar (what ``dvc exp run -S`` parses)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and any(c in value for c in " ,[]{}=:'\"()"):
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


def overrides(name: str, params_path: Path = ROOT / "params.yaml") -> list[str]:
    """The profile as ``section.key=value`` overrides (DVC's -S / Hydra grammar)."""
    profile = load_profile(name)
    return _flatten(profile, load_params(params_path), "", str(PROFILES / f"{name}.yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="profile", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help=f"one of {available()}")
    p.add_argument("--apply", action="store_true", help="write the overrides into params.yaml")
    p.add_argument("--exp", action="store_true", help="run them as the DVC experiment NAME (dvc exp run)")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = p.parse_args(argv)
    try:
        items = overrides(args.name, args.params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.exp:
        import subprocess

        cmd = ["dvc", "exp", "run", "-n", args.name, *(a for item in items for a in ("-S", item))]
        print(" ".join(cmd), flush=True)
        return subprocess.call(cmd, cwd=args.params.parent)
    if args.apply:
        from dvc.utils.hydra import apply_overrides

        apply_overrides(str(args.params), items)
        print(f"{args.params}: applied profile {args.name} ({len(items)} keys); now run `dvc repro`")
    else:
        print(" ".join(f"-S '{item}'" for item in items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
