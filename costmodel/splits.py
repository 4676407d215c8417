"""Train/test splits by network, as TenSet and TLP make them: test networks never appear in training, and neither
does any task they contain (a task shared with a test network would leak its programs)."""

from __future__ import annotations

from costmodel import zoo
from costmodel.dataset import ProgramDataset


def split_by_network(ds: ProgramDataset, test_networks: tuple[str, ...] = zoo.TEST_NETWORKS) -> dict[str, dict]:
    """{"train": {network_key: {task_hash: weight}}, "test": {...}}; network keys look like "resnet50@b1"."""
    nets = ds.networks()
    is_test = {k: v["network"] in test_networks for k, v in nets.items()}
    test = {k: dict(v["tasks"]) for k, v in nets.items() if is_test[k]}
    leaked = {h for tasks in test.values() for h in tasks}
    train = {k: {h: w for h, w in v["tasks"].items() if h not in leaked} for k, v in nets.items() if not is_test[k]}
    return {"train": train, "test": test}


def validation_split(ds: ProgramDataset, validation_networks: tuple[str, ...] = zoo.VALIDATION_NETWORKS,
                     test_networks: tuple[str, ...] = zoo.TEST_NETWORKS) -> dict[str, dict]:
    """The training networks split again, for every modelling choice (size, steps, learning rate, features):
    {"train": ..., "validation": ...}. The held-out test networks are looked at once per candidate model, never
    tuned on; neither split holds a task of theirs, and no validation task is trained on."""
    train = split_by_network(ds, test_networks)["train"]
    is_val = {k: ds.networks()[k]["network"] in validation_networks for k in train}
    val = {k: dict(v) for k, v in train.items() if is_val[k]}
    leaked = {h for tasks in val.values() for h in tasks}
    return {"train": {k: {h: w for h, w in v.items() if h not in leaked} for k, v in train.items() if not is_val[k]},
            "validation": val}


def tasks_of(split: dict[str, dict]) -> list[str]:
    return sorted({h for tasks in split.values() for h in tasks})
