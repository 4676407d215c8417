"""The run folder: the files where stages meet. Any stage can be rerun alone on what the previous one left.

    run.json            how to reload the teacher, input shape, dataset (written by distill)
    student.pt2         the distilled student (torch.export, dynamic batch)
    distill.json        accuracies, agreement, FLOPs and parameters of teacher and student
    {teacher,student}.onnx, export.json         ONNX files and their onnxruntime parity
    tune/{model}/       MetaSchedule work dir: database_*.json (resumable), logs
    {model}_tvm.so, tune.json                   compiled builds and their parity
    report.json, report.md                      the benchmark report
"""

from __future__ import annotations

import json
from pathlib import Path

from kdcompile.errors import KdError
from kdcompile.files import write_json

MODELS = ("teacher", "student")


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def onnx(self, model: str) -> Path:
        return self.root / f"{model}.onnx"

    def tune_dir(self, model: str) -> Path:
        return self.root / "tune" / model

    def tvm_lib(self, model: str) -> Path:
        return self.root / f"{model}_tvm.so"

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
