"""Label-scarce transfer on MNIST-5k (issue #23; ../shared/research/kd_protocol.md §3, benchmark C1).

The demo CNN teacher (bench.kd_mnist's, trained once and cached in bench/results/kd/work/) is distilled into
MLP students (784-64-10, 784-16-10, Hinton's 784-800-800-10) and into itself pruned to 2% of its FLOPs, with all
labels, 50 or 10 labels per class. KD terms see all 4,000 training inputs, CE only the labelled ones.
T and alpha are chosen on a validation share of the training inputs, then 5 seeds run at the chosen setting;
each method is tested against `ce` (same init, same batches, no KD term) by McNemar's exact test.
Writes bench/results/kd/classifier.json; every finished run is appended to runs/classifier-<data>.jsonl
(committed), and a rerun skips it.

    python -m bench.kd_classifier [--regimes all 50 10] [--students mlp64 mlp16 mlp800 cnn2pct]
        [--methods scratch ce hinton dkd fitnets fkl rkl] [--seeds 5] [--epochs 30] [--data mnist|digits] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.kd_transfer import STUDENTS, Split, labelled_mask, make_splits, student_factory, train_one
from kdcompile.data import DistillData, digits, mnist5k
from kdcompile.files import append_lines, file_sha256, read_lines, write_json
from kdcompile.load import load_model, save_checkpoint
from kdcompile.machine import cores, machine_info
from kdcompile.student import flops_and_params
from kdcompile.train import accuracy, fit

REGIMES = {"all": None, "50": 50, "10": 10}  # labels per class (None: every training label)
METHODS = ("scratch", "ce", "hinton", "dkd", "fitnets", "fkl", "rkl")
CONTROLS = ("scratch", "ce")  # no temperature, no alpha
GRID = {"temperature": (2.0, 4.0, 8.0), "alpha": (0.5, 0.9)}
TUNE_SEED = 0  # the seed of the one run per grid point
EPOCHS = 30  # the protocol's budget over the transfer set; batch 128, AdamW one-cycle at 3e-3 (train_one)
RESULTS = Path(__file__).parent / "results" / "kd"
WORK = RESULTS / "work"  # teachers (ignored: retrained when missing; runs are keyed by the teacher's hash)
RUNS = RESULTS / "runs"  # finished runs, one JSON line each (committed, so that a later sitting skips them)


def mcnemar_p(b: int, c: int) -> float:
    """McNemar's exact test of two classifiers on the same items: `b` items only the first gets right, `c` only
    the second. Two-sided: p = min(1, 2 P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2); 1 with no discordant
    pair. Exact integer sums, so large counts do not underflow."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


def discordant(pred_a: list[int], pred_b: list[int], y: list[int]) -> tuple[int, int]:
    """(items only a gets right, items only b gets right)."""
    a_ok = [p == t for p, t in zip(pred_a, y)]
    b_ok = [p == t for p, t in zip(pred_b, y)]
    return sum(x and not z for x, z in zip(a_ok, b_ok)), sum(z and not x for x, z in zip(a_ok, b_ok))


def grid_for(method: str, grid: dict) -> list[dict]:
    """The settings tried for a method: none for the controls, T only for DKD (its CE and DKD weights are fixed)."""
    if method in CONTROLS:
        return [{"temperature": None, "alpha": None}]
    alphas = [None] if method == "dkd" else grid["alpha"]
    return [{"temperature": t, "alpha": a} for t, a in itertools.product(grid["temperature"], alphas)]


class WorkLog:
    """Finished runs, one JSON line each (kdcompile.files' durable appends), keyed by everything that makes two
    runs the same: a rerun with the same key reads the result instead of training again."""

    def __init__(self, path: Path | None):
        self.path = path
        self.done = {}
        if path is not None and path.exists():
            self.done = {r["key"]: r for r in map(json.loads, read_lines(path))}

    def run(self, key: dict, train) -> dict:
        k = json.dumps(key, sort_keys=True)
        if k not in self.done:
            self.done[k] = {"key": k, **train()}
            if self.path is not None:
                append_lines(self.path, [json.dumps(self.done[k])])
        return self.done[k]


def run_once(worklog: WorkLog, make_student, split: Split, key: dict) -> dict:
    """One training run, or its result from the work log: `key` holds everything that defines it."""
    labelled = labelled_mask(split.y_train, REGIMES[key["regime"]], key["seed"])
    setting = {"temperature": key["temperature"], "alpha": key["alpha"]}
    name = " ".join(f"{k}={key[k]}" for k in ("phase", "regime", "student", "method", "seed", *setting))
    return worklog.run(key, lambda: train_one(key["method"], make_student, split, labelled, seed=key["seed"],
                                              epochs=key["epochs"], description=name, **setting))


def run_protocol(teacher: nn.Module, ds: DistillData, *, data: str, regimes: list[str], students: list[str],
                 methods: list[str], seeds: int, epochs: int, grid: dict = GRID, work: Path | None = None,
                 teacher_sha256: str | None = None, log=print) -> tuple[dict, dict]:
    """The protocol's core: returns ({regime: {student: {method: {accuracy_mean, accuracy_std, agreement_mean,
    p_vs_ce}}}}, details: chosen settings, per-seed runs, discordant counts). `ce` is always run: it is what every
    p-value is against."""
    methods = ["ce", *[m for m in methods if m != "ce"]]
    tune, final = make_splits(teacher, ds)
    example = ds.x_train[:1]
    makers = {s: student_factory(s, teacher, example, ds.num_classes) for s in students}
    worklog = WorkLog(work)
    results, chosen, runs = {}, {}, {}
    for regime, student, method in itertools.product(regimes, students, methods):
        base = {"data": data, "teacher_sha256": teacher_sha256, "epochs": epochs, "regime": regime,
                "student": student, "method": method}
        tried = [(run_once(worklog, makers[student], tune, base | s | {"phase": "tune", "seed": TUNE_SEED})["accuracy"],
                  i, s) for i, s in enumerate(grid_for(method, grid))]
        val_acc, _, setting = max(tried, key=lambda t: (t[0], -t[1]))  # best validation accuracy, first on ties
        chosen.setdefault(regime, {}).setdefault(student, {})[method] = setting | {"val_accuracy": val_acc}
        runs.setdefault(regime, {}).setdefault(student, {})[method] = [
            run_once(worklog, makers[student], final, base | setting | {"phase": "final", "seed": seed})
            for seed in range(seeds)]
        r = runs[regime][student][method][-1]
        log(f"{regime} {student} {method}: T={setting['temperature']} alpha={setting['alpha']}, test accuracy "
            f"{np.mean([x['accuracy'] for x in runs[regime][student][method]]):.4f} over {seeds} seeds "
            f"(last run {r['seconds']:.1f} s, KD saw {r['kd_inputs']} inputs, CE {r['labelled']} labelled)")
    y = final.y_eval.tolist()
    counts = {}
    for regime, by_student in runs.items():
        for student, by_method in by_student.items():
            for method, rs in by_method.items():
                acc = [r["accuracy"] for r in rs]
                # McNemar against ce on the same seed's test predictions (same init, labels and batches), with the
                # discordant pairs pooled over seeds into one exact test. Pooling treats the seeds' pairs as
                # independent; they share the test items, so the p-value is somewhat optimistic.
                pairs = [discordant(r["predictions"], c["predictions"], y) for r, c in zip(rs, by_method["ce"])]
                b, c = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
                counts.setdefault(regime, {}).setdefault(student, {})[method] = {
                    "only_method_right": b, "only_ce_right": c, "accuracy_per_seed": acc}
                results.setdefault(regime, {}).setdefault(student, {})[method] = {
                    "accuracy_mean": float(np.mean(acc)),
                    "accuracy_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                    "agreement_mean": float(np.mean([r["agreement"] for r in rs])), "p_vs_ce": mcnemar_p(b, c)}
    return results, {"chosen": chosen, "discordant": counts, "splits": {
        "tune_train": len(tune.y_train), "validation": len(tune.y_eval), "train": len(final.y_train),
        "test": len(final.y_eval)}, "teacher_test_accuracy": accuracy(final.t_eval_logits, final.y_eval),
        "students": {s: dict(zip(("flops", "parameters"), flops_and_params(makers[s](), example))) for s in students}}


def digits_teacher(ds: DistillData, width: int = 16, epochs: int = 20, seed: int = 0) -> nn.Module:
    """The demo CNN architecture trained on sklearn's digits, without shifts (2 px on 8x8 costs the teacher
    0.99 -> 0.68, issue #20)."""
    from kdcompile.models import mnist_cnn

    torch.manual_seed(seed)
    model = mnist_cnn(width=width)
    fit(model, ds.x_train, ds.y_train, lambda z, x, y: F.cross_entropy(z, y), epochs=epochs, batch_size=64,
        lr=3e-3, seed=seed, description="train digits teacher")
    return model.eval()


def load_teacher(data: str) -> tuple[nn.Module, DistillData, Path]:
    """The cached teacher for `data`, trained first if missing: MNIST-5k by kd_mnist's path (the demo teacher)."""
    path = WORK / ("teacher.pt" if data == "mnist" else "teacher-digits.pt")
    ds = mnist5k() if data == "mnist" else digits()
    if not path.exists():
        if data == "mnist":
            from kdcompile.example import mnist_cnn_teacher

            mnist_cnn_teacher(path)
        else:
            save_checkpoint(digits_teacher(ds), path, "kdcompile.models:mnist_cnn", {"width": 16}, (1, 1, 8, 8),
                            dataset="digits")
    return load_model(path).module.eval(), ds, path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    ap.add_argument("--students", nargs="+", choices=list(STUDENTS), default=list(STUDENTS))
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 at the chosen setting")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--data", choices=("mnist", "digits"), default="mnist")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/kd/classifier[-digits].json")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core; 1 lets several "
                    "sittings over different --students share the cores without contending for them)")
    args = ap.parse_args()
    os.environ.setdefault("KDCOMPILE_QUIET", "1")
    threads = args.threads or cores()
    torch.set_num_threads(threads)
    out = args.out or RESULTS / ("classifier.json" if args.data == "mnist" else "classifier-digits.json")
    teacher, ds, teacher_path = load_teacher(args.data)
    results, details = run_protocol(teacher, ds, data=args.data, regimes=args.regimes, students=args.students,
                                    methods=args.methods, seeds=args.seeds, epochs=args.epochs,
                                    work=RUNS / f"classifier-{args.data}.jsonl",
                                    teacher_sha256=file_sha256(teacher_path))
    setup = {"grid": GRID, "epochs": args.epochs, "seeds": list(range(args.seeds)), "tune_seed": TUNE_SEED,
             "batch_size": 128, "lr": 3e-3, "optimizer": "AdamW one-cycle (kdcompile.train.fit), no input shifts",
             "accuracy_std": "sample standard deviation over seeds (ddof 1)",
             "p_vs_ce": "McNemar exact, two-sided, discordant test items pooled over seeds",
             "data": ds.name, "teacher": str(teacher_path), **details,
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "command": " ".join(["python -m bench.kd_classifier", *sys.argv[1:]]), "machine": machine_info(threads)}
    write_json(out, {**results, "setup": setup})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
