"""Collecting the tensor-program dataset: tasks from the network zoo, measured on this machine.

For every task: `random` programs (random samples of MetaSchedule's design space) and `evolutionary` ones
(MetaSchedule's own search, so that good programs are present too). Failures are kept as failures.
Resumable at any point: what is on disk counts, and collection continues where it stopped.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from costmodel import zoo
from costmodel.dataset import ProgramDataset, TaskFile, task_hash, trace_key
from kdcompile.errors import KdError
from kdcompile.machine import cores, fingerprint, parse_rpc
from kdcompile.progress import console, progress

# Each source searches from its own seeds: with one seed for both, the evolutionary search's random first
# population and the random sampler drew the same programs (the collector's exhausted-flag bug, issue #20).
SOURCE_SEEDS = {"random": 0, "evolutionary": 1_000_003}


@dataclass
class CollectConfig:
    out: Path | None = None  # dataset folder; default datasets/<hardware_name()>
    networks: tuple[str, ...] = tuple(zoo.NETWORKS)
    batches: tuple[int, ...] = zoo.BATCHES
    layouts: tuple[str | None, ...] = (None, "NHWC")  # lowerings (tvm_layer Lowering's layout); NHWC: CNNs only
    random_per_task: int = 64
    evolutionary_per_task: int = 128
    first_pass: int = 24  # programs per source every task gets before any task gets more
    per_iter: int = 32  # programs built (in parallel) then measured (one at a time) per batch
    repeats: int = 5  # timed repeats kept per program
    seed: int = 0
    threads: int = 0  # cores to compile for and measure with; 0: the cores this process may use
    max_tasks: int | None = None  # stop after this many tasks (for tests and quick looks)
    target: str | None = None  # None: this CPU; else a TVM target, e.g. "cuda:sm_86" (tvm_layer.target.parse_target)
    rpc: str | None = None  # "tracker_host:port:key": measure on the device registered under that key
    cache: Path = field(default_factory=lambda: Path(os.environ.get("KDCOMPILE_CACHE", "~/.cache/kdcompile")))


def hardware_name(threads: int) -> str:
    """e.g. "cpu-znver5-2c": the LLVM CPU name and core count the measurements were made with."""
    from kdcompile.tvm_layer.target import host_target

    return f"cpu-{host_target(threads).attrs['mcpu']}-{threads}c"


def plan(cfg: CollectConfig) -> list[str]:
    """Export each (network, batch), extract its tasks, register them; returns task hashes in collection order
    (round-robin over networks, so that every network has data early)."""
    import torch

    from kdcompile.export import INPUT_NAME, to_onnx
    from kdcompile.tvm_layer.lowering import Lowering
    from kdcompile.tvm_layer.programs import network_tasks
    from kdcompile.tvm_layer.space import SPACE
    from kdcompile.tvm_layer.target import parse_target, target_dict

    target = parse_target(cfg.target, cfg.threads or None)
    ds = ProgramDataset(cfg.out)
    known = ds.networks()
    per_network: list[list[str]] = []
    for name in cfg.networks:
        for batch, layout in ((b, lay) for b in cfg.batches for lay in cfg.layouts):
            if layout is not None and name not in zoo.CHANNELS_LAST:
                continue
            # one key per lowering: networks collected under an earlier lowering keep their own (other) tasks
            lowering = Lowering(layout=layout)
            key = f"{name}@b{batch}+{lowering.key}" + (f"+{layout.lower()}" if layout else "")
            if key in known:
                per_network.append(list(known[key]["tasks"]))
                continue
            module, shape = zoo.build(name)
            shape = (batch, *shape[1:])
            onnx_path = cfg.cache.expanduser() / "zoo" / f"{name}@b{batch}.onnx"
            if not onnx_path.exists():
                to_onnx(module, torch.zeros(shape), onnx_path, opset=18)
            tasks = network_tasks(onnx_path, INPUT_NAME, shape, target, lowering)
            weights: dict[str, int] = {}
            for t in tasks:
                h = task_hash(t["workload"])
                weights[h] = weights.get(h, 0) + t["weight"]
                f = ds.task(h)
                if not f.exists():
                    f.create({"task_hash": h, "task_name": t["task_name"], "workload": t["workload"],
                              "args_info": t["args_info"], "target": target_dict(target)})
            ds.add_network(key, {"network": name, "batch": batch, "input_shape": list(shape), "tasks": weights,
                                 "lowering": lowering.key, "layout": layout or "as exported", "space": SPACE})
            per_network.append(list(weights))
            console.print(f"{key}: {len(tasks)} tasks")
    order, seen = [], set()
    for i in range(max(map(len, per_network), default=0)):
        for tasks in per_network:
            if i < len(tasks) and tasks[i] not in seen:
                seen.add(tasks[i])
                order.append(tasks[i])
    return order[: cfg.max_tasks] if cfg.max_tasks else order


def _counts(f: TaskFile) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in f.records():
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    return counts


def stop_after_batch() -> dict:
    """Ctrl-C while collecting (or remeasuring). The search loop runs in TVM's C++ and swallows the
    KeyboardInterrupt raised in our callbacks, so the first Ctrl-C asks to stop as soon as the batch in flight is
    saved (`sink` exits); a second one stops at once, losing only that batch (records are appended and synced batch
    by batch)."""
    stop = {"asked": False}

    def on_sigint(signum, frame) -> None:
        if stop["asked"]:
            os._exit(130)
        stop["asked"] = True
        console.print("Stopping once this batch is saved (Ctrl-C again to stop now).")

    if threading.current_thread() is threading.main_thread():
        stop["previous"] = signal.signal(signal.SIGINT, on_sigint)
    return stop


def release(stop: dict) -> None:
    """Give Ctrl-C its previous meaning again (the end of a `stop_after_batch` scope)."""
    if "previous" in stop:
        signal.signal(signal.SIGINT, stop["previous"])


def collect(cfg: CollectConfig = CollectConfig()) -> dict:
    """Measure programs for every planned task until each has its quota; returns the dataset's counts.

    Breadth first: a first pass gives every task `first_pass` programs per source before a second pass tops
    each up to its full quota, so an interrupted collection still covers every network. A source is marked
    exhausted (not retried on resume) only when its search came back with an empty batch: one that held no
    program the task did not already have, or none at all.
    """
    from kdcompile.tvm_layer.programs import (close_workers, known_programs, measure_programs, measurement_workers,
                                              workload_module)
    from kdcompile.tvm_layer.target import local_gpu, parse_target, target_dict, tvm_version

    unknown = set(cfg.networks) - set(zoo.NETWORKS)
    if unknown:
        raise KdError(f"Unknown network(s) {sorted(unknown)}: the zoo has {', '.join(zoo.NETWORKS)}.")
    if cfg.rpc:
        parse_rpc(cfg.rpc)
    cfg.threads = cfg.threads or cores()
    target = parse_target(cfg.target, cfg.threads)
    if cfg.out is None and (cfg.rpc or cfg.target):
        raise KdError("Name the dataset folder (--out) when measuring on another device or target.")
    gpu = None if cfg.rpc else local_gpu(target)
    if target.kind.name == "cuda" and not cfg.rpc and gpu is None:
        # else every program would be recorded as a failure and its task given up as exhausted
        raise KdError("No CUDA device on this machine: collect for a GPU on a machine that has it, or measure "
                      "there through a TVM RPC tracker (--rpc host:port:key).")
    cfg.out = cfg.out or Path("datasets") / hardware_name(cfg.threads)
    ds = ProgramDataset(cfg.out)
    fid = ds.add_fingerprint(fingerprint(target_dict(target), tvm_version()) | (gpu or {})
                             | ({"rpc_key": cfg.rpc.rsplit(":", 1)[-1], "cpu_is_the_collector_host": True}
                                if cfg.rpc else {}))
    order = plan(cfg)
    full = {"random": cfg.random_per_task, "evolutionary": cfg.evolutionary_per_task}
    passes = [{s: min(q, cfg.first_pass) for s, q in full.items()}, full]
    have = {h: _counts(ds.task(h)) for h in order}
    exhausted = ds.exhausted()

    def missing(h: str, source: str, quota: dict) -> int:
        return 0 if source in exhausted.get(h, []) else max(0, quota[source] - have[h].get(source, 0))

    total = sum(missing(h, s, full) for h in order for s in full)
    start, measured = time.time(), [0]
    stop = stop_after_batch()
    workers = measurement_workers(cfg.repeats, rpc=cfg.rpc)
    try:
        with progress() as bar:
            job = bar.add_task("collect", total=total, info="")
            for quota in passes:
                for i, h in enumerate(order):
                    f = ds.task(h)
                    todo = {s: missing(h, s, quota) for s in quota}
                    if not any(todo.values()):
                        continue
                    header = f.header()
                    mod = workload_module(header["workload"])
                    records = list(f.records())
                    seen = {trace_key(r["trace"]) for r in records}
                    for source, n in todo.items():
                        if n <= 0:
                            continue
                        batches: list[int] = []  # new programs per measured batch of this search

                        def sink(rows: list[dict], source=source, f=f, seen=seen, i=i, batches=batches) -> None:
                            now, load = time.time(), os.getloadavg()[0]
                            if stop["asked"]:  # the Ctrl-C may have reached a worker too: keep no failure from it
                                rows = [r for r in rows if r["run_secs"]]
                            new = []
                            for r in rows:  # the search may propose a program this task already has
                                if (key := trace_key(r["trace"])) not in seen:
                                    seen.add(key)
                                    new.append(dict(r, source=source, fp=fid, ts=round(now, 1), load=round(load, 2)))
                            f.append(new)
                            batches.append(len(new))
                            measured[0] += len(new)
                            rate = measured[0] / max(1e-9, (time.time() - start) / 60)
                            info = f"task {i + 1}/{len(order)}, {rate:.0f} programs/min"
                            bar.update(job, advance=len(new), info=info)
                            if bar.disable:  # no terminal: a line per batch, for the log
                                console.print(f"collect: {measured[0]} programs, {info}, load {load:.2f}")
                            if stop["asked"]:
                                bar.stop()
                                console.print(f"Stopped after saving this batch ({measured[0]} programs this run); "
                                              "run the same command to resume.")
                                os._exit(130)

                        # Sources are seeded apart, and a resumed task gets a fresh seed, so that neither replays
                        # programs the task already has; the search also starts from them (`known_programs`).
                        seed = cfg.seed + SOURCE_SEEDS[source] + have[h].get(source, 0)
                        known = known_programs(mod, header["target"], records) if source == "evolutionary" else None
                        try:
                            measure_programs(mod, target, source, n, min(cfg.per_iter, n), seed, sink,
                                             cfg.cache.expanduser() / "ms_logs", repeats=cfg.repeats, rpc=cfg.rpc,
                                             database=known, is_known=lambda t, seen=seen: trace_key(t) in seen,
                                             workers=workers)
                        except Exception:  # a worker starting up when Ctrl-C came (before it could ignore it)
                            if not stop["asked"]:
                                raise
                            bar.stop()
                            console.print(f"Stopped; the batch in flight was lost ({measured[0]} programs saved this "
                                          "run); run the same command to resume.")
                            os._exit(130)
                        have[h][source] = have[h].get(source, 0) + sum(batches)
                        if search_ran_dry(batches, n, min(cfg.per_iter, n)):
                            ds.mark_exhausted(h, source)
                            exhausted.setdefault(h, []).append(source)
                    if not any(missing(h, s, full) for s in full):
                        f.pack()
    finally:
        release(stop)
        close_workers(workers)
    return ds.count()


def search_ran_dry(new_per_batch: list[int], asked: int, per_batch: int) -> bool:
    """Whether a search has nothing new left to give: one of its batches held no program the task did not have,
    or it ended with batches still owed (an empty batch ends the search: tvm_layer.programs.NewProgramsOnly).
    A batch with a few duplicates is not enough: the search may still have plenty of new programs."""
    owed = -(-asked // per_batch)
    return any(n == 0 for n in new_per_batch) or len(new_per_batch) < owed
