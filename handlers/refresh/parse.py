"""Environment and event parsing for the refresh handler: bad input fails here, before AWS."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FINISHED_REFRESH_DETAIL_TYPES = frozenset(
    {
        "EC2 Auto Scaling Instance Refresh Succeeded",
        "EC2 Auto Scaling Instance Refresh Failed",
        "EC2 Auto Scaling Instance Refresh Cancelled",
        "EC2 Auto Scaling Instance Refresh Rollback Succeeded",
        "EC2 Auto Scaling Instance Refresh Rollback Failed",
    }
)
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# RefreshPreferences members the botocore model types as integers.
_INTEGER_PREFERENCES = frozenset(
    {
        "MinHealthyPercentage",
        "MaxHealthyPercentage",
        "InstanceWarmup",
        "CheckpointDelay",
        "BakeTime",
    }
)


def _is_number(value: Any) -> bool:
    """JSON numbers only: `true == 1` in Python, but a JSON boolean is no number."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class InvalidInputError(ValueError):
    """The environment or the event is malformed; nothing has been done."""


@dataclass(frozen=True)
class Target:
    auto_scaling_group_name: str
    launch_template_id: str
    cluster_name: str
    rollback_alarm_names: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    infra_account_id: str
    image_prefix: str
    targets: tuple[Target, ...]
    refresh_preferences: Mapping[str, Any]

    def target(self, group_name: str) -> Target | None:
        return next((t for t in self.targets if t.auto_scaling_group_name == group_name), None)


@dataclass(frozen=True)
class Rollout:
    """A new image from the fan-out (DESIGN §4)."""

    image_arn: str
    amis: Mapping[str, str]
    correlation_id: str | None


@dataclass(frozen=True)
class Converge:
    """Move groups onto the newest trusted image; `group_name` None means every target."""

    group_name: str | None = None
    trigger: str = "converge"


@dataclass(frozen=True)
class Release:
    group_name: str
    ami_id: str


Request = Rollout | Converge | Release


def parse_settings(environ: Mapping[str, str]) -> Settings:
    infra_account_id = _required_env(environ, "INFRA_ACCOUNT_ID")
    if not _ACCOUNT_ID.match(infra_account_id):
        raise InvalidInputError(
            f"INFRA_ACCOUNT_ID must be a 12-digit account id, got {infra_account_id!r}"
        )
    image_prefix = _required_env(environ, "IMAGE_PREFIX")
    targets_json = _json_env(environ, "TARGETS_JSON")
    if not isinstance(targets_json, list) or not targets_json:
        raise InvalidInputError("TARGETS_JSON must be a non-empty JSON array of target objects")
    targets = tuple(_parse_target(index, raw) for index, raw in enumerate(targets_json))
    names = [t.auto_scaling_group_name for t in targets]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"TARGETS_JSON names an Auto Scaling group twice: {names}")
    preferences = _json_env(environ, "REFRESH_PREFERENCES_JSON")
    if not isinstance(preferences, dict):
        raise InvalidInputError(
            "REFRESH_PREFERENCES_JSON must be a JSON object of RefreshPreferences"
        )
    _check_preference_numbers(preferences)
    return Settings(infra_account_id, image_prefix, targets, preferences)


def _check_preference_numbers(preferences: Mapping[str, Any]) -> None:
    """botocore accepts a bool where an integer is modelled (bool is an int) and sends "True"."""
    for name in _INTEGER_PREFERENCES & set(preferences):
        if not isinstance(preferences[name], int) or isinstance(preferences[name], bool):
            raise InvalidInputError(
                f"REFRESH_PREFERENCES_JSON.{name} must be an integer, got {preferences[name]!r}"
            )
    checkpoints = preferences.get("CheckpointPercentages", [])
    if not isinstance(checkpoints, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in checkpoints
    ):
        raise InvalidInputError(
            "REFRESH_PREFERENCES_JSON.CheckpointPercentages must be an array of integers, got "
            f"{checkpoints!r}"
        )


def _required_env(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise InvalidInputError(f"environment variable {name} is missing or empty")
    return value


def _json_env(environ: Mapping[str, str], name: str) -> Any:
    try:
        return json.loads(_required_env(environ, name))
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"environment variable {name} is not valid JSON: {error}") from None


def _parse_target(index: int, raw: Any) -> Target:
    where = f"TARGETS_JSON[{index}]"
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where} must be an object")
    for key in ("autoScalingGroupName", "launchTemplateId", "clusterName"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise InvalidInputError(f"{where}.{key} must be a non-empty string")
    alarms = raw.get("rollbackAlarmNames", [])
    if not isinstance(alarms, list) or not all(isinstance(a, str) and a for a in alarms):
        raise InvalidInputError(f"{where}.rollbackAlarmNames must be an array of alarm names")
    return Target(
        raw["autoScalingGroupName"], raw["launchTemplateId"], raw["clusterName"], tuple(alarms)
    )


def parse_event(event: Any) -> Request:
    if not isinstance(event, dict):
        raise InvalidInputError(f"event must be a JSON object, got {type(event).__name__}")
    if event.get("source") == "aws.autoscaling":
        return _parse_refresh_finished(event)
    if "schemaVersion" in event or "amis" in event:
        return _parse_rollout(event)
    action = event.get("action", "converge")
    if action == "converge" and set(event) <= {"action"}:
        return Converge()
    if action == "release":
        return _parse_release(event)
    raise InvalidInputError(
        "event is neither a rollout payload (schemaVersion 1), a converge or release action, "
        f"nor an instance-refresh event; keys: {sorted(event)}"
    )


def _parse_rollout(event: dict[str, Any]) -> Rollout:
    schema_version = event.get("schemaVersion")
    if not _is_number(schema_version):
        raise InvalidInputError(
            f"schemaVersion must be the number 1, got {schema_version!r} "
            f"({type(schema_version).__name__})"
        )
    if schema_version != 1:
        raise InvalidInputError(f"unsupported schemaVersion {schema_version!r}; expected 1")
    image_arn = event.get("imageArn")
    if not isinstance(image_arn, str) or not image_arn.startswith("arn:"):
        raise InvalidInputError(f"imageArn must be an ARN, got {image_arn!r}")
    amis = event.get("amis")
    if not isinstance(amis, dict) or not amis:
        raise InvalidInputError("amis must be a non-empty object of region -> AMI id")
    for region, ami_id in amis.items():
        valid_ami = isinstance(ami_id, str) and _AMI_ID.match(ami_id)
        if not _REGION.match(str(region)) or not valid_ami:
            raise InvalidInputError(
                f"amis entry {region!r}: {ami_id!r} is not a region -> AMI id pair"
            )
    correlation_id = event.get("correlationId")
    if not isinstance(correlation_id, str):
        correlation_id = None
    return Rollout(image_arn, dict(amis), correlation_id)


def _parse_release(event: dict[str, Any]) -> Release:
    group_name = event.get("autoScalingGroupName")
    ami_id = event.get("amiId")
    if not isinstance(group_name, str) or not group_name:
        raise InvalidInputError("release needs autoScalingGroupName")
    if not isinstance(ami_id, str) or not _AMI_ID.match(ami_id):
        raise InvalidInputError(f"release needs amiId (ami-…), got {ami_id!r}")
    return Release(group_name, ami_id)


def _parse_refresh_finished(event: dict[str, Any]) -> Converge:
    detail_type = event.get("detail-type")
    if detail_type not in FINISHED_REFRESH_DETAIL_TYPES:
        raise InvalidInputError(
            f"aws.autoscaling event {detail_type!r} is not a finished instance refresh"
        )
    detail = event.get("detail")
    group_name = detail.get("AutoScalingGroupName") if isinstance(detail, dict) else None
    if not isinstance(group_name, str) or not group_name:
        raise InvalidInputError(f"{detail_type} event lacks detail.AutoScalingGroupName")
    return Converge(group_name, trigger=detail_type)
