"""Where a tuned build's time goes in context: each kernel call of one inference timed through the Relax VM's
instrument hook (bytecode VM; ~2-5 us of Python per call included), against the same tasks' best times in the
tuning database (each kernel alone, warm caches). Ad-hoc diagnosis, kept with its output:
    python bench/results/e2e/earlier_runs/0506_in_context_kernels.py mobilenet-nhwc-0442-share-only
"""
import collections, json, os, sys, time
os.environ["TVM_NUM_THREADS"] = "2"
from pathlib import Path
ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
import numpy as np
import tvm
from tvm import relax
from kdcompile import tvm_backend as tb
from kdcompile.export import INPUT_NAME

W = ROOT / "bench/results/e2e/work"
work = W / sys.argv[1]
shape, onnx, layout = (1, 3, 112, 112), W / "mobilenet" / "mobilenet.onnx", "NHWC"
target = tb.host_target(2)
lowered = tb.lower(tb.import_onnx(onnx, INPUT_NAME, shape), target, layout=layout)
alone = {c["task"]: c["seconds"] for c in tb.task_costs(lowered, target, work / "tune")}
searched = set(json.loads((work / "tune" / "searched.json").read_text())["searched"])
mod = tb.apply_schedules(lowered, target, work / "tune", work / "defaults-xgb")
vm = relax.VirtualMachine(relax.build(mod, target, exec_mode="bytecode"), tvm.cpu())
x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype("float32"))
for _ in range(50):
    vm["main"](x)
start = time.perf_counter()
for _ in range(200):
    vm["main"](x)
print(f"one inference, bytecode VM, no hook: {(time.perf_counter() - start) / 200 * 1e3:.3f} ms")
calls, t = collections.defaultdict(list), {}

def hook(func, name, before, ret, *args):
    if before:
        t[0] = time.perf_counter()
    else:
        calls[name].append(time.perf_counter() - t[0])
    return 0

vm.set_instrument(hook)
for _ in range(100):
    vm["main"](x)
rows = sorted(((np.median(v) * 1e6, len(v) // 100, k) for k, v in calls.items()), reverse=True)
print(f"sum over calls of the median call: {sum(m * c for m, c, _ in rows):.0f} us")
print("median us per call in context, calls per inference, kernel; alone: best us in the tuning database; searched")
for m, c, k in rows[:24]:
    task = k.removesuffix("_prepacked")
    a = alone.get(task)
    print(f"  {m:7.1f} x{c:<2d} {k:48s} alone {a * 1e6 if a else float('nan'):6.1f}  {'searched' if task in searched else ''}")
