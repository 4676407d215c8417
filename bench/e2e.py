"""TVM against onnxruntime and PyTorch on three models, batch 1, 2 threads, one machine, one run.

    python -m bench.e2e                      # all three models, budgets below; resumes tuning from out/work
    python -m bench.e2e --models encoder --trials 300
    python -m bench.e2e --no-tuning          # re-measure with the tuning logs as they are (no new trials)
    python -m bench.e2e --models mobilenet@NHWC   # a model lowered channels-last (tvm_layer Lowering's layout)

Per model: ONNX export; onnxruntime (all graph optimisations) and PyTorch latency; TVM with zero trials (default
schedules picked by a cost model, no measurement: each picker in PICKERS, the first one being kdcompile's default);
TVM tuned with MetaSchedule (kdcompile's space:
parallel and serial programs) for a stated trial budget, default schedules for any task the search left untuned.
Also the machine's fp32 peak, measured with onnxruntime's matmul in the same run, and the GFLOP/s of each
model's largest matmul and convolution kernels as tuned. Writes vs_ort.json, machine.json and table.md to
bench/results/e2e/ (`--table-only` rewrites table.md from the JSON files).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import measured_json
from kdcompile.machine import machine_info
from kdcompile.timing import TimingConfig, in_rounds, measure, versus
from kdcompile.tune import TuneConfig

OUT = Path(__file__).resolve().parent / "results" / "e2e"
TRIALS = {"student": 1000, "encoder": 1000, "mobilenet": 1000}  # the cap is 1,000 per model
THREADS = 2
DEFAULT_PICKER = TuneConfig.defaults  # the tuned build's untuned tasks get kdcompile's default picker's schedules
PICKERS = (DEFAULT_PICKER, *(p for p in ("mamba", "xgb", "random") if p != DEFAULT_PICKER))  # zero-trial pickers
POPULATION = 512  # evolutionary search population per round: TVM 0.27's default (EvolutionarySearch)


def demo_student() -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The demo's student architecture: the demo teacher (teacher.pt if present, else the same network freshly
    initialised) pruned to <= 25% of its FLOPs, as `distill-and-tune` does. Latency does not depend on the
    trained weights' values."""
    from kdcompile.models import mnist_cnn
    from kdcompile.student import prune_width

    teacher_pt = Path("teacher.pt")
    if teacher_pt.exists():
        from kdcompile.load import load_model

        teacher = load_model(teacher_pt).module
    else:
        torch.manual_seed(0)
        teacher = mnist_cnn()
    return prune_width(teacher.eval(), torch.zeros(1, 1, 28, 28), 0.25).eval(), (1, 1, 28, 28)


def encoder() -> tuple[torch.nn.Module, tuple[int, ...]]:
    """A 2-layer post-norm transformer encoder, d=128, 4 heads, ff=512, sequence 64."""
    from costmodel.zoo import Encoder

    torch.manual_seed(0)
    return Encoder(128, 4, 512, 2).eval(), (1, 64, 128)


def mobilenet() -> tuple[torch.nn.Module, tuple[int, ...]]:
    """MobileNet-V2 (width 1.0, 1000 classes) at 112x112: a held-out network of the dataset."""
    from costmodel.zoo import MobileNetV2

    torch.manual_seed(0)
    return MobileNetV2().eval(), (1, 3, 112, 112)


MODELS = {"student": demo_student, "encoder": encoder, "mobilenet": mobilenet}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """"mobilenet" -> ("mobilenet", None); "mobilenet@NHWC" -> ("mobilenet", "NHWC"): a model and its lowering."""
    name, _, layout = spec.partition("@")
    return name, layout or None


def work_dir(spec: str) -> Path:
    return OUT / "work" / spec.replace("@", "-").lower()


def pickers_for(spec: str) -> tuple[str, ...]:
    """Zero-trial pickers are compared on the default lowering; another layout gets kdcompile's default only."""
    return PICKERS if parse_spec(spec)[1] is None else PICKERS[:1]


def ort_peak_gflops(n: int = 1024) -> float:
    """fp32 GFLOP/s of onnxruntime's (MLAS) n x n x n matmul, 2 threads: the machine's practical peak."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from kdcompile.export import ort_session

    b = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "b")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])], [b])
    path = OUT / "work" / f"matmul{n}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    sess = ort_session(path, THREADS)
    feed = {"a": np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)}
    p50 = measure(lambda: sess.run(None, feed), TimingConfig(min_calls=20, min_time_s=2.0))["p50"]
    return 2 * n**3 / (p50 * 1e-3) / 1e9


def largest_kernels(costs: list[dict], peak: float) -> list[dict]:
    """The largest matmul and the largest convolution task by FLOPs, with the tuned GFLOP/s and share of peak
    (the contraction's FLOPs only, not those of the elementwise ops fused after it)."""
    out = []
    for kind in ("matmul", "conv2d"):
        tasks = [c for c in costs if kind in c["task"] and c["seconds"]]
        if tasks:
            c = max(tasks, key=lambda c: c["contraction_flops"])
            gflops = c["contraction_flops"] / c["seconds"] / 1e9
            out.append({"task": c["task"], "flops": c["contraction_flops"], "us": c["seconds"] * 1e6,
                        "gflops": gflops, "fraction_of_peak": gflops / peak})
    return out


def prepare(spec: str, trials: int, cost_model: str, tuning: bool = True) -> dict:
    """Export, default schedules (zero trials) for each picker, tuning: the files the measurement phase times."""
    from kdcompile import plugins
    from kdcompile.export import INPUT_NAME, to_onnx
    from kdcompile.tvm_layer import build, defaults, lowering, records, search, target as targets

    name, layout = parse_spec(spec)
    module, shape = MODELS[name]()
    work = work_dir(spec)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work_dir(name) / f"{name}.onnx"  # one export per model, whatever its lowering
    if not onnx_path.exists():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        to_onnx(module, torch.zeros(shape), onnx_path, 20)
    target = targets.host_target(THREADS)
    mod = lowering.lower(lowering.import_onnx(onnx_path, INPUT_NAME, shape), target, lowering.Lowering(layout=layout))
    defaults_s = {}
    for picker in pickers_for(spec):  # both learned pickers were trained on the dataset's training networks only
        t0 = time.time()
        defaults.default_schedules(mod, target, work / f"defaults-{picker}", plugins.make(plugins.PICKERS, picker),
                             population=defaults.population_for(picker),
                             on_task=lambda t: print(f"  default ({picker}): {t}", flush=True))
        defaults_s[picker] = time.time() - t0
        build.compile_tuned(mod, target, None, work / f"untuned-{picker}.so", defaults_dir=work / f"defaults-{picker}")
    t0 = time.time()
    if tuning:
        search.tune(mod, target, work / "tune", trials, cost_model=plugins.make(plugins.COST_MODELS, cost_model),
                    population=POPULATION, defaults_dir=work / f"defaults-{DEFAULT_PICKER}",
                    on_batch=lambda n: print(f"  {spec}: {records.count_records(work / 'tune')}/{trials} trials",
                                             flush=True))
    tuning_s = time.time() - t0
    build.compile_tuned(mod, target, work / "tune", work / "tuned.so", defaults_dir=work / f"defaults-{DEFAULT_PICKER}")
    costs = build.task_costs(mod, target, work / "tune")
    return {"trials": records.count_records(work / "tune"), "input_shape": list(shape), "tasks": len(costs),
            "untuned_tasks": [c["task"] for c in costs if c["seconds"] is None], "costs": costs,
            "tuning_s": tuning_s, "default_schedules_s": defaults_s, "cost_model": cost_model}


def measure_all(spec: str, timing: TimingConfig, rounds: int = 15) -> dict:
    """Latency of every backend, in this (fresh) process: `rounds` short rounds that take turns over the backends,
    each backend's figure the median of its round medians. This VM switches between fast and slow phases that
    last seconds to minutes, and onnxruntime's latency is bimodal across them (the encoder: 0.48 or 0.82 ms), so
    the comparison is also made pairwise: TVM over onnxruntime within each round, whose median is
    `tvm_vs_ort_paired`."""
    from kdcompile.export import INPUT_NAME, ort_session
    from kdcompile.tvm_layer.build import CompiledModel

    name, _ = parse_spec(spec)
    module, shape = MODELS[name]()
    work = work_dir(spec)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    torch.set_num_threads(THREADS)
    sess = ort_session(work_dir(name) / f"{name}.onnx", THREADS)
    feed = {INPUT_NAME: x}
    reference = sess.run(None, feed)[0]
    tuned = CompiledModel(work / "tuned.so")
    untuned = {p: CompiledModel(work / f"untuned-{p}.so") for p in pickers_for(spec)}
    xt = torch.from_numpy(x)

    def torch_call():
        with torch.inference_mode():
            return module(xt)

    calls = {"torch": torch_call, "ort": lambda: sess.run(None, feed), "tvm": tuned.prepared(x)} | {
        f"tvm_untuned_{p}": m.prepared(x) for p, m in untuned.items()}
    p50 = in_rounds(calls, timing, rounds)
    out = {f"{k}_ms": float(np.median(v)) for k, v in p50.items()}
    out["rounds_ms"] = p50
    out["tvm_vs_ort_paired"] = versus(p50, "ort")["tvm"]["paired"]
    out["max_abs_vs_ort"] = {"tuned": float(np.abs(tuned(x) - reference).max())} | {
        f"untuned_{p}": float(np.abs(m(x) - reference).max()) for p, m in untuned.items()}
    return out


def builds_vs_ort(sess, feed: dict, builds: dict, x: np.ndarray, timing: TimingConfig, rounds: int) -> dict:
    """onnxruntime (`sess` on `feed`) and each TVM build (name -> CompiledModel, on `x`) timed in `rounds` rounds
    taking turns (`kdcompile.timing.in_rounds`); per build, TVM / onnxruntime as a ratio of medians and paired
    within rounds, and its max abs error against onnxruntime."""
    reference = sess.run(None, feed)[0]
    calls = {"ort": lambda: sess.run(None, feed)} | {k: m.prepared(x) for k, m in builds.items()}
    p50 = in_rounds(calls, timing, rounds)
    vs = versus(p50, "ort")
    return {"ort_ms": float(np.median(p50["ort"])), "tvm_ms": {k: vs[k]["ms"] for k in builds},
            "vs_ort": {k: vs[k]["ratio"] for k in builds}, "vs_ort_paired": {k: vs[k]["paired"] for k in builds},
            "max_abs_vs_ort": {k: float(np.abs(m(x) - reference).max()) for k, m in builds.items()},
            "rounds_ms": p50}


def bench_model(spec: str, trials: int, peak: float, cost_model: str, quick: bool, tuning: bool) -> dict:
    info = prepare(spec, trials, cost_model, tuning)
    # Timed in a fresh process: right after tuning, this one measured TVM 40% slower than it runs.
    cmd = [sys.executable, "-m", "bench.e2e", "--measure", spec] + (["--quick"] if quick else [])
    times = measured_json(cmd)
    return {"ort_ms": times["ort_ms"], "tvm_ms": times["tvm_ms"], "torch_ms": times["torch_ms"],
            "trials": info["trials"], "tvm_untuned_ms": times[f"tvm_untuned_{DEFAULT_PICKER}_ms"],
            "tvm_vs_ort": times["tvm_ms"] / times["ort_ms"], "tvm_vs_ort_paired": times["tvm_vs_ort_paired"],
            "untuned_vs_ort": times[f"tvm_untuned_{DEFAULT_PICKER}_ms"] / times["ort_ms"], "picker": DEFAULT_PICKER,
            "untuned_vs_ort_by_picker": {p: times[f"tvm_untuned_{p}_ms"] / times["ort_ms"] for p in pickers_for(spec)},
            "kernels": largest_kernels(info.pop("costs"), peak)} | info | {
            "rounds_ms": times["rounds_ms"], "max_abs_vs_ort": times["max_abs_vs_ort"]}


def table(results: dict, peak: float) -> str:
    lines = [f"fp32 peak (onnxruntime matmul, {THREADS} threads): {peak:.0f} GFLOP/s", "",
             "| model | torch ms | onnxruntime ms | TVM 0 trials ms | TVM tuned ms | trials | tuned / ort | "
             "tuned / ort, paired (range over rounds) | 0 trials / ort |", "|---|---|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        per_round = np.array(r["rounds_ms"]["tvm"]) / np.array(r["rounds_ms"]["ort"])
        lines.append(f"| {m} | {r['torch_ms']:.3f} | {r['ort_ms']:.3f} | {r['tvm_untuned_ms']:.3f} | "
                     f"{r['tvm_ms']:.3f} | {r['trials']} | {r['tvm_vs_ort']:.2f} | {np.median(per_round):.2f} "
                     f"({per_round.min():.2f}-{per_round.max():.2f}) | {r['untuned_vs_ort']:.2f} |")
    lines += ["", "Zero trials, by default-schedule picker (TVM / onnxruntime):", "",
              "| model | " + " | ".join(PICKERS) + " |", "|---|" + "---|" * len(PICKERS)]
    for m, r in results.items():
        by = r.get("untuned_vs_ort_by_picker", {})
        lines.append(f"| {m} | " + " | ".join(f"{by[p]:.2f}" if p in by else "" for p in PICKERS) + " |")
    lines += ["", "| model | kernel | GFLOP | us | GFLOP/s | share of peak |", "|---|---|---|---|---|---|"]
    for m, r in results.items():
        for k in r["kernels"]:
            lines.append(f"| {m} | {k['task']} | {k['flops'] / 1e9:.3f} | {k['us']:.1f} | {k['gflops']:.0f} | "
                         f"{k['fraction_of_peak']:.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--trials", type=int, help="one budget for every model (default: per-model budgets)")
    ap.add_argument("--cost-model", default="xgb", help="the search's cost model (kdcompile.plugins COST_MODELS)")
    ap.add_argument("--quick", action="store_true", help="shorter timing (for trying the script out)")
    ap.add_argument("--no-tuning", dest="tuning", action="store_false",
                    help="no new trials: build and measure with the tuning logs as they are")
    ap.add_argument("--table-only", action="store_true", help="rewrite table.md from vs_ort.json and machine.json")
    ap.add_argument("--measure", metavar="MODEL", help=argparse.SUPPRESS)  # the fresh measuring process
    args = ap.parse_args()
    if args.table_only:
        peak = json.loads((OUT / "machine.json").read_text())["peak_gflops"]
        (OUT / "table.md").write_text(table(json.loads((OUT / "vs_ort.json").read_text()), peak))
        return
    os.environ["TVM_NUM_THREADS"] = str(THREADS)
    timing = TimingConfig(min_time_s=0.1, min_calls=20) if args.quick else TimingConfig(min_time_s=0.4, min_calls=100)
    if args.measure:
        print(json.dumps(measure_all(args.measure, timing)))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    peak = ort_peak_gflops()
    path = OUT / "vs_ort.json"  # {"<model>": {"ort_ms", "tvm_ms", "torch_ms", "trials", ...details}}
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in args.models.split(","):  # a model, or model@LAYOUT
        print(f"== {name}", flush=True)
        before = results.get(name, {})
        results[name] = bench_model(name, args.trials or TRIALS[parse_spec(name)[0]], peak, args.cost_model,
                                    args.quick, args.tuning)
        if not args.tuning and "tuning_s" in before:  # the trials were run by an earlier invocation
            results[name] |= {k: before[k] for k in ("tuning_s", "cost_model") if k in before}
        results[name]["load_avg_1min_after"] = os.getloadavg()[0]
        print(json.dumps({k: v for k, v in results[name].items() if k.endswith("ms")}), flush=True)
        path.write_text(json.dumps(results, indent=1))
    (OUT / "machine.json").write_text(json.dumps(
        machine_info(THREADS) | {"load_avg_1min_before": load_before, "peak_gflops": peak}, indent=1))
    (OUT / "table.md").write_text(table(results, peak))
    print(table(results, peak))


if __name__ == "__main__":
    main()
