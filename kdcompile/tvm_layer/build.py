"""Compiling a tuned module into a library, running it, and what its kernels cost.

`relax.build` re-fuses a module, so no tuning record would match it: the database is applied to the very module
that was tuned (MetaScheduleApplyDatabase), and that is compiled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from kdcompile.files import atomic_path
from kdcompile.tvm_layer.lowering import extract_tasks
from kdcompile.tvm_layer.records import best_seconds, count_records, load_database
from kdcompile.tvm_layer.space import schedulable_tasks


def apply_schedules(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path | None,
                    defaults_dir: Path | None = None) -> tvm.IRModule:
    """`mod` with each task's best measured record in `work_dir` applied, else its default schedule from
    `defaults_dir`; tasks with neither stay unscheduled. Weights are packed for the layouts the schedules chose."""
    dbs = [load_database(d) for d in (work_dir, defaults_dir) if d is not None and count_records(d) > 0]
    if not dbs:
        return mod
    db = _chosen_records(mod, target, dbs)
    with target, tvm.transform.PassContext(opt_level=3), db:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        # weights whose tuned program wants another layout: transform the constants now, not per call
        return tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                         relax.transform.FoldConstant()])(mod)


def _chosen_records(mod: tvm.IRModule, target: tvm.target.Target, dbs: list) -> ms.database.MemoryDatabase:
    """Per task that gets schedules (space.schedulable_tasks), the best record of the first database holding one.
    Tasks left unscheduled (lowering.UNSCHEDULED, no design space) get none, even where an older database has a
    record for them: applying it would bring the wrong program back."""
    chosen = ms.database.MemoryDatabase()
    for task in schedulable_tasks(mod, target):
        for db in dbs:
            if not db.has_workload(task.dispatched[0]):
                continue
            top = db.get_top_k(db.commit_workload(task.dispatched[0]), 1)
            if top:
                r = top[0]
                chosen.commit_tuning_record(ms.database.TuningRecord(
                    r.trace, chosen.commit_workload(task.dispatched[0]), r.run_secs, r.target, r.args_info))
                break
    return chosen


def compile_tuned(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path | None, out: Path,
                  defaults_dir: Path | None = None, exec_mode: str = "compiled") -> Path:
    """Compile `mod` with its schedules (`apply_schedules`) and save a shared library (atomically).

    The Relax VM runs in "compiled" mode: the model's main function becomes native code that calls the kernels
    in turn, instead of bytecode the VM interprets instruction by instruction: a few microseconds less per
    inference for the demo student and the encoder, whose kernels take tens of microseconds each."""
    mod = apply_schedules(mod, target, work_dir, defaults_dir)
    executable = relax.build(mod, target, exec_mode=exec_mode)
    with atomic_path(out) as tmp:
        executable.export_library(str(tmp))
    return out


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


def task_costs(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path | None) -> list[dict]:
    """Per task of `mod`: name, weight (occurrences), FLOPs and the best measured seconds in `work_dir`'s
    database (None when the task has no measured record)."""
    db = load_database(work_dir) if work_dir and count_records(work_dir) else None
    rows = []
    for task in extract_tasks(mod, target):
        best = best_seconds(db, task) if db is not None and db.has_workload(task.dispatched[0]) else None
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
