"""Stage 4, bench (`kdcompile bench`): latency of teacher and student on every backend they were built for, plus
the accuracy and size figures of the earlier stages, in report.json and report.md.

A run made for an ONNX file (kdcompile/onnx_input.py; `kdcompile bench model.onnx` makes one) has one model and no
PyTorch module or data: it is timed in onnxruntime and, once tuned, TVM, and the report has no accuracy figures."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kdcompile.backends import BACKENDS
from kdcompile.report import print_table, render_markdown
from kdcompile.report_plot import render_png
from kdcompile.timing import TimingConfig, measure, summarize
from kdcompile.errors import KdError
from kdcompile.inputs import InputSpec
from kdcompile.files import file_sha256, write_text
from kdcompile.machine import cores, machine_info
from kdcompile.onnx_input import run_folder
from kdcompile.progress import console, progress
from kdcompile.rundir import MODEL, RunDir


@dataclass
class BenchConfig:
    threads: int = 0  # intra-op threads of every backend; 0: the cores this process may use
    timing: TimingConfig = field(default_factory=TimingConfig)
    rpc: str | None = None  # "tracker_host:port:key": time the TVM builds on an RPC server under that key


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


HF_METRICS = ("cosine", "nn_agreement", "nll", "kl_to_teacher")  # what a Hugging Face student is judged by


def bench(run_dir, cfg: BenchConfig = BenchConfig(), *, out: Path | None = None,
          input_shape: tuple[int, ...] | None = None) -> dict:
    """Time every (model, backend) pair the run folder has files for; write report.json and report.md.

    `run_dir` may be an ONNX file: its run folder is found or made as `tune` does (onnx_input.run_folder)."""
    from kdcompile.export import load_run_models

    run = RunDir(run_folder(run_dir, out, input_shape))
    held = run.models()
    main = MODEL if held == (MODEL,) else "student"  # the model the report is about
    distilled = run.read_json("distill.json", needed_by="distill") if main == "student" else None
    exported = run.read_json("export.json", needed_by="export")
    tuned = run.read_json("tune.json") if (run.root / "tune.json").exists() else {}
    shape = tuple(exported["input_shape"])
    x = InputSpec.of(exported).random(0)
    models = load_run_models(run) if distilled is not None else {}  # PyTorch modules: a distilled run's only
    threads = cfg.threads or cores()
    sources = {"torch": lambda m: models[m].module, "onnxruntime": lambda m: run.onnx(m),
               "tvm": lambda m: run.tvm_lib(m)}
    if not run.tvm_lib(main).exists():
        console.print(f"[yellow]{main}: no TVM build to time yet; `kdcompile tune {run.root}` makes one (--trials 0: "
                      "default schedules, no search).[/]")
    jobs = [(m, b) for m in held for b in BACKENDS if (b == "torch" and m in models)
            or (b == "onnxruntime" and run.onnx(m).exists()) or (b == "tvm" and vouched_build(run, m, tuned))]
    latency: dict[str, dict] = {m: {} for m in held}
    load_before = os.getloadavg()[0]
    with progress() as bar:
        task = bar.add_task("benchmark", total=len(jobs), info="")
        for m, b in jobs:
            bar.update(task, info=f"{m} / {b}")
            if b == "tvm" and cfg.rpc:  # on the server, timed there (tvm_layer.remote)
                from kdcompile.tvm_layer.remote import time_remote

                secs = time_remote(sources[b](m), x, cfg.rpc, cfg.timing.min_calls)
                latency[m][b] = summarize(np.asarray(secs) * 1e3) | {"rpc": cfg.rpc}
            else:
                latency[m][b] = measure(BACKENDS[b](sources[b](m), x, threads), cfg.timing)
            bar.update(task, advance=1)
    if not latency[main]:
        raise KdError(f"Nothing to benchmark for the {main}.")
    fastest = {m: min(latency[m], key=lambda b: latency[m][b]["p50"]) for m in held if latency[m]}
    report = {"machine": machine_info(threads) | {"load_avg_1min_before": load_before}}
    if distilled is not None:
        report |= {
            "dataset": distilled["dataset"],
            "teacher": {k: distilled["teacher"][k] for k in ("accuracy", "flops", "parameters")},
            "student": {k: distilled["student"][k] for k in ("accuracy", "flops", "parameters", "agreement")}
            | {k: distilled["student"][k] for k in HF_METRICS if k in distilled["student"]},
            "sequence_length": distilled.get("sequence_length"),  # a Hugging Face run: latency per token too
            "kept": distilled.get("kept"),  # what the student kept of the teacher (None: an older kdcompile's run)
            "augmentation": distilled.get("augmentation"),
        }
    else:  # the ONNX file the run was made for, and its input
        report |= {"source": exported["source"] | {"input_name": exported["input_name"], "input_shape": list(shape)}}
    report |= {
        "parity": {"onnx_max_abs": exported[main]["onnx_max_abs"],
                   "tvm_max_abs": tuned.get(main, {}).get("tvm_max_abs"),
                   "per_model": {m: {"onnx_max_abs": exported[m]["onnx_max_abs"],
                                     "tvm_max_abs": tuned.get(m, {}).get("tvm_max_abs")} for m in held}},
        "latency_ms": latency,
        "fastest_backend": fastest,
        "tuning": {m: {k: tuned[m].get(k) for k in ("tasks", "trials", "tuning_s", "layout", "layout_ms",
                                                      "known_defaults")}
                   for m in held if m in tuned}
                  | ({"cost_model": tuned["config"]["cost_model"], "target": tuned["target"]} if tuned else {}),
        "timing_protocol": asdict(cfg.timing),
    }
    main_tvm = latency[main].get("tvm")
    others = {b: v["p50"] for b, v in latency[main].items() if b != "tvm"}
    if main_tvm and others:
        best_other = min(others, key=others.get)
        report["tvm_vs_best_other"] = {"backend": best_other, "ratio_p50": main_tvm["p50"] / others[best_other]}
    run.write_json("report.json", report)
    curves = {m: tuned[m]["curve_ms"] for m in held if tuned.get(m, {}).get("curve_ms")}
    render_png(report, curves, run.root / "report.png")
    write_text(run.root / "report.md", render_markdown(report) + "\n![report](report.png)\n")
    print_table(report)
    return report
