"""The DESIGN §5 refresh rules, one pure function each (no AWS calls, no clock, no logging).

`app.py` feeds them what the adapter read and performs what they decide:
  1. trust only the infra account's AMIs, never move backwards:
     untrusted_image_reason, older_than_current_reason, newest_trusted_image
  2. rollback needs a numbered version: ssm_alias_reason, needs_numbered_pin, pinned_group_update
     (and, rule 10, mixed overrides with their own template or image: mixed_overrides_reason)
  3. new version only in DesiredConfiguration: desired_configuration
  4. new version = current + ImageId, reused on re-run:
     new_version_data, reusable_version, version_description
  5. preferences and the managed-draining pre-flight: refresh_preferences, draining_warning
  6. never over an active refresh: active_refresh
  7. quarantine of rolled-back AMIs, 10. hold of cancelled ones, 9. only refreshes this tool
     started count: refreshes_to_record, started_by_this_tool, parse_ami_list_tag,
     ami_list_tag_value
  8. already on target -> current: is_current (configured version and running instances)
  10. a shared template's other groups on $Latest: latest_followers, shared_template_reason
  9. never start into a failing cluster: failing_alarms_reason
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

QUARANTINE_TAG = "golden-ami:quarantined"  # AMIs whose refresh on the group rolled back
HELD_TAG = "golden-ami:held"  # AMIs whose refresh on the group an operator cancelled
# Newest EndTime of the finished refreshes already folded into the quarantine and held tags.
# Without it a `release` would be undone by the next run, which still sees the rollback or the
# cancellation in the refresh history. (Named before holds existed; groups already carry it.)
QUARANTINE_REVIEWED_TAG = "golden-ami:quarantine-reviewed-until"
QUARANTINE, HOLD = "quarantine", "hold"
VERSION_DESCRIPTION_PREFIX = "golden-ami "
TAG_VALUE_MAX_LENGTH = 256  # Auto Scaling tag values

ACTIVE_REFRESH_STATUSES = frozenset(
    {"Pending", "InProgress", "Baking", "Cancelling", "RollbackInProgress"}
)
SSM_ALIAS_PREFIX = "resolve:ssm:"


@dataclass(frozen=True)
class Image:
    image_id: str
    name: str
    owner_id: str
    state: str
    creation_date: str  # ISO 8601 as DescribeImages returns it; lexical order is time order


@dataclass(frozen=True)
class TemplateRef:
    """How a group points at its launch template: directly or through a MixedInstancesPolicy."""

    template_id: str
    version: str  # as configured on the group: "7", "$Latest" or "$Default"
    mixed_instances_policy: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FinishedRefresh:
    """A finished refresh that quarantines (rolled back) or holds (cancelled) its image."""

    instance_refresh_id: str
    template: Mapping[str, str]  # {"LaunchTemplateId": …} or {"LaunchTemplateName": …}
    version: str  # a version number
    end_time: str  # ISO 8601
    status: str  # as DescribeInstanceRefreshes reports it
    verdict: str  # QUARANTINE | HOLD


# --- rule 1 -----------------------------------------------------------------------------------


def untrusted_image_reason(
    ami_id: str, image: Image | None, infra_account_id: str, image_prefix: str
) -> str | None:
    """Why `image` (DescribeImages by id; None when absent) must not be rolled out, or None."""
    if image is None:
        return f"{ami_id} does not exist in this region (or is deregistered)"
    if image.state != "available":
        return f"{ami_id} is {image.state}, not available"
    if image.owner_id != infra_account_id:
        return f"{ami_id} is owned by {image.owner_id}, not the infra account {infra_account_id}"
    if not image.name.startswith(image_prefix):
        return f"{ami_id} is named {image.name!r}, which lacks the image prefix {image_prefix!r}"
    return None


def older_than_current_reason(target: Image, current: Image | None) -> str | None:
    """Two builds can finish out of order: never replace an image by an older one.

    A current image that no longer exists (deregistered) cannot be newer than anything.
    """
    if current is None or target.creation_date >= current.creation_date:
        return None
    return (
        f"{target.image_id} ({target.creation_date}) is older than the group's current image "
        f"{current.image_id} ({current.creation_date})"
    )


def newest_trusted_image(
    images: Iterable[Image], infra_account_id: str, image_prefix: str
) -> Image | None:
    """The converge target: newest available image of the infra account carrying the prefix."""
    trusted = [
        image
        for image in images
        if untrusted_image_reason(image.image_id, image, infra_account_id, image_prefix) is None
    ]
    return max(trusted, key=lambda image: (image.creation_date, image.image_id), default=None)


# --- rule 2 -----------------------------------------------------------------------------------


def ssm_alias_reason(template_id: str, version_number: int, image_id: str) -> str | None:
    if not image_id.startswith(SSM_ALIAS_PREFIX):
        return None
    return (
        f"launch template {template_id} version {version_number} takes its image from the SSM "
        f"alias {image_id!r}; instance refresh cannot roll back such a version, so replace the "
        "alias with an AMI id"
    )


def needs_numbered_pin(ref: TemplateRef) -> bool:
    """$Latest/$Default cannot be rolled back to: the group must first name a version number."""
    return not ref.version.isdigit()


def pinned_group_update(group_name: str, ref: TemplateRef, version_number: int) -> dict[str, Any]:
    """UpdateAutoScalingGroup arguments that pin the group to the number it already resolves to."""
    spec = {"LaunchTemplateId": ref.template_id, "Version": str(version_number)}
    if ref.mixed_instances_policy is None:
        return {"AutoScalingGroupName": group_name, "LaunchTemplate": spec}
    return {
        "AutoScalingGroupName": group_name,
        "MixedInstancesPolicy": _with_specification(ref.mixed_instances_policy, spec),
    }


def mixed_overrides_reason(ref: TemplateRef) -> str | None:
    """Overrides that launch from their own launch template or image (DESIGN §5.10).

    Instances of such an override keep their template's (or the override's) AMI whatever the
    DesiredConfiguration says of the group's template, so the group could never be `current` on
    the new AMI; and the refresh role may only launch from the configured templates
    (`ec2:LaunchTemplate` condition), not from an override's.
    """
    if ref.mixed_instances_policy is None:
        return None
    overrides = ref.mixed_instances_policy.get("LaunchTemplate", {}).get("Overrides") or []
    carrying = [
        override.get("InstanceType") or f"override {index}"
        for index, override in enumerate(overrides)
        if override.get("LaunchTemplateSpecification") or override.get("ImageId")
    ]
    if not carrying:
        return None
    return (
        f"the MixedInstancesPolicy overrides for {', '.join(carrying)} carry their own launch "
        "template or ImageId: their instances would keep the old AMI; move the image into the "
        f"group's launch template {ref.template_id} (overrides with InstanceType / "
        "WeightedCapacity / InstanceRequirements only)"
    )


# --- rule 3 -----------------------------------------------------------------------------------


def desired_configuration(ref: TemplateRef, version_number: int) -> dict[str, Any]:
    """DesiredConfiguration naming the new version, keeping a mixed policy's overrides/distribution.

    The group itself is never updated to the new version: on rollback Auto Scaling restores the
    configuration saved on the group before the refresh started.
    """
    spec = {"LaunchTemplateId": ref.template_id, "Version": str(version_number)}
    if ref.mixed_instances_policy is None:
        return {"LaunchTemplate": spec}
    return {"MixedInstancesPolicy": _with_specification(ref.mixed_instances_policy, spec)}


def _with_specification(policy: Mapping[str, Any], spec: dict[str, str]) -> dict[str, Any]:
    launch_template = {**policy.get("LaunchTemplate", {}), "LaunchTemplateSpecification": spec}
    return {**policy, "LaunchTemplate": launch_template}


# --- rule 4 -----------------------------------------------------------------------------------


def new_version_data(source_data: Mapping[str, Any], image_id: str) -> dict[str, Any]:
    """What CreateLaunchTemplateVersion(SourceVersion=current, ImageId=new) produces."""
    return {**source_data, "ImageId": image_id}


def reusable_version(
    versions: Iterable[Mapping[str, Any]], source_data: Mapping[str, Any], image_id: str
) -> int | None:
    """A version this tool created earlier from the same source with the same image, if any.

    DescribeLaunchTemplateVersions returns the full LaunchTemplateData of every version, so
    "created from the same source with the same image" is a plain equality. A hand-made version
    with the same data is not reused: a refresh to it would not be recognisable as this tool's
    (rule 9), so its rollback would quarantine nothing.
    """
    wanted = new_version_data(source_data, image_id)
    matches = [
        version["VersionNumber"]
        for version in versions
        if version.get("LaunchTemplateData") == wanted and _described_by_this_tool(version)
    ]
    return max(matches, default=None)


def version_description(ami_id: str, image_arn: str | None) -> str:
    """Launch-template version descriptions are limited to 255 characters."""
    return f"{VERSION_DESCRIPTION_PREFIX}{ami_id} from {image_arn or 'converge'}"[:255]


# --- rule 5 -----------------------------------------------------------------------------------


def refresh_preferences(
    configured: Mapping[str, Any], rollback_alarm_names: Sequence[str]
) -> dict[str, Any]:
    """Stack-configured preferences plus the ones rollback safety depends on (never overridable)."""
    preferences = {
        **configured,
        "AutoRollback": True,
        "SkipMatching": True,
        # ECS managed termination protection marks instances protected from scale-in; "Ignore"
        # would skip them and "Wait" stalls for an hour before failing.
        "ScaleInProtectedInstances": "Refresh",
    }
    if rollback_alarm_names:
        preferences["AlarmSpecification"] = {"Alarms": list(rollback_alarm_names)}
    return preferences


def draining_warning(
    cluster_name: str, group_arn: str, capacity_providers: Iterable[Mapping[str, Any]]
) -> str | None:
    """Without managed draining, tasks on replaced instances are killed instead of drained."""
    for provider in capacity_providers:
        asg_provider = provider.get("autoScalingGroupProvider", {})
        if asg_provider.get("autoScalingGroupArn") != group_arn:
            continue
        if asg_provider.get("managedDraining") == "ENABLED":
            return None
        return (
            f"capacity provider {provider.get('name')} of cluster {cluster_name} does not have "
            "managedDraining ENABLED: tasks on replaced instances are stopped, not drained"
        )
    return (
        f"no capacity provider of cluster {cluster_name} manages this group: tasks on replaced "
        "instances are stopped, not drained"
    )


# --- rule 6 -----------------------------------------------------------------------------------


def active_refresh(refreshes: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return next(
        (refresh for refresh in refreshes if refresh.get("Status") in ACTIVE_REFRESH_STATUSES),
        None,
    )


# --- rules 7, 9, 10: quarantine and hold --------------------------------------------------------


def refreshes_to_record(
    refreshes: Iterable[Mapping[str, Any]], reviewed_until: str | None
) -> list[FinishedRefresh]:
    """Finished refreshes after `reviewed_until` (ISO 8601) that may quarantine or hold its image,
    oldest first.

    Rolled back (RollbackSuccessful / RollbackFailed, or Failed with rollback details) ->
    quarantine; Cancelled -> hold (this tool never cancels, so an operator did). Only a refresh
    naming a numbered launch-template version can be one this tool started; whether it is, is
    decided on that version (`started_by_this_tool`).
    """
    found = []
    for refresh in refreshes:
        status = refresh.get("Status")
        rolled_back = status in {"RollbackSuccessful", "RollbackFailed"} or (
            status == "Failed" and refresh.get("RollbackDetails")
        )
        verdict = QUARANTINE if rolled_back else HOLD if status == "Cancelled" else None
        end_time = refresh.get("EndTime")
        spec = _desired_specification(refresh.get("DesiredConfiguration") or {})
        if verdict is None or end_time is None or spec is None:
            continue
        if reviewed_until is not None and end_time <= reviewed_until:
            continue
        template = {
            key: spec[key] for key in ("LaunchTemplateId", "LaunchTemplateName") if key in spec
        }
        version = str(spec.get("Version") or "")
        if not template or not version.isdigit():
            continue
        found.append(
            FinishedRefresh(
                refresh["InstanceRefreshId"], template, version, end_time, str(status), verdict
            )
        )
    return sorted(found, key=lambda refresh: refresh.end_time)


def _desired_specification(desired: Mapping[str, Any]) -> Mapping[str, str] | None:
    if "LaunchTemplate" in desired:
        return desired["LaunchTemplate"]
    policy = desired.get("MixedInstancesPolicy")
    if policy:
        return policy.get("LaunchTemplate", {}).get("LaunchTemplateSpecification")
    return None


def started_by_this_tool(version: Mapping[str, Any], template_id: str) -> bool:
    """A version this tool created: on the target's template, described as `version_description`
    describes the image it carries. Refreshes to other versions are someone else's decision."""
    return version.get("LaunchTemplateId") == template_id and _described_by_this_tool(version)


def _described_by_this_tool(version: Mapping[str, Any]) -> bool:
    image_id = version.get("LaunchTemplateData", {}).get("ImageId", "")
    description = str(version.get("VersionDescription", ""))
    return bool(image_id) and description.startswith(
        f"{VERSION_DESCRIPTION_PREFIX}{image_id} from "
    )


def parse_ami_list_tag(value: str | None) -> list[str]:
    return (value or "").split()


def ami_list_tag_value(ami_ids: Sequence[str]) -> tuple[str, list[str]]:
    """Tag value holding the newest AMIs that fit (ami_ids is oldest first).

    Returns the value and the AMIs that no longer fit and are forgotten.
    """
    kept: list[str] = []
    length = -1
    for ami_id in reversed(list(dict.fromkeys(ami_ids))):
        if length + 1 + len(ami_id) > TAG_VALUE_MAX_LENGTH:
            break
        kept.insert(0, ami_id)
        length += 1 + len(ami_id)
    forgotten = [ami_id for ami_id in dict.fromkeys(ami_ids) if ami_id not in kept]
    return " ".join(kept), forgotten


# --- rule 8 -----------------------------------------------------------------------------------


def is_current(
    configured_image_id: str, running_image_ids: Iterable[str], target_image_id: str
) -> bool:
    """The configured version uses the image *and* every instance runs it (DESIGN §5.10).

    A version can name the new image while the instances still run the old one: a template
    version created under a group that follows `$Latest`, or a configuration changed by hand.
    """
    return configured_image_id == target_image_id and all(
        running == target_image_id for running in running_image_ids
    )


# --- rule 10: a launch template shared with a group that follows $Latest -------------------------


@dataclass(frozen=True)
class LatestFollower:
    """Another group on the same launch template whose configuration names `$Latest`.

    CreateLaunchTemplateVersion moves `$Latest` (never `$Default`): such a group would launch
    the new image from then on, without a refresh and without a rollback.
    """

    group_name: str
    ref: TemplateRef | None  # its pinnable main specification; None when an override follows


def latest_followers(
    groups: Iterable[Mapping[str, Any]], template_id: str, template_name: str, exclude: str
) -> list[LatestFollower]:
    """Groups other than `exclude` whose launch template (or an override's) follows `$Latest`."""

    def follows(spec: Mapping[str, Any] | None) -> bool:
        if not spec or spec.get("Version") != "$Latest":
            return False
        return spec.get("LaunchTemplateId") == template_id or (
            "LaunchTemplateId" not in spec and spec.get("LaunchTemplateName") == template_name
        )

    found = []
    for group in groups:
        name = group.get("AutoScalingGroupName", "")
        policy = group.get("MixedInstancesPolicy")
        main = (
            policy.get("LaunchTemplate", {}).get("LaunchTemplateSpecification")
            if policy
            else group.get("LaunchTemplate")
        )
        overrides = (policy or {}).get("LaunchTemplate", {}).get("Overrides") or []
        override_follows = any(follows(o.get("LaunchTemplateSpecification")) for o in overrides)
        if name == exclude or not (follows(main) or override_follows):
            continue
        ref = None if override_follows else TemplateRef(template_id, "$Latest", policy)
        found.append(LatestFollower(name, ref))
    return sorted(found, key=lambda follower: follower.group_name)


def shared_template_reason(template_id: str, refused: Sequence[LatestFollower]) -> str:
    names = ", ".join(follower.group_name for follower in refused)
    return (
        f"launch template {template_id} is shared with {names}, which follow $Latest and are "
        "not targets of this function (or follow it in a MixedInstancesPolicy override): a new "
        "version would move them onto the new AMI without a refresh or a rollback; pin them to "
        "a version number or make them targets"
    )


# --- rule 9 -----------------------------------------------------------------------------------


def failing_alarms_reason(alarm_states: Mapping[str, str]) -> str | None:
    """A rollback alarm already in ALARM: the cluster fails before the new AMI arrives.

    A refresh started now would roll back at once and quarantine an AMI that did nothing wrong.
    """
    failing = sorted(name for name, state in alarm_states.items() if state == "ALARM")
    if not failing:
        return None
    return (
        f"rollback alarm {', '.join(failing)} is already in ALARM: no refresh into a failing "
        "cluster; the schedule or the next image converges the group once it is OK"
    )
