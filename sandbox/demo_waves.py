"""The demo's last part: a progressive rollout in two waves (DESIGN §10 "Waves", `make demo`).

The infra stack's `rolloutWaves` state machine (components/rollout_definition.py) runs on moto's
ASL interpreter with its waits on the emulated clock, which starts where the story's clock
stopped; its Lambda tasks are the real waves and fan-out handlers, and its status is the real
rollout table, read with `python -m rollout status`. The workload accounts are the stand-ins of
`sandbox.waves_world`: each reports its group's `started` and end states to the table, as the
refresh handler and the recorder did in the story before this part. The canary account's
services fail on image A (its group rolls back) and run on image B:

  image A: the canary wave rolls back → the rollout halts, the rest wave is never invoked;
  image B: the canary succeeds, soaks, and the rest wave completes the rollout.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TextIO

import boto3

from handlers.common.status import GROUP_PREFIX, ROLLOUT_PREFIX
from handlers.waves import logic as waves_logic
from rollout import status as rollout_status
from sandbox.timeline import Timeline
from sandbox.waves_world import (
    HEALTHY,
    REGION,
    ROLLS_BACK,
    TABLE,
    RolloutWorld,
    account_id,
    image_message,
    rollout_world,
    wave,
)

CANARY = account_id(1)
REST = [account_id(n) for n in range(2, 5)]
SOAK_MINUTES = 30
# The infra stack's `golden-ami:rolloutWaves`, as the component hands it to the waves Lambda.
WAVES = [
    wave("canary", [CANARY], soak=SOAK_MINUTES * 60),
    wave("rest", ["rest"], soak=0),
]
# (version, build): image A breaks the canary's services, image B does not.
IMAGES = (("1.1.0", 1), ("1.1.1", 1))
WAVE_STARTED = {waves_logic.INVOKING, waves_logic.WATCHING}
# The wave item's state (handlers/waves), told as what happened.
WAVE_MEANING = {
    waves_logic.INVOKING: "started, fan-out to its accounts",
    waves_logic.WATCHING: "started, watching its groups",
    waves_logic.SOAKING: f"settled, soaking {SOAK_MINUTES} min",
    waves_logic.PASSED: "passed",
    waves_logic.HALTED: "HALTED, no further wave",
}


@dataclass
class WaveWatch:
    """Puts what changed in the world on the timeline, at the emulated clock's time."""

    world: RolloutWorld
    timeline: Timeline
    start: datetime
    _invoked: int = 0
    _seen: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.world.clock.now)

    def note(self, account: str, step: str, result: str) -> None:
        self.timeline.record(self.now, account, step, result)

    def observe(self) -> None:
        items = sorted(_scan(self.world.table), key=lambda i: (i["pk"], i["sk"]))
        waves = [i for i in items if i["sk"].startswith(waves_logic.WAVE_PREFIX) and "name" in i]
        # A wave's start (and the verdict on the wave before it), then what its accounts did,
        # then the verdict they led to.
        last = {i["pk"]: i["index"] for i in waves}  # sorted: the rollout's newest wave
        self._waves([i for i in waves if i["state"] in WAVE_STARTED or i["index"] < last[i["pk"]]])
        for account, rollout_id in self.world.invoked[self._invoked :]:
            self.note(account, "refresh invoked", f"by the fan-out (rollout {rollout_id})")
        self._invoked = len(self.world.invoked)
        for item in items:
            if item["sk"].startswith(GROUP_PREFIX) and self._changed(item):
                _, account, region, group = item["sk"].split("#", 3)
                rollout_id = item["pk"].removeprefix(ROLLOUT_PREFIX)
                result = f"{region} {group}: {item['state']} (rollout {rollout_id})"
                self.note(account, "group status", result)
        self._waves(waves)

    def _changed(self, item: dict[str, Any]) -> bool:
        key = (item["pk"], item["sk"])
        changed = self._seen.get(key) != item["state"]
        self._seen[key] = item["state"]
        return changed

    def _waves(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if self._changed(item):
                rollout_id = item["pk"].removeprefix(ROLLOUT_PREFIX)
                meaning = WAVE_MEANING.get(item["state"], item["state"])
                reason = f" — {item['reason']}" if item.get("reason") else ""
                self.note(
                    "infra",
                    "rollout wave",
                    f"{rollout_id} wave {item['index']} '{item['name']}': {meaning}{reason}",
                )

    def run(self, version: str, build: int) -> dict[str, Any]:
        """Deliver the image notification and watch its execution to its end."""
        name = f"rollout-{version}-{build}"
        self.note("infra", "image notification", f"{version}/{build} AVAILABLE → waves function")
        self.world.deliver(image_message(version, build), message_id=f"msg-{version}")

        def finished() -> bool:
            self.observe()
            return self.world.finished(name)

        self.world.clock.run_until(finished, self.world.router)
        execution = self.world.execution(name)
        result = execution["status"]
        if execution.get("error"):
            result += f" ({execution['error']}: {execution.get('cause', '')})"
        self.note("infra", "state machine", f"execution {name}: {result}")
        for notice in self.world.alarm_messages():
            self.note("infra", "alarm topic", notice["Subject"])
        return execution

    def never_started(self, rollout_id: str, accounts: list[str]) -> None:
        reached = [a for a, r in self.world.invoked if r == rollout_id and a in accounts]
        self.note(
            "infra",
            "rollout wave",
            f"{rollout_id} wave 1 'rest': never started — {len(reached)} of its "
            f"{len(accounts)} accounts invoked",
        )


def tell(timeline: Timeline, start: datetime, out: TextIO | None) -> dict[str, Any]:
    """Run both rollouts on the timeline from `start`; print their status tables to `out`.

    Returns the report's `waves` section: the wave list and, per rollout, the CLI's JSON.
    """
    timeline.heading("Progressive rollout: canary wave, then the rest")
    with rollout_world(WAVES, [CANARY, *REST], {CANARY: ROLLS_BACK}, origin=start) as world:
        watch = WaveWatch(world, timeline, start)
        watch.note(
            "infra",
            "note",
            f"rolloutWaves: canary = {CANARY} (soak {SOAK_MINUTES} min), rest = "
            f"{', '.join(REST)}; the canary's services fail on image A and run on image B",
        )
        watch.run(*IMAGES[0])
        watch.never_started("/".join(map(str, IMAGES[0])), REST)
        world.behaviour[CANARY] = HEALTHY  # image B: the canary's services run on it
        watch.run(*IMAGES[1])
        session = boto3.Session(region_name=REGION)
        rollouts, tables = [], []
        for version, build in IMAGES:
            rollout_id = f"{version}/{build}"
            args = rollout_status.parse(["--table", TABLE, rollout_id])
            printed = io.StringIO()
            rollout_status.run(args, printed, session=session, now=watch.now)
            tables.append((rollout_id, printed.getvalue()))
            table = rollout_status.StatusTable(session, TABLE)
            rollouts.append(rollout_status.build_report(table, rollout_id, watch.now).as_json())
    if out is not None:
        for rollout_id, printed in tables:
            out.write(f"\n== Rollout status (python -m rollout status {rollout_id})\n{printed}")
    waves = [{"name": w["name"], "accounts": w["accounts"]} for w in WAVES]
    return {"waves": waves, "rollouts": rollouts}


def _scan(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {}
    while True:
        page = table.scan(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
