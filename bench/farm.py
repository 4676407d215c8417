"""The measurement farm, measured (issue #25): programs per minute with one and with two RPC servers, where the
wall time goes (building, which shares the machine's two cores, against timing), and what a server killed mid-batch
costs.

    python -m bench.farm [--programs 240]

Each phase starts a TVM RPC tracker and N servers on loopback, each pinned to its own core (`kdcompile rpc-farm`),
and measures the same `--programs` programs through them (`kdcompile costmodel retarget --rpc`: programs of the
AVX-512 dataset, compiled for the one-core AVX2 target), each phase into a scratch dataset of its own under
bench/results/transfer/work/ (so both phases time the same programs). In the two-server phase, 30 s in, one
server is killed as soon as it has a session open (a program on it), and a replacement starts on its core 10 s
later. A record is lost if a planned program has no record, or failed with two servers but was measured with one.
Writes bench/results/transfer/farm.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

from costmodel.dataset import ProgramDataset, trace_key
from kdcompile.files import write_json
from kdcompile.machine import machine_info

OUT = Path(__file__).resolve().parent / "results" / "transfer"
WORK = OUT / "work"
TARGET = '{"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 1}'
SOURCE = Path("datasets/cpu-znver4-2c")
NETWORKS = ("resnet50@b1+prepack+fastmath", "mobilenet_v2@b1+prepack+fastmath", "bert_base@b1+prepack+fastmath",
            "resnet18@b1+prepack+fastmath", "bert_small@b1+prepack+fastmath", "vit_tiny@b1+prepack+fastmath",
            "mlp_mixer@b1+prepack+fastmath", "tcn@b1+prepack+fastmath", "mnist_teacher@b1+prepack+fastmath",
            "mnist_student@b1+prepack+fastmath")


def kill_while_it_measures(farm, index: int, after_s: float, restart_s: float, killed: list,
                           done: threading.Event) -> None:
    """After `after_s`, kill server `index` as soon as it has a session open (a program is on it), then start a
    replacement on the same core `restart_s` later, unless the phase is over by then."""
    from kdcompile.tvm_layer.farm import kill_group, serving

    if done.wait(after_s):
        return
    victim = farm.servers[index]
    while not done.is_set():
        if serving(victim):
            time.sleep(0.05)  # inside the timed repeats
            killed.append({"ts": time.time(), "serving": serving(victim)})
            kill_group(victim)
            if not done.wait(restart_s):
                farm.start_server(index)
            return
        time.sleep(0.01)


def last_line(error: str | None) -> str:
    lines = (error or "?").strip().splitlines()
    return (lines[-1] if lines else "?")[:160]


def phase(servers: int, args, kill: bool) -> dict:
    from costmodel.retarget import RetargetConfig, plan, retarget
    from kdcompile.tvm_layer.farm import start_farm

    killed: list = []
    out = WORK / f"farm{servers}"
    shutil.rmtree(out, ignore_errors=True)  # each run of the benchmark times the same programs afresh
    cfg = RetargetConfig(source=args.data, out=out, target=TARGET, networks=NETWORKS, max_programs=args.programs)
    planned = [trace_key(r["trace"]) for _, picks in plan(cfg) for r in picks][: args.programs]
    start = time.time()
    with start_farm(servers=servers, key=f"farm{servers}", port=0) as farm:
        done = threading.Event()
        killer = threading.Thread(target=kill_while_it_measures, args=(farm, servers - 1, 30, 10, killed, done),
                                  daemon=True)
        if kill:
            killer.start()
        retarget(replace(cfg, rpc=farm.rpc))
        done.set()
        if kill:
            killer.join()
    end = time.time()
    rows = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    records = {trace_key(r["trace"]): r for _, r in ProgramDataset(out).records()}
    programs, wall = sum(r["programs"] for r in rows), sum(r["wall_s"] for r in rows)
    return {"servers": servers, "programs": programs, "planned": len(planned), "records": len(records),
            "unrecorded": sum(k not in records for k in planned),
            "failed": {k: last_line(records[k]["error"]) for k in planned if k in records
                       and records[k]["run_secs"] is None},
            "programs_per_min": programs / wall * 60,
            "programs_per_min_end_to_end": programs / (end - start) * 60,  # farm start-up and planning included
            "batches_wall_s": round(wall, 1), "phase_wall_s": round(end - start, 1),
            "build_share": sum(r["build_s"] for r in rows) / wall, "run_share": sum(r["run_s"] for r in rows) / wall,
            # the rest: replaying each trace on its workload, and the runner's bookkeeping
            "other_share": 1 - sum(r["build_s"] + r["run_s"] for r in rows) / wall,
            "programs_per_min_timing_only": programs / sum(r["run_s"] for r in rows) * 60,
            "killed": killed, "load_mean": sum(r["load"] for r in rows) / max(1, len(rows))}


def lost(one: dict, two: dict) -> int:
    """Records the kill cost: planned programs with no record, and programs that failed with two servers (one of
    them killed) but were measured with one (the same programs; a program's own failure fails in both)."""
    return two["unrecorded"] + sum(k not in one["failed"] for k in two["failed"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--programs", type=int, default=240, help="programs measured per phase")
    ap.add_argument("--data", type=Path, default=SOURCE, help="the dataset whose programs are measured again")
    args = ap.parse_args()
    phases = {"1": phase(1, args, kill=False), "2": phase(2, args, kill=True)}
    one, two = phases["1"], phases["2"]
    write_json(OUT / "farm.json", {
        "servers": 2, "programs_per_min": {"1": one["programs_per_min"], "2": two["programs_per_min"]},
        "speedup_2_vs_1": two["programs_per_min"] / one["programs_per_min"],
        "timing_only_speedup_2_vs_1": two["programs_per_min_timing_only"] / one["programs_per_min_timing_only"],
        "killed_servers": len(two["killed"]), "killed_while_serving": all(k["serving"] for k in two["killed"]),
        "records_lost": one["unrecorded"] + lost(one, two),
        "phases": phases, "target": json.loads(TARGET),
        "setup": {"command": f"python -m bench.farm --programs {args.programs}",
                  "date": datetime.date.today().isoformat(), "machine": machine_info(2)}})
    print(json.dumps(phases, indent=1))


if __name__ == "__main__":
    main()
