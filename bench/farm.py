"""The measurement farm, measured (issue #25): programs per minute with one and with two RPC servers, where the
wall time goes (building, which shares the machine's two cores, against timing), and what a server killed mid-batch
costs.

    python -m bench.farm [--programs 240]

Each phase starts a TVM RPC tracker and N servers on loopback, each pinned to its own core (`kdcompile rpc-farm`),
and measures the same `--programs` programs through them (`kdcompile costmodel retarget --rpc`: programs of the
AVX-512 dataset, compiled for the one-core AVX2 target), each phase into a scratch dataset of its own under
bench/results/transfer/work/ (so both phases time the same programs). In the two-server phase one server is killed while it times a program, 30 s into the phase, and a
replacement starts on its core 10 s later. A record is lost if a planned program has no record, or its record
carries an RPC failure after the runner's retries. Writes bench/results/transfer/farm.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import threading
import time
from pathlib import Path

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
# what a dead or hung server leaves in a record (a program's own crash or a build failure is not a lost record)
RPC_FAILURE = ("Connection", "connect", "ession", "socket", "Broken pipe", "RPC server")


def kill_while_it_measures(farm, index: int, after_s: float, restart_s: float, killed: list) -> None:
    """After `after_s`, kill server `index` as soon as it serves a session (a program is on it), then start a
    replacement on the same core `restart_s` later."""
    from kdcompile.tvm_layer.farm import kill_group

    time.sleep(after_s)
    victim = farm.servers[index]
    children = f"/proc/{victim.pid}/task/{victim.pid}/children"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            with open(children) as f:
                busy = bool(f.read().split())
        except FileNotFoundError:
            return
        if busy:
            time.sleep(0.05)
            kill_group(victim)
            killed.append(time.time())
            time.sleep(restart_s)
            farm.start_server(index)
            return
        time.sleep(0.02)


def phase(servers: int, args, kill: bool) -> dict:
    from costmodel.retarget import RetargetConfig, retarget
    from kdcompile.tvm_layer.farm import start_farm

    killed: list = []
    out = WORK / f"farm{servers}"
    shutil.rmtree(out, ignore_errors=True)  # each run of the benchmark times the same programs afresh
    start = time.time()
    with start_farm(servers=servers, key=f"farm{servers}", port=0) as farm:
        if kill:
            threading.Thread(target=kill_while_it_measures, args=(farm, servers - 1, 30, 10, killed),
                             daemon=True).start()
        done = retarget(RetargetConfig(source=args.data, out=out, target=TARGET, networks=NETWORKS,
                                       rpc=farm.rpc, max_programs=args.programs))
    end = time.time()
    rows = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    rows = [r for r in rows if start <= r["ts"] <= end]
    records = [r for r in records_between(out, start, end)]
    rpc_failed = [r for r in records if r["run_secs"] is None and any(s in (r["error"] or "") for s in RPC_FAILURE)]
    programs, wall = sum(r["programs"] for r in rows), sum(r["wall_s"] for r in rows)
    return {"servers": servers, "programs": programs, "records": len(records),
            "failed": sum(r["run_secs"] is None for r in records),
            "records_lost": (done["measured_this_run"] - len(records)) + len(rpc_failed),
            "programs_per_min": programs / wall * 60, "wall_s": round(wall, 1),
            "build_share": sum(r["build_s"] for r in rows) / wall, "run_share": sum(r["run_s"] for r in rows) / wall,
            # the rest: replaying each trace on its workload, and the runner's bookkeeping
            "other_share": 1 - sum(r["build_s"] + r["run_s"] for r in rows) / wall,
            "programs_per_min_timing_only": programs / sum(r["run_s"] for r in rows) * 60,
            "errors": sorted({((r["error"] or "?").strip().splitlines() or ["?"])[-1][:160] for r in records if r["run_secs"] is None}),
            "killed_servers": len(killed), "load_mean": sum(r["load"] for r in rows) / max(1, len(rows))}


def records_between(root: Path, start: float, end: float):
    from costmodel.dataset import ProgramDataset

    for _, r in ProgramDataset(root).records():
        if start <= r["ts"] <= end:
            yield r


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
        "killed_servers": two["killed_servers"], "records_lost": one["records_lost"] + two["records_lost"],
        "phases": phases, "target": json.loads(TARGET),
        "setup": {"command": f"python -m bench.farm --programs {args.programs}",
                  "date": datetime.date.today().isoformat(), "machine": machine_info(2)}})
    print(json.dumps(phases, indent=1))


if __name__ == "__main__":
    main()
