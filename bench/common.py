"""What every benchmark shares: the commit and machine a result was measured on, and the fresh process that
measures (right after building or tuning, a process measured TVM up to 40% slower than it runs: bench.e2e)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from kdcompile.machine import machine_info

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The checkout's short commit, with "+changes" when tracked files other than results differ from it (a bench
    rewrites its own tracked results as it goes, which says nothing about the code that measured them)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def stamp(threads: int, peak_gflops: list[float]) -> dict:
    """What a result records of where and when it was measured: the machine (CPU, cores, threads, load), the
    commit, the UTC time and the matmul references (bench.e2e.ort_peak_gflops) taken beside the measurement."""
    return machine_info(threads) | {"commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                    "peak_gflops": [round(p, 1) for p in peak_gflops]}


def measured_stdout(cmd: list[str]) -> str:
    """The stdout of a fresh measuring process (`--measure`); its stderr shown if it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"the measuring process failed ({r.returncode}): {' '.join(cmd)}")
    return r.stdout


def measured_json(cmd: list[str]) -> dict:
    """The JSON object a fresh measuring process prints on its last line."""
    return json.loads(measured_stdout(cmd).strip().splitlines()[-1])
