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


def tasks_of(split: dict[str, dict]) -> list[str]:
    return sorted({h for tasks in split.values() for h in tasks})
