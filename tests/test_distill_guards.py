"""What distillation refuses to do silently: reuse a student the inputs no longer match, guess a dataset, lose
the user's data between stages, augment data into wrong soft targets, ship a student that lost the teacher's
accuracy, or crash on a compiled teacher."""

import json

import numpy as np
import pytest
import torch

from kdcompile.data import digits
from kdcompile.distill import DistillConfig, TeacherSpec, distill
from kdcompile.errors import KdError
from kdcompile.export import export
from kdcompile.load import save_checkpoint
from kdcompile.models import mnist_cnn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_digits_teacher(tmp_path_factory):
    """A small CNN trained on sklearn's 8x8 digits (held-out accuracy about 0.9), saved without dataset metadata."""
    import torch.nn.functional as F

    from kdcompile.train import fit

    torch.manual_seed(0)
    ds = digits()
    model = mnist_cnn(width=8)
    fit(model, ds.x_train, ds.y_train, lambda z, x, y: F.cross_entropy(z, y), epochs=6, batch_size=64, lr=3e-3,
        seed=0, description="teacher")
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(model, path, "kdcompile.models:mnist_cnn", {"width": 8}, (1, 1, 8, 8))
    return path


def test_a_teacher_that_names_no_dataset_needs_data(tmp_path, trained_digits_teacher):
    with pytest.raises(KdError, match="names no dataset"):  # it used to distil on MNIST without a word
        distill(TeacherSpec(str(trained_digits_teacher)), tmp_path / "run", DistillConfig(epochs=1))


def test_augmentation_is_off_for_user_data_and_refused_where_it_hurts_the_teacher(tmp_path, trained_digits_teacher):
    spec = TeacherSpec(str(trained_digits_teacher))
    r = distill(spec, tmp_path / "a", DistillConfig(epochs=1, data="digits", min_kept=0))
    assert r["augmentation"] == {"pixels": 0.0}  # every 4-D input used to be shifted by up to 2 pixels
    with pytest.raises(KdError, match="lowers the teacher's own"):  # 2 of 8 pixels: the teacher's targets go wrong
        distill(spec, tmp_path / "b", DistillConfig(epochs=1, data="digits", augment_pixels=2.0, min_kept=0))
    small = distill(spec, tmp_path / "c", DistillConfig(epochs=1, data="digits", augment_pixels=0.05, min_kept=0))
    assert small["augmentation"]["pixels"] == 0.05 and small["augmentation"]["teacher_accuracy_shifted"] > 0.8


def test_a_student_that_lost_the_teachers_accuracy_fails_after_saving(tmp_path, trained_digits_teacher):
    spec, run = TeacherSpec(str(trained_digits_teacher)), tmp_path / "run"
    with pytest.raises(KdError, match="kept only"):
        distill(spec, run, DistillConfig(epochs=1, data="digits", student="width:0.9", min_kept=10.0))
    assert (run / "student.pt2").exists()  # saved for a look
    with pytest.raises(KdError, match="kept only"):  # reusing it says so again
        distill(spec, run, DistillConfig(epochs=1, data="digits", student="width:0.9", min_kept=10.0))
    ok = distill(spec, run, DistillConfig(epochs=1, data="digits", student="width:0.9", min_kept=0))  # accepted
    assert ok["kept"]["metric"] == "accuracy" and ok["kept"]["threshold"] == 0


def test_a_changed_input_or_student_file_distils_again(tmp_path, trained_digits_teacher):
    run = tmp_path / "run"
    own = tmp_path / "own.pt"
    save_checkpoint(mnist_cnn(width=2), own, "kdcompile.models:mnist_cnn", {"width": 2})
    cfg = DistillConfig(epochs=1, data="digits", student=str(own), min_kept=0)
    first = distill(TeacherSpec(str(trained_digits_teacher)), run, cfg)
    assert distill(TeacherSpec(str(trained_digits_teacher)), run, cfg)["identity"] == first["identity"]
    save_checkpoint(mnist_cnn(width=3), own, "kdcompile.models:mnist_cnn", {"width": 3})  # the user's student
    changed = distill(TeacherSpec(str(trained_digits_teacher)), run, cfg)
    assert changed["student"]["parameters"] != first["student"]["parameters"]
    reshaped = distill(TeacherSpec(str(trained_digits_teacher), input_shape=(1, 1, 8, 8)), run, cfg)
    assert reshaped["identity"]["teacher_load"]["input_shape"] == [1, 1, 8, 8]  # not the student of before


def _user_data(kind: str, tmp_path):
    ds = digits()
    x = torch.cat([ds.x_train, ds.x_test]).numpy()
    y = torch.cat([ds.y_train, ds.y_test]).numpy()
    if kind == "npy":
        np.save(tmp_path / "inputs.npy", x)
        return tmp_path / "inputs.npy"
    if kind == "csv":
        path = tmp_path / "digits.csv"
        flat = x.reshape(len(x), -1)
        rows = ["label," + ",".join(f"p{i}" for i in range(flat.shape[1]))]
        rows += [f"{label}," + ",".join(f"{v:g}" for v in row) for label, row in zip(y, flat)]
        path.write_text("\n".join(rows) + "\n")
        return path
    from PIL import Image

    root = tmp_path / "images"
    for i, (img, label) in enumerate(zip(x[:300], y[:300])):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0] * 255).astype(np.uint8)).save(root / str(label) / f"{i}.png")
    return root


@pytest.mark.parametrize("kind", ["npy", "csv", "images"])
def test_later_stages_use_the_data_the_user_gave(tmp_path, trained_digits_teacher, kind):
    """distill then export on a user's file; export used to reload the data by its name and fail."""
    data = _user_data(kind, tmp_path)
    run = tmp_path / "run"
    shape = (1, 64) if kind == "csv" else (1, 1, 8, 8)
    if kind == "csv":  # a CSV row is a flat vector: a teacher of its own that reads one
        teacher = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        torch.save(teacher, tmp_path / "mlp.pt")
        spec = TeacherSpec(str(tmp_path / "mlp.pt"), trust_pickle=True)
    else:
        spec = TeacherSpec(str(trained_digits_teacher))
    distill(spec, run, DistillConfig(epochs=1, data=str(data), min_kept=0,
                                     student="width:0.5" if kind != "csv" else None, flops_ratio=0.5))
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["source"] == str(data.resolve()) and info["data"]["sha256"]
    assert tuple(info["teacher"]["input_shape"]) == shape
    exported = export(run)
    assert exported["student"]["onnx_max_abs"] <= 1e-4
    if kind == "npy":  # a changed file is noticed
        np.save(data, np.zeros((10, 1, 8, 8), np.float32))
        with pytest.raises(KdError, match="has changed"):
            export(run)


@pytest.mark.parametrize("kind", ["exported_program", "torchscript"])
def test_a_compiled_teacher_distils_and_exports(tmp_path, trained_digits_teacher, kind):
    from kdcompile.load import load_model

    module = load_model(trained_digits_teacher).module
    path = tmp_path / ("teacher.pt2" if kind == "exported_program" else "teacher.ts")
    if kind == "exported_program":  # every .pt2 teacher used to stop with "Calling eval() is not supported yet"
        torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 8, 8),)), str(path))
    else:
        torch.jit.save(torch.jit.script(module), path)
    run = tmp_path / "run"
    r = distill(TeacherSpec(str(path), input_shape=(1, 1, 8, 8)), run,
                DistillConfig(epochs=1, data="digits", student="kdcompile.models:mnist_cnn", min_kept=0))
    assert r["teacher"]["kind"] == kind and r["teacher"]["parameters"] > 0 and r["teacher"]["flops"] > 0
    assert export(run)["teacher"]["onnx_max_abs"] <= 1e-4


@pytest.mark.parametrize("kind", ["exported_program", "torchscript"])
def test_a_compiled_teacher_gets_an_automatic_pruned_student(tmp_path, trained_digits_teacher, kind):
    """The usual case: the user has only the compiled file, and no --student."""
    from kdcompile.load import load_model

    module = load_model(trained_digits_teacher).module
    path = tmp_path / ("teacher.pt2" if kind == "exported_program" else "teacher.ts")
    if kind == "exported_program":
        torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 8, 8),)), str(path))
    else:
        torch.jit.save(torch.jit.script(module), path)
    r = distill(TeacherSpec(str(path), input_shape=(1, 1, 8, 8)), tmp_path / "run",
                DistillConfig(epochs=3, data="digits", min_kept=0))
    s, t = r["student"], r["teacher"]
    assert s["flops"] <= 0.25 * t["flops"] * 1.02 and s["parameters"] < t["parameters"]
    assert s["accuracy"] > 0.6 and s["agreement"] > 0.6, s  # pruned from the teacher's weights, then distilled
    with pytest.raises(KdError, match="depth:K"):
        distill(TeacherSpec(str(path), input_shape=(1, 1, 8, 8)), tmp_path / "run2",
                DistillConfig(epochs=1, data="digits", min_kept=0, student="depth:2"))
