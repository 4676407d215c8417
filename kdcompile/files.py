"""Writing files so that an interruption never leaves half of one: atomic replacement and durable appends.

Two rules, used by every file kdcompile writes:
- a whole file (JSON, a checkpoint, a compiled library) is written to a temporary file beside it and renamed over
  the old one (`atomic_path`, `write_text`, `write_json`): a reader sees the old file or the new one, never a mix;
- a log of records (the tuning database, the dataset's task files) is appended to and fsynced batch by batch
  (`append_lines`); a kill can tear only the last line, which `read_lines` skips and reports, and the next append
  cuts off before writing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends without an error.

    For writers that take a file name (torch.save, np.savez, a TVM library's export). The temporary name keeps
    the final suffix (np.savez and TVM choose the format by it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj, indent: int | None = 2, sort_keys: bool = False) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def drop_torn_tail(path: Path) -> bool:
    """Cut a last line that has no newline (a write torn by a kill). Returns whether one was cut."""
    if not path.exists():
        return False
    with path.open("rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            return True
    return False


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append whole lines durably: a torn tail is cut first, then the lines are written, flushed and fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(path)
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def read_lines(path: str | Path, on_torn: Callable[[Path], None] | None = None,
               opener: Callable = open) -> Iterator[str]:
    """The complete lines of a file written by `append_lines`, without their newline. A torn last line is
    skipped, and `on_torn(path)` is told (everything before it is intact)."""
    path = Path(path)
    with opener(path, "rt") as f:
        for line in f:
            if not line.endswith("\n"):
                if on_torn is not None:
                    on_torn(path)
                return
            yield line[:-1]


def file_sha256(path: str | Path) -> str | None:
    """The SHA-256 of a file's contents (None when it is not a file): how a stage notices a changed input."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
