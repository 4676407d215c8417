"""TVM objects to plain Python: containers and immediates for json.dumps, and MetaSchedule traces, fast."""

from __future__ import annotations

import tvm
import tvm_ffi


def plain_json(obj):
    """TVM containers and immediates (Array, Map, IntImm, FloatImm, String) to plain Python for json.dumps."""
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, tvm.tirx.IntImm):
        return int(obj.value)
    if isinstance(obj, tvm.tirx.FloatImm):
        return float(obj.value)
    if hasattr(obj, "items"):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
        return [plain_json(v) for v in obj]
    if isinstance(obj, tvm.runtime.Object):  # e.g. a layout rewrite's IndexMap: TVM's JSON graph, as JSONDatabase
        return tvm.get_global_func("ffi.ToJSONGraphString")(obj, None)
    return str(obj)


def trace_json(trace) -> list:
    """`plain_json(trace.as_json())`, several times faster in a one-off timing here: `Trace.as_json`
    converts TVM's array to Python in a Python walk, then plain_json walks it again; here one walk of the FFI array
    dispatches on exact types. The Mamba cost model converts every candidate it scores, over a thousand per round."""
    return _plain_fast(_TRACE_AS_JSON(trace, False))


class TraceJSON:
    """`trace_json` with each instruction's conversion cached, and a key per program. The candidates of a task
    repeat most of their instructions (same kind, inputs and attributes) and differ in their decisions and in the
    few instructions postprocessing adds, so a whole instruction list rarely repeats and a single instruction
    mostly does. One-off timing here, 64 candidates of a MobileNet-V2 convolution (2026-12-02): 0.54 ms a trace
    uncached, 0.26 with this cache cold, 0.11 warm; the whole-list cache this replaced, 0.67 (its key missed). An
    instruction is cached by its structural hash (64-bit, which tells True from 1 and IntImm from int); the lists
    returned share them, so callers must not modify what they get.

    `raw(trace)` is TVM's JSON array of a trace (0.04 ms), `key(raw)` names the program (its structural hash:
    printing the trace to hash the text took 0.25 ms), and `self(raw)` converts it."""

    def __init__(self, limit: int = 200_000):
        self.limit, self.hits, self.misses = limit, 0, 0
        self._insts: dict[int, list] = {}

    @staticmethod
    def raw(trace):
        return _TRACE_AS_JSON(trace, False)

    @staticmethod
    def key(raw) -> str:
        return f"{tvm_ffi.structural_hash(raw):016x}"

    def __call__(self, trace_or_raw) -> list:
        raw = trace_or_raw if type(trace_or_raw) is tvm_ffi.Array else _TRACE_AS_JSON(trace_or_raw, False)
        insts = _ARRAY_GET(raw, 0)
        out = []
        for i in range(_ARRAY_SIZE(insts)):
            inst = _ARRAY_GET(insts, i)
            key = tvm_ffi.structural_hash(inst)
            got = self._insts.get(key)
            if got is None:
                if len(self._insts) >= self.limit:
                    self._insts.clear()
                got = self._insts[key] = _plain_fast(inst)
                self.misses += 1
            else:
                self.hits += 1
            out.append(got)
        return [out, _plain_fast(_ARRAY_GET(raw, 1))]


_TRACE_AS_JSON = tvm.get_global_func("s_tir.schedule.TraceAsJSON")
_AS_IS = (str, int, float, bool, type(None))
# tvm_ffi.Array's own iteration makes three FFI calls and two Python calls per element (its length again, a bounds
# check, the item); calling the two FFI functions directly took a trace from 0.75 to 0.47 ms here (85 MobileNet-V2
# programs, 2026-12-02), and trace conversion was 40% of the Mamba cost model's time inside the tuner.
_ARRAY_SIZE, _ARRAY_GET = tvm_ffi._ffi_api.ArraySize, tvm_ffi._ffi_api.ArrayGetItem


def _plain_fast(obj):
    t = type(obj)
    if t is tvm_ffi.Array:
        return [_plain_fast(_ARRAY_GET(obj, i)) for i in range(_ARRAY_SIZE(obj))]
    if t is list:
        return [_plain_fast(v) for v in obj]
    if t is tvm_ffi.core.String:
        return str(obj)
    if t in _AS_IS:
        return obj
    if t is tvm.tirx.IndexMap:  # as Trace.as_json writes it (a layout rewrite's map)
        return tvm.ir.save_json(obj)
    return plain_json(obj)  # IntImm, FloatImm, Map: rare in traces
