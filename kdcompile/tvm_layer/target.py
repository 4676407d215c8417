"""The machine a program is compiled for: this CPU by name (with its core count), or an NVIDIA GPU.

Without `mcpu`, LLVM emits generic x86-64 code (no AVX-512: a tuned matmul 4.7x slower on this machine).
"""

from __future__ import annotations

import json
import os

import tvm

from kdcompile.errors import KdError
from kdcompile.machine import cores
from kdcompile.tvm_layer.plain import plain_json

# The limits MetaSchedule's GPU rules need (a bare {"kind": "cuda"} has none): the same on every compute
# capability since 3.0, as in TVM's own tags (nvidia/geforce-rtx-3090: sm_86 with these).
CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152, "registers_per_block": 65536,
               "thread_warp_size": 32}


def host_target(num_cores: int | None = None) -> tvm.target.Target:
    """An LLVM target for this CPU by name, so that LLVM uses all its vector units; `num_cores` defaults to the
    cores this process may use."""
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                              "num-cores": num_cores or cores()})


def parse_target(spec: str | None, num_cores: int | None = None) -> tvm.target.Target:
    """None or "llvm": this CPU (`host_target`); "cuda:sm_86", an NVIDIA GPU of that compute capability; a TVM
    tag such as "nvidia/geforce-rtx-3090"; or a JSON dict (a CUDA one must give MetaSchedule's per-block limits)."""
    if spec in (None, "", "llvm"):
        return host_target(num_cores)
    if spec.startswith("cuda:"):
        spec = json.dumps({"kind": "cuda", "arch": spec.split(":", 1)[1]} | CUDA_LIMITS)
    try:
        target = tvm.target.Target(json.loads(spec) if spec.lstrip().startswith("{") else spec)
    except Exception as e:  # noqa: BLE001 - TVM's message names the bad field
        raise KdError(f"Not a TVM target: {spec!r} ({str(e).splitlines()[0][:200]}).") from e
    if target.kind.name == "cuda" and "max_threads_per_block" not in target.attrs:
        raise KdError(f"CUDA target {spec!r} lacks max_threads_per_block, which MetaSchedule's GPU rules need: "
                      "use the shorthand cuda:sm_86 or a tag such as nvidia/geforce-rtx-3090.")
    return target


def target_dict(target: tvm.target.Target) -> dict:
    """The target as MetaSchedule's JSONDatabase writes it in every record."""
    return plain_json(target.export())


def target_cores(target: tvm.target.Target) -> int:
    """The cores a CPU target is compiled for (1 when it does not say)."""
    return int(target.attrs.get("num-cores", 1) or 1)


def search_threads(target: tvm.target.Target) -> int:
    """Threads for MetaSchedule's search (sampling, mutation, features): a CPU target's own core count, so the
    search uses the cores that are measured; for a GPU, every core of the host."""
    if target.kind.name == "llvm":
        return target_cores(target)
    return os.cpu_count() or 2


def device_name(target: tvm.target.Target) -> str:
    """The runner's name for the device a target runs on."""
    return "cpu" if target.kind.name == "llvm" else target.kind.name


def local_gpu(target: tvm.target.Target) -> dict | None:
    """The GPU a CUDA target would be measured on here (name, compute capability, SMs), or None without one."""
    if target.kind.name != "cuda":
        return None
    dev = tvm.cuda(0)
    if not dev.exist:
        return None
    return {"gpu": dev.device_name, "compute_version": dev.compute_version,
            "multi_processors": dev.multi_processor_count}


def tvm_version() -> str:
    return tvm.__version__
