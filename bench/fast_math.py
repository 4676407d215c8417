"""libm exp/erf/tanh against TOPI's fast polynomials (what `tvm_layer.lowering.fast_math_legalization` uses),
compiled by TVM for this CPU: 64x512 float32 elements, one vectorized loop, one core. Writes bench/results/fast_math/.

    python -m bench.fast_math
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "fast_math"
N = 64 * 512  # the encoder's GELU output


def main() -> None:
    from kdcompile.tvm_layer.kernels import ELEMENTWISE, time_elementwise

    x = np.random.default_rng(0).standard_normal(N).astype(np.float32) * 3
    results = {}
    for name in ELEMENTWISE:
        us, out = time_elementwise(name, x, threads=1)
        ref = {"exp": np.exp, "erf": None, "tanh": np.tanh}.get(name.removeprefix("fast_"))
        err = float(np.abs(out - ref(x)).max() / np.abs(ref(x)).max()) if ref else None
        results[name] = {"us": us, "max_rel_err_vs_numpy": err}
        print(name, f"{us:.2f} us", err)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"elements": N, "threads": 1, "results": results}, indent=1))


if __name__ == "__main__":
    main()
