"""Progress for every stage that takes more than a few seconds: a bar with an ETA on a
terminal, and without one (or with --no-progress) a plain line when the stage starts and one
when it ends, so a log file still says what is happening."""
from __future__ import annotations

import sys
import time
from typing import Iterable, Optional


def fmt_seconds(seconds: float) -> str:
    """'42s', '3m05s' or '2h07m'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def stage(items: Iterable, total: Optional[int], what: str, bar: bool = True, log=None, units: str = "batches"):
    """Yield ``items``: under a tqdm bar (with its ETA) when ``bar`` and stderr is a terminal,
    else between two lines written with ``log`` (default: stderr)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if bar and sys.stderr.isatty():
        from tqdm import tqdm
        yield from tqdm(items, total=total, desc=what, unit=units, leave=False)
        return
    log(f"{what}: started ({total} {units})" if total else f"{what}: started")
    t0 = time.perf_counter()
    yield from items
    log(f"{what}: done in {fmt_seconds(time.perf_counter() - t0)}")
