"""Pure decisions of the fan-out: what the message says, who gets what, and what went wrong.

Nothing here talks to AWS, so every rule of DESIGN §4 is testable with plain data.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from handlers.common import status

INVOKED = "invoked"
NOT_ENROLLED = "not-enrolled"
FAILED = "failed"
OUTCOMES = (INVOKED, NOT_ENROLLED, FAILED)

AVAILABLE = "AVAILABLE"
PAYLOAD_SCHEMA_VERSION = 1

ACCOUNT_SOURCES = ("organizations", "static")
ACCOUNT_ID = re.compile(r"^\d{12}$")
# ListAccountsForParent takes a root (r-...) or an OU (ou-...-...); the API's own patterns.
PARENT_ID = re.compile(r"^(r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32})$")
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
ROLE_ARN = re.compile(r"^arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
IMAGE_ARN = re.compile(r"^arn:aws[\w-]*:imagebuilder:[a-z0-9-]+:\d{12}:image/[^/]+/[^/]+/\d+$")
AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
SESSION_NAME_DISALLOWED = re.compile(r"[^\w+=,.@-]")


class MalformedMessageError(ValueError):
    """The SNS event or the Image Builder message in it cannot be fanned out as sent."""


class ConfigurationError(ValueError):
    """An environment variable the component sets holds a value the handler cannot use."""


@dataclass(frozen=True)
class ImageNotice:
    """The parts of an Image Builder state-change message the fan-out acts on."""

    correlation_id: str
    status: str
    image_arn: str
    status_reason: str = ""
    image_name: str = ""
    image_version: str = ""
    amis: Mapping[str, str] | None = None

    @property
    def is_available(self) -> bool:
        return self.status == AVAILABLE

    @property
    def partition(self) -> str:
        """aws, aws-cn or aws-us-gov: the workload ARNs live in the image's partition."""
        return self.image_arn.split(":")[1]


@dataclass(frozen=True)
class Outcome:
    account_id: str
    region: str
    outcome: str
    reason: str = ""


@dataclass(frozen=True)
class FanoutSettings:
    invoke_role_name: str
    target_function_name: str
    account_source: str
    static_account_ids: tuple[str, ...]
    organizational_unit_ids: tuple[str, ...]
    list_accounts_role_arn: str
    include_infra_account: bool
    expected_account_ids: frozenset[str]
    max_concurrency: int
    metric_namespace: str
    # The rollout status table the invocations are recorded in (DESIGN §10); "" = none.
    rollout_table_name: str = ""


@dataclass(frozen=True)
class AccountFilter:
    """One wave's accounts (DESIGN §10): account ids and OU ids to include, or to exclude.

    `include=None` reaches every account of the source except `exclude` (the `rest` wave).
    """

    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()

    @property
    def members(self) -> frozenset[str]:
        return self.exclude if self.include is None else self.include

    @property
    def organizational_unit_ids(self) -> tuple[str, ...]:
        return tuple(sorted(m for m in self.members if m.startswith("ou-")))

    def admits(self, account_id: str, unit_accounts: frozenset[str]) -> bool:
        """Whether the wave reaches `account_id`; `unit_accounts`: accounts under its OUs."""
        named = account_id in self.members or account_id in unit_accounts
        return named if self.include is not None else not named


# --- the SNS event ----------------------------------------------------------------------------


def parse_sns_event(event: Any) -> ImageNotice:
    """Validate the SNS→Lambda envelope and the Image Builder message it carries.

    SNS delivers exactly one record per invocation. The message is parsed with `json`, whose
    integers are unbounded: `semver` exceeds 64 bits and must never pass through a float.
    """
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or len(records) != 1:
        raise MalformedMessageError(
            "event is not an SNS delivery: expected exactly one entry in Records"
        )
    record = records[0]
    if not isinstance(record, dict) or record.get("EventSource") != "aws:sns":
        raise MalformedMessageError("Records[0].EventSource is not 'aws:sns'")
    sns = record.get("Sns")
    if not isinstance(sns, dict):
        raise MalformedMessageError("Records[0].Sns is missing")
    correlation_id = sns.get("MessageId")
    if not isinstance(correlation_id, str) or not correlation_id:
        raise MalformedMessageError("Records[0].Sns.MessageId is missing")
    raw_message = sns.get("Message")
    if not isinstance(raw_message, str):
        raise MalformedMessageError("Records[0].Sns.Message is missing or not a string")
    try:
        message = json.loads(raw_message)
    except json.JSONDecodeError as error:
        raise MalformedMessageError(f"Records[0].Sns.Message is not JSON: {error}") from None
    if not isinstance(message, dict):
        raise MalformedMessageError("Records[0].Sns.Message is not a JSON object")
    return _parse_image_message(message, correlation_id)


def parse_wave_event(event: Any) -> tuple[ImageNotice, AccountFilter]:
    """The RolloutWaves state machine's request: the image message and one wave's accounts."""
    if not isinstance(event, dict):
        raise MalformedMessageError("wave event is not a JSON object")
    correlation_id = event.get("correlationId")
    if not isinstance(correlation_id, str) or not correlation_id:
        raise MalformedMessageError("wave event has no correlationId")
    raw_message = event.get("imageMessage")
    try:
        message = json.loads(raw_message) if isinstance(raw_message, str) else None
    except json.JSONDecodeError as error:
        raise MalformedMessageError(f"wave event imageMessage is not JSON: {error}") from None
    if not isinstance(message, dict):
        raise MalformedMessageError("wave event imageMessage is not a JSON object")
    notice = _parse_image_message(message, correlation_id)
    raw_filter = event.get("accountFilter")
    if (
        not isinstance(raw_filter, dict)
        or len(raw_filter) != 1
        or not ({"include", "exclude"} & set(raw_filter))
    ):
        raise MalformedMessageError(
            "wave event accountFilter is not {'include': [...]} or {'exclude': [...]}"
        )
    ((kind, members),) = raw_filter.items()
    if not isinstance(members, list) or not all(
        isinstance(m, str) and (ACCOUNT_ID.match(m) or PARENT_ID.match(m)) for m in members
    ):
        raise MalformedMessageError(
            f"wave event accountFilter.{kind} is not a list of account ids and OU ids"
        )
    if kind == "include":
        return notice, AccountFilter(include=frozenset(members))
    return notice, AccountFilter(exclude=frozenset(members))


def _parse_image_message(message: dict[str, Any], correlation_id: str) -> ImageNotice:
    state = message.get("state")
    if not isinstance(state, dict):
        state = {}
    status = state.get("status")
    if not isinstance(status, str) or not status:
        raise MalformedMessageError("image message has no state.status")
    image_arn = _required_string(message, "arn")
    if not IMAGE_ARN.match(image_arn):
        raise MalformedMessageError(
            f"image message arn {image_arn!r} is not an Image Builder image ARN"
        )
    if status != AVAILABLE:
        return ImageNotice(
            correlation_id=correlation_id,
            status=status,
            image_arn=image_arn,
            status_reason=str(state.get("reason", "")),
        )
    build_version = message.get("buildVersion")
    # bool is an int in Python; a JSON `true` is no build number.
    if not isinstance(build_version, int) or isinstance(build_version, bool):
        raise MalformedMessageError("AVAILABLE image message has no integer buildVersion")
    return ImageNotice(
        correlation_id=correlation_id,
        status=status,
        image_arn=image_arn,
        image_name=_required_string(message, "name"),
        image_version=f"{_required_string(message, 'version')}/{build_version}",
        amis=_amis_by_region(message),
    )


def _required_string(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedMessageError(f"image message has no '{key}'")
    return value


def _amis_by_region(message: dict[str, Any]) -> dict[str, str]:
    output = message.get("outputResources")
    entries = output.get("amis") if isinstance(output, dict) else None
    if not isinstance(entries, list) or not entries:
        raise MalformedMessageError("AVAILABLE image message lists no outputResources.amis")
    amis: dict[str, str] = {}
    for index, entry in enumerate(entries):
        region = entry.get("region") if isinstance(entry, dict) else None
        image = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(region, str) or not REGION.match(region):
            raise MalformedMessageError(f"outputResources.amis[{index}] has no valid region")
        if not isinstance(image, str) or not AMI_ID.match(image):
            raise MalformedMessageError(f"outputResources.amis[{index}] has no valid image id")
        if amis.setdefault(region, image) != image:
            raise MalformedMessageError(f"outputResources.amis names two images for {region}")
    return amis


def build_payload(notice: ImageNotice) -> dict[str, Any]:
    """The DESIGN §4 payload every workload function receives, identical in every region."""
    return {
        "schemaVersion": PAYLOAD_SCHEMA_VERSION,
        "imageArn": notice.image_arn,
        "imageName": notice.image_name,
        "imageVersion": notice.image_version,
        "amis": dict(notice.amis or {}),
        "correlationId": notice.correlation_id,
    }


def role_session_name(correlation_id: str) -> str:
    """AssumeRole session name tying CloudTrail entries in every account to this SNS message."""
    return SESSION_NAME_DISALLOWED.sub("-", f"golden-ami-fanout-{correlation_id}")[:64]


# --- accounts -----------------------------------------------------------------------------------


def account_is_active(account: Mapping[str, Any]) -> bool:
    """Organizations reports `State` (newer, finer) and the deprecated `Status`; prefer `State`."""
    return (account.get("State") or account.get("Status")) == "ACTIVE"


def missing_expected_accounts(
    settings: FanoutSettings, listed: Iterable[str], infra_account_id: str
) -> list[str]:
    """Expected accounts the source did not yield (suspended, moved out of the OU filter, typo)."""
    present = set(listed) | {infra_account_id}
    return sorted(settings.expected_account_ids - present)


def classify_error(stage: str, error_code: str, expected: bool) -> tuple[str, str]:
    """Outcome of one (account, region) whose AssumeRole or Invoke raised `error_code`.

    AccessDenied on AssumeRole is what an account without the workload stack answers, but also
    what a broken enrolment answers: only accounts not listed as expected get the benefit of the
    doubt. A missing function means the workload stack does not cover that region.
    """
    if stage == "assume" and error_code == "AccessDenied":
        if expected:
            return FAILED, "AccessDenied on AssumeRole for an expected account: enrolment is broken"
        return NOT_ENROLLED, "AccessDenied on AssumeRole: no workload stack in this account"
    if stage == "invoke" and error_code == "ResourceNotFoundException":
        return NOT_ENROLLED, "function not found: the workload stack does not cover this region"
    return FAILED, f"{error_code} on {'AssumeRole' if stage == 'assume' else 'Invoke'}"


def unreached_expected_accounts(
    outcomes: Iterable[Outcome], expected_account_ids: frozenset[str]
) -> list[Outcome]:
    """`outcomes` with expected accounts that have the function in no region of the image failed.

    A function missing in one region only means the workload stack does not cover that region;
    missing in every region is a broken (or never deployed) enrolment of an account that must be
    enrolled, so it is never `not-enrolled`.
    """
    outcomes = list(outcomes)
    reached = {o.account_id for o in outcomes if o.outcome != NOT_ENROLLED}
    unreached = {o.account_id for o in outcomes if o.account_id in expected_account_ids} - reached
    reason = "expected account has no refresh function in any region of the image"
    return [
        Outcome(o.account_id, o.region, FAILED, reason) if o.account_id in unreached else o
        for o in outcomes
    ]


# --- result -------------------------------------------------------------------------------------


def summarize(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """Counts per outcome plus every (account, region); reasons only where something is off."""
    ordered = sorted(outcomes, key=lambda o: (o.account_id, o.region))
    counts = Counter(o.outcome for o in ordered)
    accounts: dict[str, dict[str, str]] = {}
    for outcome in ordered:
        accounts.setdefault(outcome.account_id, {})[outcome.region] = outcome.outcome
    return {
        "counts": {name: counts.get(name, 0) for name in OUTCOMES},
        "accounts": [{"accountId": a, "regions": r} for a, r in accounts.items()],
        "problems": [
            {
                "accountId": o.account_id,
                "region": o.region,
                "outcome": o.outcome,
                "reason": o.reason,
            }
            for o in ordered
            if o.outcome != INVOKED
        ],
    }


def invocation_records(
    notice: ImageNotice, outcomes: Iterable[Outcome], invoked_at: str
) -> list[dict[str, Any]]:
    """Status table items for every invoked (account, region): a group that never reports from
    there is `silent` in the rollout status (handlers/common/status.py)."""
    rollout_id = notice.image_version
    return [
        status.Invocation(o.account_id, o.region, invoked_at).to_item(rollout_id)
        for o in sorted(outcomes, key=lambda o: (o.account_id, o.region))
        if o.outcome == INVOKED
    ]


def should_fail(outcomes: Iterable[Outcome]) -> bool:
    """Fail the invocation when any account that is (or may be) enrolled was not reached.

    `failed` is by construction the outcome of such accounts: not-enrolled ones are excluded.
    """
    return any(o.outcome == FAILED for o in outcomes)


# --- settings -------------------------------------------------------------------------------------


def parse_settings(environ: Mapping[str, str]) -> FanoutSettings:
    """Read the environment the OrgFanout component sets; reject values the handler cannot use."""
    source = environ.get("ACCOUNT_SOURCE", "organizations")
    if source not in ACCOUNT_SOURCES:
        raise ConfigurationError(
            f"ACCOUNT_SOURCE={source!r} is not one of {', '.join(ACCOUNT_SOURCES)}"
        )
    static_ids = _id_list(environ, "STATIC_ACCOUNT_IDS", ACCOUNT_ID, "a 12-digit account id")
    if source == "static" and not static_ids:
        raise ConfigurationError("ACCOUNT_SOURCE=static needs STATIC_ACCOUNT_IDS")
    list_role = environ.get("LIST_ACCOUNTS_ROLE_ARN", "").strip()
    if list_role and not ROLE_ARN.match(list_role):
        raise ConfigurationError(f"LIST_ACCOUNTS_ROLE_ARN={list_role!r} is not an IAM role ARN")
    return FanoutSettings(
        invoke_role_name=_matching(environ, "INVOKE_ROLE_NAME", ROLE_NAME, "an IAM role name"),
        target_function_name=_matching(
            environ, "TARGET_FUNCTION_NAME", FUNCTION_NAME, "a Lambda function name"
        ),
        account_source=source,
        static_account_ids=static_ids,
        organizational_unit_ids=_id_list(
            environ, "ORGANIZATIONAL_UNIT_IDS", PARENT_ID, "an OU id (ou-...) or root id (r-...)"
        ),
        list_accounts_role_arn=list_role,
        include_infra_account=_boolean(environ, "INCLUDE_INFRA_ACCOUNT"),
        expected_account_ids=frozenset(
            _id_list(environ, "EXPECTED_ACCOUNT_IDS", ACCOUNT_ID, "a 12-digit account id")
        ),
        max_concurrency=_positive_int(environ, "MAX_CONCURRENCY", default=32),
        metric_namespace=environ.get("METRIC_NAMESPACE", "GoldenAmi").strip() or "GoldenAmi",
        rollout_table_name=environ.get("ROLLOUT_TABLE_NAME", "").strip(),
    )


def _matching(environ: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    value = environ.get(name, "").strip()
    if not pattern.match(value):
        raise ConfigurationError(f"{name}={value!r} is not {what}")
    return value


def _id_list(
    environ: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str
) -> tuple[str, ...]:
    values = [v.strip() for v in environ.get(name, "").split(",") if v.strip()]
    for value in values:
        if not pattern.match(value):
            raise ConfigurationError(f"{name} entry {value!r} is not {what}")
    return tuple(dict.fromkeys(values))


def _boolean(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        raise ConfigurationError(f"{name}={value!r} is not 'true' or 'false'")
    return value == "true"


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(f"{name}={raw!r} is not a positive integer")
    return int(raw)
