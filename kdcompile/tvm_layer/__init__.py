"""The TVM layer: every `import tvm` of kdcompile lives in this folder (TVM 0.27: Relax + MetaSchedule in tvm.s_tir).

One job per file, and the files import one way, down this list:

    plain.py        TVM objects to plain Python, for JSON files
    target.py       the machine a program is compiled for: this CPU by name, or a CUDA GPU
    lowering.py     ONNX into Relax, and the lowering that is tuned (`Lowering`: padding, fast math, layout)
    space.py        the design space every task is searched in
    measure.py      builder and runner: how a program is built and timed (one constructor for both)
    records.py      the tuning database: where a measured record is written and read back
    cost_models.py  MetaSchedule's cost-model slot, filled: XGBoost, a trace ranker, a timer around either
    budget.py       where the tuning budget is decided: which tasks are searched, how many trials each gets
    search.py       the search: MetaSchedule's tuning of a lowered module within that budget
    defaults.py     default schedules, picked by a cost model with no measurement
    build.py        compiling a tuned module, running it, and what its kernels cost
    programs.py     the dataset's programs: measured, replayed, featurised, re-timed
    kernels.py      single kernels compiled and timed alone (micro-benchmarks)

Facts measured on this machine (../shared/research/tvm_notes.md) are kept beside the code they explain.
The TVM runtime sizes its thread pool when it starts, so the thread count is set here, before any `import tvm`.
"""

import inspect
import os

from kdcompile.machine import cores

os.environ.setdefault("TVM_NUM_THREADS", str(cores()))


def _skip_inspect_scans() -> None:
    """Make MetaSchedule's first TuneContext cost 3 s instead of 24-100 s (measured 2026-12-02, torch loaded).

    That first TuneContext imports TVM's tensor intrinsics: hundreds of TVMScript functions, each parsed after an
    `inspect.stack()`. For every frame whose file is not on disk (the import machinery's frozen modules, the
    expressions TVMScript compiles from `<ast>`), `inspect.getmodule` walks all ~2,000 loaded modules before
    answering None. Here that answer is memoised in inspect's own file-to-module cache, under a module name that
    is never loaded, so the lookup still answers None, at once. Keys are absolute paths, made from the working
    directory: a process that moves elsewhere before its first tuning is only slower, never wrong. Under load the
    scans took a collector 4 minutes before its first measurement (tests/test_costmodel_dataset.py waited 300 s).
    """
    for name in ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<ast>"):
        inspect.modulesbyfile.setdefault(os.path.normcase(os.path.abspath(name)), "<no module: kdcompile>")


_skip_inspect_scans()
