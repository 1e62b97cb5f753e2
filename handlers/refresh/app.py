"""Lambda entry point of the workload refresh handler (DESIGN §4, §5).

Every target group is handled on its own: read its state, apply the §5 rules in `rules.py`,
then make the few writes they call for. One group's failure is reported for that group only
(DESIGN §5.8), even an unexpected exception: it becomes that group's `failed` result, counted in
GroupsFailed (whose alarm fires) and reported like any other; the run still returns normally,
as it does for a group that failed on an AWS error, since a Lambda retry would repeat the crash
and converge every healthy group twice more. Bad input still fails the whole run, before any
AWS call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from handlers.common.log import get_logger, log
from handlers.refresh import report, rules
from handlers.refresh.aws import RefreshAws, RefreshInProgressError
from handlers.refresh.parse import (
    InvalidInputError,
    Release,
    Request,
    Rollout,
    Settings,
    Target,
    parse_event,
    parse_settings,
)

LOGGER = get_logger("golden-ami.refresh")
OUTCOMES = ("started", "current", "deferred", "held", "quarantined", "rejected", "failed")
# One CloudWatch metric per outcome, the count of groups per run: the fan-out only sees the 202
# of its asynchronous invoke, so `failed` and `rejected` must alarm in the workload account.
METRIC_NAMESPACE = "GoldenAmi/Refresh"
OUTCOME_METRIC_NAMES = {outcome: f"Groups{outcome.capitalize()}" for outcome in OUTCOMES}


@dataclass
class GroupResult:
    autoScalingGroupName: str  # noqa: N815 - the result's JSON member names
    outcome: str  # one of OUTCOMES
    reason: str
    amiId: str | None = None  # noqa: N815
    amiBefore: str | None = None  # noqa: N815 - the image of the group's version before
    launchTemplateVersion: int | None = None  # noqa: N815
    instanceRefreshId: str | None = None  # noqa: N815
    pinnedVersion: int | None = None  # noqa: N815 - $Latest/$Default pinned to this number
    # Other targets on the same template that followed $Latest, pinned before the new version.
    pinnedGroups: dict[str, int] = field(default_factory=dict)  # noqa: N815
    released: str | None = None  # the AMI a release action took out of quarantine or hold
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value not in (None, [], {})}


class _DecidedError(Exception):
    """A rule settled the group's outcome before any (further) write."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    return handle(event, os.environ, boto3.Session())


def handle(
    event: Any, environ: Mapping[str, str], session: boto3.Session, *, release: bool = False
) -> dict[str, Any]:
    """Handle `event`; `release` is True for the release function (handlers/release) only.

    The refresh function refuses `release`: the fan-out's invoke role may invoke it, and must not
    be able to lift a quarantine. The release function takes nothing else.
    """
    settings = parse_settings(environ)
    request = parse_event(event)
    if isinstance(request, Release) and not release:
        raise InvalidInputError(
            "release is not accepted by the refresh function: invoke the release function "
            "(workload stack output releaseFunctionArns) with your own credentials"
        )
    if release and not isinstance(request, Release):
        raise InvalidInputError(
            'the release function only takes {"action": "release", "autoScalingGroupName": '
            '..., "amiId": ...}'
        )
    targets = _targets_for(settings, request)
    if not targets:
        reason = f"{request.group_name} is not a target of this function"  # type: ignore[union-attr]
        log(LOGGER, "event ignored", reason=reason, trigger=getattr(request, "trigger", None))
        return {"results": [], "ignored": reason}
    aws = RefreshAws(session)
    results = []
    for target in targets:
        result = _handle_group(aws, settings, target, request)
        log(LOGGER, "group handled", region=aws.region, **result.as_dict())
        results.append(result.as_dict())
    _publish_metrics(aws, [result["outcome"] for result in results])
    if not release:  # a release lifts a quarantine or hold; the refresh that follows reports
        _report(aws, results, request)
    return {"results": results}


def _publish_metrics(aws: RefreshAws, outcomes: list[str]) -> None:
    """Every outcome's count, zeros included, so the graphs show runs and not just failures."""
    counts = {OUTCOME_METRIC_NAMES[outcome]: outcomes.count(outcome) for outcome in OUTCOMES}
    # The groups were handled: a metrics outage must not fail the run (an async invoke is then
    # retried, converging every group twice more). The error log line still says so.
    try:
        aws.put_metrics(METRIC_NAMESPACE, counts)
    except (BotoCoreError, ClientError) as error:
        log(LOGGER, "could not publish refresh metrics", logging.ERROR, error=str(error))


def _report(aws: RefreshAws, results: list[dict[str, Any]], request: Request) -> None:
    """Tell the rollout status (DESIGN §10); the groups are handled whether or not this works."""
    image_arn = request.image_arn if isinstance(request, Rollout) else None
    entries = report.result_entries(results, image_arn)
    try:
        failed = aws.put_events(entries)
    except (ClientError, BotoCoreError) as error:
        failed = [str(error)]
    if failed:
        log(LOGGER, "results not reported", logging.ERROR, region=aws.region, errors=failed)


def _targets_for(settings: Settings, request: Request) -> tuple[Target, ...]:
    group_name = getattr(request, "group_name", None)
    if group_name is None:
        return settings.targets
    target = settings.target(group_name)
    if target is None and isinstance(request, Release):
        raise InvalidInputError(
            f"release names {group_name!r}, which is not a target of this function"
        )
    return (target,) if target else ()


def _handle_group(
    aws: RefreshAws, settings: Settings, target: Target, request: Request
) -> GroupResult:
    result = GroupResult(target.auto_scaling_group_name, "failed", "")
    try:
        result.outcome, result.reason = "started", _converge(aws, settings, target, request, result)
    except _DecidedError as decided:
        result.outcome, result.reason = decided.outcome, decided.reason
    except (ClientError, BotoCoreError) as error:
        result.outcome, result.reason = "failed", f"AWS error: {error}"
    except Exception as error:  # a bug or an odd API answer: this group only (module docstring)
        result.outcome = "failed"
        result.reason = f"unexpected error: {type(error).__name__}: {error}"
        LOGGER.exception(
            "group handling crashed",
            extra={
                "fields": {
                    "region": aws.region,
                    "autoScalingGroupName": target.auto_scaling_group_name,
                }
            },
        )
    return result


def _converge(
    aws: RefreshAws, settings: Settings, target: Target, request: Request, result: GroupResult
) -> str:
    """Apply the §5 rules to one group; returns the reason of a started refresh."""
    group_name = target.auto_scaling_group_name
    group = aws.describe_group(group_name)
    if group is None:
        raise _DecidedError("failed", f"Auto Scaling group {group_name} does not exist")
    ref = _template_ref(group, target)
    if reason := rules.mixed_overrides_reason(ref):
        raise _DecidedError("rejected", reason)
    current = aws.launch_template_version(ref.template_id, ref.version)
    current_number = current["VersionNumber"]
    current_data = current["LaunchTemplateData"]
    current_image_id = current_data.get("ImageId", "")
    if current_image_id.startswith("ami-"):
        result.amiBefore = current_image_id
    if reason := rules.ssm_alias_reason(ref.template_id, current_number, current_image_id):
        raise _DecidedError("rejected", reason)

    image, image_arn = _target_image(aws, settings, request)
    result.amiId = image.image_id

    refreshes = aws.instance_refreshes(group_name)
    verdicts = _record_verdicts(aws, group, target, refreshes, result)
    if isinstance(request, Release):
        verdicts = _release(aws, group_name, verdicts, request.ami_id, result)
    if active := rules.active_refresh(refreshes):
        raise _DecidedError(
            "deferred",
            f"instance refresh {active['InstanceRefreshId']} is {active['Status']}; the "
            "finished-refresh event re-runs convergence",
        )
    if current_image_id == image.image_id and rules.is_current(
        current_image_id, aws.instance_images(_instance_ids(group)), image.image_id
    ):
        raise _DecidedError("current", f"version {current_number} already uses {image.image_id}")
    if image.image_id in verdicts.quarantined:
        raise _DecidedError(
            "quarantined",
            f"{image.image_id} was rolled back on this group; if the alarm was false, "
            "release it with the stack's release function",
        )
    if image.image_id in verdicts.held:
        raise _DecidedError(
            "held",
            f"an operator cancelled the refresh to {image.image_id} on this group; release it "
            "with the stack's release function to let it roll out again",
        )
    current_image = aws.image(current_image_id)
    if reason := rules.older_than_current_reason(image, current_image):
        raise _DecidedError("rejected", reason)

    if reason := rules.failing_alarms_reason(aws.alarm_states(list(target.rollback_alarm_names))):
        raise _DecidedError("deferred", reason)
    versions = aws.launch_template_versions(ref.template_id)
    version = rules.reusable_version(versions, current_data, image.image_id)
    followers = [] if version is not None else _latest_followers(aws, settings, current, group_name)

    # Writes start here: every rule that can refuse has been checked.
    _pin(aws, group_name, ref, current_number, result)
    latest_number = max(v["VersionNumber"] for v in versions)
    for follower_name, follower_ref in followers:  # pinned where $Latest resolves now
        _pin(aws, follower_name, follower_ref, latest_number, result)
    if warning := _draining_warning(aws, target, group["AutoScalingGroupARN"]):
        result.warnings.append(warning)
    if version is None:
        version = aws.create_launch_template_version(
            ref.template_id,
            current_number,
            image.image_id,
            rules.version_description(image.image_id, image_arn),
        )
    result.launchTemplateVersion = version
    try:
        result.instanceRefreshId = aws.start_instance_refresh(
            group_name,
            rules.desired_configuration(ref, version),
            rules.refresh_preferences(settings.refresh_preferences, target.rollback_alarm_names),
        )
    except RefreshInProgressError as error:
        raise _DecidedError(
            "deferred", f"another instance refresh started first: {error}"
        ) from None
    return f"refreshing from version {current_number} ({current_image_id}) to version {version}"


def _instance_ids(group: Mapping[str, Any]) -> list[str]:
    return [instance["InstanceId"] for instance in group.get("Instances", [])]


def _latest_followers(
    aws: RefreshAws, settings: Settings, current: Mapping[str, Any], group_name: str
) -> list[tuple[str, rules.TemplateRef]]:
    """Other groups a new version of the template would move: targets of this function, to pin
    first. Refuses when any is not a target (or follows $Latest in an override)."""
    followers = rules.latest_followers(
        aws.all_groups(), current["LaunchTemplateId"], current["LaunchTemplateName"], group_name
    )
    pinnable = [
        (follower.group_name, follower.ref)
        for follower in followers
        if follower.ref is not None and settings.target(follower.group_name) is not None
    ]
    if len(pinnable) < len(followers):
        refused = [f for f in followers if f.group_name not in dict(pinnable)]
        raise _DecidedError(
            "rejected", rules.shared_template_reason(current["LaunchTemplateId"], refused)
        )
    return pinnable


def _pin(
    aws: RefreshAws, group_name: str, ref: rules.TemplateRef, number: int, result: GroupResult
) -> None:
    """$Latest/$Default -> the number it resolves to now (rule 2), for this or another group."""
    if not rules.needs_numbered_pin(ref):
        return
    aws.update_group(rules.pinned_group_update(group_name, ref, number))
    if group_name == result.autoScalingGroupName:
        result.pinnedVersion = number
    else:
        result.pinnedGroups[group_name] = number


def _template_ref(group: Mapping[str, Any], target: Target) -> rules.TemplateRef:
    if "MixedInstancesPolicy" in group:
        policy = group["MixedInstancesPolicy"]
        spec = policy["LaunchTemplate"]["LaunchTemplateSpecification"]
    elif "LaunchTemplate" in group:
        spec, policy = group["LaunchTemplate"], None
    else:
        raise _DecidedError("rejected", "the group has no launch template (launch configuration?)")
    if spec.get("LaunchTemplateId") != target.launch_template_id:
        raise _DecidedError(
            "rejected",
            f"the group uses launch template {spec.get('LaunchTemplateId')}, configured "
            f"{target.launch_template_id}",
        )
    return rules.TemplateRef(spec["LaunchTemplateId"], spec.get("Version") or "$Default", policy)


def _target_image(
    aws: RefreshAws, settings: Settings, request: Request
) -> tuple[rules.Image, str | None]:
    if isinstance(request, Rollout):
        ami_id = request.amis.get(aws.region)
        if ami_id is None:
            raise _DecidedError("rejected", f"the image has no AMI in {aws.region}")
        image = aws.image(ami_id)
        if reason := rules.untrusted_image_reason(
            ami_id, image, settings.infra_account_id, settings.image_prefix
        ):
            raise _DecidedError("rejected", reason)
        return image, request.image_arn  # type: ignore[return-value]
    candidates = aws.images_named(settings.infra_account_id, settings.image_prefix)
    image = rules.newest_trusted_image(candidates, settings.infra_account_id, settings.image_prefix)
    if image is None:
        raise _DecidedError(
            "rejected",
            f"no available image of {settings.infra_account_id} named {settings.image_prefix}* "
            f"in {aws.region}",
        )
    return image, None


@dataclass(frozen=True)
class _Verdicts:
    """The group's quarantined and held AMIs, oldest first (DESIGN §5.7, §5.10)."""

    quarantined: list[str]
    held: list[str]

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> _Verdicts:
        return cls(
            rules.parse_ami_list_tag(tags.get(rules.QUARANTINE_TAG)),
            rules.parse_ami_list_tag(tags.get(rules.HELD_TAG)),
        )


def _record_verdicts(
    aws: RefreshAws,
    group: Mapping[str, Any],
    target: Target,
    refreshes: list[dict[str, Any]],
    result: GroupResult,
) -> _Verdicts:
    """Fold rollbacks and cancellations the tags do not know yet into them (a missed event is
    caught up here). Only refreshes this tool started count."""
    tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
    verdicts = _Verdicts.from_tags(tags)
    new = rules.refreshes_to_record(refreshes, tags.get(rules.QUARANTINE_REVIEWED_TAG) or None)
    if not new:
        return verdicts
    for refresh in new:
        version = aws.find_launch_template_version(refresh.template, refresh.version)
        if version is None:
            result.warnings.append(
                f"instance refresh {refresh.instance_refresh_id} ({refresh.status}) named "
                f"launch-template version {refresh.version}, which no longer exists: its image "
                "is neither quarantined nor held"
            )
            continue
        if not rules.started_by_this_tool(version, target.launch_template_id):
            continue
        image_id = version["LaunchTemplateData"]["ImageId"]
        (verdicts.quarantined if refresh.verdict == rules.QUARANTINE else verdicts.held).append(
            image_id
        )
    group_name = group["AutoScalingGroupName"]
    return _write_verdicts(aws, group_name, verdicts, new[-1].end_time, result)


def _release(
    aws: RefreshAws, group_name: str, verdicts: _Verdicts, ami_id: str, result: GroupResult
) -> _Verdicts:
    if ami_id not in verdicts.quarantined and ami_id not in verdicts.held:
        result.warnings.append(f"{ami_id} was neither quarantined nor held on this group")
        return verdicts
    remaining = _Verdicts(
        [quarantined for quarantined in verdicts.quarantined if quarantined != ami_id],
        [held for held in verdicts.held if held != ami_id],
    )
    result.released = ami_id
    return _write_verdicts(aws, group_name, remaining, None, result)


def _write_verdicts(
    aws: RefreshAws,
    group_name: str,
    verdicts: _Verdicts,
    reviewed_until: str | None,
    result: GroupResult,
) -> _Verdicts:
    tags = {}
    for key, ami_ids in (
        (rules.QUARANTINE_TAG, verdicts.quarantined),
        (rules.HELD_TAG, verdicts.held),
    ):
        tags[key], forgotten = rules.ami_list_tag_value(ami_ids)
        if forgotten:
            result.warnings.append(
                f"{key} tag is full ({rules.TAG_VALUE_MAX_LENGTH} characters): forgot the "
                f"oldest entries {' '.join(forgotten)}"
            )
    if reviewed_until is not None:
        tags[rules.QUARANTINE_REVIEWED_TAG] = reviewed_until
    aws.set_group_tags(group_name, tags)
    return _Verdicts.from_tags(tags)


def _draining_warning(aws: RefreshAws, target: Target, group_arn: str) -> str | None:
    """Pre-flight only: a missing permission or cluster must not stop the refresh."""
    try:
        providers = aws.cluster_capacity_providers(target.cluster_name)
    except (ClientError, BotoCoreError) as error:
        return f"could not check managed draining of cluster {target.cluster_name}: {error}"
    return rules.draining_warning(target.cluster_name, group_arn, providers)
