"""The best program of the student's 60 -> 124-channel 7x7 convolution task in three tuning databases, each
rebuilt as MetaSchedule's builder does and timed alone, back to back, 3 rounds: unpadded (`student-nopad`, 0155 run),
the first padding (bias padded, slice last: `student-pad16-sliceafter`, 0220 run), the fixed padding (slice before
bias and ReLU: `student`, 0422 run). Ad-hoc, kept with its output (0555_*.txt)."""
import os, sys
from pathlib import Path
os.environ["TVM_NUM_THREADS"] = "2"
ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

import numpy as np
import tvm
from kdcompile import tvm_backend as tb
W = ROOT / "bench/results/e2e/work"
target = tb.host_target(2)
dev = tvm.cpu()
funcs = {}
for d in ["student-nopad", "student-pad16-sliceafter", "student"]:
    db = tb.load_database(W / d / "tune")
    best = None
    for rec in db.get_all_tuning_records():
        txt = rec.workload.mod.script()
        if "T.int64(124)" not in txt or "conv2d" not in txt:
            continue
        if "T.int64(60), T.int64(3), T.int64(3)" not in txt:
            continue
        s = float(np.mean([float(x) for x in rec.run_secs]))
        if best is None or s < best[0]:
            best = (s, rec)
    s, rec = best
    sch = tvm.s_tir.Schedule(tb.private_copy(rec.workload.mod))
    rec.trace.apply_to_schedule(sch, remove_postproc=False)
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    f = tvm.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(sch.mod), target=target)
    args = [tvm.runtime.tensor(np.random.default_rng(0).standard_normal([int(v) for v in a.shape]).astype(str(a.dtype)), dev) for a in rec.args_info]
    funcs[d] = (f, args, s)
for r in range(3):
    for d, (f, args, s) in funcs.items():
        t = f.time_evaluator("main", dev, number=200, repeat=5)(*args)
        print(f"round {r} {d:28s} tuning db {s*1e6:6.1f} us   now median {np.median(t.results)*1e6:6.1f} us")
