"""ONNX into TVM Relax, and the lowering that is tuned: batch norm folded, layouts, channel padding, fast math.

What a lowering does is a typed value (`Lowering`), and its `key` goes into the dataset's network keys: programs
are comparable only within one lowering, because it changes the workloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

LANES = 16  # float32 lanes of an AVX-512 register
MAX_PAD = 1 / 16  # pad output channels only when that adds at most this share of the convolution's work
LAYOUTS = (None, "NHWC")  # None: as exported (NCHW for convolutions)


@dataclass(frozen=True)
class Lowering:
    """How a module is lowered before tuning (`lower`). The defaults are what `kdcompile tune` uses.

    prepack: weights are marked layout-free, so that tuned programs may choose their weights' layout
        (MetaSchedule's RewriteLayout); `build.compile_tuned` then packs the constant weights once, at compile time.
    fast_math: float32 exp, erf and tanh (softmax, GELU, sigmoid, SiLU) are polynomials that vectorize
        (`fast_math_legalization`).
    pad_channels: NCHW convolutions whose output channels fall just short of a multiple of LANES are padded up
        to it (`pad_out_channels`).
    layout: "NHWC" runs convolutions (and the elementwise ops around them) channels-last: the input is transposed
        once, weights at compile time. None keeps the exported layout.
    """

    prepack: bool = True
    fast_math: bool = True
    pad_channels: bool = True
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"Unsupported layout {self.layout!r}: NHWC or None.")

    @property
    def key(self) -> str:
        """The feature flags as the dataset's network keys have always written them ("prepack+fastmath+pad16");
        the layout is keyed separately there."""
        flags = ["prepack"] * self.prepack + ["fastmath"] * self.fast_math + [f"pad{LANES}"] * self.pad_channels
        return "+".join(flags)


def import_onnx(path: Path, input_name: str, input_shape: tuple[int, ...]) -> tvm.IRModule:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(onnx.load(str(path)), shape_dict={input_name: list(input_shape)}, keep_params_in_input=False)


def calls(mod: tvm.IRModule, op_name: str) -> list:
    """Every call of the Relax operator `op_name` in the module's Relax functions."""
    found = []
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, relax.Call) and getattr(
                e.op, "name", None) == op_name else None)
    return found


def has_convolution(mod: tvm.IRModule) -> bool:
    """Whether an imported (not yet lowered) module has a 2-D convolution: what a lowering's layout changes."""
    return bool(calls(mod, "relax.nn.conv2d"))


# Tasks left unscheduled (TVM's plain loop nest, which is correct): MetaSchedule's CPU programs for TOPI's
# gather_nd gave wrong results in TVM 0.27. Found on all-MiniLM-L6-v2 (2026-12-01): every default schedule and
# every tuned one of `te_gather_nd` (the gather transformers' attention-mask code exports) changed the embeddings
# of padded sentences by up to 0.24, while full-length ones matched to 1e-7; with that one task unscheduled the
# build matches onnxruntime to 2e-7. The tune stage's parity check caught it.
UNSCHEDULED = ("gather_nd",)


def extract_tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list:
    """The tunable tasks (MetaSchedule's ExtractedTask) of a lowered module, without those in UNSCHEDULED."""
    return [t for t in ms.relax_integration.extract_tasks(mod, target)
            if not any(name in t.task_name for name in UNSCHEDULED)]


def lower(mod: tvm.IRModule, target: tvm.target.Target, lowering: Lowering = Lowering()) -> tvm.IRModule:
    """Fold batch norm into convolutions, apply `lowering`, legalize to TIR, fold constants and fuse: the module
    that is tuned."""
    folded = tvm.transform.Sequential([
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
    ])
    with target:
        mod = folded(mod)
        if lowering.layout is not None:
            mod = convert_layout(mod, lowering.layout)
        if lowering.pad_channels:
            mod = pad_out_channels(mod)
    passes = tvm.transform.Sequential([
        relax.transform.LegalizeOps(fast_math_legalization() if lowering.fast_math else None),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ] + ([relax.transform.AttachAttrLayoutFreeBuffers()] if lowering.prepack else []))
    with target:
        return passes(mod)

def pad_out_channels(mod: tvm.IRModule, lanes: int = LANES, max_pad: float = MAX_PAD) -> tvm.IRModule:
    """Give NCHW convolutions with constant weights a multiple of `lanes` output channels (zero filters) and
    slice the extra channels off straight after, before the bias and ReLU that follow, when that adds at most
    `max_pad` of the work. Slice, bias and ReLU fuse into the convolution's kernel.

    Why: a tuned convolution vectorizes over output channels or over the output row; with 124 channels (4 x 31)
    on a 7x7 image, neither splits into whole vectors. The demo student's last convolution (60 -> 124 channels,
    7x7) stayed at 55 us after 257 trials in either layout, where onnxruntime's blocked kernels (which pad to
    16-channel blocks) take about 34 us."""
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())

    def padded(c: relax.Call) -> int | None:
        a, shape = c.attrs, c.args[1].ty.shape
        if a.groups != 1 or a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or a.out_layout != "NCHW":
            return None
        o = int(shape[0])
        p = -(-o // lanes) * lanes
        return p if o < p <= o + o * max_pad else None

    if not any(padded(c) for c in calls(mod, "relax.nn.conv2d")):
        return mod  # nothing to pad: the module stays exactly as it was

    def rewrite(c: relax.Call, _) -> relax.Expr:
        if (p := padded(c)) is None:
            return c
        a, weight = c.attrs, c.args[1].value.numpy()
        o = weight.shape[0]
        zeros = np.zeros((p - o, *weight.shape[1:]), weight.dtype)
        y = relax.op.nn.conv2d(c.args[0], relax.const(np.concatenate([weight, zeros])), a.strides, a.padding,
                               a.dilation, 1, "NCHW", "OIHW", "NCHW", None if str(a.out_dtype) in ("", "void")
                               else a.out_dtype)
        # Sliced straight after the convolution, so the bias and ReLU that follow see the true channels only:
        # with the bias padded too and the slice last, TVM 0.27's RewriteLayout gave the bias, read by the fused
        # slice over 124 of its 128 entries, the non-injective layout `i % 124`, and the zeros of channels
        # 124..127 overwrote the bias of channels 0..3 (tests/test_schedules.py).
        return relax.op.strided_slice(y, [1], [0], [o])

    out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs, global_infos=mod.global_infos)  # `mod` stays as is
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            out[gv] = rewrite_call(conv, rewrite, func)
    return out



def fast_math_legalization() -> dict:
    """LegalizeOps overrides that evaluate float32 exp, erf and tanh with TOPI's polynomial approximations
    (topi.fast_exp / fast_erf / fast_tanh, what Relay's FastMath pass did) instead of libm calls, which LLVM
    emits one lane at a time even inside a vectorized loop. On 32K float32 elements, one core, this machine
    (bench/fast_math.py): erf 351 -> 8.3 us, exp 66 -> 6.7 us, tanh 151 -> 10.8 us; the encoder's GELU and
    softmax kernels were the slowest of its tuned kernels per FLOP. Other dtypes keep TVM's legalization."""
    from tvm import topi

    def fp32(op_name: str, te_fn, hint: str, attrs=lambda call: ()):
        default = tvm.ir.Op.get(op_name).get_attr("FLegalize")

        def legalize(bb, call):
            if call.args[0].ty.dtype != "float32":
                return default(bb, call)
            return bb.call_te(te_fn, call.args[0], *attrs(call), primfunc_name_hint=hint)

        return legalize

    def sigmoid(x):  # 1 / (1 + e^-x); fast_exp clamps its argument to +-88.4, so no inf appears
        return topi.divide(1.0, topi.add(1.0, topi.fast_exp(topi.negative(x))))

    def gelu(x):  # x * (1/2 + erf(x / sqrt 2) / 2), as TVM's legalization of relax.nn.gelu
        return topi.multiply(x, topi.add(0.5, topi.multiply(topi.fast_erf(topi.multiply(x, 0.5**0.5)), 0.5)))

    def gelu_tanh(x):
        inner = topi.multiply(x, topi.add(1.0, topi.multiply(0.044715, topi.multiply(x, x))))
        return topi.multiply(topi.multiply(0.5, x), topi.add(1.0, topi.fast_tanh(topi.multiply((2 / np.pi) ** 0.5, inner))))

    return {
        "relax.exp": fp32("relax.exp", topi.fast_exp, "exp"),
        "relax.erf": fp32("relax.erf", topi.fast_erf, "erf"),
        "relax.tanh": fp32("relax.tanh", topi.fast_tanh, "tanh"),
        "relax.sigmoid": fp32("relax.sigmoid", sigmoid, "sigmoid"),
        "relax.nn.silu": fp32("relax.nn.silu", lambda x: topi.multiply(x, sigmoid(x)), "silu"),
        "relax.nn.gelu": fp32("relax.nn.gelu", gelu, "gelu"),
        "relax.nn.gelu_tanh": fp32("relax.nn.gelu_tanh", gelu_tanh, "gelu_tanh"),
        "relax.nn.softmax": fp32("relax.nn.softmax", topi.nn.fast_softmax, "softmax", lambda c: (c.attrs.axis,)),
    }


@relax.expr_functor.mutator
class _ClipAsOps(relax.PyExprMutator):
    """`call_tir(maximum|minimum, (x, scalar constant))`, as the ONNX importer emits Clip (ReLU6), back to
    R.maximum / R.minimum: ConvertLayout cannot see through a call_tir and would wrap every convolution
    followed by a ReLU6 in a pair of transposes."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.call_tir") or not isinstance(call.args[1], relax.Tuple):
            return call
        fields = call.args[1].fields
        op = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}.get(call.args[0].name_hint.rstrip("0123456789"))
        if op is None or len(fields) != 2 or not isinstance(fields[1], tvm.ir.expr.Constant) or len(fields[1].ty.shape):
            return call
        return op(fields[0], fields[1])

    def run(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions.items():
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()


def convert_layout(mod: tvm.IRModule, layout: str) -> tvm.IRModule:
    if layout != "NHWC":
        raise ValueError(f"Unsupported layout {layout!r}: NHWC or None.")
    mod = relax.transform.FoldConstant()(mod)  # the clip bounds become scalar constants
    mod = relax.transform.DeadCodeElimination()(_ClipAsOps(mod).run())
    return relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)


