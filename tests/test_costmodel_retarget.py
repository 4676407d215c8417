"""`kdcompile costmodel retarget`: a dataset's programs measured again for another target, into a dataset of its
own. Real programs of a tiny network, really timed: each record names the source's time of the same program, the
source's fastest are among the chosen, and an interrupted run resumes where it stopped without measuring twice."""

import json

import pytest
from torch import nn

tvm = pytest.importorskip("tvm")

from costmodel import zoo  # noqa: E402
from costmodel.collect import CollectConfig, collect  # noqa: E402
from costmodel.dataset import ProgramDataset, mean_seconds, trace_key  # noqa: E402
from costmodel.retarget import RetargetConfig, choose, retarget  # noqa: E402
from kdcompile.errors import KdError  # noqa: E402

AVX2_ONE_CORE = '{"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 1}'


def test_the_choice_is_the_fastest_then_a_fixed_draw_of_the_rest():
    records = [{"trace": [[i]], "run_secs": [float(s)]} for i, s in enumerate((5, 1, 4, 2, 3, 6))]
    records += [{"trace": [[9]], "run_secs": None}, {"trace": [[1]], "run_secs": [7.0]}]  # a failure, a duplicate
    picked = choose(records, per_task=4, best=2, seed="x")
    assert [mean_seconds(r) for r in picked[:2]] == [1.0, 2.0]
    assert len(picked) == 4 and all(mean_seconds(r) is not None for r in picked)
    assert len({str(r["trace"]) for r in picked}) == 4 and [[1]] not in [r["trace"] for r in picked[2:]]
    assert picked == choose(records, per_task=4, best=2, seed="x")  # a resumed run chooses the same
    assert len(choose(records, per_task=3, best=5, seed="x")) == 3  # never more than per_task


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A real dataset: 6 random programs of each task of a one-layer MLP, measured on this CPU."""
    root = tmp_path_factory.mktemp("retarget")
    mp = pytest.MonkeyPatch()
    mp.setitem(zoo.NETWORKS, "mlp", (lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU()), (1, 64)))
    try:
        collect(CollectConfig(out=root / "src", networks=("mlp",), batches=(1,), layouts=(None,), random_per_task=6,
                              evolutionary_per_task=0, first_pass=6, per_iter=6, repeats=2, cache=root / "cache"))
    finally:
        mp.undo()
    return root


@pytest.mark.slow
def test_programs_are_measured_for_the_new_target_and_a_stopped_run_resumes(source):
    src, out = source / "src", source / "avx2"
    cfg = dict(source=src, out=out, target=AVX2_ONE_CORE, per_task=4, best=1, min_programs=4, batch=4, repeats=2)
    first = retarget(RetargetConfig(**cfg, max_programs=3))
    assert first["measured_this_run"] == 3
    rest = retarget(RetargetConfig(**cfg))
    old, new = ProgramDataset(src), ProgramDataset(out)
    tasks = [h for h in old.task_hashes() if sum(mean_seconds(r) is not None for r in old.task(h).records()) >= 4]
    assert tasks and rest["measured_this_run"] == 4 * len(tasks) - 3  # the rest, nothing twice
    assert retarget(RetargetConfig(**cfg))["measured_this_run"] == 0
    for h in tasks:
        before = {trace_key(r["trace"]): mean_seconds(r) for r in old.task(h).records()}
        after = list(new.task(h).records())
        assert len({trace_key(r["trace"]) for r in after}) == len(after) == 4
        assert all(r["source_s"] == before[trace_key(r["trace"])] for r in after)  # paired with the source
        assert min(before[k] for k in before if before[k] is not None) in [r["source_s"] for r in after]
        assert all(r["run_secs"] and len(r["run_secs"]) == 2 for r in after), [r["error"] for r in after]
        assert json.loads(json.dumps(new.task(h).header()["target"]))["mcpu"] == "x86-64-v3"
    assert set(new.networks()) == set(old.networks())
    rows = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    assert sum(r["programs"] for r in rows) == 4 * len(tasks) and all(r["build_s"] > 0 for r in rows)


def test_an_unknown_network_is_one_sentence(source, tmp_path):
    with pytest.raises(KdError, match="has no network 'nope'"):
        retarget(RetargetConfig(source=source / "src", out=tmp_path / "o", target=AVX2_ONE_CORE, networks=("nope",)))
