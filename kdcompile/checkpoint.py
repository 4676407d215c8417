"""Training state on disk: one file format and one resume rule for every training loop (kdcompile and costmodel).

The file (torch.save, loaded with weights_only=True) holds
    {"format": 1, "identity": {...}, "step": completed units, "state": {name: state}, "torch_rng": ..., "meta": {...}}
`identity` says which run wrote it (config, hashes of data and teacher). The one rule: a checkpoint is resumed
only when its identity equals the current run's, so an interrupted run continues exactly and a changed run never
picks up another run's weights. `resume=None` (stage commands) resumes a match and otherwise starts afresh;
`resume=True` (an explicit --resume) makes a missing or mismatched checkpoint an error; `resume=False` starts afresh.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kdcompile.errors import KdError
from kdcompile.files import atomic_path
from kdcompile.progress import console

FORMAT = 1


def _state_of(obj) -> object:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state  # a dict of str and int, which weights_only loading accepts
    return obj.state_dict()  # modules, optimisers, LR schedulers


def _load_into(obj, state) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif isinstance(obj, np.random.Generator):
        obj.bit_generator.state = state
    else:
        obj.load_state_dict(state)


def save_due(done: int, every: int, total: int) -> bool:
    """Whether to save after `done` of `total` units when saving every `every` units (and always at the end)."""
    return done % every == 0 or done == total


class Checkpoint:
    """The training state of one run at `path` (None: nothing is saved or resumed)."""

    def __init__(self, path: Path | None, identity: dict):
        self.path = None if path is None else Path(path)
        # Compared with the stored copy, so normalised the way it will read back (tuples become lists).
        self.identity = json.loads(json.dumps(identity))
        self.meta: dict = {}  # what the resumed checkpoint's save() was given as meta; {} when starting afresh

    def restore(self, objects: dict[str, object], resume: bool | None = None) -> int:
        """Load the saved state into `objects` (and torch's global generator) when the rule says to resume.

        Returns the number of completed steps: where to continue, 0 when starting afresh."""
        self.meta = {}
        if resume is False:
            return 0
        if self.path is None or not self.path.exists():
            if resume:
                where = f"at {self.path}" if self.path is not None else "file for this run"
                raise KdError(f"Cannot resume: there is no checkpoint {where}; drop --resume to start afresh.")
            return 0
        try:
            blob = torch.load(self.path, weights_only=True)
        except Exception:  # noqa: BLE001  (pickled objects of an old writer, or not a torch file at all)
            blob = None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            if resume:
                raise KdError(f"{self.path} is a checkpoint from an older kdcompile; delete it or drop --resume.")
            console.print(f"{self.path} is a checkpoint from an older kdcompile; starting afresh")
            return 0
        stored = blob.get("identity", {})
        differ = sorted(k for k in stored.keys() | self.identity.keys() if stored.get(k) != self.identity.get(k))
        if differ:
            if resume:
                raise KdError(f"Cannot resume from {self.path}: it was trained with another {', '.join(differ)}; "
                              f"use the same settings or drop --resume.")
            console.print(f"{self.path} was trained with another {', '.join(differ)}; starting afresh")
            return 0
        for name, obj in objects.items():
            _load_into(obj, blob["state"][name])
        torch.set_rng_state(blob["torch_rng"])
        self.meta = blob["meta"]
        console.print(f"resuming from {self.path} after step {blob['step']}")
        return blob["step"]

    def save(self, step: int, objects: dict[str, object], meta: dict | None = None) -> None:
        """Write the state after `step` completed units; atomic, so a kill leaves the previous checkpoint whole."""
        if self.path is None:
            return
        blob = {"format": FORMAT, "identity": self.identity, "step": step,
                "state": {name: _state_of(obj) for name, obj in objects.items()},
                "torch_rng": torch.get_rng_state(), "meta": meta or {}}
        with atomic_path(self.path) as tmp:
            torch.save(blob, tmp)

    def remove(self) -> None:
        """Delete the file, for loops that keep no training state once their result is saved."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
