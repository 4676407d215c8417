"""kdcompile's additions to MetaSchedule: the parallel-or-serial search space, valid integer inputs for the
runner, and default schedules for tasks that get no measured trial."""

import numpy as np
import pytest
import torch
from kdcompile.tvm_layer.budget import worth_searching
from kdcompile.tvm_layer.build import CompiledModel, apply_schedules, compile_tuned, contraction_flops, task_costs
from kdcompile.tvm_layer.cost_models import TraceRankerCostModel, untrained_xgb
from kdcompile.tvm_layer.defaults import UNMEASURED_SECS, default_schedules
from kdcompile.tvm_layer.lowering import Lowering, calls, extract_tasks, has_convolution, import_onnx, lower, pad_out_channels
from kdcompile.tvm_layer.measure import fast_build, quiet_ms_logging, runner
from kdcompile.tvm_layer.records import count_records, load_database, measure_callbacks, trace_replays
from kdcompile.tvm_layer.search import tune
from kdcompile.tvm_layer.space import space_generator
from kdcompile.tvm_layer.target import host_target

pytestmark = pytest.mark.slow


def _module(compute):
    import tvm
    from tvm import te

    return tvm.IRModule({"main": te.create_prim_func(compute(te))})


def _relu(te, shape=(1, 8, 16, 16)):
    a = te.placeholder(shape, name="A")
    return [a, te.compute(shape, lambda *i: te.max(a(*i), 0.0), name="B")]


def _tune(mod, work_dir, trials):
    from tvm.s_tir import meta_schedule as ms

    target = host_target(2)
    quiet_ms_logging()
    ctx = ms.TuneContext(mod=mod, target=target, space_generator=space_generator(target),
                         search_strategy="evolutionary", task_name="t", rand_state=0, num_threads=2,
                         logger=ms.logging.get_loggers_from_work_dir(str(work_dir), ["t"])[0]).clone()
    ms.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=str(work_dir), max_trials_global=trials,
                  num_trials_per_iter=trials, database="json",
                  builder=ms.builder.LocalBuilder(f_build=fast_build, timeout_sec=120),
                  runner=runner(ms.runner.EvaluatorConfig(number=10, repeat=3, min_repeat_ms=5)),
                  measure_callbacks=measure_callbacks())
    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    return db.get_top_k(db.commit_workload(mod), 100)


def test_the_search_measures_serial_programs_and_keeps_them_for_small_kernels(tmp_path):
    import tvm

    mod = _module(_relu)
    target = host_target(2)
    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=mod, target=target, space_generator=space_generator(target), task_name="relu",
                         num_threads=2)
    spaces = ctx.generate_design_space()
    parallel = ["meta_schedule.parallel" in str(s.trace) for s in spaces]
    assert sorted(parallel) == [False, True]  # TVM's space and its serial twin

    records = _tune(mod, tmp_path, trials=4)
    kinds = {"parallel(" in str(r.trace): min(float(s) for s in r.run_secs) for r in records}
    assert set(kinds) == {False, True}, "both kinds of program were measured"
    # 2K elements: waking the thread pool costs more than the whole serial loop
    assert kinds[False] < kinds[True]
    assert "parallel(" not in str(records[0].trace)  # the best record, which compile_tuned applies, is serial

    sch = tvm.s_tir.Schedule(mod)
    records[0].trace.apply_to_schedule(sch, remove_postproc=False)
    lib = tvm.compile(sch.mod, target)
    x = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype("float32")
    out = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), np.maximum(x, 0))


def test_integer_inputs_are_valid_indices_so_take_gets_measured(tmp_path):
    def take(te):
        table = te.placeholder((1000, 64), name="table")
        idx = te.placeholder((4096,), dtype="int64", name="idx")  # random int64 would read far out of bounds
        return [table, idx, te.compute((4096, 64), lambda i, j: table[idx[i], j], name="rows")]

    records = _tune(_module(take), tmp_path, trials=4)
    assert records and all(max(float(s) for s in r.run_secs) < 1.0 for r in records)  # 1e10 marks a failure


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("picker", ["random", "mamba", "xgb"])  # mamba, xgb: the shipped weights
def test_every_task_gets_a_default_schedule_without_any_measurement(tmp_path, picker):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from kdcompile.export import INPUT_NAME, ort_session, to_onnx
    from kdcompile import plugins

    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    to_onnx(Tiny().eval(), x, tmp_path / "tiny.onnx", 18)
    target = host_target(2)
    mod = lower(import_onnx(tmp_path / "tiny.onnx", INPUT_NAME, (1, 3, 16, 16)), target)
    tasks = extract_tasks(mod, target)

    model = plugins.make(plugins.PICKERS, picker)
    assert isinstance(model, TraceRankerCostModel) == (picker == "mamba")
    if picker == "xgb":  # the shipped booster, without the data: nothing to featurise on first use...
        assert model.booster is not None and model.data_size == 0
        sch = tvm.s_tir.Schedule(tasks[0].dispatched[0])  # ...yet it predicts (XGBModel guesses below 100 programs)
        candidate = ms.MeasureCandidate(sch, ms.arg_info.ArgInfo.from_entry_func(sch.mod))
        ctx = ms.TuneContext(mod=sch.mod, target=target, num_threads=2)
        scores = model.predict(ctx, [candidate, candidate])
        assert scores[0] == scores[1] == model.predict(ctx, [candidate])[0]
    made = default_schedules(mod, target, tmp_path / "defaults", model, population=32)
    assert made == len(tasks)
    assert default_schedules(mod, target, tmp_path / "defaults", model, population=32) == 0  # resumes
    db = ms.database.JSONDatabase(work_dir=str(tmp_path / "defaults"))  # loads: every trace replays
    for t in tasks:
        top = db.get_top_k(db.commit_workload(t.dispatched[0]), 1)
        assert top and [float(s) for s in top[0].run_secs] == [UNMEASURED_SECS]

    scheduled = apply_schedules(mod, target, None, tmp_path / "defaults")
    prim_funcs = {g.name_hint: f for g, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    unscheduled = [n for n, f in prim_funcs.items() if not (f.attrs and f.attrs.get("tirx.is_scheduled"))]
    assert prim_funcs and unscheduled == []

    expected = ort_session(tmp_path / "tiny.onnx").run(None, {INPUT_NAME: x.numpy()})[0]
    for mode in ("compiled", "bytecode"):  # the VM's main function as native code (the default) or interpreted
        lib = compile_tuned(mod, target, None, tmp_path / f"tiny-{mode}.so", defaults_dir=tmp_path / "defaults",
                               exec_mode=mode)
        np.testing.assert_allclose(CompiledModel(lib)(x.numpy()), expected, atol=1e-4)


class NeverAsked:
    """A picker that fails the test if any default is predicted rather than taken from the known programs
    (`kdcompile tune --known dataset`: a task whose exact workload was measured starts from the fastest)."""

    def predict(self, *_):
        raise AssertionError("a task with known programs was given a predicted default")


def test_a_task_with_known_programs_gets_the_fastest_that_replays_and_others_are_picked(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from kdcompile.export import INPUT_NAME, to_onnx
    from kdcompile.tvm_layer.cost_models import untrained_xgb
    from kdcompile.tvm_layer.defaults import default_schedules, workload_hash
    from kdcompile.tvm_layer.lowering import extract_tasks, import_onnx, lower
    from kdcompile.tvm_layer.plain import trace_json
    from kdcompile.tvm_layer.target import host_target

    torch.manual_seed(0)
    to_onnx(Tiny().eval(), torch.randn(1, 3, 16, 16), tmp_path / "tiny.onnx", 18)
    target = host_target(2)
    mod = lower(import_onnx(tmp_path / "tiny.onnx", INPUT_NAME, (1, 3, 16, 16)), target)
    tasks = extract_tasks(mod, target)
    assert len(tasks) >= 3
    # programs to know: a random pick of each task's space (what an untrained picker gives)
    default_schedules(mod, target, tmp_path / "picked", untrained_xgb(), population=16)
    picked = ms.database.JSONDatabase(work_dir=str(tmp_path / "picked"))

    def program(task):
        return trace_json(picked.get_top_k(picked.commit_workload(task.dispatched[0]), 1)[0].trace)

    hashes = {workload_hash(t.dispatched[0]): t for t in tasks}
    other = program(tasks[1])  # another task's program: it does not replay on the first task
    known = {workload_hash(tasks[0].dispatched[0]): [{"trace": other, "run_secs": [1e-6]},
                                                     {"trace": program(tasks[0]), "run_secs": [1e-3]}]}
    known |= {h: [{"trace": program(t), "run_secs": [1e-3]}] for h, t in hashes.items() if t is not tasks[0]}
    asked = []

    def lookup(task_hash):
        asked.append(task_hash)
        return known.get(task_hash, [])

    from_known: list[str] = []
    made = default_schedules(mod, target, tmp_path / "known", NeverAsked(), known=lookup, from_known=from_known)
    assert made == len(tasks) and sorted(from_known) == sorted(hashes) == sorted(asked)
    db = ms.database.JSONDatabase(work_dir=str(tmp_path / "known"))
    for t in tasks:  # each task's default is exactly the known program that replays (tasks[0]: its own, not `other`)
        top = db.get_top_k(db.commit_workload(t.dispatched[0]), 1)
        assert trace_json(top[0].trace) == program(t)

    # a task the lookup does not know is picked as before
    del known[workload_hash(tasks[2].dispatched[0])]
    from_known.clear()
    made = default_schedules(mod, target, tmp_path / "some", untrained_xgb(), population=16, known=lookup,
                             from_known=from_known)
    assert made == len(tasks) and workload_hash(tasks[2].dispatched[0]) not in from_known
    assert len(from_known) == len(tasks) - 1


class InvertedResidual(torch.nn.Module):
    """MobileNet-V2's block: 1x1 expand, 3x3 depthwise, 1x1 project, batch norms, ReLU6, residual."""

    def __init__(self, c=8, expand=4):
        super().__init__()
        h = c * expand
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(c, h, 1, bias=False), torch.nn.BatchNorm2d(h), torch.nn.ReLU6(),
            torch.nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), torch.nn.BatchNorm2d(h), torch.nn.ReLU6(),
            torch.nn.Conv2d(h, c, 1, bias=False), torch.nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.body(x)


def test_channels_last_lowering_keeps_relu6_fused_and_matches_onnxruntime(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from kdcompile.export import INPUT_NAME, ort_session, to_onnx

    torch.manual_seed(0)
    net = InvertedResidual().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that folding them is checked
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 2)
    x = torch.randn(1, 8, 12, 12)
    to_onnx(net, x, tmp_path / "block.onnx", 18)
    target = host_target(2)
    imported = import_onnx(tmp_path / "block.onnx", INPUT_NAME, (1, 8, 12, 12))
    assert has_convolution(imported)  # what makes `--layout auto` time both layouts
    nchw, nhwc = lower(imported, target), lower(imported, target, Lowering(layout="NHWC"))

    def names(mod):
        return sorted(t.task_name for t in extract_tasks(mod, target))

    convs = [t for t in extract_tasks(nhwc, target) if "conv2d" in t.task_name]
    assert len(convs) == 3 and sum("maximum" in t.task_name and "minimum" in t.task_name for t in convs) == 2
    for t in convs:  # every convolution reads channels-last activations: (1, 12, 12, channels)
        shape = [int(d) for d in ms.arg_info.ArgInfo.from_entry_func(t.dispatched[0])[0].shape]
        assert shape[:3] == [1, 12, 12] and shape[3] in (8, 32)
    transposes = [n for n in names(nhwc) if "transpose" in n]
    assert len(transposes) <= 2  # the input in, the output out: none around the convolutions
    assert len(names(nchw)) == len([n for n in names(nhwc) if "transpose" not in n])
    with pytest.raises(ValueError, match="NHWC"):
        lower(imported, target, Lowering(layout="NCHW16c"))

    expected = ort_session(tmp_path / "block.onnx").run(None, {INPUT_NAME: x.numpy()})[0]
    for mod, name in ((nchw, "nchw"), (nhwc, "nhwc")):
        default_schedules(mod, target, tmp_path / name, untrained_xgb(), population=16)
        lib = compile_tuned(mod, target, None, tmp_path / f"{name}.so", defaults_dir=tmp_path / name)
        np.testing.assert_allclose(CompiledModel(lib)(x.numpy()), expected, atol=1e-4)


class TwoWidths(torch.nn.Module):
    """The demo student's last block (conv-bn-relu to 124 channels on 7x7, then a mean) beside a 60-channel one."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Sequential(torch.nn.Conv2d(8, 124, 3, padding=1, bias=False), torch.nn.BatchNorm2d(124),
                                     torch.nn.ReLU())
        self.b = torch.nn.Conv2d(8, 60, 3, padding=1)

    def forward(self, x):
        return torch.cat([self.a(x).mean((2, 3)), self.b(x).mean((2, 3))], 1)


def test_output_channels_just_short_of_a_vector_multiple_are_padded_and_sliced_off(tmp_path):
    from kdcompile.export import INPUT_NAME, ort_session, to_onnx

    torch.manual_seed(0)
    net = TwoWidths().eval()
    with torch.no_grad():  # a non-zero bias after folding, so that where it is added is checked
        net.a[1].running_mean.uniform_(-1, 1), net.a[1].bias.uniform_(-1, 1)
    x = torch.randn(1, 8, 7, 7)
    to_onnx(net, x, tmp_path / "net.onnx", 18)
    target = host_target(2)
    imported = import_onnx(tmp_path / "net.onnx", INPUT_NAME, (1, 8, 7, 7))
    padded = pad_out_channels(imported)
    widths = sorted(int(c.args[1].ty.shape[0]) for c in calls(padded, "relax.nn.conv2d"))
    assert widths == [60, 128]  # 124 -> 128 adds 3% of the work; 60 -> 64 would add 7%, over MAX_PAD
    assert len(calls(padded, "relax.strided_slice")) == 1
    assert sorted(int(c.args[1].ty.shape[0]) for c in calls(pad_out_channels(imported, max_pad=0),
                                                                 "relax.nn.conv2d")) == [60, 124]  # no padding

    lowered = lower(imported, target)  # padding is on by default
    tasks = {t.task_name for t in extract_tasks(lowered, target)}
    assert any("conv2d" in n and "relu" in n for n in tasks), tasks  # slice, bias, ReLU fused into the conv
    assert tasks != {t.task_name for t in extract_tasks(lower(imported, target, Lowering(pad_channels=False)), target)}
    expected = ort_session(tmp_path / "net.onnx").run(None, {INPUT_NAME: x.numpy()})[0]
    lib = compile_tuned(lowered, target, None, tmp_path / "net.so")  # TVM's own (unscheduled) programs
    np.testing.assert_allclose(CompiledModel(lib)(x.numpy()), expected, atol=1e-4)
    # Scheduled programs too. Slicing after the bias add once made RewriteLayout give the padded bias the layout
    # `i % 124`, and channels 124..127 overwrote channels 0..3: 7 of 12 random programs wrong, caught here.
    for seed in range(4):
        defaults = tmp_path / f"random{seed}"
        default_schedules(lowered, target, defaults, untrained_xgb(), seed=seed, population=16)
        lib = compile_tuned(lowered, target, None, tmp_path / f"random{seed}.so", defaults_dir=defaults)
        np.testing.assert_allclose(CompiledModel(lib)(x.numpy()), expected, atol=1e-4, err_msg=f"seed {seed}")


class Transcendental(torch.nn.Module):
    """Every op fast math replaces: softmax, GELU (erf and tanh forms), sigmoid, SiLU, tanh, exp."""

    def forward(self, x):
        y = torch.softmax(x, -1) + torch.nn.functional.gelu(x) + torch.nn.functional.gelu(x, approximate="tanh")
        return y + torch.sigmoid(x) + torch.nn.functional.silu(x) + torch.tanh(x) + torch.exp(x / 4)


def test_fast_math_replaces_libm_calls_and_matches_onnxruntime(tmp_path):
    from kdcompile.export import INPUT_NAME, ort_session, to_onnx

    x = (torch.randn(2, 16, 48) * 4).clamp(-30, 30)  # the tails too: erf and tanh saturate, exp spans 1e-3..1e3
    to_onnx(Transcendental(), x, tmp_path / "t.onnx", 20)
    target = host_target(2)
    imported = import_onnx(tmp_path / "t.onnx", INPUT_NAME, tuple(x.shape))

    def libm_calls(mod):
        text = "\n".join(f.script() for f in mod.functions.values())
        return sum(text.count(f"T.{fn}(") for fn in ("exp", "erf", "tanh", "sigmoid"))

    fast, plain = lower(imported, target), lower(imported, target, Lowering(fast_math=False))
    assert libm_calls(plain) >= 5 and libm_calls(fast) == 0
    expected = ort_session(tmp_path / "t.onnx").run(None, {INPUT_NAME: x.numpy()})[0]
    lib = compile_tuned(fast, target, None, tmp_path / "fast.so")
    np.testing.assert_allclose(CompiledModel(lib)(x.numpy()), expected, rtol=2e-6, atol=2e-6)


def test_contraction_flops_count_multiply_adds_of_two_tensors_only():
    import tvm
    from tvm import te

    a, b = te.placeholder((8, 16), name="A"), te.placeholder((16, 4), name="B")
    k, j = te.reduce_axis((0, 16), name="k"), te.reduce_axis((0, 4), name="j")
    mm = te.compute((8, 4), lambda i, n: te.sum(a[i, k] * b[k, n], axis=k), name="matmul")
    epilogue = te.compute((8, 4), lambda i, n: te.exp(mm[i, n]) + 1.0, name="epilogue")
    row_max = te.compute((8,), lambda i: te.max(epilogue[i, j], axis=j), name="row_max")  # reads one tensor
    mod = tvm.IRModule({"main": te.create_prim_func([a, b, row_max])})
    assert contraction_flops(mod) == 2 * 8 * 16 * 4


def test_tasks_worth_searching_by_share_or_by_time():
    seconds = {"far_off_default": 4e-3, "conv": 100e-6, "classifier": 40e-6, "mean": 1e-6, "reshape": 0.1e-6}
    assert worth_searching(seconds, 0.02, float("inf")) == {"far_off_default", "conv"}  # 2% of 4.1 ms: 82 us
    assert worth_searching(seconds, 0.02, 10e-6) == {"far_off_default", "conv", "classifier"}
    assert worth_searching(seconds, 0.5, float("inf")) == {"far_off_default"}
    assert worth_searching(seconds, 1.0, 0.0) == set(seconds)  # every task takes at least no time
    # the demo student's measured defaults: its small tasks stay small under both rules
    student = {"conv4": 330e-6, "conv3": 97e-6, "conv2": 86e-6, "conv1": 60e-6, "pool": 5.9e-6, "conv0": 5.2e-6,
               "mean": 0.7e-6, "classifier": 0.1e-6}
    assert worth_searching(student) == {"conv4", "conv3", "conv2", "conv1"}


def test_tune_times_every_default_first_and_searches_only_tasks_that_matter(tmp_path):
    import json

    from kdcompile.export import INPUT_NAME, to_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 2)).eval()  # 67 MFLOP, then 0.3 MFLOP
    x = torch.randn(128, 512)
    to_onnx(net, x, tmp_path / "two.onnx", 18)
    target = host_target(2)
    imported = import_onnx(tmp_path / "two.onnx", INPUT_NAME, (128, 512))
    assert not has_convolution(imported)  # `--layout auto` leaves it as exported
    mod = lower(imported, target)
    names = sorted(t.task_name for t in extract_tasks(mod, target))
    assert len(names) == 2
    default_schedules(mod, target, tmp_path / "defaults", untrained_xgb(), population=16)
    # the untrained picker's defaults are random programs, so which task is slower is not known in advance; with
    # two tasks and min_share 0.5, exactly the one that takes most of the time is searched; the other gets
    # small_trials trials, its default included
    tune(mod, target, tmp_path / "work", 10, population=32, defaults_dir=tmp_path / "defaults", min_share=0.5,
            min_seconds=float("inf"), small_trials=3)
    plan = json.loads((tmp_path / "work" / "searched.json").read_text())
    assert sorted(plan["seconds_before_search"]) == names  # both defaults were timed
    slowest = max(plan["seconds_before_search"], key=plan["seconds_before_search"].get)
    assert plan["searched"] == [slowest]
    db = load_database(tmp_path / "work")
    trials = {t.task_name: len(db.get_top_k(db.commit_workload(t.dispatched[0]), 100))
              for t in extract_tasks(mod, target)}
    small = next(n for n in names if n != slowest)
    assert trials[small] == 3 and trials[slowest] > 3  # the rest of the budget went to the searched task
    costs = {c["task"]: c for c in task_costs(mod, target, tmp_path / "work")}
    assert all(c["seconds"] for c in costs.values())  # every task has a measured program
    assert count_records(tmp_path / "work") <= 10  # the two default timings count against the budget
    lib = compile_tuned(mod, target, tmp_path / "work", tmp_path / "two.so", defaults_dir=tmp_path / "defaults")
    with torch.no_grad():
        np.testing.assert_allclose(CompiledModel(lib)(x.numpy()), net(x).numpy(), atol=1e-4)


def test_database_loads_records_that_change_their_workload_when_parsed():
    """Two measured rfactor programs of a `mean` task, from the demo's tuning run: in TVM 0.27 the second no longer
    replays once the first was parsed against the same workload object, which made that tuning database
    unreadable ("3 vs. 2" child blocks). Both must load, and both must schedule their workload."""
    from pathlib import Path

    import tvm
    import tvm_ffi

    db = load_database(Path(__file__).parent / "data" / "mean_rfactor_db")
    records = db.get_all_tuning_records()
    assert len(records) == 2 and all(max(float(s) for s in r.run_secs) < 1e9 for r in records)
    assert len(db.get_top_k(db.commit_workload(records[0].workload.mod), 5)) == 2
    shared = records[0].workload.mod  # one module, both traces in turn: each replay works on its own copy
    assert all(trace_replays(r.trace, shared) for r in records)
    for r in records:  # each on its own copy of the workload, as the loader parses them
        workload = tvm.ir.load_json(tvm.ir.save_json(r.workload.mod))
        sch = tvm.s_tir.Schedule(workload)
        r.trace.apply_to_schedule(sch, remove_postproc=False)
        assert not tvm_ffi.structural_equal(sch.mod, r.workload.mod)  # the program is scheduled, not as given


def test_pooling_is_scheduled_by_the_default_rules_without_a_warning(capfd):
    """TOPI's pooling asks for a custom rule TVM ships for no CPU: kdcompile registers the step TVM takes then
    (drop the mark, use the default rules), so the space is TVM's own and stderr stays clean."""
    import tvm
    from tvm import te, topi
    from tvm.s_tir import meta_schedule as ms

    from kdcompile.tvm_layer.plain import trace_json

    x = te.placeholder((1, 8, 16, 16), name="x")
    mod = tvm.IRModule({"main": te.create_prim_func([x, topi.nn.pool2d(x, (2, 2), (2, 2), (1, 1), (0, 0, 0, 0),
                                                                          "max")])})
    ctx = ms.TuneContext(mod=mod, target=host_target(2), space_generator=space_generator(host_target(2)),
                         task_name="pool", rand_state=0)
    traces = [trace_json(s.trace)[0] for s in ctx.generate_design_space()]  # each trace's instructions
    assert "Unknown schedule rule" not in capfd.readouterr().err
    # the mark dropped, as TVM does
    assert all(any(inst[0] == "Unannotate" and inst[2] == ["schedule_rule"] for inst in t) for t in traces)
    assert any(inst[0] == "Split" for t in traces for inst in t)  # and the default rules tiled the pooling
