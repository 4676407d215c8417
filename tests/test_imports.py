"""The house's shape, from the code's own imports: packages import one way (kdcompile <- costmodel <- bench), every
tvm import lives in kdcompile/tvm_layer/, and the light modules stay light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kdcompile", "costmodel", "bench")
LAYER = ROOT / "kdcompile" / "tvm_layer"


def _modules(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if "results" not in p.relative_to(ROOT).parts]


def _imports(path: Path) -> set[str]:
    """Top-level names of every import in the file, those inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_tvm_layer_imports_tvm():
    outside = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in _modules(pkg)
               if LAYER not in p.parents and _imports(p) & {"tvm", "tvm_ffi"}]
    assert not outside, f"tvm imported outside kdcompile/tvm_layer/: {outside}"


@pytest.mark.parametrize("package, above", [("kdcompile", {"costmodel", "bench"}), ("costmodel", {"bench"})])
def test_packages_import_one_way(package, above):
    wrong = {str(p.relative_to(ROOT)): sorted(_imports(p) & above) for p in _modules(package) if _imports(p) & above}
    assert not wrong, f"{package} imports a package that sits on it: {wrong}"


@pytest.mark.parametrize("module", ["kdcompile", "kdcompile.cli", "kdcompile.tune", "costmodel.train", "costmodel"])
def test_light_modules_import_neither_tvm_nor_onnxruntime(module):
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tvm', 'tvm_ffi', 'onnxruntime', 'torch')))")
    loaded = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert not any(m.startswith(("tvm", "onnxruntime")) for m in loaded), loaded
    if module in ("kdcompile", "kdcompile.cli"):
        assert "torch" not in loaded, "import kdcompile (and its CLI) should not even import torch"


def test_the_shape_test_sees_a_deferred_import(tmp_path):
    """The AST walk finds an import inside a function, where the old circle hid."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from tvm import relax\n    import bench.e2e\n")
    assert _imports(f) == {"tvm", "bench"}


def test_the_tvm_layers_inspect_memo_describes_every_frame_as_inspect_does(tmp_path, monkeypatch):
    """kdcompile.tvm_layer memoises inspect's module lookup for frames with no file on disk (why: its __init__);
    a stack taken inside an import, from code compiled as `<ast>` (as TVMScript compiles), reads the same without it."""
    import inspect
    import os

    import kdcompile.tvm_layer  # noqa: F401 - puts the memo in place

    (tmp_path / "stacked.py").write_text(
        "import inspect\n"
        "ns = {'inspect': inspect}\n"
        "exec(compile('stack = [f[1:] for f in inspect.stack()]', '<ast>', 'exec'), ns)\n"
        "STACK = ns['stack']\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def stack():
        sys.modules.pop("stacked", None)
        import stacked
        return stacked.STACK

    stacks, saved = [], {}
    for memo_on in (True, False):
        if not memo_on:
            memo = {os.path.normcase(os.path.abspath(f[0])) for f in stacks[0]} & set(inspect.modulesbyfile)
            assert any("<ast>" in k for k in memo) and any("<frozen importlib" in k for k in memo), memo
            saved = {k: inspect.modulesbyfile.pop(k) for k in memo}
        try:
            stacks.append(stack())  # one call site, so that both stacks can be equal
        finally:
            inspect.modulesbyfile.update(saved)
    assert stacks[0] == stacks[1]
