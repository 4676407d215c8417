"""Where the student's time goes: onnxruntime's per-node profile (3,000 runs; each node's median, in whole
microseconds, profiling overhead included) against each TVM task's best time in the tuning database x its weight.
Ad-hoc diagnosis, kept with its output: python bench/results/e2e/earlier_runs/0216_profile_student.py
"""
import json, os, sys, collections, tempfile
import numpy as np
os.environ["TVM_NUM_THREADS"] = "2"
from pathlib import Path
ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
TMP = tempfile.mkdtemp()
import onnxruntime as ort
spec = sys.argv[1] if len(sys.argv) > 1 else "student"
W = ROOT / "bench/results/e2e/work"
onnx_path = W / spec / f"{spec}.onnx"
opts = ort.SessionOptions(); opts.intra_op_num_threads = 2; opts.inter_op_num_threads = 1
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
opts.enable_profiling = True; opts.profile_file_prefix = f"{TMP}/ort"
opts.optimized_model_filepath = f"{TMP}/ort_opt.onnx"
sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).standard_normal([int(d) for d in inp.shape]).astype(np.float32)
for _ in range(3000):
    sess.run(None, {inp.name: x})
prof = sess.end_profiling()
ev = json.load(open(prof))
per = collections.defaultdict(list)
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        per[(e["name"], e["args"].get("op_name"))].append(e["dur"])
tot = 0
print("ORT nodes (median us):")
for (n, op), d in per.items():
    m = float(np.median(d)); tot += m
    print(f"  {op:20s} {m:7.1f}  {n}")
print(f"  sum {tot:.1f}")
import onnx
g = onnx.load(f"{TMP}/ort_opt.onnx").graph
print("optimized graph ops:", [n.op_type for n in g.node])
from kdcompile import tvm_backend as tb
from kdcompile.export import INPUT_NAME
target = tb.host_target(2)
layout = None
mod = tb.lower(tb.import_onnx(onnx_path, INPUT_NAME, tuple(x.shape)), target, layout=layout)
costs = tb.task_costs(mod, target, W / spec / "tune")
s = 0
print("TVM tasks (best us x weight):")
for c in costs:
    us = (c["seconds"] or 0) * 1e6 * c["weight"]; s += us
    print(f"  {c['task']:40s} {us:7.1f}  flops {c['contraction_flops']/1e6:.2f}M")
print(f"  sum {s:.1f}")
