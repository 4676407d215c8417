"""Every way a teacher can arrive, and every way it can be wrong: one clear sentence, never a silent success."""

import subprocess
import sys

import pytest
import torch

from kdcompile.errors import KdError
from kdcompile.load import check_input_shape, load_model, parse_shape, save_checkpoint

X = torch.randn(2, 1, 8, 8)


def _same_outputs(loaded, reference):
    with torch.no_grad():
        assert torch.allclose(loaded.module(X), reference(X), atol=1e-6)


def test_torchscript(tmp_path, tiny_cnn):
    torch.jit.save(torch.jit.script(tiny_cnn), tmp_path / "m.pt")
    m = load_model(tmp_path / "m.pt")
    assert m.kind == "torchscript" and not m.is_eager
    _same_outputs(m, tiny_cnn)


def test_exported_program(tmp_path, tiny_cnn):
    torch.export.save(torch.export.export(tiny_cnn, (X[:1],)), tmp_path / "m.pt2")
    m = load_model(tmp_path / "m.pt2")
    assert m.kind == "exported_program" and m.input_shape == (1, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m.module(X[:1]), tiny_cnn(X[:1]), atol=1e-6)


def test_kdcompile_checkpoint_needs_no_arch(tmp_path, tiny_cnn):
    save_checkpoint(tiny_cnn, tmp_path / "c.pt", "kdcompile.models:mnist_cnn", {"width": 4}, (1, 1, 8, 8),
                    dataset="digits")
    m = load_model(tmp_path / "c.pt")
    assert m.kind == "checkpoint" and m.is_eager and m.input_shape == (1, 1, 8, 8) and m.meta["dataset"] == "digits"
    _same_outputs(m, tiny_cnn)


def test_checkpoint_naming_foreign_code_needs_explicit_arch(tmp_path, tiny_cnn):
    save_checkpoint(tiny_cnn, tmp_path / "c.pt", "os:system")
    with pytest.raises(KdError, match="pass --arch os:system"):
        load_model(tmp_path / "c.pt")


def test_state_dict_with_and_without_arch(tmp_path):
    from kdcompile.models import mnist_cnn

    ref = mnist_cnn().eval()  # default width, so the factory needs no kwargs
    torch.save(ref.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(KdError, match="state_dict.*--arch"):
        load_model(tmp_path / "sd.pt")
    m = load_model(tmp_path / "sd.pt", arch="kdcompile.models:mnist_cnn")
    assert m.kind == "state_dict"
    _same_outputs(m, ref)
    with pytest.raises(KdError, match="do not fit the architecture"):
        load_model(tmp_path / "sd.pt", arch="torch.nn:Identity")
    with pytest.raises(KdError, match="Cannot import"):
        load_model(tmp_path / "sd.pt", arch="no_such_pkg.mod:f")


def test_pickle_refused_unless_trusted(tmp_path, tiny_cnn):
    torch.save(tiny_cnn, tmp_path / "full.pt")
    with pytest.raises(KdError, match="runs arbitrary code.*--trust-pickle"):
        load_model(tmp_path / "full.pt")
    m = load_model(tmp_path / "full.pt", trust_pickle=True)
    assert m.kind == "pickle"
    _same_outputs(m, tiny_cnn)


@pytest.mark.parametrize("content,match", [
    (None, "No such file"),
    (b"hello, I am text", "not a PyTorch model file"),
    ("truncated", "truncated or corrupted"),
])
def test_broken_files(tmp_path, tiny_cnn, content, match):
    path = tmp_path / "m.pt"
    if content == "truncated":
        torch.save(tiny_cnn.state_dict(), path)
        path.write_bytes(path.read_bytes()[:300])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(KdError, match=match):
        load_model(path)


def test_truncated_torchscript(tmp_path, tiny_cnn):
    torch.jit.save(torch.jit.script(tiny_cnn), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(KdError, match="truncated or corrupted"):
        load_model(tmp_path / "m.pt")


def test_not_a_model(tmp_path):
    torch.save({"lr": 0.1, "epochs": 3}, tmp_path / "cfg.pt")
    with pytest.raises(KdError, match="not a model"):
        load_model(tmp_path / "cfg.pt")


def test_input_shape_that_does_not_fit(tiny_cnn):
    from kdcompile.load import LoadedModel

    with pytest.raises(KdError, match=r"input shape \[1, 3, 8, 8\] does not fit"):
        check_input_shape(LoadedModel(tiny_cnn, "pickle"), (1, 3, 8, 8))
    assert parse_shape("1x1x8x8") == (1, 1, 8, 8)
    with pytest.raises(KdError):
        parse_shape("1,a,2")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kdcompile.cli", *args], capture_output=True, text=True)


def test_cli_says_one_sentence_and_exits_nonzero(tmp_path, tiny_cnn):
    torch.save(tiny_cnn, tmp_path / "full.pt")
    r = _cli("distill", str(tmp_path / "full.pt"), "--out", str(tmp_path / "run"))
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and "--trust-pickle" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--debug", "distill", str(tmp_path / "missing.pt"))
    assert r.returncode != 0 and "Traceback" in r.stderr and "No such file" in r.stderr


def test_cli_help_teaches():
    r = _cli("distill-and-tune", "--help")
    assert r.returncode == 0
    for option in ("--trust-pickle", "--arch", "--input-shape", "--trials", "--cost-model"):
        assert option in r.stdout


def test_a_checkpoint_cannot_choose_code_or_arguments(tmp_path):
    """Hostile weights-only checkpoints: each names something a file must not choose."""
    from kdcompile.load import CHECKPOINT_KEY

    from kdcompile.models import mnist_cnn

    state = mnist_cnn(width=2).state_dict()
    hostile = {
        "a trainer that writes where the file says": ("kdcompile.train:fit", {"checkpoint": str(tmp_path / "x")}),
        "code outside kdcompile": ("os:system", {}),
        "a registered factory with an argument it does not take": ("kdcompile.models:mnist_cnn",
                                                                    {"width": 2, "out": str(tmp_path / "x")}),
        "a registered factory with a non-plain argument": ("kdcompile.models:mnist_cnn", {"width": [2]}),
    }
    for what, (arch, kwargs) in hostile.items():
        path = tmp_path / "hostile.pt"
        torch.save({CHECKPOINT_KEY: 1, "arch": arch, "arch_kwargs": kwargs, "state_dict": state}, path)
        with pytest.raises(KdError, match="--arch"):
            load_model(path)
        assert not (tmp_path / "x").exists(), what
    torch.save({CHECKPOINT_KEY: 1, "arch": "kdcompile.models:mnist_cnn", "arch_kwargs": {"width": 2},
                "state_dict": state}, tmp_path / "ok.pt")
    assert load_model(tmp_path / "ok.pt").kind == "checkpoint"


def test_a_factory_in_the_current_folder_is_found(tmp_path, monkeypatch):
    from kdcompile.load import import_factory

    (tmp_path / "my_arch.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(4, 2)\n")
    monkeypatch.chdir(tmp_path)
    assert isinstance(import_factory("my_arch:build")(), torch.nn.Linear)  # "No module named my_arch" before
    with pytest.raises(KdError, match="current folder"):
        import_factory("not_here:build")
