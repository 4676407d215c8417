"""Online tuning of a held-out network with each cost model: best latency against trials, seeds, time in the model.

    python -m bench.costmodel_tuning                       # bert_base@b1, 150 trials, 3 seeds, 4 cost models
    python -m bench.costmodel_tuning --trials 60 --seeds 0

Every run tunes the whole network (all its tasks, MetaSchedule's gradient task scheduler, kdcompile's space and
lowering) with the same trial budget, evolutionary population and seed; only the cost model differs:
- mamba: the pretrained Mamba ranker (costmodel/weights/mamba_cpu.pt), fine-tuned online;
- xgb: TVM's XGBoost from scratch (MetaSchedule's default);
- xgb-pretrained: the same, trained first on the dataset's training networks (the fair baseline);
- random: a random cost model (the search still evolves, ranked by chance).
The network is one of the dataset's held-out networks: none of its tasks was in any model's training data.
Latency after n trials is what MetaSchedule's task scheduler optimises: sum over tasks of occurrences x the best
time measured so far (tvm_layer.records.tuning_curve), defined once every task has a measurement.
Runs resume (tuning databases under --out/work); a finished run is read back, not redone. Writes tuning.json
and tuning.png to bench/results/costmodel/.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "costmodel"
MODELS = ("mamba", "xgb", "xgb-pretrained", "random")
THREADS = 2


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


def run(mod, target, work: Path, model: str, seed: int, trials: int, population: int) -> dict:
    """One tuning run (resumed if its database exists); its curve and the seconds spent."""
    from kdcompile import plugins
    from kdcompile.tvm_layer import cost_models, lowering, records, search

    done = work / "run.json"
    if done.exists():
        return json.loads(done.read_text())
    np.random.seed(seed)
    torch.manual_seed(seed)
    cost_model = cost_models.TimedCostModel(plugins.make(plugins.COST_MODELS, model))
    start = time.perf_counter()
    search.tune(mod, target, work, trials, cost_model, seed, population=population,
                on_batch=lambda n: print(f"  {model} seed {seed}: {records.count_records(work)}/{trials}", flush=True))
    wall = time.perf_counter() - start
    out = {"model": model, "seed": seed, "trials": records.count_records(work), "tuning_seconds": wall,
           "costmodel_seconds": cost_model.seconds,
           "curve": records.tuning_curve(lowering.extract_tasks(mod, target), work)}
    done.write_text(json.dumps(out) + "\n")
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


def summarise(runs: list[dict]) -> dict:
    curves = {m: [r["curve"] for r in runs if r["model"] == m] for m in dict.fromkeys(r["model"] for r in runs)}
    med = {m: median_curve(c) for m, c in curves.items()}
    final = {m: next((v for v in reversed(c) if v is not None), None) for m, c in med.items()}

    def ratio(base: str) -> float | None:
        """Trials `base` needs for its final latency over trials mamba needs for it (median curves)."""
        if "mamba" not in med or base not in med or final[base] is None:
            return None
        base_n, mamba_n = trials_to_reach(med[base], final[base]), trials_to_reach(med["mamba"], final[base])
        return None if mamba_n is None else base_n / mamba_n

    spent = {m: sum(r["costmodel_seconds"] for r in runs if r["model"] == m) /
             sum(r["tuning_seconds"] for r in runs if r["model"] == m) for m in curves}
    return {
        "trials_ratio_vs_xgb": ratio("xgb"),
        "trials_ratio_vs_xgb_pretrained": ratio("xgb-pretrained"),
        "final_latency_ratio_vs_xgb": final["mamba"] / final["xgb"] if final.get("mamba") and final.get("xgb")
        else None,
        "costmodel_time_share": spent.get("mamba"),
        "costmodel_time_share_per_model": spent,
        "tuning_seconds": {m: [round(r["tuning_seconds"], 1) for r in runs if r["model"] == m] for m in curves},
        "final_latency_ms": {m: None if v is None else v * 1e3 for m, v in final.items()},
        "mamba_reaches_xgb_final": None if "mamba" not in med or final.get("xgb") is None
        else trials_to_reach(med["mamba"], final["xgb"]),
        "curves": {m: {"median_ms": [None if v is None else v * 1e3 for v in med[m]],
                       "seeds_ms": [[None if v is None else v * 1e3 for v in c] for c in curves[m]]}
                   for m in curves},
    }


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", default="bert_base")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--trials", type=int, default=150)
    ap.add_argument("--population", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot-only", action="store_true", help="Redraw tuning.png from tuning.json.")
    args = ap.parse_args()
    if args.plot_only:
        report = json.loads((args.out / "tuning.json").read_text())
        setup = report["setup"]
        plot(report, args.out / "tuning.png", f"{setup['network']}: {len(setup['seeds'])} seeds, "
                                              f"population {setup['population']}, {setup['trials']} trials")
        return
    from costmodel import zoo

    if args.network not in zoo.TEST_NETWORKS:
        raise SystemExit(f"{args.network} is not a held-out network ({', '.join(zoo.TEST_NETWORKS)}).")
    work = args.out / "work" / f"{args.network}@b{args.batch}"
    mod, target = network_module(args.network, args.batch, work)
    runs = []
    for seed in args.seeds:  # seeds outermost: a stopped benchmark has every model at the same seeds
        for model in args.models:
            runs.append(run(mod, target, work / model / f"seed{seed}", model, seed, args.trials, args.population))
    summary = summarise(runs)
    report = {**summary, "setup": {"network": f"{args.network}@b{args.batch}", "trials": args.trials,
                                   "population": args.population, "seeds": args.seeds, "threads": THREADS,
                                   "date": time.strftime("%Y-%m-%d")}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(summary, args.out / "tuning.png", f"{args.network}@b{args.batch}: {len(args.seeds)} seeds, "
                                            f"population {args.population}, {args.trials} trials")
    print(json.dumps({k: v for k, v in report.items() if k != "curves"}, indent=1))


if __name__ == "__main__":
    main()
