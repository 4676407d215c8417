"""The backends a model is timed on. Each returns a zero-argument call on a prepared batch-1 input, with the same
thread count everywhere (intra-op threads; one inter-op thread)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch


def torch_call(module: torch.nn.Module, x: np.ndarray, threads: int) -> Callable[[], object]:
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)  # modules arrive in eval mode from the loaders

    def call():
        with torch.inference_mode():
            return module(xt)

    return call


def onnxruntime_call(onnx_path: Path, x: np.ndarray, threads: int) -> Callable[[], object]:
    from kdcompile.export import ort_session

    sess = ort_session(onnx_path, threads)
    feed = {sess.get_inputs()[0].name: x}  # the model's one input, whatever its name (an ONNX file of your own)
    return lambda: sess.run(None, feed)


def tvm_call(lib_path: Path, x: np.ndarray, threads: int) -> Callable[[], object]:
    import os

    os.environ["TVM_NUM_THREADS"] = str(threads)  # read when the TVM runtime starts its pool
    from kdcompile.tvm_layer.build import CompiledModel

    return CompiledModel(lib_path).prepared(x)


BACKENDS = {"torch": torch_call, "onnxruntime": onnxruntime_call, "tvm": tvm_call}
