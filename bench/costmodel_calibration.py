"""How the shipped ranker's scores scale with measured speed, which is what the search's parent sampling reads.

    python -m bench.costmodel_calibration [--tasks 40] [--programs 48]

MetaSchedule reads a cost model's prediction as a normalised throughput: it keeps the highest and draws parents in
proportion to them. The Mamba adapter hands it exp(score) (`kdcompile.tvm_layer.cost_models.strengths`). If a
task's scores follow k * log(throughput) + c, then exp(score) is proportional to throughput ** k: k = 1 reads as
XGBoost's prediction does, and k > 1 draws parents more unequally than the programs' predicted speeds would.
For `--tasks` random tasks of the training and of the held-out split (with 20 or more measured programs), up to
`--programs` programs each are scored (tokens and per-store rows, as in the tuner). Both scores and log
throughputs are centred per task, and k is fitted by least squares, pooled and per task. Writes calibration.json
to bench/results/costmodel/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.common import stamp

OUT = Path(__file__).resolve().parent / "results" / "costmodel"
THREADS = 2


def centred(ds, task_hash: str, n: int, scorer, rng) -> tuple[np.ndarray, np.ndarray] | None:
    """(log throughput, score) of up to n measured programs of the task, each centred; None under 20 programs."""
    from costmodel.tokenize import tokenize
    from kdcompile.measured import is_measured, mean_seconds
    from kdcompile.tvm_layer.programs import per_store_features

    f = ds.task(task_hash)
    records = [r for r in f.records() if r.get("run_secs") and is_measured(r["run_secs"])]
    if len(records) < 20:
        return None
    records = [records[i] for i in rng.choice(len(records), min(n, len(records)), replace=False)]
    traces = [r["trace"] for r in records]
    header = f.header()
    rows = per_store_features(header["workload"], header["target"], traces)
    score = scorer.score([tokenize(t) for t in traces], rows if scorer.wants_stores else None).astype(np.float64)
    speed = -np.log([mean_seconds(r["run_secs"]) for r in records])
    return speed - speed.mean(), score - score.mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=40, help="random tasks drawn per split")
    ap.add_argument("--programs", type=int, default=48, help="programs per task")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import torch

    from costmodel.dataset import ProgramDataset
    from costmodel.online import MambaScorer
    from costmodel.plugin import WEIGHTS
    from costmodel.splits import split_by_network, tasks_of
    from costmodel.xgb_pretrain import DEFAULT_DATA

    torch.set_num_threads(THREADS)
    ds = ProgramDataset(DEFAULT_DATA)
    splits = split_by_network(ds)
    scorer = MambaScorer.load(WEIGHTS / "mamba_cpu.pt")
    rng = np.random.default_rng(0)
    result = {}
    for split in ("train", "test"):
        hashes = tasks_of(splits[split])
        rng.shuffle(hashes)
        got = [c for h in hashes[:args.tasks] if (c := centred(ds, h, args.programs, scorer, rng)) is not None]
        x, y = np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])
        result[split] = {"tasks": len(got), "programs": int(len(x)), "pooled_slope": float(y @ x / (x @ x)),
                         "median_task_slope": float(np.median([g[1] @ g[0] / (g[0] @ g[0]) for g in got])),
                         "correlation": float(np.corrcoef(x, y)[0, 1]), "score_sd": float(y.std()),
                         "log_throughput_sd": float(x.std())}
        print(split, json.dumps(result[split]), flush=True)
    result |= stamp(THREADS, []) | {"weights": "costmodel/weights/mamba_cpu.pt",
                                    "command": f"python -m bench.costmodel_calibration --tasks {args.tasks} "
                                               f"--programs {args.programs}"}
    (args.out / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
