"""What a dataset holds, for its card (datasets/README.md) and <dataset>/stats.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from costmodel.dataset import ProgramDataset, write_json_sorted
from kdcompile.errors import KdError
from kdcompile.files import write_text
from kdcompile.measured import is_measured


def stats(root: str | Path, busy_load: float = 2.0) -> dict:
    """Counts per network, failures, collection hours, measurement noise and how much was measured on a busy
    machine (1-min load average above `busy_load` on 2 cores; the collector alone stays at about 1.0-1.8, since
    it builds in two workers while it measures)."""
    ds = ProgramDataset(root)
    nets = ds.networks()
    if not nets:
        raise KdError(f"{root} is not a tensor-program dataset (no networks.json): give a folder that "
                      "`kdcompile costmodel collect` or `import` wrote.")
    per_task: dict[str, int] = {}
    failed, loads, stamps, repeat_cv = 0, [], [], []
    for header, r in ds.records():
        per_task[header["task_hash"]] = per_task.get(header["task_hash"], 0) + 1
        failed += r["run_secs"] is None
        if r.get("load") is not None:
            loads.append(r["load"])
        stamps.append(r["ts"])
        secs = r["run_secs"]
        if secs and len(secs) > 1 and is_measured(secs):
            repeat_cv.append(float(np.std(secs) / np.mean(secs)))
    n = sum(per_task.values())
    ts = np.sort(np.asarray(stamps))
    gaps = np.diff(ts)
    hours = float(gaps[gaps < 600].sum() / 3600) if len(ts) > 1 else 0.0  # pauses between sessions excluded
    remeasure = Path(root) / "remeasure.jsonl"
    cv_later = [json.loads(line)["cv"] for line in remeasure.open()] if remeasure.exists() else []
    out = {
        "records": n,
        "tasks": len(per_task),
        "networks": len({v["network"] for v in nets.values()}),
        "network_keys": len(nets),
        "failed": failed,
        "failure_rate": failed / n if n else 0.0,
        "collection_hours": hours,
        "busy_share": float(np.mean(np.asarray(loads) > busy_load)) if loads else None,
        "busy_load": busy_load,
        "repeat_cv_median": float(np.median(repeat_cv)) if repeat_cv else None,
        "noise_cv_median": float(np.median(cv_later)) if cv_later else None,
        "noise_sample": len(cv_later),
        "per_network": {k: {"tasks": len(v["tasks"]), "records": sum(per_task.get(h, 0) for h in v["tasks"])}
                        for k, v in sorted(nets.items())},
    }
    write_json_sorted(Path(root) / "stats.json", out)
    write_text(Path(root) / "stats.md", render(out))
    return out


def render(s: dict) -> str:
    """The per-network table for the dataset card."""
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    lines = [f"{s['records']} programs, {s['tasks']} tasks, {s['networks']} networks ({s['network_keys']} "
             f"network/batch pairs); {s['failure_rate']:.1%} failed; {s['collection_hours']:.2f} h of collection; "
             f"{fmt(s['busy_share'], '.0%')} measured while the 1-min load average was above {s['busy_load']:g}; "
             f"median CV of "
             f"the repeats {fmt(s['repeat_cv_median'], '.3f')}; median CV when re-measured later "
             f"{fmt(s['noise_cv_median'], '.3f')} over {s['noise_sample']} programs.", "",
             "| network@batch | tasks | programs |", "|---|---|---|"]
    lines += [f"| {k} | {v['tasks']} | {v['records']} |" for k, v in s["per_network"].items()]
    return "\n".join(lines) + "\n"
