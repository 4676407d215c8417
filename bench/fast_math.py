"""libm exp/erf/tanh against TOPI's fast polynomials (what `tvm_backend.fast_math_legalization` uses), compiled by
TVM for this CPU: 64x512 float32 elements, one vectorized loop, one core. Writes bench/results/fast_math/.

    python -m bench.fast_math
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "fast_math"
N = 64 * 512  # the encoder's GELU output


def main() -> None:
    import tvm
    from tvm import te, topi

    from kdcompile import tvm_backend as tb

    target = tb.host_target(1)
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32) * 3
    a, b = tvm.runtime.tensor(x), tvm.runtime.tensor(np.zeros(N, np.float32))
    results = {}
    for name, fn in [("exp", topi.exp), ("fast_exp", topi.fast_exp), ("erf", topi.erf), ("fast_erf", topi.fast_erf),
                     ("tanh", topi.tanh), ("fast_tanh", topi.fast_tanh), ("multiply", lambda t: topi.multiply(t, 2.0))]:
        A = te.placeholder((N,), "float32", name="A")
        B = fn(A)
        sch = tvm.s_tir.Schedule(te.create_prim_func([A, B]))
        _, inner = sch.split(sch.get_loops(sch.get_sblock(B.op.name))[0], [None, 16])
        sch.vectorize(inner)
        lib = tvm.compile(sch.mod, target)
        lib = lib.mod if hasattr(lib, "mod") else lib
        lib["main"](a, b)
        us = min(lib.time_evaluator("main", tvm.cpu(), number=200, repeat=5)(a, b).results) * 1e6
        ref = {"exp": np.exp, "erf": None, "tanh": np.tanh}.get(name.removeprefix("fast_"))
        err = float(np.abs(b.numpy() - ref(x)).max() / np.abs(ref(x)).max()) if ref else None
        results[name] = {"us": us, "max_rel_err_vs_numpy": err}
        print(name, f"{us:.2f} us", err)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"elements": N, "threads": 1, "results": results}, indent=1))


if __name__ == "__main__":
    main()
