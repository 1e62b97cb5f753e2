"""The rollout status record (DESIGN §10): one shape shared by its writers and its readers.

Writers: the recorder Lambda (workload results and Auto Scaling refresh ends, forwarded to the
infra rollout bus) and the fan-out (which accounts and regions it invoked). Readers: the wave
checker of the progressive rollout and the operator CLI (`python -m rollout`).

The DynamoDB table has a string partition key `pk` and a string sort key `sk`:

    pk = ROLLOUT#<image build version>   sk = GROUP#<account>#<region>#<group>   one per group
    pk = ROLLOUT#<image build version>   sk = INVOKED#<account>#<region>         one per invoke
    pk = ROLLOUTS                        sk = ROLLOUT#<image build version>      rollout index
    pk = REFRESH#<account>#<region>#<id> sk = REFRESH                           refresh's rollout
    pk = INUSE#<region>                  sk = GROUP#<account>#<region>#<group>   AMIs a group uses

Items are plain attribute maps (the resource API's Python values). A group item's `state` is
the newest thing known about the group in that rollout: a refresh-handler outcome or an
Auto Scaling refresh end. `order` makes "newest" a string comparison, so the recorder's
conditional write (`attribute_not_exists(pk) OR #order < :order`) never lets a replayed or
late event regress a newer state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# What the refresh handler puts on its default bus, one event per group result; workload rules
# forward these (and Auto Scaling's refresh ends) to the infra account's rollout bus.
RESULT_SOURCE = "golden-ami.refresh"
RESULT_DETAIL_TYPE = "Golden AMI Refresh Result"
RESULT_SCHEMA_VERSION = 1
AUTOSCALING_SOURCE = "aws.autoscaling"

ROLLOUT_PREFIX = "ROLLOUT#"
GROUP_PREFIX = "GROUP#"
INVOKED_PREFIX = "INVOKED#"
# One partition lists every rollout with when it was first seen (writers add, never update).
ROLLOUT_INDEX_KEY = "ROLLOUTS"
REFRESH_PREFIX = "REFRESH#"
REFRESH_SORT_KEY = "REFRESH"
IN_USE_PREFIX = "INUSE#"


class Phase(StrEnum):
    PENDING = "pending"  # more is expected: a refresh runs, or the group waits its turn
    SUCCEEDED = "succeeded"  # the group runs the rollout's AMI
    FAILED = "failed"  # needs a person: rolled back, failed, rejected, held, quarantined


# Refresh-handler outcomes (DESIGN §4, §5) and Auto Scaling instance-refresh end statuses
# (the `detail.Status`-free detail-types, named as DescribeInstanceRefreshes names them).
STATE_PHASES: Mapping[str, Phase] = {
    "deferred": Phase.PENDING,
    "started": Phase.PENDING,
    "current": Phase.SUCCEEDED,
    "Successful": Phase.SUCCEEDED,
    "held": Phase.FAILED,
    "quarantined": Phase.FAILED,
    "rejected": Phase.FAILED,
    "failed": Phase.FAILED,
    "Failed": Phase.FAILED,
    "Cancelled": Phase.FAILED,
    "RollbackSuccessful": Phase.FAILED,
    "RollbackFailed": Phase.FAILED,
}

# Ties on the same second are broken by how far along a refresh each state is.
_STATE_RANK: Mapping[str, int] = {"deferred": 1, "started": 2}
_TERMINAL_RANK = 3

REFRESH_END_STATES: Mapping[str, str] = {
    "EC2 Auto Scaling Instance Refresh Succeeded": "Successful",
    "EC2 Auto Scaling Instance Refresh Failed": "Failed",
    "EC2 Auto Scaling Instance Refresh Cancelled": "Cancelled",
    "EC2 Auto Scaling Instance Refresh Rollback Succeeded": "RollbackSuccessful",
    "EC2 Auto Scaling Instance Refresh Rollback Failed": "RollbackFailed",
}


def rollout_key(rollout_id: str) -> str:
    return f"{ROLLOUT_PREFIX}{rollout_id}"


def group_key(account: str, region: str, group: str) -> str:
    # The group comes last: an Auto Scaling group name may itself contain '#'.
    return f"{GROUP_PREFIX}{account}#{region}#{group}"


def invocation_key(account: str, region: str) -> str:
    return f"{INVOKED_PREFIX}{account}#{region}"


def refresh_key(account: str, region: str, refresh_id: str) -> str:
    """An Auto Scaling refresh end names no image: this item ties the refresh to its rollout."""
    return f"{REFRESH_PREFIX}{account}#{region}#{refresh_id}"


def in_use_key(region: str) -> str:
    return f"{IN_USE_PREFIX}{region}"


def rollout_index_item(rollout_id: str, first_seen_at: str) -> dict[str, Any]:
    """Written with `attribute_not_exists(pk)`: the first writer's time stays."""
    return {
        "pk": ROLLOUT_INDEX_KEY,
        "sk": rollout_key(rollout_id),
        "rolloutId": rollout_id,
        "firstSeenAt": first_seen_at,
    }


def newest_rollout(index_items: Iterable[Mapping[str, Any]]) -> str | None:
    """The rollout first seen last (build versions do not sort as text: 1.0.0/10 < 1.0.0/9)."""
    newest = max(
        index_items,
        key=lambda item: (str(item["firstSeenAt"]), str(item["rolloutId"])),
        default=None,
    )
    return None if newest is None else str(newest["rolloutId"])


def order_key(event_time: str, state: str) -> str:
    """Sortable "how new" of a state: EventBridge's ISO time (UTC, `Z`), then refresh progress."""
    if state not in STATE_PHASES:
        raise ValueError(f"unknown rollout state {state!r}")
    return f"{event_time}|{_STATE_RANK.get(state, _TERMINAL_RANK)}"


@dataclass(frozen=True)
class GroupStatus:
    account: str
    region: str
    group: str
    state: str
    updated_at: str
    reason: str = ""
    ami_before: str | None = None
    ami_after: str | None = None
    refresh_id: str | None = None

    @property
    def phase(self) -> Phase:
        return STATE_PHASES[self.state]

    def to_item(self, rollout_id: str) -> dict[str, Any]:
        item = {
            "pk": rollout_key(rollout_id),
            "sk": group_key(self.account, self.region, self.group),
            "account": self.account,
            "region": self.region,
            "group": self.group,
            "state": self.state,
            "updatedAt": self.updated_at,
            "order": order_key(self.updated_at, self.state),
            "reason": self.reason,
            "amiBefore": self.ami_before,
            "amiAfter": self.ami_after,
            "refreshId": self.refresh_id,
        }
        return {key: value for key, value in item.items() if value is not None}


@dataclass(frozen=True)
class Invocation:
    account: str
    region: str
    invoked_at: str

    def to_item(self, rollout_id: str) -> dict[str, Any]:
        return {
            "pk": rollout_key(rollout_id),
            "sk": invocation_key(self.account, self.region),
            "account": self.account,
            "region": self.region,
            "invokedAt": self.invoked_at,
        }


def parse_item(item: Mapping[str, Any]) -> GroupStatus | Invocation | None:
    """A table item as a record; None for items of other kinds (e.g. a wave's own record)."""
    sort_key = str(item["sk"])
    if sort_key.startswith(GROUP_PREFIX):
        return GroupStatus(
            account=str(item["account"]),
            region=str(item["region"]),
            group=str(item["group"]),
            state=str(item["state"]),
            updated_at=str(item["updatedAt"]),
            reason=str(item.get("reason", "")),
            ami_before=item.get("amiBefore"),
            ami_after=item.get("amiAfter"),
            refresh_id=item.get("refreshId"),
        )
    if sort_key.startswith(INVOKED_PREFIX):
        return Invocation(
            account=str(item["account"]),
            region=str(item["region"]),
            invoked_at=str(item["invokedAt"]),
        )
    return None


@dataclass(frozen=True)
class RolloutSummary:
    """Where a rollout (or one wave of it: `accounts`) stands."""

    groups: tuple[GroupStatus, ...]
    # Invoked (account, region) pairs from which no group has reported yet.
    silent: tuple[Invocation, ...]
    counts: Mapping[str, int] = field(default_factory=dict)

    def in_phase(self, phase: Phase) -> tuple[GroupStatus, ...]:
        return tuple(g for g in self.groups if g.phase is phase)

    @property
    def settled(self) -> bool:
        """Every invoked account reported and no group is still pending."""
        return not self.silent and not self.in_phase(Phase.PENDING)


def summarize(
    records: Iterable[GroupStatus | Invocation | None], accounts: Iterable[str] | None = None
) -> RolloutSummary:
    """Fold a rollout's records into counts by state, optionally for some accounts only."""
    wanted = None if accounts is None else set(accounts)
    groups: list[GroupStatus] = []
    invocations: list[Invocation] = []
    for record in records:
        if record is None or (wanted is not None and record.account not in wanted):
            continue
        if isinstance(record, GroupStatus):
            groups.append(record)
        else:
            invocations.append(record)
    reported = {(g.account, g.region) for g in groups}
    silent = tuple(
        sorted(
            (i for i in invocations if (i.account, i.region) not in reported),
            key=lambda i: (i.account, i.region),
        )
    )
    counts: dict[str, int] = {}
    for group in groups:
        counts[group.state] = counts.get(group.state, 0) + 1
    ordered = tuple(sorted(groups, key=lambda g: (g.account, g.region, g.group)))
    return RolloutSummary(groups=ordered, silent=silent, counts=dict(sorted(counts.items())))
