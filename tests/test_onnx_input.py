"""An ONNX model you already have, tuned and timed without distilling it: `kdcompile tune model.onnx`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdcompile.errors import KdError
from kdcompile.export import to_onnx
from kdcompile.onnx_input import run_folder


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kdcompile.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, KDCOMPILE_QUIET="1"), timeout=600)


def _one_sentence(r) -> str:
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


@pytest.fixture
def tiny_onnx(tmp_path):
    """Linear 16 -> 8 and a ReLU, batch 1: (1, 16) -> (1, 8)."""
    torch.manual_seed(0)
    path = tmp_path / "tiny.onnx"
    to_onnx(nn.Sequential(nn.Linear(16, 8), nn.ReLU()).eval(), torch.zeros(1, 16), path, opset=18)
    return path


@pytest.fixture
def dynamic_onnx(tiny_onnx):
    """The same model with an open batch dimension."""
    import onnx

    model = onnx.load(str(tiny_onnx))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    path = tiny_onnx.with_name("dynamic.onnx")
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
def test_tune_then_bench_an_onnx_file(tmp_path, tiny_onnx):
    r = _cli("tune", "tiny.onnx", "--trials", "0", "--defaults", "random", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "runs" / "tiny"
    assert (run / "model.onnx").read_bytes() == tiny_onnx.read_bytes()  # copied as it is
    exported = json.loads((run / "export.json").read_text())
    assert exported["input_shape"] == [1, 16] and exported["models"] == ["model"]
    tuned = json.loads((run / "tune.json").read_text())
    assert {"teacher", "student"}.isdisjoint(tuned) and tuned["config"]["models"] == ["model"]
    assert tuned["model"]["tvm_max_abs"] <= 1e-4 and (run / "model_tvm.so").exists()

    # the build it vouches for agrees with onnxruntime, checked here too
    from kdcompile.export import ort_session
    from kdcompile.tvm_layer.build import CompiledModel

    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    session = ort_session(run / "model.onnx", 1)
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(CompiledModel(run / "model_tvm.so")(x), expected, atol=1e-4)

    # a rerun finds the same folder: nothing copied again, the default schedules picked before are reused
    # (trials resume from the same folder's database, as in any run folder: tests/test_pipeline.py)
    copied = (run / "model.onnx").stat().st_mtime_ns
    picked = (run / "model_defaults" / "database_tuning_record.json").read_text()
    r = _cli("tune", "tiny.onnx", "--trials", "0", "--defaults", "random", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"]
    assert (run / "model.onnx").stat().st_mtime_ns == copied
    assert (run / "model_defaults" / "database_tuning_record.json").read_text() == picked
    assert json.loads((run / "tune.json").read_text())["model"]["layout"] == tuned["model"]["layout"]

    r = _cli("bench", "tiny.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    assert set(report["latency_ms"]) == {"model"}
    assert all(report["latency_ms"]["model"][b]["p50"] > 0 for b in ("onnxruntime", "tvm"))
    assert "torch" not in report["latency_ms"]["model"] and "student" not in report
    assert report["parity"]["tvm_max_abs"] <= 1e-4
    md = (run / "report.md").read_text()
    assert "Fastest backend for the model" in md and "student" not in md


def test_open_dimensions_need_an_input_shape(tmp_path, dynamic_onnx):
    line = _one_sentence(_cli("tune", "dynamic.onnx", "--trials", "0", cwd=tmp_path))
    assert "'input'" in line and "--input-shape" in line and "batch" in line
    assert not (tmp_path / "runs").exists()  # nothing made before the input is understood
    # with the shape given, the run is made for it; a rerun without it keeps it
    run = run_folder(dynamic_onnx, tmp_path / "r", (1, 16))
    assert json.loads((run / "export.json").read_text())["input_shape"] == [1, 16]
    assert run_folder(dynamic_onnx, tmp_path / "r") == run
    with pytest.raises(KdError, match="does not fit"):
        run_folder(dynamic_onnx, tmp_path / "r2", (1, 15))


def test_a_file_that_is_not_onnx_is_one_sentence(tmp_path):
    (tmp_path / "notes.onnx").write_text("not a model at all\n")
    assert "is not an ONNX model" in _one_sentence(_cli("tune", "notes.onnx", cwd=tmp_path))
    (tmp_path / "empty.onnx").write_bytes(b"")  # parses as an empty ModelProto
    assert "is not an ONNX model" in _one_sentence(_cli("bench", "empty.onnx", cwd=tmp_path))


def test_the_file_is_told_by_contents_and_student_is_refused(tmp_path, tiny_onnx, monkeypatch):
    renamed = tmp_path / "tiny.bin"
    renamed.write_bytes(tiny_onnx.read_bytes())
    monkeypatch.chdir(tmp_path)  # the default run folder, runs/<file name>, is in the current folder
    assert run_folder(renamed) == Path("runs") / "tiny" and (tmp_path / "runs" / "tiny" / "model.onnx").exists()
    line = _one_sentence(_cli("tune", "tiny.onnx", "--models", "student", cwd=tmp_path))
    assert "no student or teacher" in line and "--models model" in line
    # another model under the same name is not mixed into this run's tuning
    other = tmp_path / "other" / "tiny.onnx"
    to_onnx(nn.Linear(16, 4).eval(), torch.zeros(1, 16), other, opset=18)
    assert "another model" in _one_sentence(_cli("tune", str(other), cwd=tmp_path))


class _Ids(nn.Module):
    """Token ids (1, 6) -> an embedding table of 50 rows -> a linear layer."""

    def __init__(self):
        super().__init__()
        self.table, self.out = nn.Embedding(50, 8), nn.Linear(8, 3)

    def forward(self, ids):
        return self.out(self.table(ids))


def test_an_onnx_file_that_takes_token_ids_gets_ids_in_range(tmp_path):
    from kdcompile.inputs import InputSpec

    torch.manual_seed(0)
    path = tmp_path / "ids.onnx"
    to_onnx(_Ids().eval(), torch.zeros(1, 6, dtype=torch.long), path, opset=18)
    run = run_folder(path, tmp_path / "run")
    exported = json.loads((run / "export.json").read_text())
    assert (exported["input_dtype"], exported["input_high"], exported["input_shape"]) == ("int64", 50, [1, 6])
    spec = InputSpec.of(exported)
    xs = spec.randoms(20, seed=0)
    assert all(x.dtype == np.int64 and x.shape == (1, 6) and 0 <= x.min() and x.max() < 50 for x in xs)
    assert len({x.tobytes() for x in xs}) == 20  # different inputs, not one repeated
    assert max(x.max() for x in xs) > 40  # drawn over the whole table
    assert InputSpec.of({"input_shape": [1, 4]}) == InputSpec((1, 4))  # a run from before token inputs: float32
