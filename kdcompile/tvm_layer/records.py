"""The tuning database: where a measured record is written, and how it is read back.

The files are MetaSchedule's JSONDatabase format (database_workload.json, database_tuning_record.json), so either
can read what the other wrote. Records are appended and fsynced one by one (kdcompile.files.append_lines); a line
torn by a kill is skipped with a warning when read, and cut off before the next write.

Two TVM 0.27 quirks shape this file:
- applying some traces (rfactor of a reduction, then compute-at) changes, in place, the module the Schedule was
  made from: every schedule is made on a private copy of its workload (`private_copy`);
- a few rfactor traces do not re-apply from JSON, and one such record makes JSONDatabase unreadable: none is ever
  committed (`trace_replays`, `AddReplayableToDatabase`).
"""

from __future__ import annotations

import json
from pathlib import Path

import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from kdcompile.errors import KdError
from kdcompile.files import append_lines, read_lines
from kdcompile.measured import curve_of, failed, mean_seconds
from kdcompile.progress import console
from kdcompile.tvm_layer.plain import plain_json

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"


def _warn_torn(path: Path) -> None:
    console.print(f"[yellow]{path}: skipped a torn last line (an interrupted write); it is cut off at the next "
                  "write.[/]")


def _lines(path: Path) -> list[str]:
    return list(read_lines(path, on_torn=_warn_torn)) if path.exists() else []


def _parse(line: str, path: Path, n: int):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise KdError(f"{path} line {n} is not a tuning record ({e.msg}): the database is damaged (not by an "
                      "interruption, which only tears the last line); move the folder away to tune afresh.") from e


def private_copy(mod: tvm.IRModule) -> tvm.IRModule:
    """A copy of `mod` to schedule. In TVM 0.27 applying some traces (rfactor of a reduction, then compute-at)
    changes the module the Schedule was created from, in place: the next trace applied to that module no
    longer replays ("3 vs. 2" child blocks), and a task's workload would no longer be the task."""
    return tvm.ir.load_json(tvm.ir.save_json(mod))


def trace_replays(trace, mod: tvm.IRModule) -> bool:
    """Whether the trace, written to JSON and read back, re-applies to its workload, as JSONDatabase does when
    it loads. A few rfactor traces of TVM 0.27 do not (GetChildBlocks finds another number of blocks), and a
    single such record makes the whole database unreadable, so none is ever committed."""
    from tvm.s_tir.schedule import Trace

    try:
        Trace.apply_json_to_schedule(trace.as_json(), tvm.s_tir.Schedule(private_copy(mod)))
        return True
    except Exception:  # noqa: BLE001 - TVM raises plain RuntimeErrors here
        return False


def count_records(work_dir: Path | None) -> int:
    """How many (complete) records the tuning database in `work_dir` holds: the trials run so far."""
    return len(_lines(Path(work_dir) / RECORDS)) if work_dir is not None else 0


def load_database(work_dir: Path) -> ms.database.MemoryDatabase:
    """A tuning database read line by line into a MemoryDatabase. In TVM 0.27, parsing a record can change the
    workload it is parsed against: after some rfactor traces of a reduction, the next record of the same workload
    no longer replays (GetChildBlocks finds "3 vs. 2" blocks), though each line parses alone. JSONDatabase shares
    one workload among all its records and fails on such files, so each record here is parsed against its own
    copy (`private_copy`)."""
    db = ms.database.MemoryDatabase()
    work_dir = Path(work_dir)
    workloads = [db.commit_workload(ms.database.Workload.from_json(_parse(line, work_dir / WORKLOADS, n)).mod)
                 for n, line in enumerate(_lines(work_dir / WORKLOADS), 1)]
    for n, line in enumerate(_lines(work_dir / RECORDS), 1):
        index, record = _parse(line, work_dir / RECORDS, n)
        if not isinstance(index, int) or not 0 <= index < len(workloads):
            raise KdError(f"{work_dir / RECORDS} line {n} names workload {index}, which {work_dir / WORKLOADS} "
                          "does not hold: the database is damaged; move the folder away to tune afresh.")
        own = ms.database.Workload(private_copy(workloads[index].mod))
        parsed = ms.database.TuningRecord.from_json(record, own)
        db.commit_tuning_record(ms.database.TuningRecord(
            parsed.trace, workloads[index], parsed.run_secs, parsed.target, parsed.args_info))
    return db


def has_record(db, task) -> bool:
    """Whether the database holds a record (measured or not) of an extracted task."""
    return db.has_workload(task.dispatched[0]) and bool(db.get_top_k(db.commit_workload(task.dispatched[0]), 1))


def best_seconds(db, task) -> float | None:
    """The task's best measured mean seconds in the database, or None without a successful measurement."""
    top = db.get_top_k(db.commit_workload(task.dispatched[0]), 1)
    return mean_seconds([float(s) for s in top[0].run_secs]) if top else None


@derived_object
class TuningRecordFiles(ms.database.PyDatabase):
    """A MetaSchedule database kept in memory and in the JSONDatabase files of `work_dir`: read with
    `load_database`, appended record by record (fsynced), in the format JSONDatabase writes."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.mem = load_database(self.work_dir)
        self._hash = tvm_ffi.structural_hash
        self.index = {self._hash(ms.database.Workload.from_json(json.loads(line)).mod): i
                      for i, line in enumerate(_lines(self.work_dir / WORKLOADS))}

    def _append(self, name: str, obj) -> None:
        append_lines(self.work_dir / name, [json.dumps(plain_json(obj), separators=(",", ":"))])

    def has_workload(self, mod):
        return self.mem.has_workload(mod)

    def commit_workload(self, mod):
        workload = self.mem.commit_workload(mod)
        key = self._hash(workload.mod)
        if key not in self.index:
            self.index[key] = len(self.index)
            self._append(WORKLOADS, workload.as_json())
        return workload

    def commit_tuning_record(self, record) -> None:
        self.mem.commit_tuning_record(record)
        as_json = tvm.get_global_func("s_tir.meta_schedule.TuningRecordAsJSON")  # Python's as_json fails on IndexMap
        self._append(RECORDS, [self.index[self._hash(self.commit_workload(record.workload.mod).mod)], as_json(record)])

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
    """MetaSchedule's AddToDatabase, skipping records whose trace does not replay (see `trace_replays`); counts
    what it skipped, so that a run can say how many measured candidates the database could not keep."""

    def __init__(self):
        self.skipped = 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        db = task_scheduler.database_
        ctx = task_scheduler.tasks_[task_id].ctx
        workload = db.commit_workload(ctx.mod)
        for cand, built, ran in zip(measure_candidates, builder_results, runner_results):
            if not trace_replays(cand.sch.trace, ctx.mod):
                self.skipped += 1
                continue
            ok = built.error_msg is None and ran.error_msg is None and ran.run_secs
            secs = [float(t) for t in ran.run_secs] if ok else failed()
            db.commit_tuning_record(ms.database.TuningRecord(cand.sch.trace, workload, secs, ctx.target,
                                                             cand.args_info))


def measure_callbacks(extra: list | None = None) -> list:
    """MetaSchedule's default callbacks with AddToDatabase replaced by AddReplayableToDatabase (first)."""
    stock = [c for c in ms.measure_callback.MeasureCallback.create("default")
             if not isinstance(c, ms.measure_callback.AddToDatabase)]
    return [AddReplayableToDatabase()] + stock + list(extra or [])


def trial_log(tasks: list, work_dir: Path) -> list[tuple[str | None, float | None]]:
    """`work_dir`'s trials in measurement order, as (task name, mean seconds): the name is None for a workload
    that is not one of `tasks` (extracted tasks), the seconds None for a failed measurement. Small enough to keep
    beside a benchmark's results, and all that `measured.curve_of` and `measured.measured_in` need."""
    names = {tvm_ffi.structural_hash(t.dispatched[0]): t.task_name for t in tasks}
    work_dir = Path(work_dir)
    workload_name = [names.get(tvm_ffi.structural_hash(ms.database.Workload.from_json(json.loads(line)).mod))
                     for line in _lines(work_dir / WORKLOADS)]
    return [(workload_name[index], mean_seconds(record[1]))  # record: [trace, run_secs, target, args_info]
            for index, record in (json.loads(line) for line in _lines(work_dir / RECORDS))]


def tuning_curve(tasks: list, work_dir: Path) -> list[float | None]:
    """`curve_of` the database in `work_dir`, over `tasks` (extracted tasks)."""
    return curve_of(trial_log(tasks, work_dir), {t.task_name: int(t.weight) for t in tasks})
