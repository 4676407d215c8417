"""Stage 3, tune: ONNX -> TVM Relax -> MetaSchedule tuning for the host CPU -> a compiled library, checked against
onnxruntime. Each model's tuning folder (tune/<model>/) holds its database and its state (state.json: the layout
it is tuned in, written before the first trial), so an interrupted run resumes exactly where it was.

It takes a run folder written by export, or an ONNX file you already have, for which a run folder is made
(kdcompile/onnx_input.py): the compiler half alone, without distillation.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kdcompile import plugins
from kdcompile.errors import KdError
from kdcompile.export import INPUT_NAME, ort_session, parity_inputs
from kdcompile.files import file_sha256, write_json
from kdcompile.machine import cores
from kdcompile.inputs import InputSpec
from kdcompile.onnx_input import run_folder
from kdcompile.progress import console, progress
from kdcompile.rundir import ROLES, RunDir
from kdcompile.timing import versus

LAYOUTS = {"nchw": None, "nhwc": "NHWC"}  # --layout -> tvm_layer.lowering.Lowering's layout
AUTO = "auto"  # --layout auto: time each layout's zero-trial build, tune the faster (choose_layout)
LAYOUT_ROUNDS = 7  # alternating timing rounds of that choice
STATE = "state.json"  # in each model's tuning folder
KNOWN = "known.json"  # in each model's defaults folder: the workload hashes whose default is a known program


@dataclass
class TuneConfig:
    trials: int = 200  # MetaSchedule trials per model (measured candidates), resumable
    cost_model: str = "xgb"  # a name in the cost-model slot (kdcompile.plugins)
    models: tuple[str, ...] = ()  # which of the run's models to tune and compile; (): all it holds
    tolerance: float = 1e-4  # max abs error allowed between TVM and onnxruntime
    parity_samples: int = 32
    seed: int = 0
    threads: int = 0  # cores to compile for and time with; 0: the cores this process may use
    # how tasks without a measured trial get a schedule: a name in the picker slot. The Mamba ranker's picks
    # beat XGBoost's on 3 of 4 networks, 1.5x in the geometric mean (bench/results/costmodel/pickers.json)
    defaults: str = "mamba"
    # where a task's default comes from when its exact workload was measured before: a name in the known-programs
    # slot. "dataset": the shipped dataset's fastest program of that workload, timed again here as the first trial
    known: str = "dataset"
    layout: str = AUTO  # convolutions' activation layout: "nchw" (as exported), "nhwc" or auto
    target: str | None = None  # a CPU target (tvm_layer.target.parse_target); None: this CPU by name
    rpc: str | None = None  # "tracker_host:port:key": time the candidates on the RPC servers under that key
    population: int | None = None  # evolutionary search population per round; None: TVM's default, 512


def check_config(cfg: TuneConfig) -> None:
    """Every choice of the config exists, before any work starts."""
    if cfg.cost_model not in plugins.names(plugins.COST_MODELS):
        raise KdError(f"Unknown cost model '{cfg.cost_model}': choose one of "
                      f"{', '.join(plugins.names(plugins.COST_MODELS))}.")
    if cfg.trials < 0:
        raise KdError("--trials must be 0 or more.")
    if cfg.population is not None and cfg.population < 8:
        raise KdError(f"--population must be at least 8 (TVM's default is 512), not {cfg.population}.")
    if cfg.defaults not in plugins.names(plugins.PICKERS):
        raise KdError(f"Unknown default-schedule picker '{cfg.defaults}': choose one of "
                      f"{', '.join(plugins.names(plugins.PICKERS))}.")
    if cfg.known not in plugins.names(plugins.KNOWN):
        raise KdError(f"Unknown source of known programs '{cfg.known}': choose one of "
                      f"{', '.join(plugins.names(plugins.KNOWN))}.")
    if cfg.layout not in (*LAYOUTS, AUTO):
        raise KdError(f"Unknown layout '{cfg.layout}': choose one of {', '.join((*LAYOUTS, AUTO))}.")
    if cfg.rpc:
        from kdcompile.machine import parse_rpc

        parse_rpc(cfg.rpc)
    unknown = set(cfg.models) - set(ROLES)
    if unknown:
        raise KdError(f"Unknown model(s) {sorted(unknown)}: choose from {', '.join(ROLES)}.")


class _Picker:
    """The default-schedule picker, built on first need (loading or training it takes seconds to a minute)."""

    def __init__(self, name: str, target_kind: str, known: str = "none"):
        # both learned pickers know this CPU only: other targets get random programs
        self.name = name if target_kind == "llvm" else "random"
        self.known_name = known
        self.model = None
        self._known = ()

    def get(self):
        if self.model is None:
            self.model = plugins.make(plugins.PICKERS, self.name)
        return self.model

    def known(self):
        """The lookup of known programs (task hash -> measured records), or None."""
        if self._known == ():
            self._known = plugins.make(plugins.KNOWN, self.known_name)
        return self._known


def tune(run_dir, cfg: TuneConfig = TuneConfig(), *, out: Path | None = None,
         input_shape: tuple[int, ...] | None = None) -> dict:
    """Tune and compile the run's ONNX models for this CPU. Returns tune.json's content.

    `run_dir` is a run folder, or an ONNX file: then the run folder is `out` (default runs/<file name>), made on
    the first call and resumed on the next, and `input_shape` fills the dimensions the graph leaves open."""
    check_config(cfg)
    run = RunDir(run_folder(run_dir, out, input_shape))
    exported = run.read_json("export.json", needed_by="export")
    spec, input_name = InputSpec.of(exported), exported.get("input_name", INPUT_NAME)
    shape = spec.shape
    names = run.chosen(cfg.models)
    threads = cfg.threads or cores()
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))  # read once, when the TVM runtime starts its pool
    from kdcompile.tvm_layer import build, lowering, records, search, target as targets  # tvm is imported only here

    target = targets.parse_target(cfg.target, threads)
    if target.kind.name != "llvm":
        raise KdError(f"tune builds for a CPU it can run the result on (parity, bench); {cfg.target!r} is "
                      f"{target.kind.name}. Collect GPU programs with `kdcompile costmodel collect --target`.")
    if cfg.rpc:
        from kdcompile.tvm_layer.measure import rpc_servers

        rpc_servers(cfg.rpc)  # a tracker that does not answer is one sentence now, not a hung search later
    inputs = _parity_inputs(run, exported, spec, cfg)
    previous = run.read_json("tune.json") if (run.root / "tune.json").exists() else {}
    result = {"target": targets.target_dict(target), "tvm_version": targets.tvm_version(),
              "config": asdict(cfg) | {"threads": threads, "models": list(names)}}
    for name in run.models():  # what an earlier run tuned stays, for models not tuned now
        if name in previous:
            result[name] = previous[name]
    picker = _Picker(cfg.defaults, target.kind.name, cfg.known)
    for name in names:
        onnx_path = run.require(run.onnx(name), "export")
        work_dir = run.tune_dir(name)
        defaults_dir = run.root / f"{name}_defaults"  # default schedules of every task, whatever its layout
        done_before = records.count_records(work_dir)
        state = _state(work_dir, previous.get(name, {}), done_before)
        if done_before and previous.get("target") not in (None, result["target"]):
            raise KdError(f"{name} was tuned for another target in {run.root} ({json.dumps(previous['target'])}): "
                          "its records do not apply to this one. Use the same --target, or another run folder.")
        layout, layout_ms = cfg.layout, state.get("layout_ms")
        if done_before and layout not in (state["layout"], AUTO):
            raise KdError(f"{name} was tuned with --layout {state['layout']} in {run.root}: its records do not apply "
                          f"to --layout {layout}. Use --layout {state['layout']}, or another run folder.")
        try:
            imported = lowering.import_onnx(onnx_path, input_name, shape)
        except Exception as e:  # noqa: BLE001 - an operator the importer lacks, in an ONNX file of any origin
            raise KdError(f"TVM cannot import {onnx_path}: {type(e).__name__}: "
                          f"{(str(e).strip().splitlines() or [''])[0][:300]}") from e
        if layout == AUTO:  # a resumed search keeps its layout
            layout, layout_ms = (state["layout"], layout_ms) if done_before else \
                choose_layout(imported, spec, target, defaults_dir, cfg, picker, run.root / f"{name}_layouts")
        write_json(work_dir / STATE, {"layout": layout, "layout_ms": layout_ms,
                                      "tuning_s": state.get("tuning_s", 0.0) if done_before else 0.0})
        mod = lowering.lower(imported, target, lowering.Lowering(layout=LAYOUTS[layout]))
        n_tasks = len(lowering.extract_tasks(mod, target))
        # every task's default first: the search starts by timing them, and leaves the negligible tasks alone
        _defaults(mod, target, None, defaults_dir, cfg, picker)
        start = time.perf_counter()
        with progress() as bar:
            task = bar.add_task(f"tune {name}", total=max(cfg.trials, done_before), completed=done_before,
                                info=f"{n_tasks} tasks")
            dropped: list[int] = []
            ran = search.tune(mod, target, work_dir, cfg.trials, plugins.make(plugins.COST_MODELS, cfg.cost_model),
                              cfg.seed, on_batch=lambda n, task=task: bar.update(task, advance=n),
                              defaults_dir=defaults_dir, dropped=dropped, rpc=cfg.rpc, population=cfg.population)
        if sum(dropped):
            console.print(f"[yellow]{name}: {sum(dropped)} measured programs were not kept: their traces do not "
                          "replay from the database (a TVM 0.27 quirk of some rfactor schedules).[/]")
        tuning_s = time.perf_counter() - start + (state.get("tuning_s", 0.0) if done_before else 0.0)
        write_json(work_dir / STATE, {"layout": layout, "layout_ms": layout_ms, "tuning_s": tuning_s})
        # the tuned records are kept whatever the budget: --trials 0 on a tuned run builds what was tuned
        tuned_dir = work_dir if records.count_records(work_dir) else None
        searched = work_dir / search.SEARCHED
        n_defaults = n_tasks - len(json.loads(searched.read_text())["searched"]) \
            if tuned_dir and searched.exists() else n_tasks  # tasks that run a default schedule
        curve = records.tuning_curve(lowering.extract_tasks(mod, target), work_dir)  # for report.png
        lib = build.compile_tuned(mod, target, tuned_dir, run.tvm_lib(name), defaults_dir=defaults_dir)
        err = tvm_parity(build.CompiledModel(lib), ort_session(onnx_path, threads), inputs)
        result[name] = {"lib": lib.name, "tasks": n_tasks,
                        "trials": records.count_records(work_dir), "trials_this_run": ran,
                        "tuning_s": tuning_s, "dropped_this_run": sum(dropped), "tvm_max_abs": err,
                        "tolerance": cfg.tolerance,
                        "default_schedules": n_defaults, "layout": layout, "layout_ms": layout_ms,
                        "known_defaults": known_defaults(mod, target, defaults_dir),
                        "onnx_sha256": file_sha256(onnx_path), "lib_sha256": file_sha256(lib),
                        "curve_ms": [None if v is None else v * 1e3 for v in curve]}
        console.print(f"{name}: {n_tasks} tasks, {layout}, {result[name]['trials']} trials "
                      f"({ran} now, {tuning_s:.0f} s) -> {lib} (max abs error vs onnxruntime {err:.2e})")
        if not err <= cfg.tolerance:
            result[name]["lib_sha256"] = None  # this build vouches for nothing: bench will not time it
            run.write_json("tune.json", result)
            raise KdError(f"The tuned {name} differs from onnxruntime by {err:.3g} (tolerance {cfg.tolerance}).")
        run.write_json("tune.json", result)  # after each model: an interrupted run keeps what is done
    return result


def _parity_inputs(run: RunDir, exported: dict, spec: InputSpec, cfg: TuneConfig) -> list[np.ndarray]:
    """Whole model inputs to compare TVM with onnxruntime on: the held-out data of a distilled run, one sample at a
    time; seeded random ones in a run made for an ONNX file, which has no data."""
    if "source" in exported:
        return spec.randoms(cfg.parity_samples, cfg.seed)
    return [np.ascontiguousarray(x[None]) for x in parity_inputs(run, cfg.parity_samples).numpy()]


def _state(work_dir: Path, previous: dict, done_before: int) -> dict:
    """A model's tuning state: its folder's state.json; a run folder from before it existed keeps the layout its
    tune.json recorded."""
    path = work_dir / STATE
    if path.exists():
        return json.loads(path.read_text())
    return {"layout": previous.get("layout", "nchw"), "layout_ms": previous.get("layout_ms"),
            "tuning_s": previous.get("tuning_s", 0.0)} if done_before else {"layout": "nchw"}


def _defaults(mod, target, tuned_dir: Path | None, out_dir: Path, cfg: TuneConfig, picker: _Picker) -> int:
    """Default schedules for the tasks that have no measured record; returns how many tasks use one."""
    from kdcompile.tvm_layer import build, defaults

    missing = [c["task"] for c in build.task_costs(mod, target, tuned_dir) if c["seconds"] is None]
    if not missing:
        return 0
    with progress() as bar:
        job = bar.add_task("default schedules", total=len(missing), info="")
        from_known: list[str] = []
        defaults.default_schedules(mod, target, out_dir, picker.get(), tuned_dir=tuned_dir, seed=cfg.seed,
                                   population=defaults.population_for(picker.name),
                                   on_task=lambda t: bar.update(job, advance=1, info=t), known=picker.known(),
                                   from_known=from_known)
    if from_known:  # which defaults were measured programs, for tune.json (`known_defaults`)
        known = out_dir / KNOWN
        write_json(known, sorted(set(from_known) | set(json.loads(known.read_text()) if known.exists() else [])))
    return len(missing)


def known_defaults(mod, target, defaults_dir: Path) -> int:
    """How many of `mod`'s tasks have a known program as their default (`_defaults`)."""
    from kdcompile.tvm_layer import defaults, lowering

    path = defaults_dir / KNOWN
    hashes = set(json.loads(path.read_text())) if path.exists() else set()
    return sum(defaults.workload_hash(t.dispatched[0]) in hashes for t in lowering.extract_tasks(mod, target))


def choose_layout(imported, spec: InputSpec, target, defaults_dir: Path, cfg: TuneConfig,
                  picker: _Picker, out_dir: Path) -> tuple[str, dict | None]:
    """`--layout auto`: build the imported model in each layout with default schedules (no trials), time the builds in
    alternating rounds and return the faster layout with each build's median milliseconds (None for a model
    without convolutions: the layout changes nothing, so it stays as exported). A zero-trial ranking is a proxy
    for the tuned one: they agree on MobileNet-V2 (1.92 vs 3.36 of onnxruntime zero-trial, 0.85 vs 1.64 tuned,
    bench/results/e2e/); where the layouts are within a few percent once tuned, it may pick either."""
    from kdcompile.timing import TimingConfig, in_rounds
    from kdcompile.tvm_layer import build, lowering

    if not lowering.has_convolution(imported):
        return "nchw", None
    out_dir.mkdir(parents=True, exist_ok=True)
    x = spec.random(cfg.seed)
    calls = {}
    for layout, code in LAYOUTS.items():
        mod = lowering.lower(imported, target, lowering.Lowering(layout=code))
        _defaults(mod, target, None, defaults_dir, cfg, picker)
        lib = build.compile_tuned(mod, target, None, out_dir / f"{layout}.so", defaults_dir=defaults_dir)
        calls[layout] = build.CompiledModel(lib).prepared(x)
    p50 = in_rounds(calls, TimingConfig(warmup_s=0.05, min_calls=20, min_time_s=0.05), LAYOUT_ROUNDS)
    choice = faster_layout(p50)
    ms = {layout: float(np.median(v)) for layout, v in p50.items()}
    console.print(f"layout: {choice} (zero-trial builds, median ms: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in ms.items()) + ")")
    return choice, ms


def faster_layout(p50: dict[str, list[float]]) -> str:
    """The layout with the lowest median time relative to the first layout within each round (`in_rounds`'
    figures, compared by `versus`' paired ratio): the machine's speed may drift between rounds (this VM has fast
    and slow phases), a ratio within one round compares like with like."""
    first = next(iter(p50))
    vs = versus(p50, first)
    return min(p50, key=lambda layout: 1.0 if layout == first else vs[layout]["paired"])


def tvm_parity(model, session, inputs: list[np.ndarray]) -> float:
    """Max abs difference between the compiled TVM model and onnxruntime over `inputs`, each a whole input of the
    model's one input."""
    name, worst = session.get_inputs()[0].name, 0.0
    for x in inputs:
        worst = max(worst, float(np.abs(model(x) - session.run(None, {name: x})[0]).max()))
    return worst
