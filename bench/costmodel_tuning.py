"""Online tuning of a held-out network with each cost model: best latency against trials, seeds, time in the model.

    python -m bench.costmodel_tuning                  # MobileNet-V2 and BERT-base @b1, 500 trials, 3 seeds, 3 models
    python -m bench.costmodel_tuning --seeds 0 --population 256     # another population: tuning_pop256_<machine>.json

Every run tunes the whole network (all its tasks, MetaSchedule's gradient task scheduler, kdcompile's space and
lowering) with the same trial budget, evolutionary population and seed; only the cost model differs:
- mamba: the pretrained Mamba ranker (costmodel/weights/mamba_cpu.pt), fine-tuned online;
- xgb: TVM's XGBoost from scratch (MetaSchedule's default);
- xgb-pretrained: the same, trained first on the dataset's training networks (the fair baseline);
- random (with --models): a random cost model (the search still evolves, ranked by chance).
The network is one of the dataset's held-out networks: none of its tasks was in any model's training data.
Latency after n trials is what MetaSchedule's task scheduler optimises: sum over tasks of occurrences x the best
time measured so far (kdcompile.measured.curve_of), defined once every task has a measurement.
Time to a latency is the run's wall-clock seconds when the trial that reached it was measured (each run records
its trial count and elapsed seconds after every batch).
The population is TVM 0.27's EvolutionarySearch default, 512, unless --population says otherwise; another
population writes tuning_pop<P>.json/png.
The benchmark resumes run by run: each finished run is written to
runs/<machine>/<net>@b<batch>/pop<P>-trials<T>/<model>/seed<k>.json beside the results (committed: a sitting's work
folder does not outlive it), with its trial log (task and seconds of every measurement, from which the curves are
computed), and is read back, not redone; an unfinished run starts again from nothing, since a cost model's online
state cannot be resumed. <machine> is the dataset's name for this CPU (e.g. cpu-znver4-2c): the VM is not always
the same CPU, and a seed measured on one must not be averaged with seeds of another. Seeds are outermost, so a
stopped benchmark has every network and model at the same seeds. The machine's matmul reference (onnxruntime,
1024^3) is measured before and after each run. Writes tuning_<machine>.json and .png to bench/results/costmodel/;
`--networks` rewrites only those networks' results there, and each network records the seeds it averages.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "costmodel"
MODELS = ("mamba", "xgb", "xgb-pretrained")
NETWORKS = ("mobilenet_v2", "bert_base")
THREADS = 2
POPULATION = 512  # TVM 0.27's EvolutionarySearch(population_size=512) default, what `kdcompile tune` runs


def network_module(name: str, batch: int, work: Path):
    """The zoo network lowered as `kdcompile tune` lowers it, and its target."""
    from costmodel import zoo
    from kdcompile.export import INPUT_NAME, to_onnx
    from kdcompile.tvm_layer import lowering, target as targets

    module, shape = zoo.build(name)
    shape = (batch, *shape[1:])
    onnx_path = work / f"{name}@b{batch}.onnx"
    if not onnx_path.exists():
        work.mkdir(parents=True, exist_ok=True)
        to_onnx(module, torch.zeros(shape), onnx_path, 20)
    target = targets.host_target(THREADS)
    return lowering.lower(lowering.import_onnx(onnx_path, INPUT_NAME, shape), target), target


def shipped_weights_sha256(model: str) -> str | None:
    """The hash of the shipped checkpoint a cost model loads (None for one that learns from the run alone): a kept
    run made with other weights is not this model's run."""
    from costmodel.plugin import WEIGHTS
    from kdcompile.files import file_sha256

    name = {"mamba": "mamba_cpu.pt", "mamba-small": "mamba_cpu_small.pt", "xgb-pretrained": "xgb_cpu.tar"}.get(model)
    return file_sha256(WEIGHTS / name) if name and (WEIGHTS / name).exists() else None


def run(mod, target, work: Path, kept: Path, model: str, seed: int, trials: int, population: int) -> dict:
    """One tuning run in `work` (started afresh unless `kept` holds it finished): its trial log, timeline and
    seconds spent. A finished run is written to `kept`, a committed file, so that it outlives the work folder."""
    import shutil

    from bench.common import stamp
    from bench.e2e import ort_peak_gflops
    from kdcompile import plugins
    from kdcompile.files import write_json
    from kdcompile.tvm_layer import cost_models, lowering, records, search

    weights_sha = shipped_weights_sha256(model)
    if kept.exists():
        got = json.loads(kept.read_text())
        # a run without the hash predates it (commit 29a5182, made with today's shipped weights: see git log)
        same_weights = got.get("weights_sha256", weights_sha) == weights_sha
        if (got["trials_asked"], got["population"]) == (trials, population) and same_weights:
            return got
        print(f"  {kept}: finished with other settings or other shipped weights, run again", flush=True)
    if work.exists():
        print(f"  {work}: unfinished, started again", flush=True)
        shutil.rmtree(work)
    peak_before = ort_peak_gflops()
    np.random.seed(seed)
    torch.manual_seed(seed)
    inner = plugins.make(plugins.COST_MODELS, model)
    cost_model = cost_models.TimedCostModel(inner)
    timeline: list[tuple[int, float]] = []
    start = time.perf_counter()

    def on_batch(_):
        timeline.append((records.count_records(work), round(time.perf_counter() - start, 2)))
        print(f"  {model} seed {seed}: {timeline[-1][0]}/{trials} trials, {timeline[-1][1]:.0f} s", flush=True)

    search.tune(mod, target, work, trials, cost_model, seed, population=population, on_batch=on_batch)
    wall = time.perf_counter() - start
    scorer = getattr(inner, "scorer", None)
    tasks = lowering.extract_tasks(mod, target)
    out = {"model": model, "seed": seed, "weights_sha256": weights_sha,
           "trials": records.count_records(work), "trials_asked": trials,
           "population": population, "tuning_seconds": wall,
           "costmodel_seconds": cost_model.seconds, "timeline": timeline,
           "featurised": getattr(scorer, "featurised", None), "online_rounds": getattr(scorer, "rounds", None),
           "costmodel_breakdown": getattr(scorer, "seconds", None),
           "instruction_cache": None if scorer is None else {"hits": inner.trace_json.hits,
                                                             "misses": inner.trace_json.misses},
           **stamp(THREADS, [peak_before, ort_peak_gflops()]),
           "weights": {t.task_name: int(t.weight) for t in tasks},
           "log": records.trial_log(tasks, work)}
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_json(kept, out, indent=None)
    return out


def trials_to_reach(curve: list[float | None], latency: float) -> int | None:
    """The first trial count (1-based) whose latency is at most `latency`; None if never."""
    for i, v in enumerate(curve):
        if v is not None and v <= latency * (1 + 1e-9):
            return i + 1
    return None


def median_curve(curves: list[list[float | None]]) -> list[float | None]:
    n = min(len(c) for c in curves)
    return [None if any(c[i] is None for c in curves) else float(np.median([c[i] for c in curves])) for i in range(n)]


def seconds_at(run: dict, trial: int | None) -> float | None:
    """The run's elapsed seconds when its `trial`-th trial had been measured."""
    if trial is None:
        return None
    return next((t for n, t in run["timeline"] if n >= trial), None)


def summarise(runs: list[dict]) -> dict:
    """One network's runs: median curves over seeds, trials and seconds each model needs for a baseline's final
    latency, and the share of tuning time spent in each cost model."""
    curves = {m: [r["curve"] for r in runs if r["model"] == m] for m in dict.fromkeys(r["model"] for r in runs)}
    med = {m: median_curve(c) for m, c in curves.items()}
    final = {m: next((v for v in reversed(c) if v is not None), None) for m, c in med.items()}

    def reach(model: str, latency: float | None) -> dict:
        """Trials `model`'s median curve needs to reach `latency`, and the median over its seeds of the seconds
        each had spent at that trial count."""
        n = None if latency is None or model not in med else trials_to_reach(med[model], latency)
        secs = [seconds_at(r, n) for r in runs if r["model"] == model]
        return {"trials": n, "seconds": None if n is None or None in secs else float(np.median(secs))}

    out: dict = {"final_latency_ms": {m: None if v is None else v * 1e3 for m, v in final.items()},
                 "left_out_tasks": runs[0].get("left_out_tasks", [])}
    for base in ("xgb", "xgb-pretrained"):
        if base not in med or "mamba" not in med:
            continue
        b, m = reach(base, final[base]), reach("mamba", final[base])
        key = base.replace("-", "_")
        out[f"reach_{key}_final"] = {"mamba": m, base: b}
        out[f"trials_ratio_vs_{key}"] = None if m["trials"] is None else b["trials"] / m["trials"]
        out[f"time_ratio_vs_{key}"] = None if None in (m["seconds"], b["seconds"]) else b["seconds"] / m["seconds"]
    if final.get("mamba") and final.get("xgb"):
        out["final_latency_ratio_vs_xgb"] = final["mamba"] / final["xgb"]
    out["costmodel_time_share"] = {m: sum(r["costmodel_seconds"] for r in runs if r["model"] == m) /
                                   sum(r["tuning_seconds"] for r in runs if r["model"] == m) for m in curves}
    out["tuning_seconds"] = {m: [round(r["tuning_seconds"], 1) for r in runs if r["model"] == m] for m in curves}
    out["peak_gflops"] = [round(p, 1) for r in runs for p in r.get("peak_gflops", [])]
    out["curves"] = {m: {"median_ms": [None if v is None else v * 1e3 for v in med[m]],
                         "seeds_ms": [[None if v is None else v * 1e3 for v in c] for c in curves[m]]}
                     for m in curves}
    return out


def common_curves(runs: list[dict]) -> list[dict]:
    """The runs with their curves over the tasks every run of the network measured. A task no run could keep a
    record of (a reduction whose rfactor traces do not replay in TVM 0.27) would leave every curve undefined;
    summing the same tasks for every model keeps the comparison fair, and the left-out tasks are named."""
    from kdcompile.measured import curve_of, measured_in

    weights = runs[0]["weights"]
    common = set.intersection(*[measured_in(r["log"]) for r in runs])
    kept = {n: w for n, w in weights.items() if n in common}
    if not kept:
        raise SystemExit(f"no task has a measured program in every run ({len(runs)} runs): no curve to compare")
    left_out = sorted(n for n in weights if n not in common)
    return [{**r, "curve": curve_of(r["log"], kept), "left_out_tasks": left_out} for r in runs]


def roof(net: str, batch: int, summary: dict) -> dict:
    """The network's FLOPs, the latency the measured matmul peak allows (FLOPs / peak), and each model's final
    latency as a share of it (1.0 = at the machine's practical limit)."""
    from costmodel import zoo
    from kdcompile.student import flops_and_params

    module, shape = zoo.build(net)
    flops, _ = flops_and_params(module, torch.zeros((batch, *shape[1:])))
    peak = float(np.median(summary["peak_gflops"]))
    roof_ms = flops / (peak * 1e9) * 1e3
    share = {m: None if v is None else roof_ms / v for m, v in summary["final_latency_ms"].items()}
    return {"flops": flops, "peak_gflops_median": peak, "roof_ms": roof_ms, "final_share_of_roof": share}


def geomean(values: list[float | None]) -> float | None:
    """Geometric mean of the defined values; None if any is undefined (a model that never reached the latency)."""
    if not values or any(v is None for v in values):
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def plot(summary: dict, ax, title: str) -> None:
    """One network's curves on `ax`."""
    for model, c in summary["curves"].items():
        n_points = min(len(s) for s in c["seeds_ms"])
        seeds = np.array([[np.nan if v is None else v for v in s[:n_points]] for s in c["seeds_ms"]], dtype=float)
        n = np.arange(1, n_points + 1)
        line, = ax.plot(n, [np.nan if v is None else v for v in c["median_ms"]], label=model)
        with warnings.catch_warnings():  # trials before every task has a measurement are all-NaN columns
            warnings.simplefilter("ignore", RuntimeWarning)
            ax.fill_between(n, np.nanmin(seeds, 0), np.nanmax(seeds, 0), color=line.get_color(), alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("trials (measured programs)")
    ax.set_ylabel("estimated network latency, ms (sum of best task times)")
    ax.set_title(f"{title}\nline: median over seeds, band: min-max")
    ax.legend()
    ax.grid(alpha=0.3)


def title(setup: dict, network: str, seeds: list | None = None) -> str:
    seeds = seeds if seeds is not None else setup["seeds"]
    return (f"{network}: seeds {', '.join(map(str, seeds))}, population {setup['population']}, "
            f"{setup['trials']} trials")


def plot_all(report: dict, out: Path, name: str = "tuning") -> None:
    """<name>.png: one panel per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = report["networks"]
    fig, axes = plt.subplots(1, len(nets), figsize=(7 * len(nets), 4.5), squeeze=False)
    for ax, (net, summary) in zip(axes[0], nets.items()):
        plot(summary, ax, title(report["setup"], net, summary.get("seeds")))
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--population", type=int, default=POPULATION,
                    help=f"evolutionary search population per round (default {POPULATION}, TVM's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot-only", action="store_true", help="Redraw the plot from the results file, without tuning.")
    ap.add_argument("--machine", help="With --plot-only: whose results to redraw (default: this machine's).")
    args = ap.parse_args()
    from costmodel.collect import hardware_name

    machine = args.machine or hardware_name(THREADS)
    name = ("tuning" if args.population == POPULATION else f"tuning_pop{args.population}") + f"_{machine}"
    if args.plot_only:
        plot_all(json.loads((args.out / f"{name}.json").read_text()), args.out, name)
        return
    from costmodel import zoo

    for net in args.networks:
        if net not in zoo.TEST_NETWORKS:
            raise SystemExit(f"{net} is not a held-out network ({', '.join(zoo.TEST_NETWORKS)}).")
    lowered = {}
    for net in args.networks:
        work = args.out / "work" / f"{net}@b{args.batch}"
        lowered[net] = (work, *network_module(net, args.batch, work))
    runs: dict[str, list[dict]] = {net: [] for net in args.networks}
    for seed in args.seeds:  # seeds outermost: a stopped benchmark has every network and model at the same seeds
        for net, (work, mod, target) in lowered.items():
            for model in args.models:
                print(f"{net}@b{args.batch} {model} seed {seed}", flush=True)
                where = (Path(f"{net}@b{args.batch}") / f"pop{args.population}-trials{args.trials}" / model
                         / f"seed{seed}")
                runs[net].append(run(mod, target, work.parent / where, args.out / "runs" / machine / f"{where}.json",
                                     model, seed, args.trials, args.population))
    # a run of some networks keeps the others' results in the file: each network records the seeds it averages
    path = args.out / f"{name}.json"
    earlier = json.loads(path.read_text()) if path.exists() else {"networks": {}}
    nets = {k: {"seeds": earlier.get("seeds")} | v for k, v in earlier["networks"].items()}
    for net, r in runs.items():
        summary = summarise(common_curves(r))
        nets[f"{net}@b{args.batch}"] = {"seeds": args.seeds, **summary, "tasks": len(r[0]["weights"]),
                                        **roof(net, args.batch, summary)}
    setup = {"machine": machine, "trials": args.trials, "population": args.population, "seeds": args.seeds, "models": args.models,
             "threads": THREADS, "date": time.strftime("%Y-%m-%d")}
    cm_share = [n["costmodel_time_share"]["mamba"] for n in nets.values() if "mamba" in n.get("costmodel_time_share", {})]
    seeds = sorted({s for n in nets.values() for s in n["seeds"] or []})
    report = {"xgb_budget": args.trials, "seeds": seeds, "networks": nets,
              **{k: geomean([n.get(k) for n in nets.values()]) for k in (
                  "trials_ratio_vs_xgb", "trials_ratio_vs_xgb_pretrained", "time_ratio_vs_xgb",
                  "time_ratio_vs_xgb_pretrained", "final_latency_ratio_vs_xgb")},
              "costmodel_time_share": float(np.mean(cm_share)) if cm_share else None,
              "setup": setup}
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    plot_all(report, args.out, name)
    print(json.dumps({k: v for k, v in report.items() if k != "networks"}, indent=1))
    for net, n in nets.items():
        print(net, json.dumps({k: v for k, v in n.items() if k != "curves"}))


if __name__ == "__main__":
    main()
