"""Settings of an experiment: params.yaml, a profile's sections over it, then ``section.key=value`` overrides."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import load_params, read_yaml_mapping


def merged_params(
    params_file: Path, profile: Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """params.yaml, each section of ``profile`` merged key by key over it, then each override
    (``section.key=value``, the value read as YAML; dotted keys reach into nested mappings)."""
    params = copy.deepcopy(load_params(params_file))
    if profile is not None:
        for name, value in read_yaml_mapping(profile, "profile").items():
            params[name] = {**params.get(name, {}), **value}
    for item in overrides:
        key, _, raw = item.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return params
