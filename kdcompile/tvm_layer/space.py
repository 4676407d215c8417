"""The design space every task is searched in, for tuning and dataset collection alike: TVM's default CPU rules,
with parallelism as one more decision."""

from __future__ import annotations

import tvm
from tvm.s_tir import meta_schedule as ms

SPACE = "parallel+serial"  # recorded with dataset networks: the space changes the traces
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
