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


_TRACE_AS_JSON = tvm.get_global_func("s_tir.schedule.TraceAsJSON")
_AS_IS = (str, int, float, bool, type(None))


def _plain_fast(obj):
    t = type(obj)
    if t is tvm_ffi.Array or t is list:
        return [_plain_fast(v) for v in obj]
    if t is tvm_ffi.core.String:
        return str(obj)
    if t in _AS_IS:
        return obj
    if t is tvm.tirx.IndexMap:  # as Trace.as_json writes it (a layout rewrite's map)
        return tvm.ir.save_json(obj)
    return plain_json(obj)  # IntImm, FloatImm, Map: rare in traces
