"""KD on MNIST-5k: the demo teacher distilled into students with 4x and 8x fewer FLOPs, by several methods,
3 seeds each, equal epochs. Writes bench/results/kd/mnist.json and prints a markdown table.

    python -m bench.kd_mnist [--epochs 8] [--seeds 0 1 2]

"scratch" is the same pruned architecture re-initialised and trained on labels only; every other method starts
from the teacher's pruned weights (that initialisation is part of what kdcompile's students get).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from kdcompile.distill import DistillConfig, TeacherSpec, distill
from kdcompile.example import mnist_cnn_teacher

METHODS = ("scratch", "hinton", "dkd", "fitnets")
SIZES = {"4x": 0.25, "8x": 0.125}
OUT = Path(__file__).parent / "results" / "kd" / "mnist.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--teacher", type=Path, default=Path("teacher.pt"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    args = ap.parse_args()
    os.environ.setdefault("KDCOMPILE_QUIET", "1")
    if not args.teacher.exists():
        mnist_cnn_teacher(args.teacher)
    results: dict = json.loads(OUT.read_text()) if OUT.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            for size, ratio in SIZES.items():
                acc, agree = [], []
                for seed in args.seeds:
                    cfg = DistillConfig(loss=method, flops_ratio=ratio, epochs=args.epochs, seed=seed)
                    r = distill(TeacherSpec(str(args.teacher)), Path(tmp) / f"{method}-{size}-{seed}", cfg)
                    acc.append(r["student"]["accuracy"])
                    agree.append(r["student"]["agreement"])
                    print(f"{method} {size} seed {seed}: accuracy {acc[-1]:.4f}, agreement {agree[-1]:.4f}",
                          flush=True)
                results.setdefault(method, {})[size] = {
                    "accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
                    "agreement_mean": float(np.mean(agree)), "agreement_std": float(np.std(agree)),
                    "seeds": args.seeds, "epochs": args.epochs,
                    "teacher_accuracy": r["teacher"]["accuracy"],
                    "flops_ratio": r["student"]["flops"] / r["teacher"]["flops"]}
                OUT.parent.mkdir(parents=True, exist_ok=True)
                OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict) -> str:
    lines = ["| method | student | accuracy (mean ± std) | agreement with teacher |", "|---|---|---|---|"]
    for method, sizes in results.items():
        for size, v in sizes.items():
            lines.append(f"| {method} | {size} fewer FLOPs ({v['flops_ratio']:.3f}) | {v['accuracy_mean']:.4f} ± "
                         f"{v['accuracy_std']:.4f} | {v['agreement_mean']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
