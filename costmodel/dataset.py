"""The tensor-program dataset on disk: one JSON-lines file per task, gzipped once the task is complete.

    datasets/<hardware>/
        networks.json             {network_key: {"network", "batch", "input_shape", "tasks": {task_hash: weight}}}
        fingerprints.json         {fingerprint_id: {cpu, flags_sha1, cores, tvm, target}}
        exhausted.json            {task_hash: [sources whose search found no more new programs]}
        tasks/<task_hash>.jsonl[.gz]
            line 1, the header:   {"format": 1, "task_hash", "task_name", "workload": <MetaSchedule Workload JSON>,
                                   "args_info": <ArgInfo JSON list>, "target": <Target JSON dict>}
            every other line:     {"trace": <MetaSchedule Trace JSON>, "run_secs": [every repeat, seconds] | null,
                                   "error": null | "message", "source": "random" | "evolutionary" | "import",
                                   "fp": fingerprint_id, "ts": unix seconds, "load": 1-min load average}

`workload` and `trace` are exactly what MetaSchedule's JSONDatabase stores, so records convert both ways without
loss. Writing is append-only: a batch is written, flushed and fsynced before the collector moves on, so a kill
loses at most the batch in flight; a torn last line is dropped by the reader and cut off before the next append.
This module needs no TVM.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Iterator

from kdcompile.errors import KdError
from kdcompile.files import append_lines, atomic_path, drop_torn_tail, read_lines, write_json, write_text
from kdcompile.measured import mean_seconds as mean_of_repeats

FORMAT = 1


def trace_key(trace: list) -> str:
    """Identity of a program within its task, for de-duplication."""
    return hashlib.sha1(json.dumps(trace, separators=(",", ":")).encode()).hexdigest()


def fingerprint_id(fingerprint: dict) -> str:
    return hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


def task_hash(workload_json: list) -> str:
    """A task's name in the dataset: the structural hash MetaSchedule's JSONDatabase stores as the first field of
    its workload JSON."""
    return str(workload_json[0])


def write_json_sorted(path: Path, obj) -> None:
    """The dataset's small JSON files, written atomically, keys sorted so that diffs stay readable."""
    write_json(path, obj, indent=1, sort_keys=True)


def _read_lines(path: Path) -> Iterator[dict]:
    """A task file's complete lines as dicts: a batch torn by a kill is dropped (everything before it is intact)."""
    for line in read_lines(path, opener=gzip.open if path.suffix == ".gz" else open):
        yield json.loads(line)


class TaskFile:
    """One task's header and records. While collecting: tasks/<hash>.jsonl; when packed: tasks/<hash>.jsonl.gz."""

    def __init__(self, root: Path, task_hash: str):
        self.plain = root / "tasks" / f"{task_hash}.jsonl"
        self.packed = root / "tasks" / f"{task_hash}.jsonl.gz"

    @property
    def path(self) -> Path | None:
        return self.packed if self.packed.exists() else self.plain if self.plain.exists() else None

    def exists(self) -> bool:
        return self.path is not None

    def header(self) -> dict:
        return next(_read_lines(self.path))

    def records(self) -> Iterator[dict]:
        lines = _read_lines(self.path)
        next(lines)
        yield from lines

    def create(self, header: dict) -> None:
        write_text(self.plain, json.dumps(dict(header, format=FORMAT), separators=(",", ":")) + "\n")

    def append(self, rows: list[dict]) -> None:
        """Append a batch durably. Reopens a packed file for appending (unpacks it first)."""
        if self.packed.exists():
            self.unpack()
        append_lines(self.plain, [json.dumps(r, separators=(",", ":")) for r in rows])

    def pack(self) -> None:
        """Gzip a finished task (about 10x smaller); the plain file goes only after the packed one is complete."""
        if not self.plain.exists():
            return
        drop_torn_tail(self.plain)
        with atomic_path(self.packed) as tmp, self.plain.open("rb") as src, gzip.open(tmp, "wb", compresslevel=9) as dst:
            dst.write(src.read())
        self.plain.unlink()

    def unpack(self) -> None:
        with atomic_path(self.plain) as tmp, gzip.open(self.packed, "rb") as src:
            tmp.write_bytes(src.read())
        self.packed.unlink()


class ProgramDataset:
    """A dataset folder of measured tensor programs: which networks hold which tasks, and each task's programs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def task(self, task_hash: str) -> TaskFile:
        return TaskFile(self.root, task_hash)

    def fastest(self, task_hash: str, k: int = 4) -> list[dict]:
        """The task's `k` fastest measured programs, fastest first; [] for a task this dataset does not hold."""
        task = self.task(task_hash)
        for _ in range(2):  # a running collector may pack the file between finding and reading it
            try:
                measured = [r for r in task.records() if mean_seconds(r) is not None] if task.exists() else []
                return sorted(measured, key=mean_seconds)[:k]
            except FileNotFoundError:
                continue
        return []

    def networks(self) -> dict:
        path = self.root / "networks.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def add_network(self, key: str, info: dict) -> None:
        nets = self.networks()
        nets[key] = info
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_sorted(self.root / "networks.json", nets)

    def fingerprints(self) -> dict[str, dict]:
        path = self.root / "fingerprints.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def add_fingerprint(self, fingerprint: dict) -> str:
        """Register the machine a batch of measurements comes from; returns its id. Measurements of another CPU
        are refused: they would rank programs by another machine's speed (a measurement through an RPC tracker
        names its device's key and is kept apart by it)."""
        path = self.root / "fingerprints.json"
        known = self.fingerprints()
        other = [f for f in known.values() if (f.get("cpu"), f.get("flags_sha1")) != (fingerprint.get("cpu"),
                 fingerprint.get("flags_sha1")) and f.get("rpc_key") == fingerprint.get("rpc_key")]
        if other:
            raise KdError(f"{self.root} holds measurements of another CPU ({other[0].get('cpu')}, flags "
                          f"{other[0].get('flags_sha1')}); this one is {fingerprint.get('cpu')} (flags "
                          f"{fingerprint.get('flags_sha1')}): collect into a dataset folder of its own (the default "
                          "without --out).")
        fid = fingerprint_id(fingerprint)
        if fid not in known:
            known[fid] = fingerprint
            self.root.mkdir(parents=True, exist_ok=True)
            write_json_sorted(path, known)
        return fid

    def exhausted(self) -> dict[str, list[str]]:
        """{task_hash: [sources whose search ran out of new programs before its quota]}: not retried on resume."""
        path = self.root / "exhausted.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def mark_exhausted(self, task_hash: str, source: str) -> None:
        state = self.exhausted()
        state[task_hash] = sorted(set(state.get(task_hash, [])) | {source})
        write_json_sorted(self.root / "exhausted.json", state)

    def task_hashes(self) -> list[str]:
        folder = self.root / "tasks"
        if not folder.exists():
            return []
        return sorted({p.name.split(".")[0] for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz"))})

    def task_weights(self, networks: list[str] | None = None) -> dict[str, dict[str, int]]:
        """{network_key: {task_hash: weight}}, for the given network keys (default: all)."""
        nets = self.networks()
        return {k: v["tasks"] for k, v in nets.items() if networks is None or k in networks}

    def records(self, task_hashes: list[str] | None = None) -> Iterator[tuple[dict, dict]]:
        """Stream (task header, record) pairs, one task file open at a time."""
        for h in task_hashes if task_hashes is not None else self.task_hashes():
            f = self.task(h)
            if f.exists():
                header = f.header()
                for r in f.records():
                    yield header, r

    def count(self) -> dict:
        tasks = self.task_hashes()
        n = failed = 0
        for _, r in self.records(tasks):
            n += 1
            failed += r["run_secs"] is None
        return {"records": n, "failed": failed, "tasks": len(tasks), "networks": len(self.networks())}


def mean_seconds(record: dict) -> float | None:
    """A record's latency: the mean of its repeats; None for a failed program."""
    return mean_of_repeats(record.get("run_secs"))
