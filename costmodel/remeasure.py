"""Measurement noise: time a random sample of a dataset's programs again, later, and compare.

Writes <dataset>/remeasure.jsonl, one line per program: {"task_hash", "trace_sha1", "before_s", "after_s", "cv",
"ts", "load"}, where cv is the coefficient of variation of the two means (std / mean over [before, after]).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np

from costmodel.dataset import ProgramDataset, mean_seconds, trace_key
from kdcompile.progress import progress


def remeasure(root: str | Path, sample: int = 500, seed: int = 0, batch: int = 32) -> dict:
    """Re-time `sample` successful programs drawn uniformly from the dataset; append to remeasure.jsonl."""
    from costmodel.collect import release, stop_after_batch
    from kdcompile.tvm_layer.programs import remeasure as time_again

    ds = ProgramDataset(root)
    out = Path(root) / "remeasure.jsonl"
    done = {json.loads(line)["trace_sha1"] for line in out.open()} if out.exists() else set()
    pool = [(h["task_hash"], r) for h, r in ds.records() if mean_seconds(r) is not None
            and trace_key(r["trace"]) not in done]
    rng = random.Random(seed)
    picks = rng.sample(pool, min(max(0, sample - len(done)), len(pool)))
    by_task: dict[str, list[dict]] = {}
    for h, r in picks:
        by_task.setdefault(h, []).append(r)
    cvs = []
    stop = stop_after_batch()  # Ctrl-C: keep every chunk timed so far; the next run draws only the rest
    try:
        with progress() as bar, out.open("a") as f:
            job = bar.add_task("remeasure", total=len(picks), info="")
            for h, records in by_task.items():
                header = ds.task(h).header()
                for i in range(0, len(records), batch):
                    chunk = records[i:i + batch]
                    again = time_again(header["workload"], header["target"], [r["trace"] for r in chunk])
                    load = os.getloadavg()[0]
                    for r, secs in zip(chunk, again):
                        if secs is None:
                            continue
                        before, after = mean_seconds(r), float(np.mean(secs))
                        cv = float(np.std([before, after]) / np.mean([before, after]))
                        cvs.append(cv)
                        f.write(json.dumps({"task_hash": h, "trace_sha1": trace_key(r["trace"]), "before_s": before,
                                            "after_s": secs, "cv": cv, "ts": round(time.time(), 1),
                                            "load": round(load, 2)}) + "\n")
                    f.flush()
                    bar.update(job, advance=len(chunk))
                    if stop["asked"]:
                        bar.stop()
                        print(f"Stopped after {len(cvs)} programs; run the same command to time the rest.")
                        return {"remeasured": len(cvs), "cv_median": float(np.median(cvs)) if cvs else None,
                                "stopped": True}
    finally:
        release(stop)
    return {"remeasured": len(cvs), "cv_median": float(np.median(cvs)) if cvs else None}
