"""The rollout status figures of `python -m bench`: the recorder's logic and `rollout status`.

Both run against an in-memory table with DynamoDB's conditional-write semantics, so the
figures are the CPU cost of the code (validation, ordering, in-use AMIs; folding and rendering
the status), not the latency of DynamoDB: a real recorder invocation adds its few round trips,
and the CLI its paged Query (about 200 bytes per group, 1 MB per page).
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.common import status
from handlers.common.status import AUTOSCALING_SOURCE, RESULT_DETAIL_TYPE, RESULT_SOURCE
from handlers.recorder.app import Recorder
from rollout.status import build_report, render_table
from tests.rollout_fixtures import eventbridge_envelope

REGIONS = ("us-east-1", "eu-west-1")
ROLLOUT = "1.0.0/7"
REFRESH = timedelta(minutes=20)  # start to Succeeded
IMAGE_ARN = f"arn:aws:imagebuilder:us-east-1:111122223333:image/golden-ecs-al2023/{ROLLOUT}"
OLD_AMI, NEW_AMI = "ami-0123456789abcdef0", "ami-0fedcba9876543210"


class InMemoryTable:
    """The recorder's and the CLI's table and image calls, answered from dicts."""

    name = "bench"

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.tagged: dict[str, set[str]] = {}

    def put_if_newer(self, item: Mapping[str, Any]) -> bool:
        held = self.items.get((item["pk"], item["sk"]))
        if held is not None and held["order"] >= item["order"]:
            return False
        self.items[item["pk"], item["sk"]] = dict(item)
        return True

    def put_if_absent(self, item: Mapping[str, Any]) -> bool:
        return self.items.setdefault((item["pk"], item["sk"]), dict(item)) is item

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        return self.items.get((pk, sk))

    def query(self, pk: str) -> Iterator[dict[str, Any]]:
        return (item for (key, _), item in list(self.items.items()) if key == pk)

    def in_use_items(self, region: str) -> Iterator[dict[str, Any]]:
        return self.query(status.in_use_key(region))

    def own_images(self, region: str, ami_ids: Iterable[str]) -> list[dict[str, Any]]:
        return [{"ImageId": ami} for ami in ami_ids]

    def rollout_of_image(self, region: str, ami_id: str) -> str | None:
        return ROLLOUT

    def tag_in_use(self, region: str, ami_ids: Iterable[str]) -> None:
        self.tagged.setdefault(region, set()).update(ami_ids)

    def untag_in_use(self, region: str, ami_ids: Iterable[str]) -> None:
        self.tagged.setdefault(region, set()).difference_update(ami_ids)


class _CliTable:
    """The reads of `rollout.status.StatusTable`, from the same dicts."""

    def __init__(self, table: InMemoryTable) -> None:
        self._table, self.name = table, table.name

    def items(self, pk: str) -> list[dict[str, Any]]:
        return list(self._table.query(pk))


def rollout_events(accounts: int, start: datetime) -> list[dict[str, Any]]:
    """Per account and region: the handler's `started` result, then the refresh's success."""
    events = []
    for n in range(accounts):
        account = f"{100000000000 + n}"
        for region in REGIONS:
            refresh_id = str(uuid.UUID(int=n * len(REGIONS) + REGIONS.index(region) + 1))
            detail = {
                "schemaVersion": 1,
                "autoScalingGroupName": "ecs",
                "outcome": "started",
                "reason": "refreshing",
                "imageArn": IMAGE_ARN,
                "amiBefore": OLD_AMI,
                "amiAfter": NEW_AMI,
                "instanceRefreshId": refresh_id,
            }
            started, ended = (at.strftime("%Y-%m-%dT%H:%M:%SZ") for at in (start, start + REFRESH))
            events.append(
                eventbridge_envelope(
                    RESULT_SOURCE, RESULT_DETAIL_TYPE, account, region, started, detail
                )
            )
            end = {"InstanceRefreshId": refresh_id, "AutoScalingGroupName": "ecs"}
            succeeded = "EC2 Auto Scaling Instance Refresh Succeeded"
            events.append(
                eventbridge_envelope(AUTOSCALING_SOURCE, succeeded, account, region, ended, end)
            )
    return events


def measure(accounts: int) -> tuple[int, float, float, int]:
    """(events recorded, events per second, status seconds, groups in the status)."""
    table = InMemoryTable()
    recorder = Recorder(table)  # type: ignore[arg-type]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = rollout_events(accounts, start)
    log_handler = next(iter(logging.getLogger("golden-ami.recorder").handlers))
    previous = log_handler.setStream(io.StringIO())  # type: ignore[attr-defined]
    try:
        began = time.perf_counter()
        recorded = sum(1 for event in events if recorder.record(event).get("recorded"))
        elapsed = time.perf_counter() - began
    finally:
        log_handler.setStream(previous)  # type: ignore[attr-defined]
    began = time.perf_counter()
    report = build_report(_CliTable(table), None, start + timedelta(hours=1))  # type: ignore[arg-type]
    render_table(report, colour=False)
    status_seconds = time.perf_counter() - began
    return recorded, recorded / elapsed, status_seconds, len(report.summary.groups)
