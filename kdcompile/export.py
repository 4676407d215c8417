"""Stage 2, export: teacher and student to ONNX, checked by onnx.checker and against PyTorch in onnxruntime.

The ONNX files have a fixed batch-1 input (what is tuned and benchmarked). Parity is the largest absolute
difference between PyTorch and onnxruntime outputs over held-out inputs, one at a time; above the tolerance
the stage fails, because a wrong file is worse than none.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcompile.data import load_dataset, load_source
from kdcompile.errors import KdError
from kdcompile.inputs import InputSpec
from kdcompile.machine import cores
from kdcompile.load import LoadedModel
from kdcompile.progress import console
from kdcompile.rundir import MODELS, RunDir

INPUT_NAME, OUTPUT_NAME = "input", "output"
HELDOUT_IDS = "heldout_ids.npy"  # a Hugging Face run's held-out token ids (n, seq_len), saved by distill


@dataclass
class ExportConfig:
    opset: int = 18
    tolerance: float = 1e-4  # max abs error allowed between PyTorch and onnxruntime
    parity_samples: int = 32  # held-out inputs compared one at a time
    threads: int = 0  # 0: the cores this process may use


def to_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """torch.onnx.export with the dynamo exporter (folds batch norm, fewer nodes); TorchScript modules use the
    TorchScript exporter, which is the only one that accepts them. Weights are stored inside the one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted = isinstance(module, torch.jit.ScriptModule)
    # The exporter warns that torchvision's operators are not registered; kdcompile does not use torchvision.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    # Its constant folder warns for each node it cannot fold (the mask a Hugging Face graph computes from its ids):
    # the node stays in the graph, and parity below checks the result.
    logging.getLogger("onnxscript.optimizer._constant_folding").setLevel(logging.ERROR)
    try:
        # The exporter prints its own progress lines; keep the console for ours.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=17 if scripted else opset, dynamo=not scripted, external_data=False)
    except Exception as e:  # noqa: BLE001 - exporter errors are long; the first line names the operator
        raise KdError(f"ONNX export failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")


def ort_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    threads = threads or cores()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_onnx(module: nn.Module, path: Path, inputs: torch.Tensor, threads: int) -> float:
    """onnx.checker, then the max abs difference between PyTorch and onnxruntime over `inputs` (n, ...), batch 1."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    sess = ort_session(path, threads)
    worst = 0.0
    with torch.inference_mode():
        for x in inputs:
            ref = module(x[None]).numpy()
            got = sess.run(None, {INPUT_NAME: x[None].numpy()})[0]
            worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def parity_inputs(run: RunDir, n: int) -> torch.Tensor:
    """Held-out inputs of the data the student was distilled on, so parity is checked where the model is used:
    for a Hugging Face run, the held-out token ids distill saved. A run folder from before run.json kept the
    data's source names a built-in dataset."""
    info = run.read_json("run.json", needed_by="distill")
    if "hf" in info:
        return torch.from_numpy(np.load(run.require(run.root / HELDOUT_IDS, "distill")))[:n]
    data = load_source(info["data"]) if "data" in info else load_dataset(info["dataset"])
    return data.x_test[:n]


def load_run_models(run: RunDir) -> dict[str, LoadedModel]:
    from kdcompile.distill import TeacherSpec

    info = run.read_json("run.json", needed_by="distill")
    spec = TeacherSpec(**{k: v for k, v in info["teacher"].items() if k != "input_shape"})
    ep = torch.export.load(str(run.require(run.student, "distill")))
    teacher = spec.load()
    if teacher.hf is not None:  # the same one-input graph as the student: token ids to embeddings or logits
        from kdcompile.hf import graph

        teacher = LoadedModel(graph(teacher.hf), teacher.kind, meta=teacher.meta, hf=teacher.hf)
    return {"teacher": teacher, "student": LoadedModel(ep.module(), "exported_program")}


def run_input(run: RunDir) -> InputSpec:
    """The models' input, from run.json: float32 of the teacher's input shape, or a Hugging Face run's token ids."""
    info = run.read_json("run.json", needed_by="distill")
    token = info.get("input") or {}
    return InputSpec(tuple(info["teacher"]["input_shape"]), token.get("dtype", "float32"), token.get("high"))


def export(run_dir: Path, cfg: ExportConfig = ExportConfig()) -> dict:
    """Export teacher and student of a run folder to ONNX and check both. Returns export.json's content."""
    threads = cfg.threads or cores()
    torch.set_num_threads(threads)
    run = RunDir(run_dir)
    spec = run_input(run)
    models = load_run_models(run)
    inputs = parity_inputs(run, cfg.parity_samples)
    result = spec.as_json() | {"opset": cfg.opset, "tolerance": cfg.tolerance}
    for name in MODELS:
        path = run.onnx(name)
        to_onnx(models[name].module, spec.zeros(), path, cfg.opset)
        err = check_onnx(models[name].module, path, inputs, threads)
        result[name] = {"onnx": path.name, "onnx_max_abs": err}
        console.print(f"{name}: {path} (onnxruntime max abs error {err:.2e})")
        if not err <= cfg.tolerance:
            raise KdError(f"The {name}'s ONNX output differs from PyTorch by {err:.3g} (tolerance {cfg.tolerance}).")
    run.write_json("export.json", result)
    return result
