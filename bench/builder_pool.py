"""MetaSchedule's LocalBuilder (a fresh pool of worker processes every batch) against kdcompile's PooledBuilder
(workers kept for `restart_every` batches): seconds to build the same batches of programs (issue #25).

    python -m bench.builder_pool [--batches 6] [--batch 8]

Programs: the first measured programs of the dataset's largest tasks (MobileNet-V2 and BERT-base, held-out
networks), replayed from their traces for this machine (2 threads, the host target). Each builder builds the
same batches in the same order; the first batch of each is reported apart (the pooled builder starts its
workers there too). Also checks that both builders succeed on the same programs. Writes
bench/results/transfer/builder_pool.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np

from costmodel.dataset import ProgramDataset
from kdcompile.files import write_json
from kdcompile.machine import machine_info

OUT = Path(__file__).resolve().parent / "results" / "transfer"
DATA = Path(__file__).resolve().parent.parent / "datasets" / "cpu-znver4-2c"
NETWORKS = ("mobilenet_v2@b1", "bert_base@b1")


def programs(data: Path, count: int) -> list[tuple[list, list]]:
    """(workload JSON, trace) pairs: `count` programs, four from each task of the networks (every task of the
    dataset if it lacks one of them), tasks with the largest files first (those with the most programs)."""
    ds = ProgramDataset(data)
    nets = json.loads((ds.root / "networks.json").read_text())
    hashes = [h for n in NETWORKS for h in nets[n]["tasks"]] if all(n in nets for n in NETWORKS) else ds.task_hashes()
    hashes = sorted(dict.fromkeys(hashes), key=lambda h: -ds.task(h).path.stat().st_size)
    out: list[tuple[list, list]] = []
    for h in hashes:
        task = ds.task(h)
        header = task.header()
        out += [(header["workload"], r["trace"]) for r, _ in zip(task.records(), range(4))]
        if len(out) >= count:
            return out[:count]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--batches", type=int, default=6, help="batches per builder (at least 2: the first is warm-up)")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if args.batches < 2:
        ap.error("--batches must be at least 2: the speedup compares the batches after the first (warm-up) one")
    from kdcompile.tvm_layer.measure import PooledBuilder, build_batch, stock_builder
    from kdcompile.tvm_layer.programs import schedules_from_traces
    from kdcompile.tvm_layer.target import host_target, target_dict

    target = host_target(2)
    mods = []
    for workload, trace in programs(args.data, args.batches * args.batch):
        _, _, _, schedules = schedules_from_traces(workload, target_dict(target), [trace], strict=False)
        if schedules[0] is not None:
            mods.append(schedules[0].mod)
    batches = [mods[i:i + args.batch] for i in range(0, len(mods), args.batch)]
    builders = {"LocalBuilder": stock_builder, "PooledBuilder": PooledBuilder}
    result = {}
    for name, make in builders.items():
        b = make()
        seconds, ok = [], []
        for batch in batches:
            start = time.perf_counter()
            ok += build_batch(b, batch, target)
            seconds.append(time.perf_counter() - start)
        result[name] = {"first_batch_s": seconds[0], "later_batches_s": seconds[1:],
                        "later_mean_s": float(np.mean(seconds[1:])) if len(seconds) > 1 else None, "built": ok}
        print(name, json.dumps({k: v for k, v in result[name].items() if k != "built"}))
    same = result["LocalBuilder"]["built"] == result["PooledBuilder"]["built"]
    write_json(OUT / "builder_pool.json", {
        "programs": len(mods), "batch": args.batch, "batches": len(batches),
        "builders": {k: {kk: vv for kk, vv in v.items() if kk != "built"} | {"built_ok": int(sum(v["built"]))}
                     for k, v in result.items()},
        "same_programs_built": same,
        "later_batch_speedup": result["LocalBuilder"]["later_mean_s"] / result["PooledBuilder"]["later_mean_s"],
        "setup": {"command": f"python -m bench.builder_pool --data {args.data} --batches {args.batches} "
                             f"--batch {args.batch}",
                  "date": datetime.date.today().isoformat(), "machine": machine_info(2)}})


if __name__ == "__main__":
    main()
