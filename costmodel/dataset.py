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
import os
from pathlib import Path
from typing import Iterator

FORMAT = 1


def trace_key(trace: list) -> str:
    """Identity of a program within its task, for de-duplication."""
    return hashlib.sha1(json.dumps(trace, separators=(",", ":")).encode()).hexdigest()


def fingerprint_id(fingerprint: dict) -> str:
    return hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_lines(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # a batch torn by a kill: everything before it is intact
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
        self.plain.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.plain.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(header, format=FORMAT), separators=(",", ":")) + "\n")
        os.replace(tmp, self.plain)

    def append(self, rows: list[dict]) -> None:
        """Append a batch durably. Reopens a packed file for appending (unpacks it first)."""
        if self.packed.exists():
            self.unpack()
        self._drop_torn_tail()
        with self.plain.open("a") as f:
            f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def _drop_torn_tail(self) -> None:
        with self.plain.open("rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def pack(self) -> None:
        """Gzip a finished task (about 10x smaller); the plain file goes only after the packed one is complete."""
        if not self.plain.exists():
            return
        self._drop_torn_tail()
        tmp = self.packed.with_suffix(".tmp")
        with self.plain.open("rb") as src, gzip.open(tmp, "wb", compresslevel=9) as dst:
            dst.write(src.read())
        os.replace(tmp, self.packed)
        self.plain.unlink()

    def unpack(self) -> None:
        tmp = self.plain.with_suffix(".tmp")
        with gzip.open(self.packed, "rb") as src:
            tmp.write_bytes(src.read())
        os.replace(tmp, self.plain)
        self.packed.unlink()


class Dataset:
    """A dataset folder: which networks hold which tasks, and each task's measured programs."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def task(self, task_hash: str) -> TaskFile:
        return TaskFile(self.root, task_hash)

    def networks(self) -> dict:
        path = self.root / "networks.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def add_network(self, key: str, info: dict) -> None:
        nets = self.networks()
        nets[key] = info
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(self.root / "networks.json", nets)

    def add_fingerprint(self, fingerprint: dict) -> str:
        path = self.root / "fingerprints.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        fid = fingerprint_id(fingerprint)
        if fid not in known:
            known[fid] = fingerprint
            self.root.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(path, known)
        return fid

    def exhausted(self) -> dict[str, list[str]]:
        """{task_hash: [sources whose search ran out of new programs before its quota]}: not retried on resume."""
        path = self.root / "exhausted.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def mark_exhausted(self, task_hash: str, source: str) -> None:
        state = self.exhausted()
        state[task_hash] = sorted(set(state.get(task_hash, [])) | {source})
        _write_json_atomic(self.root / "exhausted.json", state)

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
    secs = record.get("run_secs")
    if not secs or min(secs) >= 1e9:  # MetaSchedule stores failures as [1e10]
        return None
    return sum(secs) / len(secs)
