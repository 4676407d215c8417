"""The collector's bookkeeping, with the measurement replaced by a fake search: when a source counts as exhausted,
how sources are seeded, and which machine's measurements a dataset accepts."""

import json
from pathlib import Path

import pytest
from torch import nn

from costmodel import zoo
from costmodel.collect import CollectConfig, collect, search_ran_dry
from costmodel.dataset import ProgramDataset
from kdcompile.errors import KdError


def test_a_source_runs_dry_only_on_an_empty_batch_or_an_early_end():
    assert not search_ran_dry([23], asked=24, per_batch=24)  # one duplicate: plenty may be left
    assert not search_ran_dry([4, 3, 4], asked=12, per_batch=4)
    assert search_ran_dry([4, 0, 4], asked=12, per_batch=4)  # a batch of nothing but known programs
    assert search_ran_dry([4], asked=12, per_batch=4)  # the search ended with batches owed
    assert search_ran_dry([], asked=24, per_batch=24)


@pytest.fixture
def tiny_zoo(monkeypatch):
    monkeypatch.setitem(zoo.NETWORKS, "mlp", (lambda: nn.Sequential(nn.Linear(32, 32), nn.ReLU()), (1, 32)))


def _fake_search(calls: list, duplicate_first: bool, empty: bool = False):
    """A stand-in for measure_programs: one batch of `n` programs; the first is a copy of a program the task has."""
    from kdcompile.tvm_layer import programs

    def measure(mod, target, source, n, per_batch, seed, sink, work_dir, database=None, is_known=None, **kw):
        calls.append({"source": source, "n": n, "seed": seed, "known": database is not None})
        start = 1000 * len(calls)
        rows = [{"trace": [["fake", source, start + i]], "run_secs": [1e-3], "error": None} for i in range(n)]
        if empty:
            rows = []
        elif duplicate_first and calls[:-1] and n > 1:
            rows[0] = {"trace": [["fake", source, 1000]], "run_secs": [1e-3], "error": None}  # seen before
        if rows:
            sink(rows)

    return programs, measure


def _collect(tmp_path: Path, quota: int) -> dict:
    return collect(CollectConfig(out=tmp_path / "ds", networks=("mlp",), batches=(1,), layouts=(None,),
                                 random_per_task=quota, evolutionary_per_task=0, first_pass=4, per_iter=quota,
                                 repeats=1, cache=tmp_path / "cache"))


def test_a_batch_with_a_duplicate_does_not_exhaust_the_source(tmp_path, tiny_zoo, monkeypatch):
    calls = []
    programs, fake = _fake_search(calls, duplicate_first=True)
    monkeypatch.setattr(programs, "measure_programs", fake)
    _collect(tmp_path, quota=4)  # the first pass: 4 new programs per task
    ds = ProgramDataset(tmp_path / "ds")
    first = {h: len(list(ds.task(h).records())) for h in ds.task_hashes()}
    _collect(tmp_path, quota=8)  # each task gets a batch of 4 holding one duplicate: 3 new
    assert ds.exhausted() == {}  # the old rule (fewer new programs than asked) flagged every task here
    assert all(len(list(ds.task(h).records())) == first[h] + 3 for h in first)
    _collect(tmp_path, quota=8)  # so a rerun tops them up
    assert all(len(list(ds.task(h).records())) == first[h] + 3 + 1 for h in first)


def test_an_empty_batch_exhausts_the_source(tmp_path, tiny_zoo, monkeypatch):
    calls = []
    programs, fake = _fake_search(calls, duplicate_first=False, empty=True)
    monkeypatch.setattr(programs, "measure_programs", fake)
    _collect(tmp_path, quota=4)
    ds = ProgramDataset(tmp_path / "ds")
    assert ds.exhausted() == {h: ["random"] for h in ds.task_hashes()}
    n = len(calls)
    _collect(tmp_path, quota=8)
    assert len(calls) == n  # not searched again


def test_sources_are_seeded_apart():
    from costmodel.collect import SOURCE_SEEDS

    assert len(set(SOURCE_SEEDS.values())) == len(SOURCE_SEEDS)


def test_a_dataset_refuses_measurements_of_another_cpu(tmp_path):
    ds = ProgramDataset(tmp_path)
    ds.add_fingerprint({"cpu": "AMD EPYC", "flags_sha1": "aaa", "cores": 2})
    assert ds.add_fingerprint({"cpu": "AMD EPYC", "flags_sha1": "aaa", "cores": 2, "tvm": "x"})  # same CPU: fine
    with pytest.raises(KdError, match="another CPU"):
        ds.add_fingerprint({"cpu": "Intel Xeon", "flags_sha1": "bbb", "cores": 2})
    assert len(json.loads((tmp_path / "fingerprints.json").read_text())) == 2
