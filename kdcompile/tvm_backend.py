"""Every use of Apache TVM in kdcompile lives in this module (0.27: Relax + MetaSchedule in tvm.s_tir).

Facts measured on the 2-core Zen5 machine this was written on (../shared/research/tvm_notes.md):
- The target must name the CPU (`mcpu`) and `num-cores`; without mcpu LLVM emits generic x86-64 (no AVX-512,
  4.7x slower tuned matmul).
- The default LocalBuilder imports tvm.s_tir.tensor_intrin in every fresh worker (16-18 s) and times out; `fast_build`
  below is default_build without that import.
- `relax.build`/`compile_relax` re-fuse the module, so no tuning record matches; the database is applied to the very
  module that was tuned (MetaScheduleApplyDatabase) and that is compiled.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

# The TVM runtime sizes its thread pool when it starts; set it before the import (and for worker processes).
os.environ.setdefault("TVM_NUM_THREADS", "2")

import tvm  # noqa: E402
import tvm_ffi  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.ir.utils import derived_object  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402

MS_LOGGER = "tvm.s_tir.meta_schedule"


def quiet_ms_logging() -> None:
    """Keep MetaSchedule's per-batch task tables out of the console (they stay in work_dir/logs).

    Its logger setup reads the level each time loggers are created and resets it to DEBUG, so this runs before
    every creation. It also re-lists the logger's existing handlers by name and crashes on an unnamed one
    (pytest adds such), so those are dropped here.
    """
    logger = logging.getLogger(MS_LOGGER)
    for handler in list(logger.handlers):
        if handler.get_name() is None:
            logger.removeHandler(handler)
    logger.setLevel(logging.WARNING)


def host_target(num_cores: int = 2) -> tvm.target.Target:
    """An LLVM target for this CPU by name, so that LLVM uses all its vector units."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": num_cores})


def parse_target(spec: str | None, num_cores: int = 2) -> tvm.target.Target:
    """None or "llvm": this CPU (`host_target`); "cuda:sm_86", an NVIDIA GPU of that compute capability; a TVM
    tag such as "nvidia/geforce-rtx-3090"; or a JSON dict (a CUDA one must give MetaSchedule's per-block limits)."""

    if spec in (None, "", "llvm"):
        return host_target(num_cores)
    from kdcompile.errors import KdError

    if spec.startswith("cuda:"):
        # the limits MetaSchedule's GPU rules need (a bare {"kind": "cuda"} has none): the same on every
        # compute capability since 3.0, as in TVM's own tags (nvidia/geforce-rtx-3090: sm_86 with these)
        spec = json.dumps({"kind": "cuda", "arch": spec.split(":", 1)[1]} | CUDA_LIMITS)
    try:
        target = tvm.target.Target(json.loads(spec) if spec.lstrip().startswith("{") else spec)
    except Exception as e:  # noqa: BLE001 - TVM's message names the bad field
        raise KdError(f"Not a TVM target: {spec!r} ({str(e).splitlines()[0][:200]}).") from None
    if target.kind.name == "cuda" and "max_threads_per_block" not in target.attrs:
        raise KdError(f"CUDA target {spec!r} lacks max_threads_per_block, which MetaSchedule's GPU rules need: "
                      "use the shorthand cuda:sm_86 or a tag such as nvidia/geforce-rtx-3090.")
    return target


CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152, "registers_per_block": 65536,
               "thread_warp_size": 32}


@derived_object
class WaitingRunner(ms.runner.PyRunner):
    """A runner whose batches are measured before the search goes on.

    MetaSchedule's task scheduler hands a batch to the runner and, in its first round over the tasks, goes on to
    search and build the next task while the batch is being timed. On 2 cores that search runs beside every
    measurement; with trials/tasks per batch the first round is the whole budget, so every time in the database
    was taken on a busy machine. Waiting costs the overlap, and buys measurements of an otherwise idle CPU."""

    def __init__(self, runner):
        self.runner = runner

    def run(self, runner_inputs):
        futures = self.runner.run(runner_inputs)
        for future in futures:
            future.result()
        return futures


def _ignore_sigint() -> None:
    """Initializer of MetaSchedule's worker processes. Ctrl-C in a terminal goes to the whole process group, and
    the main process decides what it means (the collector saves its batch first): a worker must not die of it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def search_threads(target: tvm.target.Target) -> int:
    """Threads for MetaSchedule's search (sampling, mutation, features): a CPU target's own core count, so the
    search uses the cores that are measured; for a GPU, every core of the host."""
    if target.kind.name == "llvm":
        return int(target.attrs.get("num-cores", 2) or 2)
    return os.cpu_count() or 2


def local_builder():
    return ms.builder.LocalBuilder(f_build=fast_build, timeout_sec=120, initializer=_ignore_sigint)


def make_runner(rpc: str | None, evaluator: "ms.runner.EvaluatorConfig"):
    """A LocalRunner, or with rpc="host:port:key" an RPCRunner that measures on whatever device registered with
    that key at the RPC tracker (a remote GPU, say), the same way; either waits for its batch (WaitingRunner)."""
    if not rpc:
        return WaitingRunner(ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator,
                                                   f_alloc_argument=alloc_valid_arguments, initializer=_ignore_sigint))
    host, port, key = rpc.rsplit(":", 2)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key, session_timeout_sec=60)
    return WaitingRunner(ms.runner.RPCRunner(config, evaluator_config=evaluator, max_workers=1,
                                                 initializer=_ignore_sigint))


def target_dict(target: tvm.target.Target) -> dict:
    """The target as MetaSchedule's JSONDatabase writes it in every record."""
    return plain_json(target.export())


def import_onnx(path: Path, input_name: str, input_shape: tuple[int, ...]) -> tvm.IRModule:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    return from_onnx(onnx.load(str(path)), shape_dict={input_name: list(input_shape)}, keep_params_in_input=False)


def _calls(mod: tvm.IRModule, op_name: str) -> list:
    """Every call of the Relax operator `op_name` in the module's Relax functions."""
    found = []
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, relax.Call) and getattr(
                e.op, "name", None) == op_name else None)
    return found


def has_convolution(mod: tvm.IRModule) -> bool:
    """Whether an imported (not yet lowered) module has a 2-D convolution: what `lower`'s layout changes."""
    return bool(_calls(mod, "relax.nn.conv2d"))


# What `lower` and `space_generator` produce, recorded with dataset networks: programs are comparable only
# within one lowering (it changes the workloads) and one design space (it changes the traces).
LOWERING = "prepack+fastmath+pad16"
SPACE = "parallel+serial"


def lower(mod: tvm.IRModule, target: tvm.target.Target, prepack: bool = True,
          layout: str | None = None, fast_math: bool = True, pad_channels: bool = True) -> tvm.IRModule:
    """Fold batch norm into convolutions, legalize to TIR, fold constants and fuse: the module that is tuned.
    With `prepack`, weights are marked layout-free, so that tuned programs may choose their weights' layout
    (MetaSchedule's RewriteLayout); `compile_tuned` then packs the constant weights once, at compile time.
    With `layout="NHWC"`, convolutions (and the elementwise ops around them) run channels-last: the input is
    transposed once, weights are transposed at compile time. With `fast_math`, float32 exp, erf and tanh
    (softmax, GELU, sigmoid, SiLU) are polynomials that vectorize (`fast_math_legalization`). With
    `pad_channels`, NCHW convolutions whose output channels fall just short of a multiple of 16 are padded up to
    it (`pad_out_channels`)."""
    folded = tvm.transform.Sequential([
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
    ])
    with target:
        mod = folded(mod)
        if layout is not None:
            mod = _convert_layout(mod, layout)
        if pad_channels:
            mod = pad_out_channels(mod)
    passes = tvm.transform.Sequential([
        relax.transform.LegalizeOps(fast_math_legalization() if fast_math else None),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ] + ([relax.transform.AttachAttrLayoutFreeBuffers()] if prepack else []))
    with target:
        return passes(mod)


LANES = 16  # float32 lanes of an AVX-512 register
MAX_PAD = 1 / 16  # pad output channels only when that adds at most this share of the convolution's work


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

    if not any(padded(c) for c in _calls(mod, "relax.nn.conv2d")):
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


def _convert_layout(mod: tvm.IRModule, layout: str) -> tvm.IRModule:
    if layout != "NHWC":
        raise ValueError(f"Unsupported layout {layout!r}: NHWC or None.")
    mod = relax.transform.FoldConstant()(mod)  # the clip bounds become scalar constants
    mod = relax.transform.DeadCodeElimination()(_ClipAsOps(mod).run())
    return relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)


# ---- the search space: TVM's default CPU rules, with parallelism as a decision --------------------------------
PVU_DEFAULTS = {"max_vectorize_extent": 64, "unroll_max_steps": [0, 16, 64, 512], "unroll_explicit": True}


def schedule_rules(target: tvm.target.Target, parallel: bool = True) -> list:
    """TVM's default rules for `target`; on CPUs, with parallel=False, ParallelizeVectorizeUnroll keeps its
    vectorize and unroll decisions but marks no loop parallel."""
    rules = list(ms.schedule_rule.ScheduleRule.create("cuda" if target.kind.name == "cuda" else "llvm"))
    if target.kind.name != "llvm":
        return rules
    jobs = 16 if parallel else -1  # -1: no parallel annotation (TVM's default is 16 jobs per core)
    return [ms.schedule_rule.ParallelizeVectorizeUnroll(max_jobs_per_core=jobs, **PVU_DEFAULTS)
            if isinstance(r, ms.schedule_rule.ParallelizeVectorizeUnroll) else r for r in rules]


def space_generator(target: tvm.target.Target):
    """The design space every task is searched in (tuning and dataset collection alike).

    On CPUs it is the union of TVM's default space and the same space with every loop serial. The stock rule
    marks every kernel's outer loops parallel, and waking the thread pool costs ~6 us per kernel on this machine,
    more than a 32K-element relu takes serially; a transformer has ~20 such kernels. With both spaces the search
    measures both kinds of program and keeps the faster.
    """
    if target.kind.name != "llvm":
        return "post-order-apply"
    spaces = [ms.space_generator.PostOrderApply(sch_rules=schedule_rules(target, parallel=p), postprocs="from-target",
                                                mutator_probs="from-target") for p in (True, False)]
    return ms.space_generator.SpaceGeneratorUnion(spaces)


def alloc_valid_arguments(device, args_info, alloc_repeat: int) -> list:
    """The runner's inputs: random floats as TVM makes them, but zeros for integer tensors. Integer inputs are
    indices (take, gather); random ones read out of bounds and crash the runner, leaving the task untuned."""
    fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure")
    repeated = []
    for _ in range(alloc_repeat):
        args = []
        for _kind, dtype, shape in args_info:
            arg = tvm.runtime.empty(shape=shape, dtype=dtype, device=device)
            if "int" in str(dtype):
                arg.copyfrom(np.zeros([int(s) for s in shape], dtype=str(dtype)))
            else:
                fill(arg)
            args.append(arg)
        repeated.append(args)
    return repeated


def fast_build(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default_build without `import tvm.s_tir.tensor_intrin` (16-18 s per fresh worker here)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


@derived_object
class ProgressCallback(ms.measure_callback.PyMeasureCallback):
    """Reports how many candidates each measured batch held."""

    def __init__(self, report: Callable[[int], None]):
        self.report = report

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        self.report(len(measure_candidates))


def count_records(work_dir: Path) -> int:
    path = work_dir / "database_tuning_record.json"
    return sum(1 for _ in path.open()) if path.exists() else 0


def extract_tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list:
    return ms.relax_integration.extract_tasks(mod, target)


MIN_SHARE = 0.02  # `tune`: tasks under this share of the model's time (default schedules measured)...
MIN_SECONDS = 10e-6  # ...and under this time (x their weight) get...
SMALL_TRIALS = 6  # ...this many trials each, their default included; the rest of the budget goes to the others


def worth_searching(seconds: dict[str, float], min_share: float = MIN_SHARE,
                    min_seconds: float = MIN_SECONDS) -> set[str]:
    """The tasks (name -> default schedule's time x weight) that `tune` searches: those that take at least
    `min_share` of the total or at least `min_seconds`. A share alone misjudges a model whose defaults include a
    few far-off ones: MobileNet-V2's two ~1 ms defaults made 2% of its total 79 us, and its classifier and six
    convolution tasks of 44-65 us each were left out; in one inference, four of its six slowest kernels were
    among them (bench/results/e2e/earlier_runs/0506_*)."""
    total = sum(seconds.values())
    return {name for name, s in seconds.items() if s >= min_share * total or s >= min_seconds}


def tune(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path, num_trials: int,
         cost_model: str | object = "xgb", seed: int = 0,
         on_batch: Callable[[int], None] | None = None, population: int | None = None,
         defaults_dir: Path | None = None, min_share: float = MIN_SHARE, min_seconds: float = MIN_SECONDS,
         small_trials: int = SMALL_TRIALS) -> int:
    """Tune the tasks of the lowered `mod` with MetaSchedule; records go to `work_dir`'s JSON database.

    With `defaults_dir` (default schedules, `default_schedules`), each task's default program is measured first
    (one trial per task, `measure_defaults`), and only the tasks that take at least `min_share` of the model's
    time that way, or `min_seconds`, are searched with the budget (`worth_searching`): the others first get up
    to `small_trials` trials each (their
    default and a few programs of the search, in at most a quarter of the remaining budget: a pooling or a mean
    may run faster serial, or vectorized) and keep the best. MetaSchedule's scheduler would otherwise spend a
    warm-up batch of the same size on every task, however small (the demo student has six: a reshape, the
    classifier, two poolings, a mean, the 1-channel convolution). The tasks searched are written to
    `work_dir`/searched.json.
    Resumable: trials already in the database count towards `num_trials`, and the search starts from them.
    `population`: the evolutionary search's population per round (TVM's default, 2,048, when None); the search
    costs about proportionally to it. Returns the number of trials run by this call.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    start = count_records(work_dir)
    tasks = extract_tasks(mod, target)
    if num_trials - start <= 0 or not tasks:
        return 0
    if defaults_dir is not None:
        seconds = measure_defaults(mod, target, defaults_dir, work_dir, budget=num_trials - start)
        if on_batch is not None:
            on_batch(count_records(work_dir) - start)
        chosen = worth_searching({t.task_name: seconds.get(t.task_name, 0.0) * int(t.weight) for t in tasks},
                                 min_share, min_seconds)
        big = [t for t in tasks if t.task_name not in seconds or t.task_name in chosen]
        small = [t for t in tasks if t not in big]
        (work_dir / "searched.json").write_text(json.dumps(  # which tasks the search got, and why
            {"searched": [t.task_name for t in big], "min_share": min_share, "min_seconds": min_seconds,
             "small_trials": small_trials, "seconds_before_search": seconds}))
        # at most a quarter of what is left, so that a small budget still goes mostly to the tasks that matter
        _tune_small(small, target, work_dir, small_trials, (num_trials - count_records(work_dir)) // 4, cost_model,
                    seed, [ProgressCallback(on_batch)] if on_batch is not None else [])
        tasks = big
    remaining = num_trials - count_records(work_dir)
    if remaining <= 0 or not tasks:
        return count_records(work_dir) - start
    # The gradient scheduler warms up every task with one batch, then gives batches to the tasks that gain most.
    # Batches of trials/(2 tasks) leave half the budget to that second phase, where the cost model has learned
    # from the first; a task that still gets nothing runs its default schedule.
    per_iter = max(1, min(64, remaining // (2 * len(tasks))))
    strategy = "evolutionary" if population is None else ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 4))
    # MetaSchedule starts a batch whenever fewer than max_trials_global trials ran: stop one batch early so
    # that a budget is never exceeded
    _search(tasks, target, work_dir, strategy, max(1, remaining - per_iter + 1), per_iter, cost_model, seed,
            [ProgressCallback(on_batch)] if on_batch is not None else [])
    return count_records(work_dir) - start


def _search(tasks: list, target: tvm.target.Target, work_dir: Path, strategy, max_trials: int, per_iter: int,
            cost_model, seed: int, callbacks: list) -> None:
    """One MetaSchedule tuning run over `tasks` in our design space, builder, runner and database."""
    quiet_ms_logging()
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, str(work_dir), space=space_generator(target), strategy=strategy, seed=seed)
    quiet_ms_logging()
    ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=max_trials,
                  num_trials_per_iter=per_iter, builder=local_builder(),
                  runner=make_runner(None, ms.runner.EvaluatorConfig()), database=JSONFiles(work_dir),
                  cost_model=cost_model, measure_callbacks=measure_callbacks(callbacks))



def _tune_small(tasks: list, target: tvm.target.Target, work_dir: Path, small_trials: int, budget: int,
                cost_model, seed: int, callbacks: list) -> None:
    """Bring each of `tasks` to `small_trials` records in `work_dir` (at most `budget` new trials in all): one
    batch each, the same size for all, so that MetaSchedule's warm-up round is all they get."""
    db = JSONFiles(work_dir)
    counts = {t.task_name: len(db.get_top_k(db.commit_workload(t.dispatched[0]), small_trials)) for t in tasks}
    todo = [t for t in tasks if counts[t.task_name] < small_trials]
    per_task = min([small_trials - counts[t.task_name] for t in todo] + [budget // max(1, len(todo))])
    if not todo or per_task <= 0:
        return
    strategy = ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=16)  # small spaces
    _search(todo, target, work_dir, strategy, per_task * len(todo), per_task, cost_model, seed, callbacks)


def measure_defaults(mod: tvm.IRModule, target: tvm.target.Target, defaults_dir: Path, work_dir: Path,
                     budget: int | None = None) -> dict[str, float]:
    """Build and time each task's default schedule (from `defaults_dir`) once, as the tuner measures, and add
    it to `work_dir`'s tuning database as a measured record, a trial like any other. Tasks that already have a
    measured record are not measured again. At most `budget` new trials. Returns each task's best seconds."""
    defaults, db = load_database(defaults_dir), JSONFiles(work_dir)
    seconds, todo = {}, []
    for task in extract_tasks(mod, target):
        if _has_record(db, task):
            if (best := _best_seconds(db, task)) is not None:
                seconds[task.task_name] = best
        elif _has_record(defaults, task) and (budget is None or len(todo) < budget):
            todo.append((task, defaults.get_top_k(defaults.commit_workload(task.dispatched[0]), 1)[0]))
    schedules = []
    for task, record in todo:
        sch = tvm.s_tir.Schedule(private_copy(task.dispatched[0]))
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        schedules.append(sch)
    built = local_builder().build(
        [ms.builder.BuilderInput(sch.mod, target) for sch in schedules])
    ok = [i for i, b in enumerate(built) if b.error_msg is None]
    device = "cpu" if target.kind.name == "llvm" else target.kind.name
    runs = make_runner(None, ms.runner.EvaluatorConfig()).run(
        [ms.runner.RunnerInput(built[i].artifact_path, device, todo[i][1].args_info) for i in ok])
    ran = dict(zip(ok, (f.result() for f in runs)))
    for i, ((task, record), sch) in enumerate(zip(todo, schedules)):
        secs = [1e10]  # MetaSchedule's mark of a failed trial
        if i in ran and ran[i].error_msg is None:
            secs = [float(t) for t in ran[i].run_secs]
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(task.dispatched[0]), secs, target, record.args_info))
        if max(secs) < 1e9:
            seconds[task.task_name] = float(np.mean(secs))
    return seconds


def _best_seconds(db, task) -> float | None:
    top = db.get_top_k(db.commit_workload(task.dispatched[0]), 1)
    secs = [float(s) for s in top[0].run_secs] if top else [1e10]
    return float(np.mean(secs)) if max(secs) < 1e9 else None


# ---- default schedules: zero measurements, picked by a cost model -------------------------------------------
UNMEASURED_SECS = 1.0  # run_secs of a default record: it was predicted, never measured


def _has_record(db, task) -> bool:
    return db.has_workload(task.dispatched[0]) and bool(
        db.get_top_k(db.commit_workload(task.dispatched[0]), 1))


def default_schedules(mod: tvm.IRModule, target: tvm.target.Target, out_dir: Path, cost_model,
                      tuned_dir: Path | None = None, seed: int = 0, population: int = 256,
                      on_task: Callable[[str], None] | None = None) -> int:
    """A schedule for every task without a measured record, chosen with no hardware measurement.

    The stock CPU pipeline leaves such tasks as naive serial loops (40-150x slower). Here MetaSchedule's own
    evolutionary search runs against `cost_model` alone: random programs of the design space evolve for a few
    generations toward higher predicted scores, and the best-scoring one is kept. With a cost model trained on
    measured programs (`pretrained_xgb`) this transfers what the dataset knows; with an untrained one it is a
    random program of the space, which still vectorizes and tiles. Records go to a JSON database in `out_dir`
    with run_secs = UNMEASURED_SECS; measured records, where they exist, take precedence (`compile_tuned`).
    Resumable: tasks that already have a default are skipped. Returns the number of new defaults.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    db = JSONFiles(out_dir)
    tuned = load_database(tuned_dir) if tuned_dir and count_records(tuned_dir) else None
    made = 0
    for task in extract_tasks(mod, target):
        if _has_record(db, task) or (tuned is not None and _has_record(tuned, task)):
            continue
        if on_task is not None:
            on_task(task.task_name)
        quiet_ms_logging()
        ctx = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator=space_generator(target),
                             search_strategy=ms.search_strategy.EvolutionarySearch(
                                 population_size=population, init_min_unmeasured=population),
                             task_name=task.task_name, rand_state=seed, num_threads=2,
                             logger=logging.getLogger(MS_LOGGER))
        ctx.pre_tuning(max_trials=8, num_trials_per_iter=8, design_spaces=ctx.generate_design_space(),
                       database=ms.database.MemoryDatabase(), cost_model=cost_model)
        candidates = ctx.generate_measure_candidates() or []
        ctx.post_tuning()
        if not candidates:
            continue
        scores = cost_model.predict(ctx, candidates)  # re-ranked: the search mixes in random picks
        best = next((c for c in (candidates[i] for i in np.argsort(-scores)) if replays(c.sch.trace, task.dispatched[0])), None)
        if best is None:
            continue
        db.commit_tuning_record(ms.database.TuningRecord(
            best.sch.trace, db.commit_workload(task.dispatched[0]), [UNMEASURED_SECS], target, best.args_info))
        made += 1
    return made


def private_copy(mod: tvm.IRModule) -> tvm.IRModule:
    """A copy of `mod` to schedule. In TVM 0.27 applying some traces (rfactor of a reduction, then compute-at)
    changes the module the Schedule was created from, in place: the next trace applied to that module no
    longer replays ("3 vs. 2" child blocks), and a task's workload would no longer be the task."""
    return tvm.ir.load_json(tvm.ir.save_json(mod))


def replays(trace, mod: tvm.IRModule) -> bool:
    """Whether the trace, written to JSON and read back, re-applies to its workload, as JSONDatabase does when
    it loads. A few rfactor traces of TVM 0.27 do not (GetChildBlocks finds another number of blocks), and a
    single such record makes the whole database unreadable, so none is ever committed."""
    from tvm.s_tir.schedule import Trace

    try:
        Trace.apply_json_to_schedule(trace.as_json(), tvm.s_tir.Schedule(private_copy(mod)))
        return True
    except Exception:  # noqa: BLE001 - TVM raises plain RuntimeErrors here
        return False


def load_database(work_dir: Path):
    """A MetaSchedule JSON database (database_workload.json, database_tuning_record.json) read line by line
    into a MemoryDatabase. In TVM 0.27, parsing a record can change the workload it is parsed against: after
    some rfactor traces of a reduction, the next record of the same workload no longer replays (GetChildBlocks
    finds "3 vs. 2" blocks), though each line parses alone. JSONDatabase shares one workload among all its
    records and fails on such files, so each record here is parsed against its own copy (`private_copy`)."""

    db = ms.database.MemoryDatabase()
    wl_path, rec_path = work_dir / "database_workload.json", work_dir / "database_tuning_record.json"
    if not wl_path.exists():
        return db
    workloads = [db.commit_workload(ms.database.Workload.from_json(json.loads(line)).mod) for line in wl_path.open()]
    if rec_path.exists():
        for line in rec_path.open():
            index, record = json.loads(line)
            own = ms.database.Workload(private_copy(workloads[index].mod))
            parsed = ms.database.TuningRecord.from_json(record, own)
            db.commit_tuning_record(ms.database.TuningRecord(
                parsed.trace, workloads[index], parsed.run_secs, parsed.target, parsed.args_info))
    return db


@derived_object
class JSONFiles(ms.database.PyDatabase):
    """MetaSchedule's JSON database files, read with `load_database` and appended record by record, in the
    format JSONDatabase writes (so either can read what the other wrote)."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.mem = load_database(self.work_dir)
        self._hash = tvm_ffi.structural_hash
        self.index = {self._hash(w.mod): i for i, w in enumerate(
            ms.database.Workload.from_json(json.loads(line))
            for line in self._lines("database_workload.json"))}

    def _lines(self, name: str) -> list[str]:
        path = self.work_dir / name
        return path.read_text().splitlines() if path.exists() else []

    def _append(self, name: str, obj) -> None:

        with (self.work_dir / name).open("a") as f:
            f.write(json.dumps(plain_json(obj), separators=(",", ":")) + "\n")

    def has_workload(self, mod):
        return self.mem.has_workload(mod)

    def commit_workload(self, mod):
        workload = self.mem.commit_workload(mod)
        key = self._hash(workload.mod)
        if key not in self.index:
            self.index[key] = len(self.index)
            self._append("database_workload.json", workload.as_json())
        return workload

    def commit_tuning_record(self, record) -> None:
        self.mem.commit_tuning_record(record)
        as_json = tvm.get_global_func("s_tir.meta_schedule.TuningRecordAsJSON")  # Python's as_json fails on IndexMap
        self._append("database_tuning_record.json",
                     [self.index[self._hash(self.commit_workload(record.workload.mod).mod)], as_json(record)])

    def get_top_k(self, workload, top_k: int):
        return self.mem.get_top_k(workload, top_k)

    def get_all_tuning_records(self):
        return self.mem.get_all_tuning_records()

    def query_tuning_record(self, mod, target, workload_name):
        return self.mem.query_tuning_record(mod, target, workload_name)

    def query_schedule(self, mod, target, workload_name):
        return self.mem.query_schedule(mod, target, workload_name)

    def query_ir_module(self, mod, target, workload_name):
        return self.mem.query_ir_module(mod, target, workload_name)

    def __len__(self) -> int:
        return len(self.mem)


@derived_object
class AddReplayableToDatabase(ms.measure_callback.PyMeasureCallback):
    """MetaSchedule's AddToDatabase, skipping records whose trace does not replay (see `replays`)."""

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        db = task_scheduler.database_
        ctx = task_scheduler.tasks_[task_id].ctx
        workload = db.commit_workload(ctx.mod)
        for cand, built, ran in zip(measure_candidates, builder_results, runner_results):
            if not replays(cand.sch.trace, ctx.mod):
                continue
            ok = built.error_msg is None and ran.error_msg is None and ran.run_secs
            secs = [float(t) for t in ran.run_secs] if ok else [1e10]  # MetaSchedule's failure marker
            db.commit_tuning_record(ms.database.TuningRecord(cand.sch.trace, workload, secs, ctx.target,
                                                             cand.args_info))


def measure_callbacks(extra: list | None = None) -> list:
    """MetaSchedule's default callbacks with AddToDatabase replaced by AddReplayableToDatabase."""
    stock = [c for c in ms.measure_callback.MeasureCallback.create("default")
             if not isinstance(c, ms.measure_callback.AddToDatabase)]
    return [AddReplayableToDatabase()] + stock + list(extra or [])


def pretrained_xgb(groups: dict[str, tuple[list[np.ndarray], np.ndarray]]):
    """TVM's XGBModel trained on measured programs before tuning starts (the fair baseline for a pretrained
    cost model, and the picker of default schedules). `groups` maps a task hash to its programs' PerStoreFeature
    rows and mean seconds. Like XGBModel.update, it regresses each program's throughput relative to its
    task's best; the data stays in the model, so online updates retrain on it plus the new measurements."""
    from tvm.s_tir.meta_schedule.cost_model.xgb_model import FeatureGroup

    model = ms.cost_model.XGBModel(num_tuning_cores=2)
    for task_hash, (features, costs) in groups.items():
        model.data[task_hash] = FeatureGroup(group_hash=task_hash, features=[f.astype("float32") for f in features],
                                             costs=np.asarray(costs, dtype="float32"))
        model.data_size += len(costs)
    xs = [f for g in model.data.values() for f in g.features]
    ys = np.concatenate([g.min_cost / g.costs for g in model.data.values()])
    model._train(xs=xs, ys=ys)  # what update() runs after adding data, without a dummy TuneContext
    model.last_train_size = model.data_size
    return model


def untrained_xgb():
    return ms.cost_model.XGBModel(num_tuning_cores=2)


def load_xgb(path: Path):
    model = ms.cost_model.XGBModel(num_tuning_cores=2)
    model.load(str(path))
    model.last_train_size = model.data_size
    if model.booster is not None:  # trained: predict from the first candidate. XGBModel returns random scores
        model.num_warmup_samples = 0  # until it holds 100 programs, and a shipped picker holds none
    return model


def apply_schedules(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path | None,
                    defaults_dir: Path | None = None) -> tvm.IRModule:
    """`mod` with each task's best measured record in `work_dir` applied, else its default schedule from
    `defaults_dir`; tasks with neither stay unscheduled. Weights are packed for the layouts the schedules chose."""
    dbs = [load_database(d) for d in (work_dir, defaults_dir) if d is not None and count_records(d) > 0]
    if not dbs:
        return mod
    db = dbs[0] if len(dbs) == 1 else ms.database.OrderedUnionDatabase(*dbs)
    with target, tvm.transform.PassContext(opt_level=3), db:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        # weights whose tuned program wants another layout: transform the constants now, not per call
        return tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                         relax.transform.FoldConstant()])(mod)


def compile_tuned(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path | None, out: Path,
                  defaults_dir: Path | None = None, exec_mode: str = "compiled") -> Path:
    """Compile `mod` with its schedules (`apply_schedules`) and save a shared library.

    The Relax VM runs in "compiled" mode: the model's main function becomes native code that calls the kernels
    in turn, instead of bytecode the VM interprets instruction by instruction: a few microseconds less per
    inference for the demo student and the encoder, whose kernels take tens of microseconds each."""
    mod = apply_schedules(mod, target, work_dir, defaults_dir)
    executable = relax.build(mod, target, exec_mode=exec_mode)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.so")
    executable.export_library(str(tmp))
    tmp.replace(out)
    return out


def task_costs(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path | None) -> list[dict]:
    """Per task of `mod`: name, weight (occurrences), FLOPs and the best measured seconds in `work_dir`'s
    database (None when the task has no measured record)."""
    db = load_database(work_dir) if work_dir and count_records(work_dir) else None
    rows = []
    for task in extract_tasks(mod, target):
        best = _best_seconds(db, task) if db is not None and db.has_workload(task.dispatched[0]) else None
        rows.append({"task": task.task_name, "weight": int(task.weight), "seconds": best,
                     "flops": float(tvm.s_tir.analysis.estimate_tir_flops(task.dispatched[0])),
                     "contraction_flops": contraction_flops(task.dispatched[0])})
    return rows


def contraction_flops(mod: tvm.IRModule) -> int:
    """FLOPs of the contractions (matmul, convolution: reduction blocks that read two tensors) of an unscheduled
    task, 2 per multiply-add: what a GFLOP/s figure is compared with a matmul peak on. TVM's estimate_tir_flops
    also counts the fused epilogue (a fast-math GELU adds 30% to its matmul)."""
    sch = tvm.s_tir.Schedule(mod)
    total = 0
    for rv in sch.get_child_blocks(sch.get_sblock("root", func_name="main")):
        block = sch.get(rv)
        if len(block.reads) >= 2 and any(int(iv.iter_type) == 2 for iv in block.iter_vars):  # 2: CommReduce
            total += 2 * int(np.prod([int(iv.dom.extent) for iv in block.iter_vars]))
    return total


class CompiledModel:
    """A compiled Relax module loaded for inference on the CPU: `model(x)` maps a numpy array to a numpy array."""

    def __init__(self, lib_path: Path):
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
        self.main = self.vm["main"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.main(tvm.runtime.tensor(x))
        return (out if hasattr(out, "numpy") else out[0]).numpy()  # one output, possibly in a tuple

    def prepared(self, x: np.ndarray) -> Callable[[], object]:
        """A zero-argument call on an input already on the device: what the benchmark times."""
        arg = tvm.runtime.tensor(x)
        main = self.main
        return lambda: main(arg)


def tvm_version() -> str:
    return tvm.__version__


def local_gpu(target: tvm.target.Target) -> dict | None:
    """The GPU a CUDA target would be measured on here (name, compute capability, SMs), or None without one."""
    if target.kind.name != "cuda":
        return None
    dev = tvm.cuda(0)
    if not dev.exist:
        return None
    return {"gpu": dev.device_name, "compute_version": dev.compute_version,
            "multi_processors": dev.multi_processor_count}


# ---- tensor-program dataset (costmodel/collect.py drives these) --------------------------------------------
def network_tasks(onnx_path: Path, input_name: str, input_shape: tuple[int, ...],
                  target: tvm.target.Target, layout: str | None = None) -> list[dict]:
    """The tunable tasks of a network, lowered exactly as `tune` lowers it: name, weight, workload JSON, module."""
    mod = lower(import_onnx(onnx_path, input_name, input_shape), target, layout=layout)
    tasks = []
    for t in extract_tasks(mod, target):
        workload = ms.database.Workload(t.dispatched[0])
        args = [a.as_json() for a in ms.arg_info.ArgInfo.from_entry_func(t.dispatched[0])]
        tasks.append({"task_name": t.task_name, "weight": int(t.weight), "workload": plain_json(workload.as_json()),
                      "args_info": plain_json(args), "mod": t.dispatched[0]})
    return tasks


def workload_module(workload_json: list) -> tvm.IRModule:
    return ms.database.Workload.from_json(workload_json).mod


def structural_hash(workload_json: list) -> str:
    """The workload's structural hash as JSONDatabase writes it (its first field)."""
    return str(workload_json[0])


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


@derived_object
class RecordingCallback(ms.measure_callback.PyMeasureCallback):
    """Hands every measured candidate of a batch to `sink` as a plain dict: trace JSON, every repeat's seconds,
    and the builder's or runner's error message for failures (kept, not dropped)."""

    def __init__(self, sink: Callable[[list[dict]], None], with_features: bool = False):
        self.sink = sink
        self.with_features = with_features  # also the PerStoreFeature rows the cost model saw (for tests)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        features = [None] * len(measure_candidates)
        if self.with_features:
            ctx = task_scheduler.tasks_[task_id].ctx
            features = [f.numpy() for f in ms.feature_extractor.PerStoreFeature().extract_from(ctx, measure_candidates)]
        rows = []
        for cand, built, ran in zip(measure_candidates, builder_results, runner_results):
            error = built.error_msg or ran.error_msg
            if error is None and not replays(cand.sch.trace, task_scheduler.tasks_[task_id].ctx.mod):
                error = "trace does not replay on its workload (TVM 0.27 rfactor traces); not reusable offline"
            rows.append({"trace": trace_json(cand.sch.trace),
                         "run_secs": None if error else [float(s) for s in ran.run_secs],
                         "error": None if error is None else str(error)[:500]})
            if self.with_features:
                rows[-1]["features"] = features[len(rows) - 1]
        self.sink(rows)


@derived_object
class StopAtFirstEmptyBatch(ms.search_strategy.PySearchStrategy):
    """A search strategy that ends at the first batch its inner strategy comes back with empty.

    TVM's EvolutionarySearch gives up only after 5 empty batches (`num_empty_iters_before_early_stop`, read-only
    from Python), and each is a full population sampling and evolution. On a task whose whole design space has
    been measured (a reshape has 2 programs) that is all it does: on an H200 host, a minute of batches that found
    nothing new (bench/results/cuda_collect). For collection, ending early costs nothing: the source is then
    marked exhausted."""

    def __init__(self, inner):
        self.inner = inner

    def _initialize_with_tune_context(self, context) -> None:
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None) -> None:
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self):
        candidates = self.inner.generate_measure_candidates()
        return None if candidates is not None and len(candidates) == 0 else candidates

    def notify_runner_results(self, measure_candidates, results) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self):
        return StopAtFirstEmptyBatch(self.inner.clone())


def measure_programs(mod: tvm.IRModule, target: tvm.target.Target, strategy: str, num_trials: int,
                     per_iter: int, seed: int, sink: Callable[[list[dict]], None], work_dir: Path,
                     repeats: int = 5, min_repeat_ms: int = 15, with_features: bool = False,
                     rpc: str | None = None) -> None:
    """Sample and measure `num_trials` programs of one task; `strategy` is "random" (replay-trace: random
    samples of the design space) or "evolutionary" (MetaSchedule's search with XGBoost, so good programs
    are present). Builds run in parallel; measurements one at a time with `repeats` timed repeats each."""
    search = {"random": "replay-trace",
              "evolutionary": StopAtFirstEmptyBatch(ms.search_strategy.EvolutionarySearch())}[strategy]
    quiet_ms_logging()
    ctx = ms.TuneContext(mod=mod, target=target, space_generator=space_generator(target), search_strategy=search,
                         task_name="task", rand_state=seed, num_threads=search_threads(target),
                         logger=ms.logging.get_loggers_from_work_dir(str(work_dir), ["task"])[0]).clone()
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=repeats, min_repeat_ms=min_repeat_ms)
    quiet_ms_logging()
    ms.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=str(work_dir), max_trials_global=num_trials,
                  num_trials_per_iter=per_iter, database="memory",
                  builder=local_builder(),
                  runner=make_runner(rpc, evaluator),
                  cost_model="xgb" if strategy == "evolutionary" else "random",
                  measure_callbacks=measure_callbacks([RecordingCallback(sink, with_features)]))


def replay(workload_json: list, args_info_json: list, target_json: dict, traces: list[list], strict: bool = True):
    """Each stored trace replayed on its workload (postprocessing included): exactly the program that was measured.
    Returns (workload module, target, each program's args info, schedules). With strict=False a trace that does
    not re-apply (`replays`) gets None in both lists instead of raising."""
    from tvm.s_tir.schedule import Trace

    mod = workload_module(workload_json)
    schedules = []
    for trace in traces:
        sch = tvm.s_tir.Schedule(private_copy(mod))
        try:
            Trace.apply_json_to_schedule(trace, sch)
        except Exception:  # noqa: BLE001 - TVM raises plain InternalErrors here
            if strict:
                raise
            sch = None
        schedules.append(sch)
    # each program's own arguments: a program that packs its weights takes them in the packed layout
    args = [None if sch is None else ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
            for sch in schedules]
    return mod, tvm.target.Target(target_json), args, schedules


def per_store_features(workload_json: list, args_info_json: list, target_json: dict,
                       traces: list[list]) -> list[np.ndarray]:
    """MetaSchedule's PerStoreFeature rows (n_stores, 164) of each traced program, recomputed offline; equal to
    the rows the cost model saw during tuning (tested). A trace that does not re-apply gets no rows: some of
    the first records of the mean1 task do not replay from JSON, though they were measured."""
    mod, target, args, schedules = replay(workload_json, args_info_json, target_json, traces, strict=False)
    ok = [i for i, sch in enumerate(schedules) if sch is not None]
    candidates = [ms.MeasureCandidate(schedules[i], args[i]) for i in ok]
    ctx = ms.TuneContext(mod=mod, target=target, num_threads=int(target.attrs.get("num-cores", 1)))
    rows = [np.zeros((0, 164), np.float32)] * len(traces)
    for i, f in zip(ok, ms.feature_extractor.PerStoreFeature().extract_from(ctx, candidates) if ok else []):
        rows[i] = f.numpy()
    return rows


@derived_object
class TimedCostModel(ms.cost_model.PyCostModel):
    """A cost model (an object, or "xgb"/"random") with the seconds spent in its predict and update counted."""

    def __init__(self, inner):
        self.inner = {"xgb": untrained_xgb, "random": ms.cost_model.RandomModel}[inner]() \
            if isinstance(inner, str) else inner
        self.seconds = 0.0

    def _timed(self, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def load(self, path: str) -> None:
        self.inner.load(path)

    def save(self, path: str) -> None:
        self.inner.save(path)

    def update(self, context, candidates, results) -> None:
        self._timed(self.inner.update, context, candidates, results)

    def predict(self, context, candidates) -> np.ndarray:
        return np.asarray(self._timed(self.inner.predict, context, candidates), dtype="float64")


def tuning_curve(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path) -> list[float | None]:
    """After each trial of `work_dir`'s database, in measurement order: the network's latency as MetaSchedule's
    task scheduler estimates it, the sum over tasks of occurrences x best seconds measured so far; None while
    some task has no successful measurement yet."""
    weight = {tvm_ffi.structural_hash(t.dispatched[0]): int(t.weight) for t in extract_tasks(mod, target)}
    wl_path, rec_path = work_dir / "database_workload.json", work_dir / "database_tuning_record.json"
    if not rec_path.exists():
        return []
    workload_weight = [weight.get(tvm_ffi.structural_hash(ms.database.Workload.from_json(json.loads(line)).mod))
                       for line in wl_path.open()]
    best: dict[int, float] = {}
    curve = []
    for line in rec_path.open():
        index, record = json.loads(line)  # record: [trace, run_secs, target, args_info]
        secs = [float(s) for s in (record[1] or [])]
        if secs and max(secs) < 1e9 and workload_weight[index] is not None:
            best[index] = min(best.get(index, float("inf")), float(np.mean(secs)))
        curve.append(sum(workload_weight[i] * s for i, s in best.items()) if len(best) == len(weight) else None)
    return curve


def time_predict(workload_json: list, args_info_json: list, target_json: dict, traces: list[list],
                 cost_models: dict, repeats: int = 3) -> dict[str, float]:
    """Median seconds of each cost model's `predict(context, candidates)` on these programs, called as the
    evolutionary search calls it: on scheduled candidates, features (per-store rows, trace JSON) extracted inside."""
    mod, target, args, schedules = replay(workload_json, args_info_json, target_json, traces)
    candidates = [ms.MeasureCandidate(sch, a) for sch, a in zip(schedules, args)]
    ctx = ms.TuneContext(mod=mod, target=target, num_threads=int(target.attrs.get("num-cores", 1)))
    out = {}
    for name, model in cost_models.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(ctx, candidates)
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    return out


def remeasure(workload_json: list, args_info_json: list, target_json: dict, traces: list[list],
              repeats: int = 5, min_repeat_ms: int = 15) -> list[list[float] | None]:
    """Build and time programs again, exactly as the collector did (to measure how repeatable the data is).
    Returns every repeat's seconds per program, or None where building or running failed."""
    _, target, args, schedules = replay(workload_json, args_info_json, target_json, traces)
    inputs = [ms.builder.BuilderInput(sch.mod, target) for sch in schedules]
    built = local_builder().build(inputs)
    runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=ms.runner.EvaluatorConfig(
        number=1, repeat=repeats, min_repeat_ms=min_repeat_ms), initializer=_ignore_sigint)
    futures = iter(runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", a)
                               for b, a in zip(built, args) if b.error_msg is None]))
    out = []
    for b in built:
        if b.error_msg is not None:
            out.append(None)
            continue
        r = next(futures).result()
        out.append(None if r.error_msg else [float(s) for s in r.run_secs])
    return out


@derived_object
class MambaCostModel(ms.cost_model.PyCostModel):
    """MetaSchedule's cost-model slot filled by costmodel.online.MambaScorer: this class only converts."""

    def __init__(self, scorer):
        self.scorer = scorer

    def load(self, path: str) -> None:
        self.scorer = type(self.scorer).load(path)

    def save(self, path: str) -> None:
        self.scorer.save(path)

    def update(self, context, candidates, results) -> None:
        seconds = [float(np.mean([float(s) for s in r.run_secs])) if r.error_msg is None and r.run_secs else None
                   for r in results]
        self.scorer.update(str(context.task_name), [trace_json(c.sch.trace) for c in candidates], seconds)

    def predict(self, context, candidates) -> np.ndarray:
        return self.scorer.predict([trace_json(c.sch.trace) for c in candidates]).astype("float64")
