"""A compiled model timed on an RPC server (`kdcompile bench --rpc`): the library is uploaded to a server the
tracker hands out under the key, loaded into a Relax VM there, and timed by TVM's time_evaluator on the server, one
call per repeat (so the percentiles are of single calls, as timing.measure gives locally, without the network in
them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax
from tvm import rpc as tvm_rpc

from kdcompile.errors import KdError
from kdcompile.machine import parse_rpc

SESSION_TIMEOUT_S = 600


def session(rpc: str):
    """A session on a free server under the key, or one sentence saying why there is none."""
    from kdcompile.tvm_layer.measure import registered_now

    host, port, key = parse_rpc(rpc)
    if registered_now(rpc) == 0:  # (registered_now: one sentence when no tracker answers)
        raise KdError(f"No RPC server is registered under '{key}' at {host}:{port} (the request would wait for "
                      f"one forever); start one with `kdcompile rpc-farm --key {key}`.")
    try:
        return tvm_rpc.connect_tracker(host, port).request(key, priority=1, session_timeout=SESSION_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - refused, unknown key, no free server
        raise KdError(f"No RPC server to time on at {rpc} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                      "start one with `kdcompile rpc-farm`.") from e


def time_remote(lib_path: Path, x: np.ndarray, rpc: str, calls: int = 200, warmup: int = 10) -> list[float]:
    """Seconds of `calls` single calls of the model's main on a remote CPU, after `warmup` untimed ones."""
    remote = session(rpc)
    remote.upload(str(lib_path))
    dev = remote.cpu()
    vm = relax.VirtualMachine(remote.load_module(Path(lib_path).name), dev)
    arg = tvm.runtime.tensor(x, device=dev)
    vm.set_input("main", arg)
    if warmup:
        vm.time_evaluator("invoke_stateful", dev, number=warmup, repeat=1)("main")
    result = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=calls)("main")
    return [float(s) for s in result.results]
