"""Stage 4, bench: latency of teacher and student on every backend they were built for, plus the accuracy and
size figures of the earlier stages, in report.json and report.md."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

import numpy as np

from bench.backends import BACKENDS
from bench.report import render_markdown, print_table
from bench.timing import TimingConfig, measure
from kdcompile.errors import KdError
from kdcompile.progress import progress
from kdcompile.rundir import MODELS, RunDir


@dataclass
class BenchConfig:
    threads: int = 2
    timing: TimingConfig = field(default_factory=TimingConfig)


def machine_info(threads: int) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "load_avg_1min": os.getloadavg()[0]}


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
    sources = {"torch": lambda m: models[m].module, "onnxruntime": lambda m: run.onnx(m),
               "tvm": lambda m: run.tvm_lib(m)}
    jobs = [(m, b) for m in MODELS for b in BACKENDS if b == "torch" or sources[b](m).exists()]
    latency: dict[str, dict] = {m: {} for m in MODELS}
    load_before = os.getloadavg()[0]
    with progress() as bar:
        task = bar.add_task("benchmark", total=len(jobs), info="")
        for m, b in jobs:
            bar.update(task, info=f"{m} / {b}")
            latency[m][b] = measure(BACKENDS[b](sources[b](m), x, cfg.threads), cfg.timing)
            bar.update(task, advance=1)
    if not latency["student"]:
        raise KdError("Nothing to benchmark for the student.")
    fastest = {m: min(latency[m], key=lambda b: latency[m][b]["p50"]) for m in MODELS}
    report = {
        "machine": machine_info(cfg.threads) | {"load_avg_1min_before": load_before},
        "dataset": distilled["dataset"],
        "teacher": {k: distilled["teacher"][k] for k in ("accuracy", "flops", "parameters")},
        "student": {k: distilled["student"][k] for k in ("accuracy", "flops", "parameters", "agreement")},
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
    (run.root / "report.md").write_text(render_markdown(report))
    print_table(report)
    return report
