"""Typed configuration: params.yaml is read once at the CLI boundary into frozen dataclasses.

Each DVC stage reads one section (``download``, ``preprocess``, ``validate``, ``split``) and dvc.yaml
names exactly those keys as the stage's params, so changing one knob re-runs only what depends on it.
Unknown keys are errors (with a "did you mean" hint): a typo must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from pipeline.errors import ConfigError

T = TypeVar("T")


def read_yaml_mapping(path: Path | str, what: str, missing_hint: str = "") -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path``; ConfigError naming the file otherwise."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} is missing{missing_hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    """Load params.yaml as a plain dict (the only place the file is parsed)."""
    return read_yaml_mapping(path, "params file")


#: Numbers like ``1e-3`` that YAML 1.1 (PyYAML) leaves as strings because the mantissa has no dot.
_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{where}: must be one of {list(get_args(hint))}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, where)
    if hint is float:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            return float(value)  # `lr: 3e-4`: PyYAML (YAML 1.1) reads an exponent without a dot as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from a params mapping, checking names and types; ``where`` names the section."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{where}.{key}: unknown key{hint}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def section(params: dict[str, Any], name: str, cls: type[T]) -> T:
    """The typed ``name`` section of params."""
    return from_dict(cls, params.get(name), name)


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise ValueError naming ``name`` unless low <= value <= high."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def check_pair(name: str, pair: tuple[float, float], low: float = float("-inf")) -> None:
    """Raise ValueError unless ``pair`` is an ordered (min, max) range with min >= low."""
    if pair[0] > pair[1] or pair[0] < low:
        raise ValueError(f"{name} must be an ordered [min, max] with min >= {low}, got {list(pair)}")
