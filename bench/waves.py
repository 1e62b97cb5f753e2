"""The progressive rollout at scale: one image through three waves of a large Organization.

The real RolloutWaves state machine on moto's ASL interpreter, the real waves and fan-out
handlers, stand-in workload accounts that report their groups to the rollout table
(sandbox/waves_world.py); Wait states run on the emulated clock, so a wave costs only the work
done. Per wave, the time inside the fan-out handler is set apart from everything else the wave
took (state transitions, the waves Lambda's begin/record/check steps, their DynamoDB calls):
that remainder is the state machine's overhead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sandbox.waves_world import (
    FANOUT_FUNCTION,
    WAVES_FUNCTION,
    account_id,
    image_message,
    rollout_world,
    wave,
)

EXECUTION = "rollout-1.0.0-3"


@dataclass(frozen=True)
class WaveFigures:
    name: str
    accounts: int
    wall: float
    fanout: float
    workload: float
    steps: int

    @property
    def overhead(self) -> float:
        """What the wave cost beyond the fan-out and the stand-in workloads."""
        return self.wall - self.fanout - self.workload


def three_waves(accounts: int) -> tuple[list[str], list[dict]]:
    ids = [account_id(n) for n in range(1, accounts + 1)]
    early = max(1, accounts // 10)
    waves = [
        wave("canary", ids[:1], soak=1800),
        wave("early", ids[1 : 1 + early], soak=1800),
        wave("rest", ["rest"], soak=0),
    ]
    return ids, waves


@contextmanager
def handler_logs_muted() -> Iterator[None]:
    """The handlers' JSON lines (a fan-out summary of 1,000 accounts is ~100 KB) stay out."""
    loggers = [logging.getLogger(f"golden-ami.{name}") for name in ("fanout", "waves")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_waves(accounts: int) -> tuple[str, list[WaveFigures], float]:
    """The execution's status, the figures per wave and the whole run's wall time."""
    ids, waves = three_waves(accounts)
    with handler_logs_muted(), rollout_world(waves, ids) as world:
        started = time.perf_counter()
        world.deliver(image_message())
        status = world.run_until_finished(EXECUTION)["status"]
        ended = time.perf_counter()
        timings = sorted(world.timings, key=lambda timing: timing[2])
        begins = [t[2] for t in timings if t[0] == WAVES_FUNCTION and t[1] == "begin"]
        figures = []
        for index, spec in enumerate(waves):
            start = begins[index]
            end = begins[index + 1] if index + 1 < len(begins) else ended
            inside = [t for t in timings if start <= t[2] < end]
            figures.append(
                WaveFigures(
                    name=spec["name"],
                    accounts=len(world.wave_item("1.0.0/3", index).get("invoked", [])),
                    wall=end - start,
                    fanout=sum(t[3] for t in inside if t[0] == FANOUT_FUNCTION),
                    workload=sum(
                        t[3] for t in inside if t[0] not in (FANOUT_FUNCTION, WAVES_FUNCTION)
                    ),
                    steps=sum(1 for t in inside if t[0] == WAVES_FUNCTION),
                )
            )
    return status, figures, ended - started
