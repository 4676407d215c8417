"""Random default programs of the padded test network (tests/test_schedules.py TwoWidths), each compiled and compared
with onnxruntime: python bench/results/e2e/earlier_runs/0415_pad_random_programs.py pad FIRST_SEED END_SEED
(prints seed, max abs error, wrong output channels). Ad-hoc diagnosis, kept with its output (0415_*.txt)."""
import shutil, sys, tempfile
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests"))
from kdcompile import tvm_backend as tb
from kdcompile.export import INPUT_NAME, ort_session, to_onnx
from test_schedules import TwoWidths
from tvm.s_tir import meta_schedule as ms

tmp = Path(tempfile.mkdtemp()); tmp.mkdir(exist_ok=True, parents=True)
torch.manual_seed(0)
net = TwoWidths().eval()
with torch.no_grad():
    net.a[1].running_mean.uniform_(-1, 1), net.a[1].bias.uniform_(-1, 1)
x = torch.randn(1, 8, 7, 7)
to_onnx(net, x, tmp / "net.onnx", 18)
target = tb.host_target(2)
imported = tb.import_onnx(tmp / "net.onnx", INPUT_NAME, (1, 8, 7, 7))
pad = sys.argv[1] == "pad"
lowered = tb.lower(imported, target, pad_channels=pad)
expected = ort_session(tmp / "net.onnx").run(None, {INPUT_NAME: x.numpy()})[0]
bad = []
for seed in range(int(sys.argv[2]), int(sys.argv[3])):
    d = tmp / f"d{seed}"
    shutil.rmtree(d, ignore_errors=True)
    tb.default_schedules(lowered, target, d, ms.cost_model.RandomModel(seed=seed), seed=seed, population=16)
    lib = tb.compile_tuned(lowered, target, None, tmp / f"n{seed}.so", defaults_dir=d)
    got = tb.CompiledModel(lib)(x.numpy())
    err = np.abs(got - expected)
    wrong = np.nonzero(err[0] > 1e-4)[0].tolist()
    print(seed, float(err.max()), wrong[:10], flush=True)
    if wrong:
        bad.append(seed)
print("bad seeds", bad)

