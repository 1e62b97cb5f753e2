"""Pure decisions of the progressive rollout (DESIGN §10 "Waves"): no AWS call in this module.

The Step Functions state machine carries one small JSON *state* from step to step; each step of
the waves Lambda is a function of that state (and of what the rollout table says) returning the
next state. `next` names the state machine's branch:

    fanout      invoke the fan-out for `wave` (its accountFilter), then record what it invoked
    wait        the wave is not settled: wait `wave.pollSeconds`, check again
    soak        every invoked group settled within tolerance: wait `wave.soakSeconds`, re-check
    approve     the wave passed and needs a person: wait for `approve` on a task token
    continue    the wave passed: begin the next one (`waveIndex` already points at it)
    halt        too many failures (`halt.reasons`): record, notify, stop; no further wave
    done        every wave passed
    superseded  a newer image's rollout began: stop before this wave, and say so

Time is counted in polls, not read from a clock: a wave times out after `timeoutPolls` checks
`pollSeconds` apart, so the decision is the same in AWS and under an emulated clock.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from handlers.common.status import GroupStatus, Invocation, Phase, RolloutSummary, summarize

WAVE_PREFIX = "WAVE#"
# The newest rollout that began a wave: the pointer a newer image moves, an older rollout reads.
LATEST_ROLLOUT_KEY = {"pk": "WAVES#LATEST", "sk": "LATEST"}
REST = "rest"
AVAILABLE = "AVAILABLE"

# Wave item states, as the CLI shows them.
INVOKING = "invoking"
WATCHING = "watching"
SOAKING = "soaking"
AWAITING_APPROVAL = "awaiting-approval"
APPROVED = "approved"
PASSED = "passed"
HALTED = "halted"
SUPERSEDED = "superseded"
ABORTED = "aborted"
RESUMED = "resumed"

# StartExecution names: 1-80 characters, none of whitespace, brackets, wildcards or
# " # % \ ^ | ~ ` $ & , ; : / and no control characters (Step Functions API reference).
EXECUTION_NAME_DISALLOWED = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")
EXECUTION_NAME_MAX = 80
ROLLOUT_ID = re.compile(r"^(\d+)\.(\d+)\.(\d+)/(\d+)$")


class MalformedInputError(ValueError):
    """An event or a state the waves Lambda cannot act on as sent."""


class ConfigurationError(ValueError):
    """An environment variable the component sets holds a value the handler cannot use."""


@dataclass(frozen=True)
class Wave:
    """One configured wave, times in seconds (the component converts the config's minutes)."""

    name: str
    accounts: tuple[str, ...]  # account ids, OU ids, or ("rest",)
    soak_seconds: int
    max_failed_groups: int
    approval: str  # auto | manual
    timeout_seconds: int

    @property
    def is_rest(self) -> bool:
        return self.accounts == (REST,)


@dataclass(frozen=True)
class WavesSettings:
    waves: tuple[Wave, ...]
    poll_seconds: int
    table_name: str
    state_machine_arn: str
    alarm_topic_arn: str


# --- identities ----------------------------------------------------------------------------------


def rollout_id_of(message: Mapping[str, Any]) -> str:
    """The image build version `1.0.0/3` that keys the rollout (the fan-out's imageVersion)."""
    version, build = message.get("version"), message.get("buildVersion")
    if not isinstance(version, str) or isinstance(build, bool) or not isinstance(build, int):
        raise MalformedInputError("AVAILABLE image message has no version and integer buildVersion")
    rollout_id = f"{version}/{build}"
    if not ROLLOUT_ID.match(rollout_id):
        raise MalformedInputError(f"image build version {rollout_id!r} is not x.y.z/n")
    return rollout_id


def execution_name(rollout_id: str, start_wave: int = 0) -> str:
    """`rollout-1.0.0-3`, or `rollout-1.0.0-3-from-2` for a resume: unique per image and start.

    The same image always maps to the same name, so a redelivered notification starts nothing;
    '/' is not allowed in execution names and versions have no '-', so the mapping is one-to-one.
    """
    name = f"rollout-{rollout_id.replace('/', '-')}"
    if start_wave:
        name += f"-from-{start_wave}"
    return EXECUTION_NAME_DISALLOWED.sub("_", name)[:EXECUTION_NAME_MAX]


def version_order(rollout_id: str) -> str:
    """A string that sorts image build versions numerically (1.0.10/1 after 1.0.9/4)."""
    parsed = ROLLOUT_ID.match(rollout_id)
    if not parsed:
        raise MalformedInputError(
            f"rollout id {rollout_id!r} is not an image build version x.y.z/n"
        )
    return ".".join(f"{int(part):010d}" for part in parsed.groups())


def wave_key(index: int) -> str:
    return f"{WAVE_PREFIX}{index:02d}"


# --- the start -----------------------------------------------------------------------------------


def parse_image_notification(event: Any) -> tuple[str, dict[str, Any], str]:
    """(status, image message, SNS MessageId) of the SNS delivery; raises when malformed."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or len(records) != 1:
        raise MalformedInputError(
            "event is not an SNS delivery: expected exactly one Records entry"
        )
    sns = records[0].get("Sns") if isinstance(records[0], dict) else None
    if records[0].get("EventSource") != "aws:sns" or not isinstance(sns, dict):
        raise MalformedInputError("Records[0] is not an SNS record")
    message_id, raw = sns.get("MessageId"), sns.get("Message")
    if not isinstance(message_id, str) or not message_id or not isinstance(raw, str):
        raise MalformedInputError("Records[0].Sns has no MessageId or Message")
    try:
        message = json.loads(raw)
    except json.JSONDecodeError as error:
        raise MalformedInputError(f"Records[0].Sns.Message is not JSON: {error}") from None
    state = message.get("state") if isinstance(message, dict) else None
    status = state.get("status") if isinstance(state, dict) else None
    if not isinstance(status, str):
        raise MalformedInputError("image message has no state.status")
    return status, message, message_id


def execution_input(
    rollout_id: str, raw_message: str, correlation_id: str, start_wave: int = 0
) -> dict[str, Any]:
    """The state machine's input; identical for a redelivery, so StartExecution is idempotent."""
    return {
        "rolloutId": rollout_id,
        "imageMessage": raw_message,
        "correlationId": correlation_id,
        "startWave": start_wave,
        "waveIndex": start_wave,
    }


# --- begin a wave --------------------------------------------------------------------------------


def superseded_by(rollout_id: str, latest: Mapping[str, Any] | None) -> str | None:
    """The newer rollout that began a wave since this one started, if any."""
    if latest is None or latest.get("rolloutId") == rollout_id:
        return None
    return str(latest["rolloutId"]) if latest["order"] > version_order(rollout_id) else None


def account_filter(waves: Sequence[Wave], index: int) -> dict[str, list[str]]:
    """What the fan-out reaches in wave `index`: its members, or everyone not in an earlier wave."""
    wave = waves[index]
    if wave.is_rest:
        earlier = [member for w in waves[:index] for member in w.accounts]
        return {"exclude": sorted(set(earlier))}
    return {"include": sorted(set(wave.accounts))}


def wave_state(waves: Sequence[Wave], index: int, poll_seconds: int) -> dict[str, Any]:
    wave = waves[index]
    return {
        "index": index,
        "name": wave.name,
        "accountFilter": account_filter(waves, index),
        "pollSeconds": poll_seconds,
        # The first check comes right after the fan-out, each further one a poll later.
        "timeoutPolls": 1 + -(-wave.timeout_seconds // poll_seconds),
        "soakSeconds": wave.soak_seconds,
        "maxFailedGroups": wave.max_failed_groups,
        "approval": wave.approval,
        "last": index == len(waves) - 1,
    }


def invoked_pairs(fanout_accounts: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """[account, region] pairs the fan-out's summary reports `invoked` (DESIGN §4 outcomes)."""
    pairs = []
    for entry in fanout_accounts:
        for region, outcome in sorted(entry.get("regions", {}).items()):
            if outcome == "invoked":
                pairs.append([str(entry["accountId"]), region])
    return sorted(pairs)


# --- judge a wave --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    next: str  # wait | soak | approve | continue | done | halt
    failures: tuple[str, ...]
    counts: Mapping[str, int]
    timed_out: bool


def wave_summary(
    records: Iterable[GroupStatus | Invocation | None],
    invoked: Iterable[Sequence[str]],
    invoked_at: str,
) -> RolloutSummary:
    """The wave's groups and silences: group records of its accounts, its own invocations."""
    invocations = [Invocation(account, region, invoked_at) for account, region in invoked]
    groups = [r for r in records if isinstance(r, GroupStatus)]
    return summarize([*groups, *invocations], accounts={i.account for i in invocations})


def judge(summary: RolloutSummary, wave: Mapping[str, Any], stage: str, polls: int) -> Verdict:
    """Settle stage: halt early on too many failures, wait while anything is pending or silent,
    and at the timeout count silence and pending groups as failures. Soak stage: the final word,
    so everything that is not succeeded counts (a rollback during the soak, a late report)."""
    timed_out = stage == "soak" or polls >= int(wave["timeoutPolls"])
    failed = [_describe_group(g) for g in summary.in_phase(Phase.FAILED)]
    unfinished = [_describe_group(g) for g in summary.in_phase(Phase.PENDING)] + [
        f"{i.account} {i.region}: invoked, no group reported" for i in summary.silent
    ]
    failures = failed + (unfinished if timed_out else [])
    counts = dict(summary.counts) | {"silent": len(summary.silent)}
    if len(failures) > int(wave["maxFailedGroups"]):
        return Verdict("halt", tuple(failures), counts, timed_out)
    if not timed_out and unfinished:
        return Verdict("wait", tuple(failures), counts, timed_out)
    if stage == "settle":
        return Verdict("soak", tuple(failures), counts, timed_out)
    if wave["last"]:
        return Verdict("done", tuple(failures), counts, timed_out)
    return Verdict(
        "approve" if wave["approval"] == "manual" else "continue",
        tuple(failures),
        counts,
        timed_out,
    )


def _describe_group(group: GroupStatus) -> str:
    why = f" ({group.reason})" if group.reason else ""
    return f"{group.account} {group.region} {group.group}: {group.state}{why}"


def halt_reason(wave: Mapping[str, Any], failures: Sequence[str]) -> str:
    tolerated = int(wave["maxFailedGroups"])
    shown = "; ".join(failures[:10]) + (
        f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
    )
    return f"wave {wave['name']!r}: {len(failures)} failed (tolerated {tolerated}): {shown}"


def task_failure_reason(wave: Mapping[str, Any], error: Mapping[str, Any]) -> str:
    """Why a step that raised (the fan-out, an approval that timed out) halts the rollout."""
    cause = str(error.get("Cause", ""))
    with contextlib.suppress(json.JSONDecodeError, AttributeError):
        cause = str(json.loads(cause).get("errorMessage", cause))
    return f"wave {wave['name']!r}: {error.get('Error', 'error')}: {cause}"[:1000]


# --- settings ------------------------------------------------------------------------------------


def parse_settings(environ: Mapping[str, str]) -> WavesSettings:
    try:
        raw_waves = json.loads(environ.get("WAVES_JSON", ""))
        waves = tuple(
            Wave(
                name=str(w["name"]),
                accounts=tuple(str(a) for a in w["accounts"]),
                soak_seconds=int(w["soakSeconds"]),
                max_failed_groups=int(w["maxFailedGroups"]),
                approval=str(w["approval"]),
                timeout_seconds=int(w["timeoutSeconds"]),
            )
            for w in raw_waves
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ConfigurationError(f"WAVES_JSON is not a list of waves: {error}") from None
    if not waves:
        raise ConfigurationError("WAVES_JSON lists no wave")
    poll = environ.get("POLL_SECONDS", "60")
    if not poll.isdigit() or int(poll) < 1:
        raise ConfigurationError(f"POLL_SECONDS={poll!r} is not a positive integer")
    for name in ("TABLE_NAME", "STATE_MACHINE_ARN"):
        if not environ.get(name):
            raise ConfigurationError(f"{name} is not set")
    return WavesSettings(
        waves=waves,
        poll_seconds=int(poll),
        table_name=environ["TABLE_NAME"],
        state_machine_arn=environ["STATE_MACHINE_ARN"],
        alarm_topic_arn=environ.get("ALARM_TOPIC_ARN", ""),
    )
