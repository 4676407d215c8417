"""The slots plug-ins fill, found by name: the tuner's cost models, the pickers of default schedules, the sources
of known programs, and command groups of the CLI. kdcompile ships the trivial entries (TVM's XGBoost learning from scratch, and random: the
controls); other packages register theirs through Python entry points, the convention pytest and others use, so
kdcompile never imports them. costmodel/ registers the Mamba ranker and the pretrained XGBoost in pyproject.toml:

    [project.entry-points."kdcompile.cost_models"]   mamba = "costmodel.plugin:mamba"     # () -> cost model
    [project.entry-points."kdcompile.pickers"]       xgb = "costmodel.plugin:xgb_picker"  # () -> cost model
    [project.entry-points."kdcompile.known"]         dataset = "costmodel.plugin:known"   # () -> lookup or None
    [project.entry-points."kdcompile.commands"]      costmodel = "costmodel.cli:app"      # a typer app

A cost model is what MetaSchedule's `cost_model=` takes: one of its own names ("xgb", "random") or a PyCostModel
(kdcompile.tvm_layer.cost_models adapts a trace ranker). A picker is a cost model with a `predict`. A source of
known programs is a lookup `(task_hash) -> [record, ...]`: measured programs of that exact workload, fastest first,
each a dict with its trace JSON and run_secs (`tvm_layer.defaults.default_schedules` starts from the first that
replays instead of picking one).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable

from kdcompile.errors import KdError

COST_MODELS = "kdcompile.cost_models"
PICKERS = "kdcompile.pickers"
KNOWN = "kdcompile.known"
COMMANDS = "kdcompile.commands"


def _untrained_xgb():
    from kdcompile.tvm_layer.cost_models import untrained_xgb

    return untrained_xgb()


BUILTIN: dict[str, dict[str, Callable[[], object]]] = {
    COST_MODELS: {"xgb": lambda: "xgb",  # TVM's XGBoost on per-store features, learning from this run: the baseline
                  "random": lambda: "random"},  # the control
    PICKERS: {"random": _untrained_xgb},  # an untrained model: a random program of the space, tiled and vectorized
    KNOWN: {"none": lambda: None},  # every default schedule is picked
    COMMANDS: {},
}


def _registered(group: str) -> dict:
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str) -> list[str]:
    """Every name the slot answers to: the built-in ones, then the registered ones."""
    return list(dict.fromkeys([*BUILTIN[group], *_registered(group)]))


def load(group: str, name: str) -> Callable[[], object]:
    """The factory registered under `name`; the plug-in's module is imported only now."""
    if name in BUILTIN[group]:
        return BUILTIN[group][name]
    registered = _registered(group)
    if name not in registered:
        what = {COST_MODELS: "cost model", PICKERS: "default-schedule picker", KNOWN: "source of known programs",
                COMMANDS: "command group"}[group]
        raise KdError(f"Unknown {what} '{name}': choose one of {', '.join(names(group))} (plug-ins register under "
                      f"the entry-point group {group}; reinstall kdcompile if one is missing).")
    return registered[name].load()


def make(group: str, name: str) -> object:
    """A fresh instance from the slot: `load(group, name)()`."""
    return load(group, name)()


def command_groups() -> dict[str, object]:
    """The CLI's command groups from plug-ins: {name: typer app}."""
    return {name: ep.load() for name, ep in _registered(COMMANDS).items()}
