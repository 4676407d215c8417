"""Stage 4, bench (`kdcompile bench`): latency of teacher and student on every backend they were built for, plus
the accuracy and size figures of the earlier stages, in report.json and report.md."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from kdcompile.backends import BACKENDS
from kdcompile.report import print_table, render_markdown
from kdcompile.report_plot import render_png
from kdcompile.timing import TimingConfig, measure
from kdcompile.errors import KdError
from kdcompile.files import file_sha256, write_text
from kdcompile.machine import cores, machine_info
from kdcompile.progress import console, progress
from kdcompile.rundir import MODELS, RunDir


@dataclass
class BenchConfig:
    threads: int = 0  # intra-op threads of every backend; 0: the cores this process may use
    timing: TimingConfig = field(default_factory=TimingConfig)


def vouched_build(run: RunDir, model: str, tuned: dict) -> bool:
    """Whether the model's TVM build is the one its tuning record vouches for: built from the ONNX file the run
    folder holds now, and passed its parity check (a failed or stale build is not timed, and the user is told)."""
    lib, record = run.tvm_lib(model), tuned.get(model, {})
    if not lib.exists():
        return False
    ok = record.get("lib_sha256") is not None and record["lib_sha256"] == file_sha256(lib) \
        and record.get("onnx_sha256") == file_sha256(run.onnx(model))
    if not ok:
        console.print(f"[yellow]{lib} is not timed: tune.json does not vouch for it (it failed its parity check, was "
                      f"built from another {model}.onnx, or by an older kdcompile); run "
                      f"`kdcompile tune {run.root}`.[/]")
    return ok


def bench(run_dir, cfg: BenchConfig = BenchConfig()) -> dict:
    """Time every (model, backend) pair the run folder has files for; write report.json and report.md."""
    from kdcompile.export import load_run_models

    run = RunDir(run_dir)
    distilled = run.read_json("distill.json", needed_by="distill")
    exported = run.read_json("export.json", needed_by="export")
    tuned = run.read_json("tune.json") if (run.root / "tune.json").exists() else {}
    shape = tuple(exported["input_shape"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    models = load_run_models(run)
    threads = cfg.threads or cores()
    sources = {"torch": lambda m: models[m].module, "onnxruntime": lambda m: run.onnx(m),
               "tvm": lambda m: run.tvm_lib(m)}
    jobs = [(m, b) for m in MODELS for b in BACKENDS if b == "torch" or (b == "onnxruntime" and run.onnx(m).exists())
            or (b == "tvm" and vouched_build(run, m, tuned))]
    latency: dict[str, dict] = {m: {} for m in MODELS}
    load_before = os.getloadavg()[0]
    with progress() as bar:
        task = bar.add_task("benchmark", total=len(jobs), info="")
        for m, b in jobs:
            bar.update(task, info=f"{m} / {b}")
            latency[m][b] = measure(BACKENDS[b](sources[b](m), x, threads), cfg.timing)
            bar.update(task, advance=1)
    if not latency["student"]:
        raise KdError("Nothing to benchmark for the student.")
    fastest = {m: min(latency[m], key=lambda b: latency[m][b]["p50"]) for m in MODELS}
    report = {
        "machine": machine_info(threads) | {"load_avg_1min_before": load_before},
        "dataset": distilled["dataset"],
        "teacher": {k: distilled["teacher"][k] for k in ("accuracy", "flops", "parameters")},
        "student": {k: distilled["student"][k] for k in ("accuracy", "flops", "parameters", "agreement")},
        "kept": distilled.get("kept"),  # what the student kept of the teacher (None: distilled by an older kdcompile)
        "augmentation": distilled.get("augmentation"),
        "parity": {"onnx_max_abs": exported["student"]["onnx_max_abs"],
                   "tvm_max_abs": tuned.get("student", {}).get("tvm_max_abs"),
                   "per_model": {m: {"onnx_max_abs": exported[m]["onnx_max_abs"],
                                     "tvm_max_abs": tuned.get(m, {}).get("tvm_max_abs")} for m in MODELS}},
        "latency_ms": latency,
        "fastest_backend": fastest,
        "tuning": {m: {k: tuned[m].get(k) for k in ("tasks", "trials", "tuning_s", "layout", "layout_ms")}
                   for m in MODELS if m in tuned}
                  | ({"cost_model": tuned["config"]["cost_model"], "target": tuned["target"]} if tuned else {}),
        "timing_protocol": asdict(cfg.timing),
    }
    student_tvm, best_other = latency["student"].get("tvm"), None
    if student_tvm:
        others = {b: v["p50"] for b, v in latency["student"].items() if b != "tvm"}
        best_other = min(others, key=others.get)
        report["tvm_vs_best_other"] = {"backend": best_other, "ratio_p50": student_tvm["p50"] / others[best_other]}
    run.write_json("report.json", report)
    curves = {m: tuned[m]["curve_ms"] for m in MODELS if tuned.get(m, {}).get("curve_ms")}
    render_png(report, curves, run.root / "report.png")
    write_text(run.root / "report.md", render_markdown(report) + "\n![report](report.png)\n")
    print_table(report)
    return report
