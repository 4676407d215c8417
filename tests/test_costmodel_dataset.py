"""The dataset format (no TVM) and its contact points with MetaSchedule (real tuning runs of a tiny matmul)."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from costmodel.dataset import ProgramDataset, mean_seconds, task_hash, trace_key
from costmodel.splits import split_by_network, tasks_of
from costmodel.tokenize import tokenize
from kdcompile.tvm_layer.lowering import Lowering, import_onnx, lower
from kdcompile.tvm_layer.plain import plain_json
from kdcompile.tvm_layer.programs import featurise_stages, measure_programs, network_tasks, per_store_features
from kdcompile.tvm_layer.records import count_records
from kdcompile.tvm_layer.search import tune
from kdcompile.tvm_layer.target import host_target, target_dict

LOWERING_KEY = Lowering().key

HEADER = {"task_hash": "123", "task_name": "t", "workload": ["123", "abc"], "args_info": [], "target": {"kind": "llvm"}}


def _row(i, secs=(1e-3, 2e-3)):
    return {"trace": [[["Split", ["l0"], [i], ["l1"]]], []], "run_secs": list(secs) if secs else None,
            "error": None if secs else "boom", "source": "random", "fp": "x", "ts": 0.0, "load": 0.1}


def test_round_trip_pack_and_torn_tail(tmp_path):
    ds = ProgramDataset(tmp_path)
    f = ds.task("123")
    f.create(HEADER)
    f.append([_row(0), _row(1, None)])
    # A kill in the middle of a batch leaves a torn line: readers stop before it, the next append cuts it off.
    with f.plain.open("a") as fh:
        fh.write('{"trace": [[["Spl')
    assert len(list(f.records())) == 2
    f.append([_row(2)])
    assert [r["trace"][0][0][2] for r in f.records()] == [[0], [1], [2]]
    f.pack()
    assert f.path.suffix == ".gz" and not f.plain.exists()
    assert f.header()["workload"] == HEADER["workload"] and f.header()["format"] == 1
    records = list(f.records())
    assert len(records) == 3 and records[1]["run_secs"] is None and records[1]["error"] == "boom"
    f.append([_row(3)])  # appending to a packed task reopens it
    assert len(list(ds.task("123").records())) == 4
    assert mean_seconds(records[0]) == pytest.approx(1.5e-3) and mean_seconds(records[1]) is None
    assert ds.count() == {"records": 4, "failed": 1, "tasks": 1, "networks": 0}


def test_split_keeps_test_networks_and_their_tasks_out_of_training(tmp_path):
    ds = ProgramDataset(tmp_path)
    ds.add_network("resnet18@b1", {"network": "resnet18", "tasks": {"a": 1, "shared": 2}})
    ds.add_network("resnet50@b1", {"network": "resnet50", "tasks": {"b": 1, "shared": 1}})
    split = split_by_network(ds, test_networks=("resnet50",))
    assert tasks_of(split["train"]) == ["a"] and tasks_of(split["test"]) == ["b", "shared"]
    assert split["test"]["resnet50@b1"]["shared"] == 1


def test_tokens_ignore_block_names():
    trace = [[["GetSBlock", [], ["matmul", "main"], ["b0"]], ["GetLoops", ["b0"], [], ["l1", "l2"]],
              ["SamplePerfectTile", ["l1"], [4, 64], ["v3", "v4", "v5", "v6"]],
              ["SampleCategorical", [], [[0, 16, 64, 512], [0.25, 0.25, 0.25, 0.25]], ["v7"]],
              ["Annotate", ["b0", "v7"], ["meta_schedule.unroll_explicit"], []]], [[2, [16, 1, 1, 16]], [3, 2]]]
    renamed = json.loads(json.dumps(trace).replace("matmul", "conv2d_nchw"))
    k1, n1 = tokenize(trace)
    k2, n2 = tokenize(renamed)
    assert np.array_equal(k1, k2) and np.array_equal(n1, n2)
    assert n1[2, 0] == pytest.approx(np.log2(17))  # tile factor 16 on the numeric channel
    assert n1[3, 0] == pytest.approx(np.log2(65))  # categorical index 2 -> unroll 64
    assert (k1 > 0).all()  # every kind is known


# ---- with TVM: a real MetaSchedule run on a tiny matmul --------------------------------------------------------
@pytest.fixture(scope="module")
def linear_onnx(tmp_path_factory):
    import torch

    from kdcompile.export import to_onnx

    path = tmp_path_factory.mktemp("net") / "linear.onnx"
    to_onnx(torch.nn.Linear(64, 64).eval(), torch.zeros(16, 64), path, opset=18)
    return path


@pytest.fixture(scope="module")
def matmul(linear_onnx):
    """The dense task of a one-layer network, lowered the way `kdcompile tune` lowers it."""
    from kdcompile.export import INPUT_NAME

    tasks = network_tasks(linear_onnx, INPUT_NAME, (16, 64), host_target(2))
    return max(tasks, key=lambda t: len(str(t["mod"])))["mod"]


@pytest.mark.slow
def test_offline_features_equal_tuning_features_and_json_database_round_trip(matmul, tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from costmodel.jsondb import export_json_database, import_json_database

    target = host_target(2)
    rows = []
    measure_programs(matmul, target, "random", 8, 8, 0, rows.extend, tmp_path / "logs", repeats=2,
                        min_repeat_ms=1, with_features=True)
    assert len(rows) == 8
    workload = plain_json(ms.database.Workload(matmul).as_json())
    args = plain_json([a.as_json() for a in ms.arg_info.ArgInfo.from_entry_func(matmul)])
    offline = per_store_features(workload, target_dict(target), [r["trace"] for r in rows])
    for r, f in zip(rows, offline):
        assert np.array_equal(r["features"], f)
    # bench.costmodel_featurise times the same extraction and conversion it returns
    steps, converted, timed_rows = featurise_stages(workload, target_dict(target), [r["trace"] for r in rows], {},
                                                    repeats=1)
    assert all(np.array_equal(a, b) for a, b in zip(timed_rows, offline)) and len(timed_rows) == 8
    assert [tokenize(t)[0].tolist() for t in converted] == [tokenize(r["trace"])[0].tolist() for r in rows]
    assert {"per_store", "per_store_1thread", "convert_cold", "trace_key"} <= set(steps)

    # Our format -> MetaSchedule JSONDatabase (read back by MetaSchedule itself) -> our format again.
    ds = ProgramDataset(tmp_path / "ds")
    h = task_hash(workload)
    ds.task(h).create({"task_hash": h, "task_name": "matmul", "workload": workload, "args_info": args,
                       "target": target_dict(target)})
    ds.task(h).append([{k: v for k, v in r.items() if k != "features"} | {"source": "random", "fp": None,
                                                                           "ts": 0.0, "load": 0.0} for r in rows])
    assert export_json_database(ds, tmp_path / "msdb") == 8
    db = ms.database.JSONDatabase(work_dir=str(tmp_path / "msdb"))
    got = sorted(float(np.mean([float(s) for s in rec.run_secs])) for rec in db.get_all_tuning_records())
    want = sorted(mean_seconds(r) or 1e10 for r in rows)
    assert np.allclose(got, want)
    back = ProgramDataset(tmp_path / "back")
    assert import_json_database(back, tmp_path / "msdb", "matmul") == len({trace_key(r["trace"]) for r in rows})
    assert import_json_database(back, tmp_path / "msdb", "matmul") == 0  # deduplicated
    assert {trace_key(r["trace"]) for _, r in back.records()} == {trace_key(r["trace"]) for r in rows}

    # The XGBoost baseline on these features (pack-sum over stores), end to end.
    from costmodel.evaluate import evaluate, xgb_scorer
    from costmodel.train import load_tasks

    res = evaluate(ds.root, {"xgb": xgb_scorer(ds, load_tasks(ds, [h]), rounds=20)}, networks={"linear": {h: 1}})
    assert 0 < res["xgb"]["top1"] <= 1 and 0 <= res["xgb"]["pairwise"] <= 1

    # Noise: the same programs timed again, later.
    from costmodel.remeasure import remeasure

    summary = remeasure(ds.root, sample=3)
    lines = [json.loads(line) for line in (ds.root / "remeasure.jsonl").open()]
    assert summary["remeasured"] == len(lines) == 3
    assert all(len(line["after_s"]) == 5 and min(line["after_s"]) > 0 and line["cv"] >= 0 for line in lines)
    assert remeasure(ds.root, sample=3)["remeasured"] == 0  # already has its sample

    # Ctrl-C (here: a SIGINT to this process once the first chunk is timed) keeps what was timed and stops;
    # the same command then times the rest, and Ctrl-C means what it meant before.
    from costmodel import remeasure as rm

    from kdcompile.tvm_layer import programs

    real, handler = programs.remeasure, signal.getsignal(signal.SIGINT)

    def timed_then_ctrl_c(*args, **kwargs):
        out = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return out

    programs.remeasure = timed_then_ctrl_c
    try:
        stopped = rm.remeasure(ds.root, sample=6, batch=1)
    finally:
        programs.remeasure = real
    assert stopped == {"remeasured": 1, "cv_median": stopped["cv_median"], "stopped": True}
    assert signal.getsignal(signal.SIGINT) is handler
    assert rm.remeasure(ds.root, sample=6, batch=1)["remeasured"] == 2
    assert len((ds.root / "remeasure.jsonl").read_text().splitlines()) == 6

    # A failure whose trace does not replay (the collector keeps such programs, as failures) is featurised
    # without replaying it: it owns no feature rows, and every measured program keeps its tuning-time rows.
    from costmodel.features import featurize_task

    bad = {"trace": [[["GetSBlock", [], ["no_such_block", "main"], ["b0"]]], []], "run_secs": None,
           "error": "trace does not replay", "source": "random", "fp": None, "ts": 0.0, "load": 0.0}
    ds.task(h).append([bad])
    f = featurize_task(ds, h)
    off = f["psf_offsets"]
    assert len(f["latency_s"]) == 9 and np.isnan(f["latency_s"][8]) and off[9] == off[8]
    for i, r in enumerate(rows):
        got = f["psf"][off[i]:off[i + 1]]
        assert np.array_equal(got, offline[i].astype(np.float32)) if r["run_secs"] else len(got) == 0  # cached as fp32


@pytest.mark.slow
def test_evolutionary_source_stops_once_a_tiny_space_is_measured(tmp_path):
    """A 4-element add has a handful of programs: the search measures them in its first batch and ends there,
    instead of searching its whole population again for every empty batch TVM allows (5)."""
    import tvm
    from tvm import te

    a = te.placeholder((4,), name="A")
    mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((4,), lambda i: a[i] + 1.0, name="B")])})
    batches = []
    measure_programs(mod, host_target(2), "evolutionary", 24, 24, 0, batches.append, tmp_path / "logs",
                        repeats=1, min_repeat_ms=1)
    programs = [r for batch in batches for r in batch]
    assert len(batches) == 1 and 1 <= len(programs) < 24, [len(b) for b in batches]
    assert len({trace_key(r["trace"]) for r in programs}) == len(programs)


@pytest.mark.slow
def test_import_of_a_real_tuning_database(linear_onnx, tmp_path):
    from costmodel.jsondb import import_json_database
    from kdcompile.export import INPUT_NAME

    target = host_target(2)
    tune(lower(import_onnx(linear_onnx, INPUT_NAME, (16, 64)), target), target, tmp_path / "work",
            num_trials=8, cost_model="random")
    ds = ProgramDataset(tmp_path / "ds")
    n = import_json_database(ds, tmp_path / "work", "linear")
    unique = {(h["task_hash"], trace_key(r["trace"])) for h, r in ds.records()}
    assert 1 <= n == len(unique) <= count_records(tmp_path / "work")
    assert sorted(ds.networks()["linear"]["tasks"]) == ds.task_hashes()
    header, record = next(ds.records())
    assert header["workload"][0] in ds.task_hashes() and record["source"] == "import"


COLLECT = """
import sys
from pathlib import Path
from torch import nn
from costmodel import zoo
from costmodel.collect import CollectConfig, collect
zoo.NETWORKS = {"mlp": (lambda: nn.Sequential(nn.Linear(32, 32), nn.ReLU()), (1, 32))}
collect(CollectConfig(out=Path(sys.argv[1]), networks=("mlp",), batches=(1,), random_per_task=12,
                      evolutionary_per_task=0, per_iter=4, repeats=1, cache=Path(sys.argv[2])))
"""


@pytest.mark.slow
def test_collection_resumes_after_a_kill(tmp_path):
    out, cache = tmp_path / "ds", tmp_path / "cache"
    cmd = [sys.executable, "-c", COLLECT, str(out), str(cache)]
    env = dict(os.environ, KDCOMPILE_QUIET="1")
    log = tmp_path / "collect.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300

    def n_records():
        return ProgramDataset(out).count()["records"] if (out / "tasks").exists() else 0

    while time.time() < deadline and n_records() < 4 and proc.poll() is None:
        time.sleep(0.5)
    exited = proc.poll()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = ProgramDataset(out).count()["records"]
    assert exited is None, f"the collector ended (rc {exited}) before it could be killed:\n{log.read_text()[-2000:]}"
    assert 4 <= first < 12 * len(ProgramDataset(out).task_hashes()), log.read_text()[-2000:]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ds = ProgramDataset(out)
    exhausted = ds.exhausted()
    for h in ds.task_hashes():
        records = [r for _, r in ds.records([h])]
        assert len(records) == 12 or "random" in exhausted.get(h, [])
        assert ds.task(h).path.suffix == ".gz"  # complete tasks are packed
    assert ds.count()["records"] > first


@pytest.mark.slow
def test_ctrl_c_stops_collection_once_the_batch_in_flight_is_saved(tmp_path):
    """Ctrl-C as a terminal sends it: to the whole process group, MetaSchedule's build and run workers included."""
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", COLLECT, str(out), str(tmp_path / "cache")],
                            env=dict(os.environ, KDCOMPILE_QUIET="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not ((out / "tasks").exists() and ProgramDataset(out).count()["records"] >= 4):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-2000:]
    assert "Stopped after saving this batch" in output or "the batch in flight was lost" in output, output[-2000:]
    records = [r for _, r in ProgramDataset(out).records()]
    assert len(records) >= 4 and all(r["run_secs"] for r in records), [r["error"] for r in records]


@pytest.mark.slow
def test_collection_through_an_rpc_tracker_on_loopback(tmp_path):
    """The path for remote GPUs, exercised with a CPU: programs measured by a TVM RPC server found via a tracker."""
    from torch import nn
    from tvm.rpc import server as rpc_server
    from tvm.rpc import tracker as rpc_tracker

    from costmodel import zoo
    from costmodel.collect import CollectConfig, collect

    tracker = rpc_tracker.Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    server = rpc_server.Server(host="127.0.0.1", port=9090, port_end=9190, key="loopback-cpu",
                               tracker_addr=("127.0.0.1", tracker.port), silent=True)
    try:
        saved = dict(zoo.NETWORKS)
        zoo.NETWORKS["mlp"] = (lambda: nn.Sequential(nn.Linear(32, 32), nn.ReLU()), (1, 32))
        counts = collect(CollectConfig(out=tmp_path / "ds", networks=("mlp",), batches=(1,), random_per_task=4,
                                       evolutionary_per_task=0, per_iter=4, repeats=2, max_tasks=1,
                                       rpc=f"127.0.0.1:{tracker.port}:loopback-cpu", cache=tmp_path / "cache"))
    finally:
        zoo.NETWORKS.clear()
        zoo.NETWORKS.update(saved)
        server.terminate()
        tracker.terminate()
    ds = ProgramDataset(tmp_path / "ds")
    records = [r for _, r in ds.records()]
    assert counts["records"] == len(records) >= 1
    assert all(r["run_secs"] and len(r["run_secs"]) == 2 for r in records), [r["error"] for r in records]
    fingerprint, = json.loads((tmp_path / "ds" / "fingerprints.json").read_text()).values()
    assert fingerprint["rpc_key"] == "loopback-cpu"


@pytest.mark.slow
def test_plan_registers_cnns_channels_last_too(tmp_path):
    """A CNN of the zoo is lowered twice (as exported, and NHWC as `tune --layout nhwc` lowers it), each under its
    own network key; other networks only as exported."""
    from costmodel.collect import CollectConfig, plan

    cfg = CollectConfig(out=tmp_path / "ds", networks=("mnist_student", "tcn"), batches=(1,), cache=tmp_path / "c")
    order = plan(cfg)
    nets = ProgramDataset(tmp_path / "ds").networks()
    assert sorted(nets) == sorted([f"mnist_student@b1+{LOWERING_KEY}", f"mnist_student@b1+{LOWERING_KEY}+nhwc",
                                   f"tcn@b1+{LOWERING_KEY}"])
    nchw, nhwc = (set(nets[f"mnist_student@b1+{LOWERING_KEY}{s}"]["tasks"]) for s in ("", "+nhwc"))
    assert nhwc - nchw and set(order) == nchw | nhwc | set(nets[f"tcn@b1+{LOWERING_KEY}"]["tasks"])
    ds = ProgramDataset(tmp_path / "ds")
    for h in nhwc - nchw:  # every convolution of the NHWC lowering reads (1, H, W, channels)
        header = ds.task(h).header()
        if "conv2d" in header["task_name"]:
            shape = header["args_info"][0][2]  # ["TENSOR", dtype, shape] of the activation
            assert shape[1] == shape[2] <= 28, (header["task_name"], shape)  # NCHW would be (1, C, H, W)


def test_the_validation_split_shares_no_task_with_training_or_the_test_networks():
    from pathlib import Path

    from costmodel.splits import validation_split

    ds = ProgramDataset(Path(__file__).resolve().parent.parent / "datasets" / "cpu-znver4-2c")
    splits, test = validation_split(ds), split_by_network(ds)["test"]
    train, val, held_out = (set(tasks_of(s)) for s in (splits["train"], splits["validation"], test))
    assert val and train and not (val & train) and not ((val | train) & held_out)
    assert {ds.networks()[k]["network"] for k in splits["validation"]} == {"resnet18", "bert_small"}


def _task_file(root, task_hash, rows, packed):
    lines = [json.dumps({"task_hash": task_hash})] + [json.dumps(r) for r in rows]
    path = root / "tasks" / (f"{task_hash}.jsonl.gz" if packed else f"{task_hash}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open if packed else open)(path, "wt").write("\n".join(lines) + "\n")


@pytest.mark.parametrize("packed", [False, True])
def test_the_dataset_lists_a_tasks_measured_programs_fastest_first(tmp_path, packed):
    rows = [{"trace": ["slow"], "run_secs": [3e-3, 3e-3]}, {"trace": ["failed"], "run_secs": None, "error": "x"},
            {"trace": ["fast"], "run_secs": [1e-3, 2e-3]}, {"trace": ["mid"], "run_secs": [2e-3]}]
    _task_file(tmp_path, "123", rows, packed)
    data = ProgramDataset(tmp_path)
    assert [r["trace"] for r in data.fastest("123")] == [["fast"], ["mid"], ["slow"]]  # the failure is left out
    assert [r["trace"] for r in data.fastest("123", k=1)] == [["fast"]]
    assert data.fastest("456") == []  # a task the dataset does not hold
