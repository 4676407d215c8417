"""Is the new target a different cost landscape? The same programs ranked on two targets (issue #25).

    python -m bench.target_shift

Pairs each program measured for the new target (x86-64-v3, one core: `kdcompile costmodel retarget`) with its time
in the source dataset (AVX-512, two cores, measured on an AMD Zen 4) and, where measured, with its time for the
AVX-512 two-core target on this machine (a retargeted control, so the CPU's share of the difference shows apart
from the target's). Per task: Kendall's tau between the two rankings, and where the source's fastest program
lands on the other target (its slowdown over that target's fastest of the same programs). Writes
bench/results/transfer/target_shift.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from costmodel.dataset import ProgramDataset, mean_seconds, trace_key
from kdcompile.files import write_json
from kdcompile.machine import machine_info

OUT = Path(__file__).resolve().parent / "results" / "transfer"


def paired(a: ProgramDataset, b: ProgramDataset, min_pairs: int = 8) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{task: (seconds on a, seconds on b)} over programs measured on both."""
    out = {}
    for h in b.task_hashes():
        if not a.task(h).exists():
            continue
        on_a: dict[str, float] = {}
        for r in a.task(h).records():  # a program held twice counts with its first measured time
            if mean_seconds(r) is not None:
                on_a.setdefault(trace_key(r["trace"]), mean_seconds(r))
        pairs = [(on_a[k], mean_seconds(r)) for r in b.task(h).records()
                 if (k := trace_key(r["trace"])) in on_a and on_a[k] is not None and mean_seconds(r) is not None]
        if len(pairs) >= min_pairs:
            x, y = map(np.array, zip(*pairs))
            out[h] = (x, y)
    return out


def shift(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Rank agreement between the two targets over tasks."""
    if not pairs:
        return {"tasks": 0, "programs": 0}
    taus = [kendalltau(x, y).statistic for x, y in pairs.values()]
    slowdown = [float(y[np.argmin(x)] / y.min()) for x, y in pairs.values()]  # a's winner, timed on b
    same_best = [int(np.argmin(x) == np.argmin(y)) for x, y in pairs.values()]
    return {"tasks": len(pairs), "programs": int(sum(len(x) for x, _ in pairs.values())),
            "kendall_tau_median": float(np.nanmedian(taus)), "kendall_tau_mean": float(np.nanmean(taus)),
            "same_fastest_share": float(np.mean(same_best)),
            "winner_slowdown_median": float(np.median(slowdown)), "winner_slowdown_max": float(np.max(slowdown)),
            "winner_slowdown_geomean": float(np.exp(np.mean(np.log(slowdown))))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, default=Path("datasets/cpu-znver4-2c"))
    ap.add_argument("--new", type=Path, default=Path("datasets/cpu-x86-64-v3-1c"))
    ap.add_argument("--control", type=Path, default=Path("datasets/cpu-rocketlake-2c-control"))
    args = ap.parse_args()
    src, new = ProgramDataset(args.source), ProgramDataset(args.new)
    result = {"new_vs_source": shift(paired(src, new))}
    if (args.control / "networks.json").exists():
        ctl = ProgramDataset(args.control)
        result["control_vs_source"] = shift(paired(src, ctl))  # another CPU, the same target
        result["new_vs_control"] = shift(paired(ctl, new))  # this CPU, another target
    result["setup"] = {"command": "python -m bench.target_shift", "source": str(args.source), "new": str(args.new),
                       "control": str(args.control), "date": datetime.date.today().isoformat(),
                       "machine": machine_info(2)}
    write_json(OUT / "target_shift.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
