import subprocess
import sys


def test_import_kdcompile_stays_light():
    """import kdcompile (and its CLI module) must not pull in tvm or onnxruntime: they cost seconds and memory."""
    code = ("import sys, kdcompile, kdcompile.cli, costmodel, bench; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tvm', 'onnxruntime', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)
    assert not any(m.startswith(("tvm", "onnxruntime")) for m in loaded), loaded
    assert "torch" not in loaded, "import kdcompile should not even import torch"
