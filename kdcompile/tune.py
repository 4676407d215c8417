"""Stage 3, tune: ONNX -> TVM Relax -> MetaSchedule tuning for the host CPU -> a compiled library, checked against
onnxruntime. The tuning database stays in the run folder; running the stage again resumes from it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kdcompile.errors import KdError
from kdcompile.export import INPUT_NAME, ort_session, parity_inputs
from kdcompile.progress import console, progress
from kdcompile.rundir import MODELS, RunDir

# The cost-model slot: a name maps to what MetaSchedule's `cost_model=` takes (a built-in name or a PyCostModel).
# Heavy implementations are imported only when chosen.
WEIGHTS = Path(__file__).resolve().parent.parent / "costmodel" / "weights"


def _mamba(file: str = "mamba_cpu.pt") -> object:
    """The Mamba ranker: pretrained weights when they ship (costmodel/weights/, written by
    bench/costmodel_offline.py), else learned online from scratch; fine-tuned online on the run's measurements."""
    from costmodel.online import MambaScorer
    from kdcompile.tvm_backend import MambaCostModel

    weights = WEIGHTS / file
    if not weights.exists():
        console.print(f"[yellow]No pretrained weights at {weights}: the Mamba cost model starts untrained.[/]")
        return MambaCostModel(MambaScorer())
    return MambaCostModel(MambaScorer.load(weights))


def default_picker(name: str, target_kind: str = "llvm"):
    """The cost model that picks default schedules (tasks without a measured trial), by name:
    "xgb" - TVM's XGBoost trained on the shipped dataset's training networks (costmodel/weights/xgb_cpu.tar,
    written by `kdcompile costmodel xgb-picker`; without it, built from the dataset on first use, then cached);
    "mamba" - the shipped Mamba ranker (costmodel/weights/, trained on the same networks);
    "random" - an untrained model: a random program of the design space, which still tiles and vectorizes.
    Zero-trial latency of each, on three models: bench/results/e2e/ (mamba narrowly best on the student, xgb on the
    encoder and MobileNet-V2).
    Both learned pickers know this CPU only: other targets, or a missing dataset or weights, get "random"."""
    from kdcompile import tvm_backend as tb

    if target_kind == "llvm" and name == "mamba":
        if (WEIGHTS / "mamba_cpu.pt").exists():
            return _mamba()
        console.print(f"[yellow]No Mamba weights in {WEIGHTS}: default schedules are random programs.[/]")
    if target_kind == "llvm" and name == "xgb":
        from costmodel.xgb_pretrain import DEFAULT_DATA, pretrained_xgb_path

        if (WEIGHTS / "xgb_cpu.tar").exists():
            return tb.load_xgb(WEIGHTS / "xgb_cpu.tar")
        if (DEFAULT_DATA / "networks.json").exists():
            return tb.load_xgb(pretrained_xgb_path(DEFAULT_DATA))
        console.print(f"[yellow]No dataset at {DEFAULT_DATA}: default schedules are random programs.[/]")
    return tb.untrained_xgb()


def _xgb_pretrained() -> object:
    """TVM's XGBoost holding the dataset's training split: every update retrains on it plus the run's new
    measurements. The full model file is built from the dataset on first use (slow: it featurises every program)."""
    from costmodel.xgb_pretrain import DEFAULT_DATA, pretrained_xgb_path
    from kdcompile import tvm_backend as tb

    return tb.load_xgb(pretrained_xgb_path(DEFAULT_DATA))


DEFAULT_PICKERS = ("xgb", "mamba", "random")
LAYOUTS = {"nchw": None, "nhwc": "NHWC"}  # --layout -> tvm_backend.lower's layout
AUTO = "auto"  # --layout auto: time each layout's zero-trial build, tune the faster (choose_layout)
LAYOUT_ROUNDS = 7  # alternating timing rounds of that choice

COST_MODELS: dict[str, Callable[[], object]] = {
    "xgb": lambda: "xgb",  # TVM's XGBoost on per-store features: the baseline to beat
    "xgb-pretrained": _xgb_pretrained,  # the same, trained first on the dataset: the fair baseline
    "random": lambda: "random",  # the control
    "mamba": _mamba,  # d=64 x 2 layers, pretrained on the dataset
    "mamba-small": lambda: _mamba("mamba_cpu_small.pt"),  # d=32 x 1 layer, distilled from "mamba"
}


@dataclass
class TuneConfig:
    trials: int = 200  # MetaSchedule trials per model (measured candidates), resumable
    cost_model: str = "xgb"
    models: tuple[str, ...] = MODELS  # which of the run's models to tune and compile
    tolerance: float = 1e-4  # max abs error allowed between TVM and onnxruntime
    parity_samples: int = 32
    seed: int = 0
    threads: int = 2
    defaults: str = "xgb"  # how tasks without a measured trial get a schedule: see default_picker
    layout: str = AUTO  # convolutions' activation layout: "nchw" (as exported), "nhwc" (tvm_backend.lower) or auto


def tune(run_dir, cfg: TuneConfig = TuneConfig()) -> dict:
    """Tune and compile the run's ONNX models for this CPU. Returns tune.json's content."""
    if cfg.cost_model not in COST_MODELS:
        raise KdError(f"Unknown cost model '{cfg.cost_model}': choose one of {', '.join(COST_MODELS)}.")
    if cfg.trials < 0:
        raise KdError("--trials must be 0 or more.")
    if cfg.defaults not in DEFAULT_PICKERS:
        raise KdError(f"Unknown default-schedule picker '{cfg.defaults}': choose one of {', '.join(DEFAULT_PICKERS)}.")
    if cfg.layout not in (*LAYOUTS, AUTO):
        raise KdError(f"Unknown layout '{cfg.layout}': choose one of {', '.join((*LAYOUTS, AUTO))}.")
    unknown = set(cfg.models) - set(MODELS)
    if unknown:
        raise KdError(f"Unknown model(s) {sorted(unknown)}: choose from {', '.join(MODELS)}.")
    run = RunDir(run_dir)
    shape = tuple(run.read_json("export.json", needed_by="export")["input_shape"])
    from kdcompile import tvm_backend as tb  # tvm is imported only here

    target = tb.host_target(cfg.threads)
    inputs = parity_inputs(run, cfg.parity_samples).numpy()
    previous = run.read_json("tune.json") if (run.root / "tune.json").exists() else {}
    result = {"target": tb.target_dict(target), "tvm_version": tb.tvm_version(), "config": asdict(cfg)}
    picker = []  # built on first need: training the xgb picker takes a minute
    for name in cfg.models:
        onnx_path = run.require(run.onnx(name), "export")
        work_dir = run.tune_dir(name)
        defaults_dir = run.root / f"{name}_defaults"  # default schedules of every task, whatever its layout
        done_before = tb.count_records(work_dir)
        tuned_as = previous.get(name, {}).get("layout", "nchw")
        layout, layout_ms = cfg.layout, previous.get(name, {}).get("layout_ms") if done_before else None
        if done_before and layout not in (tuned_as, AUTO):
            raise KdError(f"{name} was tuned with --layout {tuned_as} in {run.root}: its records do not apply to "
                          f"--layout {layout}. Use --layout {tuned_as}, or another run folder.")
        imported = tb.import_onnx(onnx_path, INPUT_NAME, shape)
        if layout == AUTO:  # a resumed search keeps its layout
            layout, layout_ms = (tuned_as, layout_ms) if done_before else \
                choose_layout(imported, shape, target, defaults_dir, cfg, picker, run.root / f"{name}_layouts")
        mod = tb.lower(imported, target, layout=LAYOUTS[layout])
        n_tasks = len(tb.extract_tasks(mod, target))
        # every task's default first: the search starts by timing them, and leaves the negligible tasks alone
        _defaults(mod, target, None, defaults_dir, cfg, picker)
        start = time.perf_counter()
        with progress() as bar:
            task = bar.add_task(f"tune {name}", total=max(cfg.trials, done_before), completed=done_before,
                                 info=f"{n_tasks} tasks")
            ran = tb.tune(mod, target, work_dir, cfg.trials, COST_MODELS[cfg.cost_model](), cfg.seed,
                          on_batch=lambda n, task=task: bar.update(task, advance=n), defaults_dir=defaults_dir)
        tuning_s = time.perf_counter() - start
        tuned_dir = work_dir if cfg.trials > 0 else None
        searched = work_dir / "searched.json"
        n_defaults = n_tasks - len(json.loads(searched.read_text())["searched"]) if tuned_dir and searched.exists() \
            else n_tasks  # tasks that run a default schedule (measured, when trials > 0)
        lib = tb.compile_tuned(mod, target, tuned_dir, run.tvm_lib(name), defaults_dir=defaults_dir)
        err = tvm_parity(tb.CompiledModel(lib), ort_session(onnx_path, cfg.threads), inputs)
        earlier_s = previous.get(name, {}).get("tuning_s", 0.0) if done_before else 0.0  # resumed: add it up
        result[name] = {"lib": lib.name, "tasks": n_tasks, "trials": tb.count_records(work_dir) if cfg.trials else 0,
                        "trials_this_run": ran, "tuning_s": tuning_s + earlier_s, "tvm_max_abs": err,
                        "default_schedules": n_defaults, "layout": layout, "layout_ms": layout_ms}
        console.print(f"{name}: {n_tasks} tasks, {layout}, {result[name]['trials']} trials "
                      f"({ran} now, {tuning_s:.0f} s) -> {lib} (max abs error vs onnxruntime {err:.2e})")
        if not err <= cfg.tolerance:
            raise KdError(f"The tuned {name} differs from onnxruntime by {err:.3g} (tolerance {cfg.tolerance}).")
    for name in MODELS:  # keep what an earlier run tuned for models not tuned now
        if name not in result and name in previous:
            result[name] = previous[name]
    run.write_json("tune.json", result)
    return result


def _defaults(mod, target, tuned_dir: Path | None, out_dir: Path, cfg: TuneConfig, picker: list) -> int:
    """Default schedules for the tasks that have no measured record; returns how many tasks use one."""
    from kdcompile import tvm_backend as tb

    missing = [c["task"] for c in tb.task_costs(mod, target, tuned_dir) if c["seconds"] is None]
    if not missing:
        return 0
    if not picker:
        picker.append(default_picker(cfg.defaults, target.kind.name))
    with progress() as bar:
        job = bar.add_task("default schedules", total=len(missing), info="")
        # an untrained picker predicts noise: evolving a large population toward it buys nothing
        population = 16 if cfg.defaults == "random" else 256
        tb.default_schedules(mod, target, out_dir, picker[0], tuned_dir=tuned_dir, seed=cfg.seed,
                             population=population, on_task=lambda t: bar.update(job, advance=1, info=t))
    return len(missing)


def choose_layout(imported, shape: tuple[int, ...], target, defaults_dir: Path, cfg: TuneConfig,
                  picker: list, out_dir: Path) -> tuple[str, dict | None]:
    """`--layout auto`: build the imported model in each layout with default schedules (no trials), time the builds in
    alternating rounds and return the faster layout with each build's median milliseconds (None for a model
    without convolutions: the layout changes nothing, so it stays as exported). A zero-trial ranking is a proxy
    for the tuned one: they agree on MobileNet-V2 (1.92 vs 3.36 of onnxruntime zero-trial, 0.85 vs 1.64 tuned,
    bench/results/e2e/); where the layouts are within a few percent once tuned, it may pick either."""
    from bench.timing import TimingConfig, measure
    from kdcompile import tvm_backend as tb

    if not tb.has_convolution(imported):
        return "nchw", None
    out_dir.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(cfg.seed).standard_normal(shape).astype(np.float32)
    calls = {}
    for layout, code in LAYOUTS.items():
        mod = tb.lower(imported, target, layout=code)
        _defaults(mod, target, None, defaults_dir, cfg, picker)
        lib = tb.compile_tuned(mod, target, None, out_dir / f"{layout}.so", defaults_dir=defaults_dir)
        calls[layout] = tb.CompiledModel(lib).prepared(x)
    quick = TimingConfig(warmup_s=0.05, min_calls=20, min_time_s=0.05)
    rounds = [{layout: measure(call, quick)["p50"] for layout, call in calls.items()} for _ in range(LAYOUT_ROUNDS)]
    choice = faster_layout(rounds)
    ms = {layout: float(np.median([r[layout] for r in rounds])) for layout in calls}
    console.print(f"layout: {choice} (zero-trial builds, median ms: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in ms.items()) + ")")
    return choice, ms


def faster_layout(rounds: list[dict[str, float]]) -> str:
    """The layout with the lowest median time relative to the first layout within each round: the machine's speed
    may drift between rounds (this VM has fast and slow phases), a ratio within one round compares like with
    like."""
    first = next(iter(rounds[0]))
    return min(rounds[0], key=lambda layout: float(np.median([r[layout] / r[first] for r in rounds])))


def tvm_parity(model, session, inputs: np.ndarray) -> float:
    """Max abs difference between the compiled TVM model and onnxruntime over `inputs` (n, ...), batch 1."""
    worst = 0.0
    for x in inputs:
        x = np.ascontiguousarray(x[None])
        worst = max(worst, float(np.abs(model(x) - session.run(None, {INPUT_NAME: x})[0]).max()))
    return worst
