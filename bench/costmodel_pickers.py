"""Zero-trial builds: which cost model picks the better default schedules, with no measurement at all.

    python -m bench.costmodel_pickers                          # the zoo's held-out networks and the demo student
    python -m bench.costmodel_pickers --networks mnist_student --pickers xgb random --rounds 5

A zero-trial build is what `kdcompile tune --trials 0` makes, and what every task the search leaves untuned gets:
for each task, MetaSchedule's evolutionary search evolves a population toward the picker's scores, and the
best-scored program that replays becomes the task's schedule (`tvm_layer.defaults`). Pickers (kdcompile.plugins
PICKERS): `xgb` (TVM's XGBoost) and `mamba` (the Mamba ranker), both trained on the dataset's training networks
(costmodel/weights: xgb_cpu.tar, 19,402 programs of 274 tasks; mamba_cpu.pt, the same split less its tasks under 5
programs), and `random` (an untrained XGBoost: chance). The networks are the dataset's held-out networks, which
neither picker saw, plus the demo student (`mnist_student`: the MNIST CNN pruned to a quarter of its FLOPs, whose
tasks the training split does hold).

Each build is timed against onnxruntime in a fresh process, in rounds that take turns over the backends (this VM
drifts between fast and slow phases), 2 threads each; the figure per picker is TVM / onnxruntime, the median of
round medians, with the paired median (TVM over onnxruntime within each round) beside it. The matmul reference
is measured before and after. Work (exports, defaults, builds) is kept under --out/work/pickers and reused, so
a stopped run resumes per picker and per task. Writes pickers.json (pickers_pop<P>.json for another
--population) to bench/results/costmodel/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from kdcompile.files import write_json
from bench.common import measured_json, stamp
from bench.costmodel_tuning import THREADS, geomean, network_module

OUT = Path(__file__).resolve().parent / "results" / "costmodel"
NETWORKS = ("mnist_student", "resnet50", "mobilenet_v2", "bert_base")
PICKERS = ("xgb", "mamba", "random")
POPULATION = 256  # what `kdcompile tune` evolves toward a learned picker (kdcompile.tvm_layer.defaults.POPULATION)


def prepare(net: str, pickers: list[str], work: Path, population: int = POPULATION) -> dict:
    """Default schedules and a build per picker (each kept and reused); the seconds each picker took."""
    from kdcompile import plugins
    from kdcompile.tvm_layer import build, defaults

    mod, target = network_module(net, 1, work)
    seconds = {}
    for picker in pickers:
        lib, kept = work / f"untuned-{picker}.so", work / f"defaults-{picker}.seconds.json"
        if not lib.exists():
            before = json.loads(kept.read_text()) if kept.exists() else 0.0
            t0 = time.time()

            def on_task(task: str) -> None:  # called within this iteration only
                # written as each task starts: an interrupted picker keeps the seconds of the tasks it finished
                write_json(kept, before + time.time() - t0)
                print(f"  {net} {picker}: {task}", flush=True)

            defaults.default_schedules(mod, target, work / f"defaults-{picker}",
                                              plugins.make(plugins.PICKERS, picker),
                                              population=defaults.population_for(picker, population),
                                              on_task=on_task)
            write_json(kept, before + time.time() - t0)  # a resumed picker adds this sitting's seconds, made or not
            build.compile_tuned(mod, target, None, lib, defaults_dir=work / f"defaults-{picker}")
        seconds[picker] = json.loads(kept.read_text()) if kept.exists() else None
    return seconds


def measure_builds(net: str, pickers: list[str], work: Path, rounds: int) -> dict:
    """onnxruntime and each picker's build, `rounds` rounds taking turns; run in a fresh process (right after
    building, a process measured TVM up to 40% slower than it runs: bench.e2e)."""
    from kdcompile.export import INPUT_NAME, ort_session
    from bench.e2e import builds_vs_ort
    from costmodel import zoo
    from kdcompile.timing import TimingConfig
    from kdcompile.tvm_layer.build import CompiledModel

    x = np.random.default_rng(0).standard_normal(zoo.build(net)[1]).astype(np.float32)
    sess = ort_session(work / f"{net}@b1.onnx", THREADS)
    builds = {p: CompiledModel(work / f"untuned-{p}.so") for p in pickers}
    return builds_vs_ort(sess, {INPUT_NAME: x}, builds, x, TimingConfig(min_time_s=0.4, min_calls=50), rounds)


def summary(networks: dict, pickers: list[str]) -> dict:
    """Geometric mean of TVM / onnxruntime per picker over all the networks (None for a picker one of them lacks),
    and the learned picker with the lowest (the one `kdcompile tune` should default to)."""
    means = {p: geomean([r["vs_ort"].get(p) for r in networks.values()]) for p in pickers}
    ranked = sorted((m, p) for p, m in means.items() if m is not None and p != "random")
    return {"geomean_vs_ort": means, "best_learned_picker": ranked[0][1] if ranked else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), help="zoo networks (costmodel.zoo), batch 1")
    ap.add_argument("--pickers", nargs="+", default=list(PICKERS), help="kdcompile.plugins PICKERS names")
    ap.add_argument("--rounds", type=int, default=15, help="timing rounds per network")
    ap.add_argument("--population", type=int, default=POPULATION,
                    help="population evolved per task toward a learned picker (another one: pickers_pop<P>.json)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--measure", metavar="NET", help=argparse.SUPPRESS)  # the fresh measuring process
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(THREADS)
    suffix = "" if args.population == POPULATION else f"_pop{args.population}"
    works = args.out / "work" / f"pickers{suffix}"
    if args.measure:
        print(json.dumps(measure_builds(args.measure, args.pickers, works / args.measure, args.rounds)))
        return
    from bench.e2e import ort_peak_gflops

    path = args.out / f"pickers{suffix}.json"
    report = json.loads(path.read_text()) if path.exists() else {"networks": {}}
    peaks = []
    for net in args.networks:
        print(f"== {net}", flush=True)
        work = works / net
        work.mkdir(parents=True, exist_ok=True)
        seconds = prepare(net, args.pickers, work, args.population)
        peaks.append(ort_peak_gflops())  # beside each measurement, not hours before it
        cmd = [sys.executable, "-m", "bench.costmodel_pickers", "--measure", net, "--rounds", str(args.rounds),
               "--out", str(args.out), "--population", str(args.population), "--pickers", *args.pickers]
        report["networks"][net] = measured_json(cmd) | {"default_schedules_s": seconds}
        print(json.dumps({k: report["networks"][net][k] for k in ("ort_ms", "vs_ort", "vs_ort_paired")}), flush=True)
        write_json(path, report, indent=1)  # read back by a resumed run
    report |= summary(report["networks"], args.pickers) | {"pickers": args.pickers, "population": args.population,
                                                           **stamp(THREADS, peaks + [ort_peak_gflops()])}
    write_json(path, report, indent=1)
    print(json.dumps({k: report[k] for k in ("geomean_vs_ort", "best_learned_picker", "peak_gflops")}))


if __name__ == "__main__":
    main()
