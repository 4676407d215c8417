"""The whole pipeline on a toy teacher (4-channel CNN, 8x8 digits) with a handful of tuning trials."""

import json

import pytest

from kdcompile.distill import DistillConfig, TeacherSpec, distill
from kdcompile.errors import KdError
from kdcompile.load import save_checkpoint
from kdcompile.pipeline import distill_and_tune
from kdcompile.tune import TuneConfig, tune

pytestmark = pytest.mark.slow


@pytest.fixture
def teacher_file(tmp_path, tiny_cnn):
    path = tmp_path / "teacher.pt"
    save_checkpoint(tiny_cnn, path, "kdcompile.models:mnist_cnn", {"width": 4}, (1, 1, 8, 8), dataset="digits")
    return path


def test_distill_and_tune_end_to_end_then_resume(tmp_path, teacher_file):
    from kdcompile.bench import BenchConfig
    from kdcompile.timing import TimingConfig

    run = tmp_path / "run"
    fast_bench = BenchConfig(timing=TimingConfig(warmup_s=0.05, min_calls=20, min_time_s=0.05))
    report = distill_and_tune(TeacherSpec(str(teacher_file)), run, DistillConfig(epochs=1, min_kept=0),
                              tune_cfg=TuneConfig(trials=6, models=("student",), defaults="random"),
                              bench_cfg=fast_bench)
    on_disk = json.loads((run / "report.json").read_text())
    assert on_disk == report
    assert report["student"]["flops"] <= report["teacher"]["flops"] / 4
    assert report["parity"]["onnx_max_abs"] <= 1e-4 and report["parity"]["tvm_max_abs"] <= 1e-4
    for backend in ("torch", "onnxruntime", "tvm"):
        assert report["latency_ms"]["student"][backend]["p50"] > 0
    assert "tvm" not in report["latency_ms"]["teacher"]  # only the student was tuned
    assert 0 < report["tuning"]["student"]["trials"] <= 6  # the budget is a ceiling
    assert report["fastest_backend"]["student"] in report["latency_ms"]["student"]
    assert (run / "report.md").read_text().startswith("# kdcompile report")
    assert "The student keeps" in (run / "report.md").read_text()  # the report leads with what it kept
    assert "![report](report.png)" in (run / "report.md").read_text()
    assert (run / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads((run / "tune.json").read_text())["student"]["curve_ms"]) == report["tuning"]["student"][
        "trials"]  # one point per trial, for the plot
    # --layout auto (the default) timed a zero-trial build in each layout and tuned the faster
    tuned = json.loads((run / "tune.json").read_text())["student"]
    assert set(tuned["layout_ms"]) == {"nchw", "nhwc"} and all(v > 0 for v in tuned["layout_ms"].values())
    layout = tuned["layout"]
    assert f"layout {layout}" in (run / "report.md").read_text()

    # A second run with the same budget reuses the student and the tuning database: no new trials.
    again = tune(run, TuneConfig(trials=6, models=("student",), defaults="random"))
    assert again["student"]["trials_this_run"] == 0
    assert again["student"]["trials"] == report["tuning"]["student"]["trials"]
    # 6 trials cannot reach every task; those that got none run a default schedule, not naive loops
    assert 0 < again["student"]["default_schedules"] < again["student"]["tasks"]
    zero = tune(run, TuneConfig(trials=0, models=("student",), defaults="random"))
    assert zero["student"]["trials"] == again["student"]["trials"]  # --trials 0 used to throw the tuning away
    assert zero["student"]["default_schedules"] == again["student"]["default_schedules"]
    assert zero["student"]["tvm_max_abs"] <= 1e-4
    assert zero["student"]["layout"] == layout  # a resumed run keeps the layout its records were tuned in
    other = "nhwc" if layout == "nchw" else "nchw"
    with pytest.raises(KdError, match=f"--layout {layout}"):  # records of one layout are no use to another
        tune(run, TuneConfig(trials=6, models=("student",), defaults="random", layout=other))
    with pytest.raises(KdError, match="Unknown layout"):
        tune(run, TuneConfig(trials=6, models=("student",), layout="NCHW16c"))

    # The tuning state lives in the model's tuning folder, written before the first trial: a run interrupted
    # before tune.json was written resumes in the layout its records were tuned in (it used to fall back to nchw).
    assert json.loads((run / "tune" / "student" / "state.json").read_text())["layout"] == layout
    (run / "tune.json").unlink()
    resumed = tune(run, TuneConfig(trials=6, models=("student",), defaults="random"))
    assert resumed["student"]["layout"] == layout and resumed["student"]["trials_this_run"] == 0

    # bench times a TVM build only when tune.json vouches for it (same ONNX file, parity passed)
    from kdcompile.bench import bench

    record = json.loads((run / "tune.json").read_text())
    record["student"]["onnx_sha256"] = "0" * 64  # as if built from an earlier student.onnx
    (run / "tune.json").write_text(json.dumps(record))
    assert "tvm" not in bench(run, fast_bench)["latency_ms"]["student"]

    # A second distill with the same teacher and config reuses the student: nothing is trained again.
    import kdcompile.distill as d

    before = (run / "student.pt2").stat().st_mtime_ns
    real_fit, d.fit = d.fit, None  # calling it would fail
    try:
        again = distill(TeacherSpec(str(teacher_file)), run, DistillConfig(epochs=1, min_kept=0))
    finally:
        d.fit = real_fit
    assert (run / "student.pt2").stat().st_mtime_ns == before
    assert {k: again["student"][k] for k in report["student"]} == report["student"]


def test_dataset_shape_mismatch_is_one_sentence(tmp_path, teacher_file):
    with pytest.raises(KdError, match="inputs of shape"):
        distill(TeacherSpec(str(teacher_file)), tmp_path / "run", DistillConfig(epochs=1, min_kept=0, data="mnist5k"))


def test_interrupted_distillation_resumes_to_the_same_student(tmp_path, teacher_file, monkeypatch):
    import kdcompile.distill as d

    straight = distill(TeacherSpec(str(teacher_file)), tmp_path / "a", DistillConfig(epochs=2, min_kept=0))
    real_fit = d.fit

    def killed_after_first_epoch(*args, **kwargs):
        def stop(epoch):
            if epoch == 1:
                raise KeyboardInterrupt  # Ctrl-C in the second epoch, before its checkpoint
            return ""

        return real_fit(*args, **dict(kwargs, on_epoch=stop))

    with monkeypatch.context() as m:
        m.setattr(d, "fit", killed_after_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            distill(TeacherSpec(str(teacher_file)), tmp_path / "b", DistillConfig(epochs=2, min_kept=0))
    assert (tmp_path / "b" / "distill_state.pt").exists() and not (tmp_path / "b" / "student.pt2").exists()
    ran = []

    def counted(*args, **kwargs):
        ran.append(real_fit(*args, **kwargs))
        return ran[-1]

    with monkeypatch.context() as m:
        m.setattr(d, "fit", counted)
        resumed = distill(TeacherSpec(str(teacher_file)), tmp_path / "b", DistillConfig(epochs=2, min_kept=0))
    assert ran == [1]  # the resume trained the second epoch only
    assert resumed["student"] == straight["student"]


def test_a_saved_student_model_is_used_as_given(tmp_path, teacher_file):
    from kdcompile.models import mnist_cnn

    own = tmp_path / "own.pt"
    save_checkpoint(mnist_cnn(width=2), own, "kdcompile.models:mnist_cnn", {"width": 2})
    r = distill(TeacherSpec(str(teacher_file)), tmp_path / "run", DistillConfig(epochs=1, min_kept=0, student=str(own)))
    assert r["student"]["parameters"] == sum(p.numel() for p in mnist_cnn(width=2).parameters())


def test_width_ratio_student(tmp_path, teacher_file):
    r = distill(TeacherSpec(str(teacher_file)), tmp_path / "run", DistillConfig(epochs=1, min_kept=0, student="width:0.5"))
    assert r["student"]["parameters"] < r["teacher"]["parameters"]
    with pytest.raises(KdError, match="between 0 and 1"):
        distill(TeacherSpec(str(teacher_file)), tmp_path / "run2", DistillConfig(epochs=1, min_kept=0, student="width:2"))
