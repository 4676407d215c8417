"""Where a cost model's time goes inside the tuner, step by step, on the same programs.

    python -m bench.costmodel_featurise                       # MobileNet-V2 and BERT-base @b1, 64 programs a task
    python -m bench.costmodel_featurise --per-task 16 --networks bert_base@b1+prepack+fastmath+pad16

For every task of the networks (the dataset's held-out ones by default, at the lowering `kdcompile tune` uses),
`--per-task` measured programs are replayed into scheduled candidates, as the evolutionary search hands them to a
cost model, and each step is timed on them cold (median of 3 calls):
- trace_raw, trace_key: TVM's JSON array of each trace and its structural hash (the adapter's program key);
- convert_cold / convert_warm: that array to Python, with a fresh and with a warm instruction cache (inside a run
  the cache hits ~99%, bench/results/costmodel/README.md);
- tokenize: the Mamba tokens of each converted trace (pure Python);
- per_store / per_store_1thread: MetaSchedule's PerStoreFeature extraction (what XGBoost reads, and the joined
  ranker), with the tuner's threads and with one;
- score_mamba: the shipped ranker's forward pass from ready tokens and rows; xgb_booster: the shipped XGBoost
  picker's booster from ready rows;
- predict:mamba, predict:xgb: each cost model's whole `predict(context, candidates)`, features included.
Writes featurise_<machine>.json to bench/results/costmodel/: ms per program of each step over all programs (and
per network), the programs and per-store rows counted, and the machine's matmul reference before and after.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import stamp

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "costmodel"
NETWORKS = ("mobilenet_v2@b1+prepack+fastmath+pad16", "bert_base@b1+prepack+fastmath+pad16")
THREADS = 2


def task_steps(ds, task_hash: str, n: int, scorer, models: dict) -> tuple[dict[str, float], int, int]:
    """Seconds of every step on the task's first n measured programs; the programs and store rows counted."""
    from costmodel.tokenize import tokenize
    from kdcompile.measured import is_measured
    from kdcompile.tvm_layer.programs import featurise_stages

    f = ds.task(task_hash)
    header = f.header()
    traces = [r["trace"] for r in f.records() if r.get("run_secs") and is_measured(r["run_secs"])][:n]
    if not traces:
        return {}, 0, 0
    secs, converted, rows = featurise_stages(header["workload"], header["target"], traces, models)
    start = time.perf_counter()
    tokens = [tokenize(t) for t in converted]
    secs["tokenize"] = time.perf_counter() - start
    scorer.clear_cache()
    start = time.perf_counter()
    scorer.score(tokens, rows if scorer.wants_stores else None)
    secs["score_mamba"] = time.perf_counter() - start
    return secs, len(traces), int(sum(len(r) for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), help="network keys of the dataset")
    ap.add_argument("--per-task", type=int, default=64, help="measured programs per task")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import torch

    from bench.e2e import ort_peak_gflops
    from costmodel.collect import hardware_name
    from costmodel.dataset import ProgramDataset
    from costmodel.online import MambaScorer
    from costmodel.plugin import WEIGHTS
    from costmodel.xgb_pretrain import DEFAULT_DATA
    from kdcompile.tvm_layer.cost_models import TraceRankerCostModel, load_xgb

    torch.set_num_threads(THREADS)
    ds = ProgramDataset(DEFAULT_DATA)
    nets = ds.networks()
    unknown = [k for k in args.networks if k not in nets]
    if unknown:
        raise SystemExit(f"not networks of {ds.root}: {', '.join(unknown)} (see its networks.json)")
    scorer = MambaScorer.load(WEIGHTS / "mamba_cpu.pt")
    models = {"mamba": TraceRankerCostModel(MambaScorer.load(WEIGHTS / "mamba_cpu.pt")),
              "xgb": load_xgb(WEIGHTS / "xgb_cpu.tar")}
    peaks = [ort_peak_gflops()]
    result = {"per_task": args.per_task, "networks": {}}
    for net in args.networks:
        total: dict[str, float] = {}
        programs = stores = tasks = 0
        for h in sorted(nets[net]["tasks"]):
            secs, n, s = task_steps(ds, h, args.per_task, scorer, models)
            for k, v in secs.items():
                total[k] = total.get(k, 0.0) + v
            programs, stores, tasks = programs + n, stores + s, tasks + bool(n)
            print(f"{net} {h[:12]} {n} programs " + " ".join(f"{k} {1e3 * v / max(n, 1):.3f}" for k, v in secs.items()),
                  flush=True)
        result["networks"][net] = {"tasks": tasks, "programs": programs, "store_rows": stores,
                                   "ms_per_program": {k: 1e3 * v / programs for k, v in total.items()}}
    peaks.append(ort_peak_gflops())
    steps = result["networks"][args.networks[0]]["ms_per_program"]
    n_all = sum(r["programs"] for r in result["networks"].values())
    result["ms_per_program"] = {k: sum(r["ms_per_program"][k] * r["programs"] for r in result["networks"].values())
                                / n_all for k in steps}
    result |= stamp(THREADS, peaks) | {"machine": hardware_name(THREADS), "command": "python -m bench.costmodel_featurise "
                                       + " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                                  for k, v in vars(args).items() if k != "out")}
    out = args.out / f"featurise_{result['machine']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["ms_per_program"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
