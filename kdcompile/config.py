"""Run configuration from YAML: one section per stage, each the fields of that stage's config dataclass.

    distill: {loss: dkd, epochs: 10, flops_ratio: 0.125}
    export: {tolerance: 1.0e-4}
    tune: {trials: 300, cost_model: xgb}
    distill_lm: {method: tip, steps: 1000, tip_ratio: 0.3}

Options given on the command line win over the file; the file wins over the defaults.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

import yaml

from kdcompile.errors import KdError

T = TypeVar("T")
SECTIONS = ("distill", "export", "tune", "bench", "distill_lm")


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
    values = {k: v for k, v in cli.items() if k in fields}
    for k, v in section.items():
        if k not in explicit:
            values[k] = tuple(v) if isinstance(v, list) else v
    return cls(**values)
