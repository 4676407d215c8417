"""A measurement farm on this machine: a TVM RPC tracker and N RPC servers on loopback, each server pinned to its
own core (taskset), all under one key. `--rpc 127.0.0.1:<port>:<key>` then spreads measurements over the servers
(tvm_layer.measure.runner: one worker per server, failed runs retried on another). TVM's own engine, the one that
also serves remote boards and GPUs; this module only starts and stops the processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from kdcompile.errors import KdError
from kdcompile.machine import cores

# Own process groups: a server forks a process per session, and stopping the farm stops those too.
QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}


@dataclass
class Farm:
    """The tracker's port and key, and the processes (tracker first)."""

    port: int
    key: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def rpc(self) -> str:
        return f"127.0.0.1:{self.port}:{self.key}"

    @property
    def servers(self) -> list[subprocess.Popen]:
        return self.processes[1:]

    def stop(self) -> None:
        for p in reversed(self.processes):
            kill_group(p, signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(p, signal.SIGKILL)

    def start_server(self, core: int | None) -> subprocess.Popen:
        """One more server under the farm's key (pinned to `core` unless None); it registers within seconds.
        Also how a killed server is replaced."""
        n = len(self.processes)  # its own port range, never one an earlier server had
        cmd = [sys.executable, "-m", "tvm.exec.rpc_server", f"--tracker=127.0.0.1:{self.port}", f"--key={self.key}",
               "--host=127.0.0.1", f"--port={self.port + 100 + 10 * n}", f"--port-end={self.port + 109 + 10 * n}",
               "--silent"]
        if core is None:
            p = subprocess.Popen(cmd, **QUIET)
        else:  # one core, one runtime thread: TVM's thread pool counts the machine's cores, not the affinity mask
            p = subprocess.Popen(["taskset", "-c", str(core)] + cmd, env=os.environ | {"TVM_NUM_THREADS": "1"},
                                 **QUIET)
        self.processes.append(p)
        return p

    def __enter__(self) -> "Farm":
        return self

    def __exit__(self, *_) -> None:
        self.stop()


def kill_group(p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a farm process and the session processes it forked (its process group)."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them (/proc lists them per thread)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def serving(server: subprocess.Popen) -> bool:
    """Whether an RPC server has a session open now (a program is being timed on it). The server keeps one
    child for its whole life, the process that listens; each session is a child of that one (Linux /proc)."""
    return any(_children(child) for child in _children(server.pid))


def _registered(port: int, key: str) -> int:
    import socket

    from tvm import rpc

    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # TVM's connect would retry for a minute
        info = rpc.connect_tracker("127.0.0.1", port).summary().get("server_info", [])
    except Exception:  # noqa: BLE001 - the tracker is still starting
        return -1
    return sum(s.get("key") == f"server:{key}" for s in info)


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_farm(servers: int = 2, key: str = "farm", port: int = 9190, pin: bool = True,
               timeout_s: float = 60.0) -> Farm:
    """Start the tracker and `servers` servers (server i on core i when `pin`); returns once all registered.
    port=0: a free port (what tests use, so that two farms never meet)."""
    port = port or free_port()
    if servers < 1:
        raise KdError(f"A farm needs at least one server, got {servers}.")
    if pin and servers > cores():
        raise KdError(f"{servers} servers pinned to one core each need {servers} cores; this machine gives "
                      f"{cores()} (pass fewer servers, or no pinning).")
    if pin and shutil.which("taskset") is None:
        raise KdError("Pinning servers to cores needs `taskset` (util-linux); install it or start the farm unpinned.")
    farm = Farm(port, key)
    farm.processes.append(subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host=127.0.0.1",
                                            f"--port={port}", f"--port-end={port + 1}", "--silent"], **QUIET))
    for i in range(servers):
        farm.start_server(i if pin else None)
    try:
        wait_registered(farm, servers, timeout_s)
    except KdError:
        farm.stop()
        raise
    return farm


def wait_registered(farm: Farm, servers: int, timeout_s: float = 60.0) -> None:
    """Return once `servers` servers are registered under the farm's key; one sentence if they never are."""
    deadline = time.time() + timeout_s
    while _registered(farm.port, farm.key) < servers:
        if time.time() > deadline or farm.processes[0].poll() is not None or \
                all(p.poll() is not None for p in farm.servers):
            raise KdError(f"The RPC farm did not come up on port {farm.port} within {timeout_s:.0f} s (is the port "
                          "taken? pass another --port).")
        time.sleep(0.5)
