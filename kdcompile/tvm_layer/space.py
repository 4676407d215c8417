"""The design space every task is searched in, for tuning and dataset collection alike: TVM's default CPU rules,
with parallelism as one more decision."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

SPACE = "parallel+serial"  # recorded with dataset networks: the space changes the traces
PVU_DEFAULTS = {"max_vectorize_extent": 64, "unroll_max_steps": [0, 16, 64, 512], "unroll_explicit": True}


# TOPI marks pooling blocks for custom schedule rules that TVM 0.27 ships for no CPU. MetaSchedule then warns
# (`Unknown schedule rule "meta_schedule.pool_max"`, once per task and design space: 24 times in `make demo`),
# removes the mark and schedules the block with the default rules. Registering that same step as the rule keeps
# the design space and its traces as they were and the console quiet.
TOPI_POOL_RULES = ("meta_schedule.pool_max", "meta_schedule.pool_avg", "meta_schedule.adaptive_pool_max",
                   "meta_schedule.adaptive_pool_avg")


def _default_rules_instead(sch, block):
    sch.unannotate(block, "schedule_rule")  # what ApplyCustomRule does for an unknown rule, without the warning
    return [sch]


for _rule in TOPI_POOL_RULES:
    tvm_ffi.register_global_func(f"s_tir.meta_schedule.cpu.{_rule}", _default_rules_instead, override=True)


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
    """The design space of a task.

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


# Tasks whose design space was built (or failed) before, by structural equality: one MemoryDatabase each.
_SPACE_BUILT, _SPACE_FAILED = ms.database.MemoryDatabase(), ms.database.MemoryDatabase()


def schedulable(task, target: tvm.target.Target) -> bool:
    """Whether MetaSchedule can build the task's design space. TVM 0.27 raises a ScheduleError
    ('reverse-compute-at': a producer not under the target loop) for some fused reductions, e.g. a small BERT's
    pooling; such a task keeps TVM's plain loop nest (correct, unoptimised) instead of stopping the whole tune."""
    mod = task.dispatched[0]
    if _SPACE_BUILT.has_workload(mod):
        return True
    if _SPACE_FAILED.has_workload(mod):
        return False
    ctx = ms.TuneContext(mod=mod, target=target, space_generator=space_generator(target), task_name=task.task_name)
    try:
        ctx.generate_design_space()
    except Exception:  # noqa: BLE001 - s_tir's ScheduleError derives from no TVM error class
        _SPACE_FAILED.commit_workload(mod)
        return False
    _SPACE_BUILT.commit_workload(mod)
    return True


def schedulable_tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list:
    """The tasks of a lowered module that get schedules (defaults and search); the others run unscheduled."""
    from kdcompile.tvm_layer.lowering import extract_tasks

    return [t for t in extract_tasks(mod, target) if schedulable(t, target)]
