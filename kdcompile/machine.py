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


def parse_rpc(spec: str) -> tuple[str, int, str]:
    """--rpc tracker_host:port:key to its parts, or one sentence saying what is missing."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not all(parts) or not parts[1].isdigit():
        from kdcompile.errors import KdError

        raise KdError(f"--rpc must be tracker_host:port:key (the key the devices registered under at the TVM RPC "
                      f"tracker, e.g. 127.0.0.1:9190:rtx3090), got '{spec}'.")
    return parts[0], int(parts[1]), parts[2]


def fingerprint(target: dict, tvm_version: str) -> dict:
    """What must match for two measurements to be comparable: the CPU, its flags, cores, TVM and the target."""
    info = cpu_info()
    return {"cpu": info["cpu"], "flags_sha1": hashlib.sha1(info["flags"].encode()).hexdigest()[:12],
            "avx512": "avx512f" in info["flags"], "cores": os.cpu_count(), "tvm": tvm_version, "target": target}


def machine_info(threads: int) -> dict:
    """What a benchmark report says of the machine it ran on."""
    return {"cpu": cpu_info()["cpu"], "cores": os.cpu_count(), "threads": threads,
            "load_avg_1min": os.getloadavg()[0]}
