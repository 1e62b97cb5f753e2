"""Pure decisions of the rollout recorder (DESIGN §10): what an event says, and what it changes.

The recorder receives, through the infra account's rollout bus, two kinds of events from the
workload accounts: the refresh handler's own result per group (source `golden-ami.refresh`) and
Auto Scaling's instance-refresh end events of the target groups (source `aws.autoscaling`).
Every event is validated here; anything that does not fit is refused with one reason.

Trust: EventBridge sets an event's `account` (and `region`) from the sender and keeps them when a
rule forwards the event to another bus; a sender cannot choose them. `detail` is the sender's
own text. So a report is always about `account`'s groups, and an event whose detail names any
other account is refused instead of being filed under either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from handlers.common.status import (
    AUTOSCALING_SOURCE,
    REFRESH_END_STATES,
    RESULT_DETAIL_TYPE,
    RESULT_SCHEMA_VERSION,
    RESULT_SOURCE,
    GroupStatus,
)

IN_USE_TAG = "golden-ami:in-use"
IN_USE_TAG_VALUE = "true"  # the lifecycle exclusion matches key and value
# Image Builder tags every AMI it distributes with the ARN of its image.
IMAGE_BUILDER_ARN_TAG = "Ec2ImageBuilderArn"

# Refresh-handler outcomes a result may carry (Auto Scaling's end states come from detail-types).
RESULT_OUTCOMES = frozenset(
    {"started", "current", "deferred", "held", "quarantined", "rejected", "failed"}
)
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
# EventBridge's `time`: ISO 8601 UTC to the second.
_EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_GROUP = re.compile(r"^[^:\x00-\x1f]{1,255}$")  # Auto Scaling group names: no ':' (ARN separator)
_REFRESH_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_IMAGE_ARN = re.compile(r"^arn:aws[\w-]*:imagebuilder:[a-z0-9-]+:\d{12}:image/[^/]+/([^/]+/\d+)$")
_REASON_MAX = 1024
# Detail members that would name an account; none may differ from the event's own `account`.
_ACCOUNT_MEMBERS = ("account", "accountId", "AccountId")


class RejectedEventError(ValueError):
    """The event cannot be recorded as sent; the message says why (one line)."""


@dataclass(frozen=True)
class Report:
    """One validated event: the newest news about one group of the sending account."""

    account: str
    region: str
    group: str
    state: str
    time: str
    reason: str = ""
    ami_before: str | None = None
    ami_after: str | None = None
    refresh_id: str | None = None
    rollout_id: str | None = None  # None: the recorder resolves it (image tags, refresh record)

    @property
    def is_refresh_end(self) -> bool:
        return self.state in REFRESH_END_STATES.values()

    def status(self) -> GroupStatus:
        return GroupStatus(
            account=self.account,
            region=self.region,
            group=self.group,
            state=self.state,
            updated_at=self.time,
            reason=self.reason,
            ami_before=self.ami_before,
            ami_after=self.ami_after,
            refresh_id=self.refresh_id,
        )


def parse_event(event: Any) -> Report:
    """Validate an EventBridge event from the rollout bus (raises RejectedEventError)."""
    if not isinstance(event, dict):
        raise RejectedEventError("event is not a JSON object")
    account = _envelope(event, "account", _ACCOUNT, "a 12-digit account id")
    region = _envelope(event, "region", _REGION, "a region name")
    time = _envelope(
        event, "time", _EVENT_TIME, "an ISO 8601 UTC time such as 2026-11-29T10:00:00Z"
    )
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise RejectedEventError("event has no detail object")
    for member in _ACCOUNT_MEMBERS:
        if member in detail and detail[member] != account:
            raise RejectedEventError(
                f"detail.{member} {detail[member]!r} is not the sending account {account}: an "
                "account reports on its own groups only"
            )
    source, detail_type = event.get("source"), event.get("detail-type")
    if source == RESULT_SOURCE and detail_type == RESULT_DETAIL_TYPE:
        return _result(account, region, time, detail)
    if source == AUTOSCALING_SOURCE and detail_type in REFRESH_END_STATES:
        return Report(
            account=account,
            region=region,
            group=_member(detail, "AutoScalingGroupName", _GROUP, "an Auto Scaling group name"),
            state=REFRESH_END_STATES[str(detail_type)],
            time=time,
            reason=_text(detail.get("StatusReason")),
            refresh_id=_member(detail, "InstanceRefreshId", _REFRESH_ID, "an instance refresh id"),
        )
    raise RejectedEventError(
        f"source {source!r} with detail-type {detail_type!r} is neither a refresh result "
        f"({RESULT_SOURCE}) nor an instance refresh end ({AUTOSCALING_SOURCE})"
    )


def _result(account: str, region: str, time: str, detail: Mapping[str, Any]) -> Report:
    if detail.get("schemaVersion") != RESULT_SCHEMA_VERSION:
        raise RejectedEventError(
            f"detail.schemaVersion {detail.get('schemaVersion')!r} is not {RESULT_SCHEMA_VERSION}"
        )
    outcome = detail.get("outcome")
    if outcome not in RESULT_OUTCOMES:
        raise RejectedEventError(
            f"detail.outcome {outcome!r} is not one of {', '.join(sorted(RESULT_OUTCOMES))}"
        )
    image_arn = detail.get("imageArn")
    rollout_id = None
    if image_arn is not None:
        if not isinstance(image_arn, str) or not (match := _IMAGE_ARN.match(image_arn)):
            raise RejectedEventError(f"detail.imageArn {image_arn!r} is not an image ARN")
        rollout_id = match.group(1)
    refresh_id = detail.get("instanceRefreshId")
    if refresh_id is not None and not _REFRESH_ID.match(str(refresh_id)):
        raise RejectedEventError(f"detail.instanceRefreshId {refresh_id!r} is not a refresh id")
    if outcome == "started" and refresh_id is None:
        raise RejectedEventError("a started result has no detail.instanceRefreshId")
    return Report(
        account=account,
        region=region,
        group=_member(detail, "autoScalingGroupName", _GROUP, "an Auto Scaling group name"),
        state=outcome,
        time=time,
        reason=_text(detail.get("reason")),
        ami_before=_optional_ami(detail, "amiBefore"),
        ami_after=_optional_ami(detail, "amiAfter"),
        refresh_id=refresh_id,
        rollout_id=rollout_id,
    )


def _envelope(event: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise RejectedEventError(f"event {key} {value!r} is not {what}")
    return value


def _member(detail: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = detail.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise RejectedEventError(f"detail.{key} {value!r} is not {what}")
    return value


def _optional_ami(detail: Mapping[str, Any], key: str) -> str | None:
    value = detail.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _AMI.match(value):
        raise RejectedEventError(f"detail.{key} {value!r} is not an AMI id")
    return value


def _text(value: Any) -> str:
    return value[:_REASON_MAX] if isinstance(value, str) else ""


def rollout_id_of_image(image_arn: str) -> str | None:
    """`arn:…:image/<name>/1.0.0/3` -> "1.0.0/3", the image build version (the rollout id)."""
    match = _IMAGE_ARN.match(image_arn)
    return match.group(1) if match else None


# --- AMIs in use ----------------------------------------------------------------------------------

# Nothing changed on the group: what it used before still holds.
_UNCHANGED = frozenset({"current", "deferred"})
# The group does not run (or no longer runs) the report's target AMI.
_NOT_ON_TARGET = frozenset({"RollbackSuccessful", "quarantined", "held", "rejected", "failed"})


def amis_in_use(report: Report, previous: Iterable[str]) -> tuple[str, ...]:
    """The AMIs one group runs or may roll back to, after `report` (DESIGN §3, §10).

    A refresh under way (or one that failed, was cancelled or failed to roll back) leaves
    instances of both images, and after a successful one the image before is the rollback
    target: both stay in use. A rollback, a quarantine or a refusal leaves the group on the
    image before. `current`/`deferred` change nothing, so what the group used stays.
    """
    previous_amis: set[str | None] = set(previous)
    state, before, after = report.state, report.ami_before, report.ami_after
    amis: set[str | None]
    if state in _UNCHANGED:
        amis = previous_amis | {before, after if state == "current" else None}
    elif state in _NOT_ON_TARGET:
        amis = (previous_amis - {after}) | {before}
    else:
        amis = {before, after}
    return tuple(sorted(ami for ami in amis if ami))
