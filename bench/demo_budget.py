"""The demo student's tuning at the demo's budget: which cost model and population make it pay off.

    python -m bench.demo_budget runs/demo                    # a tuned run folder (make demo leaves runs/demo)
    python -m bench.demo_budget runs/demo --configs xgb mamba@256 --trials 200
    python -m bench.demo_budget runs/demo --configs mamba@256 mamba@256+known     # picked defaults vs known programs

Each config (cost model @ evolutionary population) tunes the run's student afresh, with `kdcompile tune`, in its
own copy of the run folder (the student, its ONNX file and its default schedules are copied; the layout is the
one the run chose), for the same trial budget. "+known" starts each task the dataset has measured from its
fastest program there (`kdcompile tune --known dataset`); without it, every default is picked (`--known none`).
Each config picks its own defaults: the run's are not copied. Then every build and onnxruntime are timed in one fresh process,
in rounds that take turns (this VM drifts between fast and slow phases), 2 threads each: TVM / onnxruntime is the
median of round medians, with the paired median beside it. The matmul reference is measured before and after.
A config whose folder already holds a tuned build is not tuned again. Writes budget<trials>_<machine>.json to
bench/results/demo/ (<machine>: the dataset's name for this CPU; budget200.json is the Intel Xeon run of 2026-12-02).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "demo"
CONFIGS = ("xgb", "xgb@256", "mamba", "mamba@256")  # no @: TVM's default population (512), what `tune` runs
THREADS = 2
# what a copy of the run folder leaves behind: the tuning and what comes of it
DROP = shutil.ignore_patterns("tune", "tune.json", "*_tvm.so", "report.*", "*_defaults", "*_layouts")


def parse(config: str) -> tuple[str, int | None, str]:
    """"xgb@256+known" -> ("xgb", 256, "dataset"); "xgb" -> ("xgb", None, "none"): TVM's default population, every
    default picked."""
    config, plus, _ = config.partition("+known")
    model, _, population = config.partition("@")
    return model, int(population) if population else None, "dataset" if plus else "none"


def prepare(run: Path, work: Path, config: str, trials: int) -> dict:
    """The student tuned with one config in work/<config>: tuning seconds and trials, from tune.json."""
    from kdcompile.files import file_sha256

    folder = work / config
    tuned_before = json.loads((run / "tune.json").read_text()) if (run / "tune.json").exists() else {}
    if "student" not in tuned_before:
        raise SystemExit(f"{run} has no tuned student (its tune.json names the layout to keep): run `make demo` "
                         "or `kdcompile distill-and-tune` into it first.")
    layout = tuned_before["student"]["layout"]
    done = json.loads((folder / "tune.json").read_text()).get("student", {}) if (folder / "tune.json").exists() else {}
    # a folder tuned from another student, or whose build failed parity (no lib_sha256), is tuned again
    if done.get("onnx_sha256") != file_sha256(run / "student.onnx") or not done.get("lib_sha256"):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(run, folder, ignore=DROP)
        model, population, known = parse(config)
        cmd = [sys.executable, "-m", "kdcompile.cli", "tune", str(folder), "--models", "student", "--trials",
               str(trials), "--cost-model", model, "--known", known, "--layout", layout, "--threads", str(THREADS)]
        cmd += [] if population is None else ["--population", str(population)]
        print(" ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode:
            raise SystemExit(f"tuning with {config} failed (its output is above); {folder} is tuned again next time.")
    tuned = json.loads((folder / "tune.json").read_text())["student"]
    return {k: tuned.get(k) for k in ("trials", "tuning_s", "tasks", "layout", "tvm_max_abs", "known_defaults")}


def measure_builds(work: Path, configs: list[str], rounds: int) -> dict:
    """onnxruntime and each config's tuned student, `rounds` rounds taking turns (run in a fresh process)."""
    from kdcompile.export import ort_session
    from bench.e2e import builds_vs_ort
    from kdcompile.timing import TimingConfig
    from kdcompile.tvm_layer.build import CompiledModel

    first = work / configs[0]
    export = json.loads((first / "export.json").read_text())
    x = np.random.default_rng(0).standard_normal(export["input_shape"]).astype(np.float32)
    sess = ort_session(first / "student.onnx", THREADS)
    builds = {c: CompiledModel(work / c / "student_tvm.so") for c in configs}
    return builds_vs_ort(sess, {sess.get_inputs()[0].name: x}, builds, x, TimingConfig(min_time_s=0.4, min_calls=100),
                         rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a distilled, exported and tuned run folder (its layout is reused)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), help="COST_MODEL@POPULATION")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the fresh measuring process
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(THREADS)
    work = args.out / "work" / f"budget{args.trials}"
    if args.measure:
        print(json.dumps(measure_builds(work, args.configs, args.rounds)))
        return
    from bench.common import measured_json, stamp
    from costmodel.collect import hardware_name
    from bench.e2e import ort_peak_gflops

    tuned = {c: prepare(args.run.resolve(), work, c, args.trials) for c in args.configs}
    peak_before = ort_peak_gflops()
    cmd = [sys.executable, "-m", "bench.demo_budget", str(args.run), "--measure", "--trials", str(args.trials),
           "--rounds", str(args.rounds), "--out", str(args.out), "--configs", *args.configs]
    times = measured_json(cmd)
    report = {"trials": args.trials, "configs": tuned, **times, **stamp(THREADS, [peak_before, ort_peak_gflops()])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"budget{args.trials}_{hardware_name(THREADS)}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({c: {"tuning_s": round(tuned[c]["tuning_s"]), "vs_ort": round(times["vs_ort"][c], 3),
                          "vs_ort_paired": round(times["vs_ort_paired"][c], 3)} for c in args.configs}, indent=1))


if __name__ == "__main__":
    main()
