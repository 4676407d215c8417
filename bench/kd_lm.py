"""The language-model protocol of GKD, DistiLLM and MiniLLM on the char-LM example (issue #23; kd_protocol.md).

Stage 1 trains each seed's student with cross-entropy alone (one shared checkpoint per seed). Stage 2 runs every
method from that checkpoint for the same steps, against `ce` (cross-entropy continued). Each method's learning
rate is chosen from LR_GRID on the training text's validation split (seed 0), so the held-out text is looked at
once, by the final runs. On-policy methods run at their papers' shares (kdcompile.distill_lm ON_POLICY_DEFAULT).
Measured on held-out text: NLL, forward and reverse KL to the teacher; on held-out prompts, at temperatures 1 and
0.7, the student's samples scored by the teacher (TNLL), by the student (self-NLL), their difference (sequence
reverse KL), word validity and distinct-2 (kdcompile.lm_eval). Writes bench/results/kd/lm.json and lm.png (TNLL
against self-NLL, each method at both temperatures). Every finished run is a line in runs/lm.jsonl (committed): a
rerun skips it.

With --guards, the guards of "Distillation Traps and Guards" are measured too: each guard on, one at a time, for the
methods it applies to, at the method's chosen learning rate and the same seeds and steps, against the same run with
it off (the protocol's own run). Writes bench/results/kd/guards.json.

    python -m bench.kd_lm [--seeds 0 1 2 3 4] [--methods ce fkl rkl skl gjsd hpd tip] [--stage1 600] [--stage2 600]
        [--guards] [--guard-seeds 0 1]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np

from bench.kd_classifier import WorkLog
from kdcompile.distill_lm import LMConfig, LMDistillConfig, distill_lm, train_char_lm_teacher
from kdcompile.files import file_sha256, write_json
from kdcompile.machine import machine_info

RESULTS = Path(__file__).parent / "results" / "kd"
WORK = RESULTS / "work" / "lm"  # checkpoints (ignored: retrained when missing)
RUNS = RESULTS / "runs" / "lm.jsonl"  # finished runs (committed, so that a later sitting skips them)
METHODS = ("ce", "fkl", "rkl", "skl", "gjsd", "hpd", "tip")
LR_GRID = (1e-3, 3e-3)
TEMPERATURES = ("T1.0", "T0.7")
# Each guard as LMDistillConfig fields, and the methods it applies to. The top-k of 10 keeps most of the teacher's
# mass over a ~100-character vocabulary; the mixing share 0.5 is our choice (the paper's own is not public here).
GUARDS = {"teacher_top_k": ({"teacher_top_k": 10}, ("fkl", "rkl", "gjsd", "tip")),
          "calibrated_teacher": ({"calibrate_teacher": True}, ("fkl", "rkl", "gjsd", "tip")),
          "on_policy_ramp": ({"on_policy_schedule": "linear"}, ("gjsd", "tip")),
          "teacher_mixed_sampling": ({"teacher_mix": 0.5}, ("gjsd", "tip"))}
COMPARED = ("nll", "fkl", "rkl", "tnll_T1.0", "tnll_T0.7", "self_nll_T1.0", "word_validity_T1.0")


def teacher_path() -> Path:
    """The example char-LM teacher, trained once and cached."""
    path = WORK / "teacher.pt"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        train_char_lm_teacher(path, LMConfig())
    return path


def stage1(teacher: Path, seed: int, steps: int, validation: bool) -> Path:
    """The seed's CE-trained student (the shared starting point of stage 2)."""
    path = WORK / f"stage1_seed{seed}{'_val' if validation else ''}_s{steps}.pt"
    if not path.exists():
        distill_lm(teacher, path, LMDistillConfig(method="ce", steps=steps, seed=seed, validation=validation))
    return path


def summary(r: dict) -> dict:
    out = {"nll": r["nll"], "fkl": r["kl_to_teacher"], "rkl": r.get("reverse_kl_to_teacher")}
    for t in TEMPERATURES:
        out |= {f"{k}_{t}": v for k, v in r["generation"][t].items()}
    d = r["diagnostics"]  # the guards paper's figures, per run (kdcompile.lm_eval.teacher_diagnostics)
    out |= {k: d[k] for k in ("teacher_tail_mass", "fkl_head", "fkl_tail", "rkl_head", "rkl_tail", "teacher_ece")}
    out |= {"teacher_top1_on_student_prefixes": d["teacher_on_student_prefixes"]["top1"],
            "teacher_top1_on_data_prefixes": d["teacher_on_data_prefixes"]["top1"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--stage1", type=int, default=600, help="CE steps of stage 1")
    ap.add_argument("--stage2", type=int, default=600, help="steps of every method in stage 2")
    ap.add_argument("--guards", action="store_true", help="also measure each guard on and off (guards.json)")
    ap.add_argument("--guard-seeds", type=int, nargs="+", default=None, help="the seeds of the guard comparison "
                    "(default: --seeds; each is paired with the protocol's run of the same seed)")
    args = ap.parse_args()
    os.environ.setdefault("KDCOMPILE_QUIET", "1")
    teacher = teacher_path()
    log = WorkLog(RUNS)
    teacher_sha = file_sha256(teacher)

    def run(method: str, seed: int, lr: float, validation: bool, guard: dict | None = None) -> dict:
        init = stage1(teacher, seed, args.stage1, validation)
        # the checkpoints' hashes: a retrained teacher or stage 1 that differs in one bit makes a new run; a guard's
        # fields join the key only when it is on, so "off" is the protocol's own run
        key = {"method": method, "seed": seed, "lr": lr, "validation": validation, "stage1": args.stage1,
               "stage2": args.stage2, "teacher_sha256": teacher_sha, "init_sha256": file_sha256(init)} | (guard or {})
        cfg = LMDistillConfig(method=method, steps=args.stage2, seed=seed, lr=lr, init=str(init),
                              validation=validation, **(guard or {}))
        return log.run(key, lambda: summary(distill_lm(teacher, WORK / "student.pt", cfg)))

    chosen = {m: min(LR_GRID, key=lambda lr, m=m: run(m, 0, lr, True)["nll"]) for m in args.methods}
    results = {}
    for m in args.methods:
        results[m] = aggregate([run(m, seed, chosen[m], False) for seed in args.seeds]) | {"lr": chosen[m]}
        for short in ("tnll", "self_nll", "word_validity", "distinct2"):  # the names: temperature 1
            results[m][f"{short}_mean"] = results[m][f"{short}_T1.0_mean"]
    setup = {"seeds": args.seeds, "stage1_steps": args.stage1, "stage2_steps": args.stage2, "lr_grid": LR_GRID,
             "lr_chosen_on": "validation split of the training text, seed 0",
             "date": datetime.date.today().isoformat(), "machine": machine_info(2)}
    command = " ".join(["python -m bench.kd_lm", *sys.argv[1:]])  # what was run, to regenerate it
    write_json(RESULTS / "lm.json", results | {"_setup": setup | {"command": command}})
    plot(results, RESULTS / "lm.png")
    if args.guards:
        guard_seeds = args.guard_seeds or args.seeds
        guards = {}
        for m in (m for m in args.methods if any(m in applies for _, applies in GUARDS.values())):
            off = [run(m, seed, chosen[m], False) for seed in guard_seeds]
            guards[m] = {"off": aggregate(off), "lr": chosen[m]}
            for name, (fields, applies) in GUARDS.items():
                if m in applies:
                    on = [run(m, seed, chosen[m], False, fields) for seed in guard_seeds]
                    guards[m][name] = aggregate(on) | paired_deltas(on, off)
        write_json(RESULTS / "guards.json", guards | {"_setup": setup | {
            "guard_seeds": guard_seeds, "guards": {n: f for n, (f, _) in GUARDS.items()},
            "command": command,
            "delta": "guard on minus off, same seed, mean and std over seeds (lower NLL and TNLL are better)"}})


def aggregate(runs: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every figure the runs share."""
    keys = [k for k in runs[0] if k != "key" and runs[0][k] is not None]
    return {f"{k}_mean": float(np.mean([r[k] for r in runs])) for k in keys} \
        | {f"{k}_std": float(np.std([r[k] for r in runs])) for k in keys}


def paired_deltas(on: list[dict], off: list[dict]) -> dict:
    """Guard on minus off per seed (the same stage-1 start and batches), for the figures the comparison reads."""
    out = {}
    for k in COMPARED:
        d = [a[k] - b[k] for a, b in zip(on, off) if a.get(k) is not None and b.get(k) is not None]
        if d:
            out |= {f"delta_{k}_mean": float(np.mean(d)), f"delta_{k}_std": float(np.std(d))}
    return out


def plot(results: dict, path: Path) -> None:
    """Quality (TNLL, lower is better) against diversity (self-NLL, higher is more diverse), per method, a line
    from temperature 0.7 to 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for m, r in results.items():
        if m.startswith("_"):
            continue
        xs = [r[f"self_nll_{t}_mean"] for t in reversed(TEMPERATURES)]
        ys = [r[f"tnll_{t}_mean"] for t in reversed(TEMPERATURES)]
        ax.plot(xs, ys, marker="o", label=m)
    ax.set_xlabel("self-NLL of samples (diversity, nats/char)")
    ax.set_ylabel("teacher NLL of samples (TNLL, nats/char)")
    ax.set_title("char-LM students: temperature 0.7 to 1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
