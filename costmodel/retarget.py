"""The same programs on another target: a dataset's programs measured again, compiled for a new target, into a
dataset of their own (issue #25: the ground truth of a transfer, and the measurement of how differently a target
ranks the same programs).

For each task of the chosen networks, the `best` fastest programs of the source and a seeded random draw of the
others, `per_task` in all, are built for the new target and timed (on this machine, or on a farm of RPC servers:
`--rpc`). A record keeps the source's time of the same program (`source_s`), so the two targets' rankings can be
compared program by program. Resumable: what is in the new dataset is not measured again. Every batch appends a
line to <out>/throughput.jsonl (servers, programs, build and timing seconds), which is what the farm benchmark reads.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from costmodel.dataset import ProgramDataset, mean_seconds, trace_key
from kdcompile.errors import KdError
from kdcompile.files import append_lines
from kdcompile.progress import console, progress

MIN_REPEAT_MS = 15  # as the collector times them


@dataclass
class RetargetConfig:
    source: Path  # the dataset whose programs are measured again
    out: Path  # the new target's dataset
    target: str  # a TVM target (tvm_layer.target.parse_target), e.g. '{"kind": "llvm", "mcpu": "x86-64-v3", ...}'
    networks: tuple[str, ...] | None = None  # network keys of the source (default: all)
    per_task: int = 24  # programs per task
    best: int = 4  # of them, the source's fastest (so that its winners are judged on the new target too)
    min_programs: int = 8  # tasks with fewer measured programs in the source are left out
    batch: int = 24  # programs built, then timed, per batch
    repeats: int = 5
    seed: int = 0
    rpc: str | None = None  # "tracker_host:port:key": time on the servers registered under that key
    max_programs: int | None = None  # stop after measuring this many (the farm benchmark's phases)


def choose(records: list[dict], per_task: int, best: int, seed: int | str) -> list[dict]:
    """The source programs to measure again: its `best` fastest, then a seeded random draw of the rest (fixed for a
    task, so a resumed run picks the same ones); each program once, however often the source holds it."""
    unique: dict[str, dict] = {}
    for r in records:
        if mean_seconds(r) is not None:
            unique.setdefault(trace_key(r["trace"]), r)
    ok = sorted(unique.values(), key=mean_seconds)
    best = min(best, per_task)
    rest = ok[best:]
    random.Random(seed).shuffle(rest)
    return ok[:best] + rest[: max(0, per_task - best)]


def plan(cfg: RetargetConfig) -> list[tuple[str, list[dict]]]:
    """(task hash, programs still to measure) for every task of the chosen networks, largest weight first;
    registers the networks and task headers in the new dataset (a task complete from an earlier run is packed)."""
    from kdcompile.tvm_layer.target import parse_target, target_dict

    src, out = ProgramDataset(cfg.source), ProgramDataset(cfg.out)
    nets = src.networks()
    keys = list(cfg.networks) if cfg.networks else sorted(nets)
    unknown = [k for k in keys if k not in nets]
    if unknown:
        raise KdError(f"{cfg.source} has no network {unknown[0]!r}; it has e.g. {', '.join(sorted(nets)[:4])}.")
    target = target_dict(parse_target(cfg.target))
    weight: dict[str, int] = {}
    for k in keys:
        for h, w in nets[k]["tasks"].items():
            weight[h] = weight.get(h, 0) + w
    todo = []
    for h in sorted(weight, key=lambda h: -weight[h]):
        task = src.task(h)
        if not task.exists():
            continue
        records = list(task.records())
        if sum(mean_seconds(r) is not None for r in records) < cfg.min_programs:
            continue
        new = out.task(h)
        if not new.exists():
            header = task.header()
            new.create({k: header[k] for k in ("task_hash", "task_name", "workload", "args_info")} | {"target": target})
        elif new.header()["target"] != target:
            raise KdError(f"{cfg.out} was measured for another target ({json.dumps(new.header()['target'])}): "
                          "give this one a dataset folder of its own (--out).")
        done = {trace_key(r["trace"]) for r in new.records()}
        picks = [r for r in choose(records, cfg.per_task, cfg.best, f"{cfg.seed}:{h}")
                 if trace_key(r["trace"]) not in done]
        if picks:
            todo.append((h, picks))
        else:
            new.pack()
    for k in keys:  # the same networks, restricted to the tasks measured here
        info = nets[k]
        out.add_network(k, info | {"tasks": {h: w for h, w in info["tasks"].items() if out.task(h).exists()}})
    return todo


def farm_size(rpc: str, wait_s: float = 120.0) -> int:
    """Servers registered under the key now; while there are none (a farm restarting, say), wait up to `wait_s`
    rather than hand a batch to a runner that would wait for one forever."""
    from kdcompile.tvm_layer.measure import registered_now

    deadline = time.time() + wait_s
    while (n := registered_now(rpc)) == 0:
        if time.time() > deadline:
            raise KdError(f"No RPC server has been registered under {rpc} for {wait_s:.0f} s.")
        time.sleep(2)
    return n


class Workers:
    """One builder for the run, and a runner per farm size (an RPC runner has a worker per server; a server that
    dies and comes back changes the size and back). Made before a batch's clock starts; shut down at the end."""

    def __init__(self, cfg: RetargetConfig):
        from kdcompile.tvm_layer.measure import builder

        self.cfg, self.build, self.runners = cfg, builder(), {}

    def for_size(self, servers: int) -> tuple:
        from kdcompile.tvm_layer.measure import evaluator, runner

        if servers not in self.runners:
            self.runners[servers] = runner(evaluator(self.cfg.repeats, MIN_REPEAT_MS), self.cfg.rpc)
        return self.build, self.runners[servers]

    def close(self) -> None:
        for r in self.runners.values():
            r.close()
        self.build.close()


def measure_batch(out: ProgramDataset, h: str, header: dict, chunk: list[dict], cfg: RetargetConfig, fid: str,
                  workers: Workers) -> int:
    """Build and time one batch for the new target; append its records and its throughput line. Returns how many
    of its programs failed."""
    from kdcompile.tvm_layer.programs import remeasure

    servers = farm_size(cfg.rpc) if cfg.rpc else 0
    pair = workers.for_size(servers)
    errors: list = []
    seconds: dict = {}
    t0 = time.time()
    timed = remeasure(header["workload"], header["target"], [r["trace"] for r in chunk], cfg.repeats, MIN_REPEAT_MS,
                      rpc=cfg.rpc, errors=errors, seconds=seconds, workers=pair)
    now, load = time.time(), os.getloadavg()[0]
    out.task(h).append([{"trace": r["trace"], "run_secs": secs, "error": None if secs else err, "source": "retarget",
                         "source_s": mean_seconds(r), "fp": fid, "ts": round(now, 1), "load": round(load, 2)}
                        for r, secs, err in zip(chunk, timed, errors)])
    append_lines(Path(cfg.out) / "throughput.jsonl", [json.dumps(
        {"servers": servers, "programs": len(chunk), "failed": sum(s is None for s in timed),
         "wall_s": round(now - t0, 3), "build_s": round(seconds.get("build_s", 0.0), 3),
         "run_s": round(seconds.get("run_s", 0.0), 3), "ts": round(now, 1), "load": round(load, 2)})])
    return sum(s is None for s in timed)


def retarget(cfg: RetargetConfig) -> dict:
    """Measure the planned programs for the new target, batch by batch; returns the new dataset's counts."""
    from costmodel.collect import release, stop_after_batch
    from kdcompile.machine import fingerprint, parse_rpc
    from kdcompile.tvm_layer.target import parse_target, target_dict, tvm_version

    if not (Path(cfg.source) / "networks.json").exists():
        raise KdError(f"{cfg.source} is not a program dataset (no networks.json).")
    if cfg.rpc:
        parse_rpc(cfg.rpc)
    target = parse_target(cfg.target)
    out = ProgramDataset(cfg.out)
    fid = out.add_fingerprint(fingerprint(target_dict(target), tvm_version())
                              | ({"rpc_key": cfg.rpc.rsplit(":", 1)[-1], "cpu_is_the_collector_host": True}
                                 if cfg.rpc else {}))
    todo = plan(cfg)
    total = sum(len(p) for _, p in todo)
    if cfg.max_programs is not None:
        total = min(total, cfg.max_programs)
    measured, start = 0, time.time()
    workers, stop = Workers(cfg), stop_after_batch()
    try:
        with progress() as bar:
            job = bar.add_task("retarget", total=total, info="")
            for i, (h, picks) in enumerate(todo):
                header, left = out.task(h).header(), list(picks)
                while left and measured < total and not stop["asked"]:
                    chunk, left = left[: min(cfg.batch, total - measured)], left[min(cfg.batch, total - measured):]
                    measure_batch(out, h, header, chunk, cfg, fid, workers)
                    measured += len(chunk)
                    rate = measured / max(1e-9, (time.time() - start) / 60)
                    bar.update(job, advance=len(chunk), info=f"task {i + 1}/{len(todo)}, {rate:.0f} programs/min")
                    if bar.disable:
                        console.print(f"retarget: {measured}/{total} programs, {rate:.0f}/min, "
                                      f"load {os.getloadavg()[0]:.2f}")
                if not left:
                    out.task(h).pack()  # every pick of the task has its record
                if measured >= total or stop["asked"]:
                    break
    finally:
        release(stop)
        workers.close()
    if stop["asked"]:
        console.print(f"Stopped after {measured} programs; run the same command to measure the rest.")
    return out.count() | {"measured_this_run": measured}
