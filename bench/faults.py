"""Fault injection: SIGKILL at random points of `distill`, `tune` and `costmodel collect` on small models, each
kill followed by a rerun of the same command, and checks after every rerun. Writes bench/results/faults/.

    python -m bench.faults [--kills 20] [--stages distill,tune,collect] [--seed 0]

Each kill falls at a time drawn uniformly (seeded) over the longest wall time a run of the same command took so far
(the VM's speed drifts, and a fixed window would fall ever earlier in a slowed run); a draw that lands after the
command ended is no kill and is drawn again. A kill takes the whole process group (MetaSchedule's build and run workers too), as a power cut or `kill -9` of a job would. Checks:
- the run folder or dataset loads;
- no record complete before the kill is missing after the rerun (`records_lost`: tuning records, dataset programs;
  for distill the checkpoint's completed epochs);
- the result equals an uninterrupted run's (`identical`): distill, the student's weights bit for bit; tune, the
  trials of the uninterrupted run, records a superset of those before the kill, the layout those records were
  tuned in, and a build that passed parity (the layout `--layout auto` picks from timings may differ between two
  runs that were killed before it chose); collect, every task at its quota, programs a superset with no duplicate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "faults"
ENV = dict(os.environ, KDCOMPILE_QUIET="1")
CLI = [sys.executable, "-m", "kdcompile.cli"]

COLLECT = """
import sys
from pathlib import Path
from torch import nn
from costmodel import zoo
from costmodel.collect import CollectConfig, collect
zoo.NETWORKS = {"mlp": (lambda: nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)), (1, 32))}
collect(CollectConfig(out=Path(sys.argv[1]), networks=("mlp",), batches=(1,), layouts=(None,), random_per_task=8,
                      evolutionary_per_task=4, first_pass=8, per_iter=4, repeats=1, cache=Path(sys.argv[2])))
"""


KILLED = -1.0  # what `run` returns when its kill landed (a kill after the command ended is no kill)


def run(cmd: list[str], kill_after: float | None = None) -> float:
    """Run `cmd` to the end (returns its wall seconds) or SIGKILL its process group after `kill_after` seconds
    (returns KILLED, or the wall seconds if the command had ended by then)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    if kill_after is None:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {err[-600:]}")
        return time.perf_counter() - start
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return KILLED
    return time.perf_counter() - start


def first_line_at(cmd: list[str], path: Path) -> tuple[float, float]:
    """Run `cmd` to the end, watching `path`: (seconds until its first complete line, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    first = None
    while proc.poll() is None:
        if first is None and lines(path):
            first = time.perf_counter() - start
        time.sleep(0.1)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {proc.stderr.read()[-600:]}")
    wall = time.perf_counter() - start
    return (wall if first is None else first), wall


def lines(path: Path) -> list[str]:
    """The complete lines of a file (a torn last line is not a record)."""
    if not path.exists():
        return []
    text = path.read_text()
    return text.splitlines()[: text.count("\n")]


# ---- distill ---------------------------------------------------------------------------------------------------
def distill_stage(work: Path, teacher: Path, kills: int, rng: random.Random) -> dict:
    import torch

    def cmd(run_dir: Path) -> list[str]:
        return CLI + ["distill", str(teacher), "--out", str(run_dir), "--data", "digits", "--epochs", "15",
                      "--min-kept", "0", "--student", "width:0.5"]

    def weights(run_dir: Path) -> dict:
        return torch.export.load(str(run_dir / "student.pt2")).state_dict

    reference = work / "distill_ref"
    wall = run(cmd(reference))
    ref = weights(reference)
    stats = {"kills": 0, "resumed_ok": 0, "identical": 0, "records_lost": 0, "wall_s_uninterrupted": wall}
    k = 0
    while stats["kills"] < kills:
        k += 1
        run_dir = work / f"distill_{k}"
        if run(cmd(run_dir), kill_after=rng.uniform(0, wall)) != KILLED:
            shutil.rmtree(run_dir)
            continue
        state = run_dir / "distill_state.pt"
        epochs_before = torch.load(state, weights_only=True)["step"] if state.exists() else 0
        stats["kills"] += 1
        try:
            run(cmd(run_dir))
            json.loads((run_dir / "distill.json").read_text())
            got = weights(run_dir)
            stats["resumed_ok"] += 1
        except Exception as e:  # noqa: BLE001 - a failed resume is what this counts
            print(f"distill {k}: rerun failed: {e}", flush=True)
            continue
        after = torch.load(state, weights_only=True)["step"] if state.exists() else 0
        stats["records_lost"] += int(after < epochs_before)
        stats["identical"] += int(set(got) == set(ref) and all(torch.equal(got[n], ref[n]) for n in ref))
        shutil.rmtree(run_dir)
        print(f"distill {k}: killed after {epochs_before} epochs; identical so far {stats['identical']}", flush=True)
    return stats


# ---- tune ------------------------------------------------------------------------------------------------------
def tune_stage(work: Path, teacher: Path, kills: int, rng: random.Random, search: bool = False) -> dict:
    """Kills over a whole `tune` run (layout choice, default schedules, search, build), or with `search` only
    inside its search: a fixed layout, more trials, and kill times drawn between the first tuning record of an
    uninterrupted run and its end."""
    prepared = work / "tune_prepared"
    shutil.rmtree(prepared, ignore_errors=True)
    run(CLI + ["distill", str(teacher), "--out", str(prepared), "--data", "digits", "--epochs", "1",
               "--min-kept", "0", "--student", "width:0.5"])
    run(CLI + ["export", str(prepared)])

    def cmd(run_dir: Path) -> list[str]:
        extra = ["--trials", "24", "--layout", "nchw"] if search else ["--trials", "6"]
        return CLI + ["tune", str(run_dir), "--models", "student", "--defaults", "random"] + extra

    reference = work / "tune_ref"
    shutil.rmtree(reference, ignore_errors=True)
    shutil.copytree(prepared, reference)
    first, wall = first_line_at(cmd(reference), reference / "tune" / "student" / "database_tuning_record.json")
    first = first if search else 0.0
    ref = json.loads((reference / "tune.json").read_text())["student"]
    stats = {"kills": 0, "resumed_ok": 0, "identical": 0, "records_lost": 0, "wall_s_uninterrupted": wall,
             "reference": {"layout": ref["layout"], "trials": ref["trials"]}}
    if search:
        stats["first_record_s"] = round(first, 1)
    k = 0
    while stats["kills"] < kills:
        k += 1
        run_dir = work / f"tune_{k}"
        shutil.copytree(prepared, run_dir)
        db = run_dir / "tune" / "student" / "database_tuning_record.json"
        ended = run(cmd(run_dir), kill_after=rng.uniform(first, wall))
        if ended != KILLED:
            shutil.rmtree(run_dir)
            if search:  # the window was too wide (the reference ran on a busier machine): narrow it to this run
                wall = max(first + 1.0, ended)
            continue
        stats.setdefault("records_at_kill", []).append(len(lines(db)))
        before = lines(db)
        state = run_dir / "tune" / "student" / "state.json"  # the layout chosen before the kill, if any
        layout_before = json.loads(state.read_text())["layout"] if state.exists() and before else None
        stats["kills"] += 1
        try:
            wall = max(wall, run(cmd(run_dir)))  # a slowed machine widens the window (a resumed run is shorter)
            got = json.loads((run_dir / "tune.json").read_text())["student"]
            stats["resumed_ok"] += 1
        except Exception as e:  # noqa: BLE001
            print(f"tune {k}: rerun failed: {e}", flush=True)
            continue
        after = set(lines(db))
        lost = sum(1 for line in before if line not in after)
        stats["records_lost"] += lost
        # `--layout auto` times two zero-trial builds, so a run killed before it chose may choose the other
        # layout; once records exist, the rerun must keep theirs
        stats["identical"] += int(lost == 0 and got["layout"] == (layout_before or got["layout"])
                                  and got["trials"] == ref["trials"] and got["tvm_max_abs"] <= got["tolerance"])
        stats.setdefault("layouts", []).append(got["layout"])
        shutil.rmtree(run_dir)
        print(f"tune {k}: {len(before)} records before the kill, lost {lost}; identical so far "
              f"{stats['identical']}", flush=True)
    return stats


# ---- collect ---------------------------------------------------------------------------------------------------
def collect_stage(work: Path, kills: int, rng: random.Random) -> dict:
    from costmodel.dataset import ProgramDataset, trace_key

    cache = work / "collect_cache"

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-c", COLLECT, str(out), str(cache)]

    def programs(out: Path) -> dict[str, list[str]]:
        ds = ProgramDataset(out)
        return {h: [trace_key(r["trace"]) for r in ds.task(h).records()] for h in ds.task_hashes()}

    reference = work / "collect_ref"
    run(cmd(reference))  # a first run fills the cache (the exported network), so timings below are like-for-like
    shutil.rmtree(reference)
    wall = run(cmd(reference))
    ref = {h: len(v) for h, v in programs(reference).items()}
    stats = {"kills": 0, "resumed_ok": 0, "identical": 0, "records_lost": 0, "wall_s_uninterrupted": wall,
             "reference_programs": sum(ref.values())}
    k = 0
    while stats["kills"] < kills:
        k += 1
        out = work / f"collect_{k}"
        if run(cmd(out), kill_after=rng.uniform(0, wall)) != KILLED:
            shutil.rmtree(out)
            continue
        before = programs(out) if (out / "tasks").exists() else {}
        stats["kills"] += 1
        stats.setdefault("programs_at_kill", []).append(sum(map(len, before.values())))
        try:
            wall = max(wall, run(cmd(out)))  # a slowed machine widens the window (a resumed run is shorter)
            after = programs(out)
            stats["resumed_ok"] += 1
        except Exception as e:  # noqa: BLE001
            print(f"collect {k}: rerun failed: {e}", flush=True)
            continue
        lost = sum(1 for h, keys in before.items() for key in keys if key not in set(after.get(h, [])))
        duplicates = sum(len(keys) - len(set(keys)) for keys in after.values())
        stats["records_lost"] += lost
        stats["identical"] += int(lost == 0 and duplicates == 0 and {h: len(v) for h, v in after.items()} == ref)
        shutil.rmtree(out)
        print(f"collect {k}: {sum(map(len, before.values()))} programs before the kill, lost {lost}, "
              f"duplicates {duplicates}; identical so far {stats['identical']}", flush=True)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--stages", default="distill,tune,collect")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=OUT / "work")
    ap.add_argument("--out", type=Path, default=OUT / "faults.json")
    args = ap.parse_args()

    import torch

    from kdcompile.load import save_checkpoint
    from kdcompile.machine import machine_info
    from kdcompile.models import mnist_cnn

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    torch.manual_seed(0)
    teacher = args.work / "teacher.pt"
    save_checkpoint(mnist_cnn(width=4), teacher, "kdcompile.models:mnist_cnn", {"width": 4}, (1, 1, 8, 8),
                    dataset="digits")
    rng = random.Random(args.seed)
    stages = {"distill": lambda: distill_stage(args.work, teacher, args.kills, rng),
              "tune": lambda: tune_stage(args.work, teacher, args.kills, rng),
              "search": lambda: tune_stage(args.work, teacher, args.kills, rng, search=True),
              "collect": lambda: collect_stage(args.work, args.kills, rng)}
    path = args.out
    results = json.loads(path.read_text()) if path.exists() else {}
    if "machine" in results:  # the old layout: one machine entry for every stage
        old = results.pop("machine")
        for stage in ("distill", "tune", "collect"):
            results.get(stage, {}).setdefault("machine", old)
    for name in args.stages.split(","):
        start = time.time()
        results[name] = stages[name]() | {"wall_s_benchmark": round(time.time() - start, 1)}
        # each stage carries its own machine and date: stages are run in separate sittings
        results[name]["machine"] = machine_info(2) | {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python -m bench.faults " + " ".join(sys.argv[1:])}
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(name, {k: v for k, v in results[name].items() if k != "reference"}, flush=True)
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
