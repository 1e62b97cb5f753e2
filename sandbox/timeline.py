"""The demo's timeline: one line per step as it happens, and the JSON report at the end.

Times are offsets from the start of the simulated clock (`+01:05:00`), never wall-clock
times, so two runs with the same options print and write the same thing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

ACCOUNT_WIDTH = 12
STEP_WIDTH = 26


@dataclass(frozen=True)
class TimelineEntry:
    time: str
    account: str
    step: str
    result: str


class Timeline:
    def __init__(self, start: datetime, out: TextIO | None = None):
        """`out` receives each entry as a line when it is recorded (None: record silently)."""
        self._start = start
        self._out = out
        self.entries: list[TimelineEntry] = []

    def record(self, at: datetime, account: str, step: str, result: str) -> TimelineEntry:
        entry = TimelineEntry(_offset(at - self._start), account, step, result)
        self.entries.append(entry)
        if self._out is not None:
            self._out.write(format_entry(entry) + "\n")
            self._out.flush()
        return entry

    def heading(self, title: str) -> None:
        """A section title on the terminal only: the report keeps just the entries."""
        if self._out is not None:
            self._out.write(f"\n== {title}\n")
            self._out.flush()

    def as_report(self) -> list[dict[str, str]]:
        return [asdict(entry) for entry in self.entries]


def format_entry(entry: TimelineEntry) -> str:
    return (
        f"{entry.time}  {entry.account:<{ACCOUNT_WIDTH}}  {entry.step:<{STEP_WIDTH}}  "
        f"{entry.result}"
    )


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report whole or not at all: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(path)


def _offset(elapsed: Any) -> str:
    seconds = int(elapsed.total_seconds())
    if seconds < 0:
        raise ValueError(f"timeline entry {seconds} s before the start of the simulated clock")
    hours, remainder = divmod(seconds, 3600)
    return f"+{hours:02d}:{remainder // 60:02d}:{remainder % 60:02d}"
