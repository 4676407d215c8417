"""The RPC measurement farm (kdcompile/tvm_layer/farm.py, measure.runner with --rpc): a tracker and two pinned
servers on loopback; a batch spreads over both, and a server killed mid-batch loses no candidate."""

import threading
import time

import pytest

tvm = pytest.importorskip("tvm")

from kdcompile.errors import KdError  # noqa: E402


def _matmul_schedules(n: int):
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    a, b = te.placeholder((128, 128), name="A"), te.placeholder((128, 128), name="B")
    k = te.reduce_axis((0, 128), name="k")
    c = te.compute((128, 128), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    mod = tvm.IRModule({"main": te.create_prim_func([a, b, c])})
    target = tvm.target.Target({"kind": "llvm", "num-cores": 1})
    space = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply",
                           search_strategy="replay-trace").generate_design_space()
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    return [space[0]] * n, [args] * n, target


def _kill_while_it_measures(victim, killed: list, timeout_s: float = 300):
    """Kill `victim` (and its session process) once it serves a session: a candidate is on it, mid-batch."""
    from kdcompile.tvm_layer.farm import kill_group, serving

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if serving(victim):
            time.sleep(0.3)  # inside the timed repeats
            killed.append(serving(victim))  # still serving when the kill came
            kill_group(victim)
            return
        time.sleep(0.02)


@pytest.mark.slow
def test_a_batch_spreads_over_the_farm_and_a_server_killed_mid_batch_loses_nothing():
    from kdcompile.tvm_layer.farm import start_farm
    from kdcompile.tvm_layer.measure import build_and_time, evaluator, rpc_servers

    schedules, args, target = _matmul_schedules(8)
    with start_farm(servers=2, key="farm-test", port=0) as farm:
        assert rpc_servers(farm.rpc) == 2
        from kdcompile.tvm_layer.farm import serving

        assert not any(serving(p) for p in farm.servers)  # idle servers hold no session
        victim, killed = farm.servers[1], []
        killer = threading.Thread(target=_kill_while_it_measures, args=(victim, killed), daemon=True)
        killer.start()
        timed = build_and_time(schedules, args, target, evaluator(repeats=3, min_repeat_ms=300), rpc=farm.rpc)
        killer.join(timeout=1)
        assert victim.poll() is not None and killed == [True]  # it really died, while it measured a candidate
    assert all(t is not None and len(t) == 3 for t in timed), timed  # every candidate measured, none lost


def test_no_tracker_is_one_sentence():
    from kdcompile.tvm_layer.measure import rpc_servers

    with pytest.raises(KdError, match="No TVM RPC tracker answers"):
        rpc_servers("127.0.0.1:9:nobody")


def test_more_pinned_servers_than_cores_is_one_sentence():
    from kdcompile.machine import cores
    from kdcompile.tvm_layer.farm import start_farm

    with pytest.raises(KdError, match="one core each"):
        start_farm(servers=cores() + 1)


def test_runs_that_fail_are_retried_and_the_rest_are_kept():
    from kdcompile.tvm_layer.measure import run_with_retries

    class Result:
        def __init__(self, ok):
            self.error_msg, self.run_secs = (None, [1.0]) if ok else ("RPC session closed", None)

    class Future:
        def __init__(self, ok):
            self._r = Result(ok)

        def result(self):
            return self._r

    class Flaky:  # the first time each input is run, inputs 1 and 3 fail (their server died)
        def __init__(self):
            self.calls = []

        def run(self, inputs):
            self.calls.append(list(inputs))
            return [Future(len(self.calls) > 1 or i not in (1, 3)) for i in inputs]

    inner = Flaky()
    futures = run_with_retries(inner.run, [0, 1, 2, 3], retries=2)
    assert [f.result().error_msg for f in futures] == [None] * 4
    assert inner.calls == [[0, 1, 2, 3], [1, 3]]  # only the failed ones went out again
    always = Flaky()
    always.run = lambda inputs: [Future(False) for _ in inputs]
    assert all(f.result().error_msg for f in run_with_retries(always.run, [0, 1], retries=2))  # bounded, kept


class _Watch:
    """Whether a server ever had a session open while it was watched."""

    def __init__(self, server):
        self.server, self.served, self.done = server, False, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        from kdcompile.tvm_layer.farm import serving

        while not self.done and not self.served:
            self.served = serving(self.server)
            time.sleep(0.01)

    def stop(self) -> bool:
        self.done = True
        self.thread.join(timeout=1)
        return self.served


@pytest.mark.slow
def test_tune_and_bench_measure_on_the_farm_for_the_one_core_avx2_target(tmp_path):
    import json

    import torch
    from torch import nn

    from kdcompile.bench import BenchConfig, bench
    from kdcompile.export import to_onnx
    from kdcompile.tune import TuneConfig, tune
    from kdcompile.tvm_layer.farm import start_farm

    torch.manual_seed(0)
    onnx_path = tmp_path / "tiny.onnx"
    to_onnx(nn.Sequential(nn.Linear(64, 64), nn.ReLU()).eval(), torch.zeros(1, 64), onnx_path, opset=18)
    target = '{"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 1}'
    with start_farm(servers=1, key="farm-tune", port=0) as farm:
        watch = _Watch(farm.servers[0])
        tune(onnx_path, TuneConfig(trials=4, defaults="random", target=target, rpc=farm.rpc, threads=1),
             out=tmp_path / "run")
        assert watch.stop()  # the candidates were timed on the server
        tuned = json.loads((tmp_path / "run" / "tune.json").read_text())
        assert tuned["target"]["mcpu"] == "x86-64-v3" and tuned["target"]["num-cores"] == 1
        assert tuned["model"]["trials"] >= 1
        watch = _Watch(farm.servers[0])
        report = bench(tmp_path / "run", BenchConfig(threads=1, rpc=farm.rpc))
        assert watch.stop()
    remote = report["latency_ms"]["model"]["tvm"]
    assert remote["rpc"] == farm.rpc and remote["calls"] == 200 and 0 < remote["p50"] <= remote["p99"]
    with pytest.raises(KdError, match="tuned for another target"):
        tune(tmp_path / "run", TuneConfig(trials=8, defaults="random", threads=1))


def test_tune_refuses_a_malformed_rpc_in_one_sentence(tmp_path):
    from kdcompile.tune import TuneConfig, tune

    with pytest.raises(KdError, match="tracker_host:port:key"):
        tune(tmp_path / "nothing.onnx", TuneConfig(rpc="localhost"))
