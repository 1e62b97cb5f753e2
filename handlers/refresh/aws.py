"""Thin boto3 adapter for the refresh handler: one method per AWS call, no decisions.

IAM actions it can call (the component's policy must grant exactly these):
  autoscaling:DescribeAutoScalingGroups, autoscaling:DescribeInstanceRefreshes,
  autoscaling:StartInstanceRefresh, autoscaling:UpdateAutoScalingGroup,
  autoscaling:CreateOrUpdateTags, ec2:DescribeImages, ec2:DescribeLaunchTemplateVersions,
  ec2:CreateLaunchTemplateVersion, ecs:DescribeClusters, ecs:DescribeCapacityProviders,
  events:PutEvents (the default bus: the results the rollout status receives),
  cloudwatch:DescribeAlarms, cloudwatch:PutMetricData, ec2:DescribeInstances
(UpdateAutoScalingGroup/StartInstanceRefresh with a launch template also need ec2:RunInstances
and iam:PassRole on the template's instance role: DESIGN §7.)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from handlers.refresh.report import PUT_EVENTS_BATCH
from handlers.refresh.rules import Image

if TYPE_CHECKING:  # the boto3 stubs are a dev dependency, not in the Lambda runtime
    from mypy_boto3_autoscaling.type_defs import (
        DesiredConfigurationTypeDef,
        RefreshPreferencesTypeDef,
    )

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=20,
)
_MISSING_IMAGE_CODES = {"InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"}
_MISSING_TEMPLATE_VERSION_CODES = {
    "InvalidLaunchTemplateId.VersionNotFound",
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateId.Malformed",
    "InvalidLaunchTemplateName.NotFoundException",
}


class RefreshInProgressError(Exception):
    """StartInstanceRefresh lost a race against another refresh of the same group."""


def iso_timestamp(value: datetime) -> str:
    """One fixed format so timestamps compare lexically (tags store them as text)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RefreshAws:
    def __init__(self, session: boto3.Session) -> None:
        self.region = session.region_name
        self._autoscaling = session.client("autoscaling", config=CLIENT_CONFIG)
        self._ec2 = session.client("ec2", config=CLIENT_CONFIG)
        self._ecs = session.client("ecs", config=CLIENT_CONFIG)
        self._events = session.client("events", config=CLIENT_CONFIG)
        self._cloudwatch = session.client("cloudwatch", config=CLIENT_CONFIG)

    # --- Auto Scaling -------------------------------------------------------------------------

    def describe_group(self, group_name: str) -> dict[str, Any] | None:
        groups = self._autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])[
            "AutoScalingGroups"
        ]
        return cast("dict[str, Any]", groups[0]) if groups else None

    def all_groups(self) -> list[dict[str, Any]]:
        """Every group of the region: DescribeAutoScalingGroups filters by tag only, not by
        launch template (and has no resource-level permission)."""
        paginator = self._autoscaling.get_paginator("describe_auto_scaling_groups")
        pages = paginator.paginate(PaginationConfig={"PageSize": 100})
        return [
            cast("dict[str, Any]", group) for page in pages for group in page["AutoScalingGroups"]
        ]

    def instance_refreshes(self, group_name: str) -> list[dict[str, Any]]:
        """The group's refresh history, newest first, with EndTime as ISO text."""
        refreshes: list[dict[str, Any]] = []
        request: dict[str, Any] = {"AutoScalingGroupName": group_name, "MaxRecords": 100}
        while True:  # botocore has no paginator for this operation
            page = self._autoscaling.describe_instance_refreshes(**request)
            for refresh in map(_plain, page["InstanceRefreshes"]):
                end_time = refresh.get("EndTime")
                if isinstance(end_time, datetime):
                    refresh["EndTime"] = iso_timestamp(end_time)
                refreshes.append(refresh)
            if not page.get("NextToken"):
                return refreshes
            request["NextToken"] = page["NextToken"]

    def update_group(self, arguments: Mapping[str, Any]) -> None:
        self._autoscaling.update_auto_scaling_group(**arguments)

    def start_instance_refresh(
        self, group_name: str, desired: Mapping[str, Any], preferences: Mapping[str, Any]
    ) -> str:
        try:
            return self._autoscaling.start_instance_refresh(
                AutoScalingGroupName=group_name,
                Strategy="Rolling",
                DesiredConfiguration=cast("DesiredConfigurationTypeDef", dict(desired)),
                Preferences=cast("RefreshPreferencesTypeDef", dict(preferences)),
            )["InstanceRefreshId"]
        except self._autoscaling.exceptions.InstanceRefreshInProgressFault as error:
            raise RefreshInProgressError(str(error)) from error

    def set_group_tags(self, group_name: str, tags: Mapping[str, str]) -> None:
        self._autoscaling.create_or_update_tags(
            Tags=[
                {
                    "ResourceId": group_name,
                    "ResourceType": "auto-scaling-group",
                    "Key": key,
                    "Value": value,
                    "PropagateAtLaunch": False,
                }
                for key, value in tags.items()
            ]
        )

    # --- EventBridge --------------------------------------------------------------------------

    def put_events(self, entries: list[dict[str, Any]]) -> list[str]:
        """Put `entries` on the default bus; the error of every entry EventBridge refused."""
        errors = []
        for start in range(0, len(entries), PUT_EVENTS_BATCH):
            batch = entries[start : start + PUT_EVENTS_BATCH]
            answered = self._events.put_events(Entries=batch)["Entries"]
            errors += [
                f"{entry['ErrorCode']}: {entry.get('ErrorMessage', '')}"
                for entry in answered
                if entry.get("ErrorCode")
            ]
        return errors

    # --- EC2 ----------------------------------------------------------------------------------

    def image(self, ami_id: str) -> Image | None:
        """By id, deprecated images included: they vanish from DescribeImages otherwise."""
        try:
            images = self._ec2.describe_images(ImageIds=[ami_id], IncludeDeprecated=True)["Images"]
        except ClientError as error:
            if error.response["Error"]["Code"] in _MISSING_IMAGE_CODES:
                return None
            raise
        return _image(images[0]) if images else None

    def images_named(self, owner_id: str, name_prefix: str) -> list[Image]:
        """Converge candidates: not deprecated, owned by `owner_id`, name starting with prefix."""
        paginator = self._ec2.get_paginator("describe_images")
        pages = paginator.paginate(
            Owners=[owner_id],
            Filters=[{"Name": "name", "Values": [f"{name_prefix}*"]}],
            IncludeDeprecated=False,
        )
        return [_image(raw) for page in pages for raw in page["Images"]]

    def instance_images(self, instance_ids: list[str]) -> list[str]:
        """The image each of these instances runs (terminated ones included while listed)."""
        if not instance_ids:
            return []
        paginator = self._ec2.get_paginator("describe_instances")
        pages = paginator.paginate(InstanceIds=instance_ids)
        return [
            instance["ImageId"]
            for page in pages
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
        ]

    def launch_template_version(self, template_id: str, version: str) -> dict[str, Any]:
        """The version `version` ("7", "$Latest", "$Default") resolves to."""
        return _plain(
            self._ec2.describe_launch_template_versions(
                LaunchTemplateId=template_id, Versions=[version]
            )["LaunchTemplateVersions"][0]
        )

    def find_launch_template_version(
        self, template: Mapping[str, Any], version: str
    ) -> dict[str, Any] | None:
        """A version named by template id or name; None when it (or its template) was deleted."""
        try:
            versions = self._ec2.describe_launch_template_versions(**template, Versions=[version])[
                "LaunchTemplateVersions"
            ]
        except ClientError as error:
            if error.response["Error"]["Code"] in _MISSING_TEMPLATE_VERSION_CODES:
                return None
            raise
        return _plain(versions[0]) if versions else None

    def launch_template_versions(self, template_id: str) -> list[dict[str, Any]]:
        paginator = self._ec2.get_paginator("describe_launch_template_versions")
        pages = paginator.paginate(LaunchTemplateId=template_id)
        return [_plain(version) for page in pages for version in page["LaunchTemplateVersions"]]

    def create_launch_template_version(
        self, template_id: str, source_version: int, image_id: str, description: str
    ) -> int:
        response = self._ec2.create_launch_template_version(
            LaunchTemplateId=template_id,
            SourceVersion=str(source_version),
            VersionDescription=description,
            LaunchTemplateData={"ImageId": image_id},
        )
        return response["LaunchTemplateVersion"]["VersionNumber"]

    # --- CloudWatch ----------------------------------------------------------------------------

    def alarm_states(self, alarm_names: list[str]) -> dict[str, str]:
        """StateValue of each named metric alarm that exists (OK, ALARM, INSUFFICIENT_DATA)."""
        if not alarm_names:
            return {}
        paginator = self._cloudwatch.get_paginator("describe_alarms")
        pages = paginator.paginate(AlarmNames=alarm_names, AlarmTypes=["MetricAlarm"])
        return {
            alarm["AlarmName"]: alarm["StateValue"]
            for page in pages
            for alarm in page["MetricAlarms"]
        }

    def put_metrics(self, namespace: str, counts: Mapping[str, int]) -> None:
        self._cloudwatch.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": name, "Value": float(value), "Unit": "Count"}
                for name, value in counts.items()
            ],
        )

    # --- ECS ----------------------------------------------------------------------------------

    def cluster_capacity_providers(self, cluster_name: str) -> list[dict[str, Any]]:
        clusters = self._ecs.describe_clusters(clusters=[cluster_name])["clusters"]
        names = clusters[0].get("capacityProviders", []) if clusters else []
        if not names:
            return []
        providers = self._ecs.describe_capacity_providers(capacityProviders=names)
        return [_plain(provider) for provider in providers["capacityProviders"]]


def _plain(response_item: Any) -> dict[str, Any]:
    """A response structure as the plain dict the rules read (the stubs type it as a TypedDict)."""
    return cast("dict[str, Any]", response_item)


def _image(raw: Mapping[str, Any]) -> Image:
    return Image(
        image_id=raw["ImageId"],
        name=raw.get("Name", ""),
        owner_id=raw.get("OwnerId", ""),
        state=raw.get("State", ""),
        creation_date=raw.get("CreationDate", ""),
    )
