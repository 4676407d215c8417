"""Run configuration from YAML: one section per stage, each the fields of that stage's config dataclass.

    distill: {loss: dkd, epochs: 10, flops_ratio: 0.125}
    export: {tolerance: 1.0e-4, opset: 18}
    tune: {trials: 300, cost_model: xgb}
    distill_lm: {method: tip, steps: 1000, tip_ratio: 0.3}

Options given on the command line win over the file; the file wins over the defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import TypeVar

import yaml

from kdcompile.errors import KdError

T = TypeVar("T")
SECTIONS = ("distill", "export", "tune", "distill_lm")


def load_yaml(path: Path) -> dict[str, dict]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise KdError(f"No such config file: {path}.")
    except yaml.YAMLError as e:
        raise KdError(f"{path} is not valid YAML: {str(e).splitlines()[0]}")
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise KdError(f"{path} must map sections ({', '.join(SECTIONS)}) to mappings of options.")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise KdError(f"{path} has unknown section(s) {sorted(unknown)}; use {', '.join(SECTIONS)}.")
    return data


def build(cls: type[T], section: dict, cli: dict, explicit: set[str]) -> T:
    """An instance of the dataclass `cls`: CLI values named in `explicit`, then the YAML section, then the CLI's
    defaults (which equal the dataclass defaults unless the CLI chose otherwise)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(section) - set(fields)
    if unknown:
        raise KdError(f"Unknown option(s) {sorted(unknown)} for {cls.__name__}; valid: {', '.join(fields)}.")
    hints = typing.get_type_hints(cls)
    values = {k: v for k, v in cli.items() if k in fields}
    for k, v in section.items():
        if k not in explicit:
            values[k] = _typed(cls.__name__, k, v, hints[k])
    return cls(**values)


def _typed(owner: str, name: str, value, hint):
    """`value` from YAML as the field's type wants it, or one sentence saying what was expected: YAML reads
    trials: "300" as a string and models: student as one string, where a number and a list are meant."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None and type(None) in typing.get_args(hint):
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise KdError(f"{owner}.{name} must be a list such as [student, teacher], got {value!r}.")
        return tuple(value)
    ok = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), str: lambda v: isinstance(v, str)}
    if hint in ok and not ok[hint](value):
        raise KdError(f"{owner}.{name} must be {'a number' if hint in (int, float) else 'a ' + hint.__name__}"
                      f"{' (a whole one)' if hint is int else ''}, got {value!r}.")
    return float(value) if hint is float else value
