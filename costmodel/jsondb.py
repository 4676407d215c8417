"""Conversion between the dataset and MetaSchedule JSONDatabase files (database_workload.json and
database_tuning_record.json), so MetaSchedule users can bring their tuning logs and take ours.

Both formats hold the same Workload and Trace JSON, so no TVM is needed and nothing is lost, except what
JSONDatabase cannot hold: error messages (it stores failures as run_secs [1e10], kdcompile.measured) and our per-record metadata.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from costmodel.dataset import ProgramDataset, task_hash, trace_key
from kdcompile.measured import failed, is_measured



def export_json_database(ds: ProgramDataset, work_dir: Path, task_hashes: list[str] | None = None) -> int:
    """Write the dataset's records as a MetaSchedule JSONDatabase in `work_dir`; returns the record count."""
    work_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    with (work_dir / "database_workload.json").open("w") as fw, \
            (work_dir / "database_tuning_record.json").open("w") as fr:
        for index, h in enumerate(task_hashes if task_hashes is not None else ds.task_hashes()):
            f = ds.task(h)
            header = f.header()
            fw.write(json.dumps(header["workload"], separators=(",", ":")) + "\n")
            for r in f.records():
                secs = r["run_secs"] if r["run_secs"] is not None else failed()
                fr.write(json.dumps([index, [r["trace"], secs, header["target"], header["args_info"]]],
                                    separators=(",", ":")) + "\n")
                n += 1
    return n


def import_json_database(ds: ProgramDataset, work_dir: Path, network: str, source: str = "import",
                         fingerprint_id: str | None = None) -> int:
    """Add a MetaSchedule JSONDatabase's records to the dataset under the network key `network`, skipping
    programs already present; returns how many records were added."""
    workloads = [json.loads(line) for line in (work_dir / "database_workload.json").open()]
    by_task: dict[int, list] = {}
    for line in (work_dir / "database_tuning_record.json").open():
        index, (trace, secs, target, args_info) = json.loads(line)
        by_task.setdefault(index, []).append((trace, secs, target, args_info))
    weights, added, now = {}, 0, round(time.time(), 1)
    for index, records in by_task.items():
        workload = workloads[index]
        h = task_hash(workload)
        weights[h] = 1  # JSONDatabase does not record how often a task occurs in its network
        f = ds.task(h)
        if not f.exists():
            _, _, target, args_info = records[0]
            f.create({"task_hash": h, "task_name": f"imported_{h}", "workload": workload, "args_info": args_info,
                      "target": target})
        seen = {trace_key(r["trace"]) for r in f.records()}
        rows = []
        for trace, secs, _, _ in records:
            key = trace_key(trace)
            if key in seen:
                continue
            seen.add(key)
            measured = is_measured(secs)
            rows.append({"trace": trace, "run_secs": secs if measured else None, "error": None if measured else "failed",
                         "source": source, "fp": fingerprint_id, "ts": now, "load": None})
        if rows:
            f.append(rows)
            added += len(rows)
    ds.add_network(network, {"network": network, "batch": None, "input_shape": None, "tasks": weights})
    return added
