"""The run folder: the files where stages meet. Any stage can be rerun alone on what the previous one left.

    run.json            how to reload the teacher, input shape, dataset (written by distill)
    student.pt2         the distilled student (torch.export, dynamic batch)
    distill.json        accuracies, agreement, FLOPs and parameters of teacher and student
    {teacher,student}.onnx, export.json         ONNX files and their onnxruntime parity
    model.onnx, export.json     or, in a run made for an ONNX file you already have (onnx_input.py), its one model
                                and where it came from: no run.json, student or distill.json
    tune/{model}/       MetaSchedule work dir: database_*.json (resumable), logs
    {model}_tvm.so, tune.json                   compiled builds and their parity
    report.json, report.md                      the benchmark report
"""

from __future__ import annotations

import json
from pathlib import Path

from kdcompile.errors import KdError
from kdcompile.files import write_json

MODELS = ("teacher", "student")  # a distilled run's models
MODEL = "model"  # the one model of a run made for an ONNX file (kdcompile tune model.onnx)
ROLES = (*MODELS, MODEL)


def default_root(model: Path) -> Path:
    """Where a model file's run folder goes unless --out says otherwise."""
    return Path("runs") / Path(model).stem


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def onnx(self, model: str) -> Path:
        return self.root / f"{model}.onnx"

    def tune_dir(self, model: str) -> Path:
        return self.root / "tune" / model

    def tvm_lib(self, model: str) -> Path:
        return self.root / f"{model}_tvm.so"

    def models(self) -> tuple[str, ...]:
        """The models the run holds: the one a run made for an ONNX file names in export.json, else a distilled
        run's teacher and student."""
        path = self.root / "export.json"
        return tuple(json.loads(path.read_text()).get("models", MODELS)) if path.exists() else MODELS

    def chosen(self, models: tuple[str, ...]) -> tuple[str, ...]:
        """`models` (empty: all the run holds), or one sentence saying which of them the run does not hold."""
        held = self.models()
        if set(models) <= set(held):
            return models or held
        if held == (MODEL,):
            raise KdError(f"{self.root} holds one model, made from an ONNX file, and no student or teacher: leave "
                          f"--models out, or pass --models {MODEL}.")
        raise KdError(f"{self.root} holds a teacher and a student; --models {MODEL} is for the run of an ONNX file.")

    @property
    def student(self) -> Path:
        return self.root / "student.pt2"

    def write_json(self, name: str, obj: dict) -> Path:
        """Write atomically (kdcompile.files), so an interrupted stage never leaves half a file."""
        return write_json(self.root / name, obj)

    def read_json(self, name: str, needed_by: str | None = None) -> dict:
        path = self.root / name
        if not path.exists():
            hint = f" Run `kdcompile {needed_by}` first." if needed_by else ""
            raise KdError(f"{path} does not exist.{hint}")
        return json.loads(path.read_text())

    def require(self, path: Path, needed_by: str) -> Path:
        if not path.exists():
            raise KdError(f"{path} does not exist. Run `kdcompile {needed_by} {self.root}` first.")
        return path
