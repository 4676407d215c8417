"""KD for a causal char LM on CPython's pydoc text: the example teacher distilled into a student with about 8x fewer
parameters by each method, 3 seeds, equal steps. Writes bench/results/kd/charlm.json and prints a markdown table.

    python -m bench.kd_charlm [--steps 600] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from kdcompile.distill_lm import METHODS, LMDistillConfig, distill_lm, train_char_lm_teacher

OUT = Path(__file__).parent / "results" / "kd" / "charlm.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--teacher", type=Path, default=Path("lm_teacher.pt"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    args = ap.parse_args()
    os.environ.setdefault("KDCOMPILE_QUIET", "1")
    teacher_info = None
    if not args.teacher.exists():
        teacher_info = train_char_lm_teacher(args.teacher)
    results: dict = json.loads(OUT.read_text()) if OUT.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            runs = [distill_lm(args.teacher, Path(tmp) / f"{method}-{seed}.pt",
                               LMDistillConfig(method=method, steps=args.steps, seed=seed)) for seed in args.seeds]
            nll = [r["nll"] for r in runs]
            results[method] = {"nll_mean": float(np.mean(nll)), "nll_std": float(np.std(nll)),
                               "kl_to_teacher_mean": float(np.mean([r["kl_to_teacher"] for r in runs])),
                               "kl_to_teacher_std": float(np.std([r["kl_to_teacher"] for r in runs])),
                               "on_policy": runs[0]["on_policy"], "steps": args.steps, "seeds": args.seeds,
                               "student_parameters": runs[0]["student_parameters"],
                               "teacher_parameters": runs[0]["teacher_parameters"]}
            if "tip_kept_share" in runs[0]:
                results[method]["tip_kept_share"] = float(np.mean([r["tip_kept_share"] for r in runs]))
            if teacher_info:
                results["_teacher"] = {"nll": teacher_info["nll"], "parameters": teacher_info["parameters"]}
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(results, indent=2) + "\n")
            print(method, results[method], flush=True)
    print(table(results))


def table(results: dict) -> str:
    lines = ["| method | held-out NLL, nats/char (mean ± std) | KL(teacher ‖ student) per char |", "|---|---|---|"]
    for method, v in results.items():
        if not method.startswith("_"):
            lines.append(f"| {method} | {v['nll_mean']:.4f} ± {v['nll_std']:.4f} | {v['kl_to_teacher_mean']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
