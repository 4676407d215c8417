"""A non-editable install (`pip install .`) carries what the tool loads at run time: the shipped Mamba ranker and
the default-schedule picker (they were found relative to the source tree only, and defaults quietly became
random programs), and the plug-in entry points."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_the_wheel_ships_the_weights_and_they_are_found_after_install(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("kdcompile-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("costmodel/weights/mamba_cpu.pt", "costmodel/weights/mamba_cpu_small.pt",
                    "costmodel/weights/xgb_cpu.tar"):
        assert shipped in names
    assert not any(n.startswith("bench/") for n in names)  # the benchmarks stay in the checkout
    assert any(n.endswith("entry_points.txt") for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import costmodel.plugin as p, kdcompile.plugins as k; "
            "print(p.__file__); print(p.WEIGHTS.joinpath('mamba_cpu.pt').exists()); "
            "print(k.make(k.PICKERS, 'xgb').booster is not None)")  # trained, not a random picker
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True,
                         env=dict(os.environ, PYTHONPATH=str(target))).stdout.splitlines()
    assert out[0].startswith(str(target))  # the installed copy, not the checkout
    assert out[1] == "True"
    assert out[2] == "True"
