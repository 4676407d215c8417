"""How a program is built and timed: the one builder and the one runner that tuning, dataset collection,
default-schedule timing and re-measurement all use.

- The default LocalBuilder imports tvm.s_tir.tensor_intrin in every fresh worker (16-18 s here) and times out;
  `fast_build` is default_build without that import. It also starts fresh workers for every batch (5.7 s for two
  here); `PooledBuilder` keeps them for 16 batches (a batch of four programs: 6.6 s the first time, 0.4 s after).
- Integer inputs are indices (take, gather): the runner gives them zeros, not random values that read out of bounds.
- Each batch is measured before the search goes on (`WaitingRunner`).
- Workers ignore Ctrl-C: the main process decides what it means.
"""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from kdcompile.machine import parse_rpc
from kdcompile.measured import is_measured
from kdcompile.tvm_layer.target import device_name

MS_LOGGER = "tvm.s_tir.meta_schedule"
BUILD_TIMEOUT_S = 120
RUN_TIMEOUT_S = 60
RPC_RETRIES = 2


def quiet_ms_logging() -> None:
    """Keep MetaSchedule's per-batch task tables out of the console (they stay in work_dir/logs).

    Its logger setup reads the level each time loggers are created and resets it to DEBUG, so this runs before
    every creation. It also re-lists the logger's existing handlers by name and crashes on an unnamed one
    (pytest adds such), so those are dropped here.
    """
    logger = logging.getLogger(MS_LOGGER)
    for handler in list(logger.handlers):
        if handler.get_name() is None:
            logger.removeHandler(handler)
    logger.setLevel(logging.WARNING)


def ignore_sigint() -> None:
    """Initializer of MetaSchedule's worker processes. Ctrl-C in a terminal goes to the whole process group, and
    the main process decides what it means (the collector saves its batch first): a worker must not die of it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def fast_build(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default_build without `import tvm.s_tir.tensor_intrin` (16-18 s per fresh worker here)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def alloc_valid_arguments(device, args_info, alloc_repeat: int) -> list:
    """The runner's inputs: random floats as TVM makes them, but zeros for integer tensors. Integer inputs are
    indices (take, gather); random ones read out of bounds and crash the runner, leaving the task untuned."""
    fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure")
    repeated = []
    for _ in range(alloc_repeat):
        args = []
        for _kind, dtype, shape in args_info:
            arg = tvm.runtime.empty(shape=shape, dtype=dtype, device=device)
            if "int" in str(dtype):
                arg.copyfrom(np.zeros([int(s) for s in shape], dtype=str(dtype)))
            else:
                fill(arg)
            args.append(arg)
        repeated.append(args)
    return repeated


@derived_object
class WaitingRunner(ms.runner.PyRunner):
    """A runner whose batches are measured before the search goes on.

    MetaSchedule's task scheduler hands a batch to the runner and, in its first round over the tasks, goes on to
    search and build the next task while the batch is being timed. On 2 cores that search runs beside every
    measurement; with trials/tasks per batch the first round is the whole budget, so every time in the database
    was taken on a busy machine. Waiting costs the overlap, and buys measurements of an otherwise idle CPU."""

    def __init__(self, runner, retries: int = 0):
        self.runner = runner
        self.retries = retries  # through RPC: candidates whose run failed go out again (another server, maybe)

    def run(self, runner_inputs):
        return run_with_retries(self.runner.run, list(runner_inputs), self.retries)

    def close(self) -> None:
        """Stop the worker processes now (a runner kept for many calls)."""
        self.runner.pool.shutdown()


def run_with_retries(run, inputs: list, retries: int) -> list:
    """run(inputs) -> futures, waited for; inputs whose run failed go out again, up to `retries` times (through
    RPC: a server that died or hung mid-batch loses no candidate). Failures left after that are kept."""
    futures = list(run(inputs))
    failed = [i for i, f in enumerate(futures) if f.result().error_msg is not None]
    for _ in range(retries):
        if not failed:
            break
        for i, future in zip(failed, run([inputs[i] for i in failed])):
            futures[i] = future
        failed = [i for i in failed if futures[i].result().error_msg is not None]
    return futures


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """MetaSchedule's LocalBuilder with its worker processes kept from batch to batch.

    LocalBuilder starts a fresh pool for every batch, for a memory leak TVM saw in long-lived workers; each fresh
    worker imports TVM, 5.7 s for a pool of two here, which was more than half of building a batch of 24
    programs. These workers are replaced every `restart_every` batches instead."""

    def __init__(self, max_workers: int | None = None, timeout_sec: float = BUILD_TIMEOUT_S,
                 restart_every: int = 16):
        super().__init__()
        from tvm.s_tir.meta_schedule.utils import cpu_count

        self.max_workers = max_workers or cpu_count(logical=True)
        self.timeout_sec, self.restart_every = timeout_sec, restart_every
        self.pool, self.batches = None, 0

    def _pool(self):
        from tvm.support.popen_pool import PopenPoolExecutor

        if self.pool is None or self.batches >= self.restart_every:
            if self.pool is not None:
                self.pool.shutdown()
            self.pool, self.batches = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec,
                                                        initializer=ignore_sigint), 0
        self.batches += 1
        return self.pool

    def build(self, build_inputs):
        from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
        from tvm.support.popen_pool import StatusKind

        results = []
        jobs = [(fast_build, None, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
        for r in self._pool().map_with_error_catching(lambda job: _worker_func(*job), jobs):
            if r.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(r.value, None))
            elif r.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(None, f"LocalBuilder: Timeout, killed after "
                                                              f"{self.timeout_sec} seconds"))
            else:
                results.append(ms.builder.BuilderResult(None, f"LocalBuilder: An exception occurred\n{r.value}"))
        return results

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def __del__(self):
        try:
            if getattr(self, "pool", None) is not None:
                self.pool.shutdown()
        except Exception:  # noqa: BLE001 - at interpreter exit the pool's modules may be gone already
            pass


def builder() -> PooledBuilder:
    return PooledBuilder()


def stock_builder():
    """MetaSchedule's own LocalBuilder (a fresh pool per batch): what PooledBuilder is compared with."""
    return ms.builder.LocalBuilder()


def build_batch(build_with, mods: list, target: tvm.target.Target) -> list[bool]:
    """Build one batch of scheduled modules with `build_with`; whether each built. The libraries are deleted."""
    import shutil

    built = build_with.build([ms.builder.BuilderInput(m, target) for m in mods])
    for b in built:
        if b.artifact_path:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    return [b.error_msg is None for b in built]


def evaluator(repeats: int | None = None, min_repeat_ms: int | None = None) -> ms.runner.EvaluatorConfig:
    """How each program is timed: MetaSchedule's defaults, or `repeats` timed repeats of at least `min_repeat_ms`
    each (what the dataset keeps)."""
    if repeats is None:
        return ms.runner.EvaluatorConfig()
    return ms.runner.EvaluatorConfig(number=1, repeat=repeats, min_repeat_ms=min_repeat_ms or 0)


def runner(timing: ms.runner.EvaluatorConfig | None = None, rpc: str | None = None) -> WaitingRunner:
    """The runner: a LocalRunner, or with rpc="host:port:key" an RPCRunner that measures on whatever device
    registered with that key at the RPC tracker (a remote GPU, say), the same way; either waits for its batch."""
    timing = timing or evaluator()
    if not rpc:
        return WaitingRunner(ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=timing,
                                                   f_alloc_argument=alloc_valid_arguments, initializer=ignore_sigint))
    host, port, key = parse_rpc(rpc)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                                 session_timeout_sec=RUN_TIMEOUT_S)
    # One worker per server under the key: the tracker hands each request a free server, so a batch spreads over
    # the farm. A run that fails (a server died, or hung past the session timeout) is retried RPC_RETRIES times.
    return WaitingRunner(ms.runner.RPCRunner(config, evaluator_config=timing, max_workers=rpc_servers(rpc),
                                             initializer=ignore_sigint),
                         retries=RPC_RETRIES)


def rpc_servers(rpc: str) -> int:
    """How many servers are registered under the key at the tracker (at least 1, so a farm that is still
    starting gets one worker)."""
    return max(1, registered_now(rpc))


def registered_now(rpc: str) -> int:
    """How many servers are registered under the key at the tracker now (0 too); one sentence when no tracker
    answers."""
    import socket

    from tvm import rpc as tvm_rpc

    from kdcompile.errors import KdError

    host, port, key = parse_rpc(rpc)
    try:  # TVM's own connect retries for a minute before it gives up on a port nothing listens on
        socket.create_connection((host, int(port)), timeout=5).close()
        summary = tvm_rpc.connect_tracker(host, int(port)).summary()
    except Exception as e:  # noqa: BLE001 - refused, unreachable, not a tracker
        raise KdError(f"No TVM RPC tracker answers at {host}:{port} ({type(e).__name__}); start one with "
                      "`python -m tvm.exec.rpc_tracker` (or `kdcompile rpc-farm`).")
    return registered_servers(summary, key)


def registered_servers(summary: dict, key: str) -> int:
    """Servers under `key` in a tracker's summary."""
    return sum(s.get("key") == f"server:{key}" for s in summary.get("server_info", []))


def build_and_time(schedules: list, args_info: list, target: tvm.target.Target,
                   timing: ms.runner.EvaluatorConfig | None = None, rpc: str | None = None,
                   errors: list | None = None, seconds: dict | None = None, workers: tuple | None = None
                   ) -> list[list[float] | None]:
    """Build the scheduled modules in parallel, then time each, one at a time (or one per RPC server): every
    repeat's seconds per program, or None where building or running failed. `errors`, if given, receives each
    program's error message (None where it was measured); `seconds` accumulates the wall time of building
    ("build_s") and of timing ("run_s"). `workers`: a (builder, runner) pair to reuse across calls (a fresh runner
    starts processes that import TVM: seconds per call), made for the same `timing` and `rpc`; by default new ones.
    The built libraries are deleted once timed (inside tune_tasks MetaSchedule does that itself)."""
    import shutil
    import time

    build_with, run_with = workers or (builder(), runner(timing, rpc))
    start = time.perf_counter()
    built = build_with.build([ms.builder.BuilderInput(sch.mod, target) for sch in schedules])
    built_at = time.perf_counter()
    ok = [i for i, b in enumerate(built) if b.error_msg is None]
    futures = run_with.run([ms.runner.RunnerInput(built[i].artifact_path, device_name(target), args_info[i])
                                  for i in ok])
    out: list[list[float] | None] = [None] * len(schedules)
    messages = [b.error_msg for b in built]
    for i, future in zip(ok, futures):
        result = future.result()
        secs = [float(s) for s in result.run_secs] if result.error_msg is None and result.run_secs else None
        out[i] = secs if is_measured(secs) else None
        messages[i] = result.error_msg if result.error_msg is not None else (None if out[i] else "not measured")
    for b in built:
        if b.artifact_path:
            shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
    if seconds is not None:
        seconds["build_s"] = seconds.get("build_s", 0.0) + built_at - start
        seconds["run_s"] = seconds.get("run_s", 0.0) + time.perf_counter() - built_at
    if errors is not None:
        errors[:] = messages
    return out


@derived_object
class ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Reports how many candidates each measured batch held."""

    def __init__(self, report):
        self.report = report

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        self.report(len(measure_candidates))
