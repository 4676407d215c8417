"""Single kernels compiled and timed alone: micro-benchmarks of what a lowering chooses (bench/fast_math.py)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te, topi

from kdcompile.tvm_layer.lowering import LANES
from kdcompile.tvm_layer.target import host_target

# Elementwise float32 functions: libm's and TOPI's polynomial approximations (`lowering.fast_math_legalization`).
ELEMENTWISE = {"exp": topi.exp, "fast_exp": topi.fast_exp, "erf": topi.erf, "fast_erf": topi.fast_erf,
               "tanh": topi.tanh, "fast_tanh": topi.fast_tanh, "multiply": lambda t: topi.multiply(t, 2.0)}


def time_elementwise(name: str, x: np.ndarray, threads: int = 1, number: int = 200,
                     repeat: int = 5) -> tuple[float, np.ndarray]:
    """Compile ELEMENTWISE[name] over the 1-D float32 `x` as one loop vectorized by LANES for this CPU and time it:
    (best microseconds of `repeat` means over `number` calls, the output)."""
    a, b = tvm.runtime.tensor(x), tvm.runtime.tensor(np.zeros_like(x))
    A = te.placeholder(x.shape, "float32", name="A")
    B = ELEMENTWISE[name](A)
    sch = tvm.s_tir.Schedule(te.create_prim_func([A, B]))
    _, inner = sch.split(sch.get_loops(sch.get_sblock(B.op.name))[0], [None, LANES])
    sch.vectorize(inner)
    lib = tvm.compile(sch.mod, host_target(threads))
    lib = lib.mod if hasattr(lib, "mod") else lib
    lib["main"](a, b)
    us = min(lib.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)(a, b).results) * 1e6
    return us, b.numpy()
