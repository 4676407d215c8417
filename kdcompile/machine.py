"""The machine measurements are made on: its CPU, its cores, its load. One reader of /proc/cpuinfo for all."""

from __future__ import annotations

import hashlib
import os
import platform


def cpu_info() -> dict:
    """{"cpu": model name, "flags": the CPU's feature flags} (Linux); elsewhere what `platform` knows."""
    cpu, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags")), "")
    except OSError:
        pass
    return {"cpu": cpu, "flags": flags}


def cores() -> int:
    """The cores this process may run on (its affinity mask: a taskset or a container's limit), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fingerprint(target: dict, tvm_version: str) -> dict:
    """What must match for two measurements to be comparable: the CPU, its flags, cores, TVM and the target."""
    info = cpu_info()
    return {"cpu": info["cpu"], "flags_sha1": hashlib.sha1(info["flags"].encode()).hexdigest()[:12],
            "avx512": "avx512f" in info["flags"], "cores": os.cpu_count(), "tvm": tvm_version, "target": target}


def machine_info(threads: int) -> dict:
    """What a benchmark report says of the machine it ran on."""
    return {"cpu": cpu_info()["cpu"], "cores": os.cpu_count(), "threads": threads,
            "load_avg_1min": os.getloadavg()[0]}
