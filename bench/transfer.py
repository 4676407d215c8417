"""A cost model for a new target from a tenth of its measurements (issue #25): RDU + continual KD against random
sampling, plain fine-tuning, training from scratch, and the ranker trained on all the new target's data.

    kdcompile rpc-farm &                     # or measure locally, without --rpc
    kdcompile costmodel retarget -d datasets/cpu-znver4-2c -o datasets/cpu-x86-64-v3-1c \\
        --target '{"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 1}' --networks <b1 keys> --rpc 127.0.0.1:9190:farm
    python -m bench.transfer [--seeds 0 1 2] [--steps 300] [--share 0.1]

Old target: the AVX-512 two-core dataset and its shipped ranker (costmodel/weights/mamba_cpu.pt, trained on that
dataset's training networks). New target: the same programs compiled for x86-64-v3 (AVX2) on one core
(`costmodel retarget`). Offline top-1 / top-5 on the new target's held-out networks (ResNet-50, MobileNet-V2,
BERT-base), and the old target's top-1 before and after, on its own held-out networks. Every variant trains on the
same tasks for the same steps (costmodel/transfer.py). Writes bench/results/transfer/transfer.json; weights stay
in bench/results/transfer/work/ (a rerun reuses them).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

from costmodel.transfer import VARIANTS, TransferConfig, transfer
from kdcompile.files import write_json
from kdcompile.machine import machine_info

OUT = Path(__file__).resolve().parent / "results" / "transfer"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new", type=Path, default=Path("datasets/cpu-x86-64-v3-1c"))
    ap.add_argument("--old", type=Path, default=Path("datasets/cpu-znver4-2c"))
    ap.add_argument("--teacher", type=Path, default=Path("costmodel/weights/mamba_cpu.pt"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--share", type=float, default=0.1)
    args = ap.parse_args()
    runs = [transfer(args.new, args.old, args.teacher, OUT / "work",
                     TransferConfig(share=args.share, steps=args.steps, seed=s)) for s in args.seeds]
    names = ["teacher", *VARIANTS]

    def mean(where: str, model: str, metric: str) -> float:
        return float(np.mean([r[where][model][metric] for r in runs if model in r[where]]))

    top1 = {"full": mean("new_target", "full", "top1"), "rdu_kd": mean("new_target", "rdu_kd", "top1"),
            "random_kd": mean("new_target", "random_kd", "top1"), "rdu": mean("new_target", "rdu", "top1"),
            "scratch": mean("new_target", "scratch", "top1"), "teacher": mean("new_target", "teacher", "top1")}
    write_json(OUT / "transfer.json", {
        "target": '{"kind": "llvm", "mcpu": "x86-64-v3", "num-cores": 1}', "old_target": str(args.old),
        "measured_share": args.share, "top1": top1,
        "top1_old_target_before": mean("old_target", "teacher", "top1"),
        "top1_old_target_after": mean("old_target", "rdu_kd", "top1"),
        "rdu_kd_share_of_full": top1["rdu_kd"] / top1["full"],
        "mean_over_seeds": {m: {k: mean("new_target", m, k) for k in ("top1", "top5", "pairwise", "task_mean_top1")}
                            for m in names},
        "old_target_after": {m: {k: mean("old_target", m, k) for k in ("top1", "top5", "pairwise")}
                             for m in names if m in runs[0]["old_target"]},
        "per_seed": runs,
        "setup": {"command": f"python -m bench.transfer --seeds {' '.join(map(str, args.seeds))} --steps {args.steps} "
                             f"--share {args.share}", "date": datetime.date.today().isoformat(),
                  "machine": machine_info(2)}})
    print(json.dumps(top1, indent=1))


if __name__ == "__main__":
    main()
