"""One look for every progress bar: what is being done, how far, how fast, how long left."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Progress and tables go to stderr so that stdout stays clean for whatever a command prints as its result. Under
# torchrun only rank 0 speaks (kdcompile.parallel).
console = Console(stderr=True, quiet=int(os.environ.get("RANK", 0)) != 0)


def quiet() -> bool:
    """No progress bars: stderr is not a terminal, KDCOMPILE_QUIET is set, or this is not torchrun's rank 0."""
    return bool(os.environ.get("KDCOMPILE_QUIET")) or not sys.stderr.isatty() or int(os.environ.get("RANK", 0)) != 0


def progress() -> Progress:
    """A rich Progress for long work; it draws nothing when `quiet()`."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=console, disable=quiet())
