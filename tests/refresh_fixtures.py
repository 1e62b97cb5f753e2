"""moto set-up shared by the refresh handler and instance-refresh emulator tests.

Images the infra account shares by launch permission are not visible from another account in
moto (DESIGN §9), so they are registered straight into the workload account's EC2 backend with
the infra account as owner — which is what DescribeImages shows the workload account in AWS.
"""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime
from typing import Any

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.utils import random_ami_id

WORKLOAD_ACCOUNT = DEFAULT_ACCOUNT_ID  # moto's default credentials belong to it
INFRA_ACCOUNT = "210987654321"
OTHER_ACCOUNT = "333333333333"
REGION = "eu-west-1"
PREFIX = "golden-ecs-al2023"
INSTANCE_TYPE = "m7i.large"
_TEMPLATE_NUMBERS = itertools.count(1)
USER_DATA = base64.b64encode(b"#!/bin/bash\necho ECS_CLUSTER=main >> /etc/ecs/ecs.config").decode()


def register_image(
    day: int,
    *,
    owner: str = INFRA_ACCOUNT,
    name: str | None = None,
    state: str = "available",
    account_id: str = WORKLOAD_ACCOUNT,
    region: str = REGION,
) -> str:
    """An AMI created on 2025-01-<day>, as `account_id` sees it."""
    backend = ec2_backends[account_id][region]
    ami_id = random_ami_id()
    backend.amis[ami_id] = Ami(
        backend,
        ami_id,
        name=name or f"{PREFIX}-2025-01-{day:02d}T00-00-00Z",
        owner_id=owner,
        state=state,
        creation_date=datetime(2025, 1, day, tzinfo=UTC),
        region_name=f"{region}a",
    )
    return ami_id


def deregister_image(ami_id: str, account_id: str = WORKLOAD_ACCOUNT, region: str = REGION) -> None:
    ec2_backends[account_id][region].deregister_image(ami_id)


def launch_template(session: boto3.Session, image_ids: list[str], default_version: int = 1) -> str:
    """A launch template with one version per image (version n uses image_ids[n-1]).

    Needs the emulator: moto alone ignores SourceVersion.
    """
    ec2 = session.client("ec2")
    data = {"ImageId": image_ids[0], "InstanceType": INSTANCE_TYPE, "UserData": USER_DATA}
    template_id = ec2.create_launch_template(
        LaunchTemplateName=f"ecs-{next(_TEMPLATE_NUMBERS)}", LaunchTemplateData=data
    )["LaunchTemplate"]["LaunchTemplateId"]
    for image_id in image_ids[1:]:
        ec2.create_launch_template_version(
            LaunchTemplateId=template_id,
            SourceVersion="1",
            LaunchTemplateData={"ImageId": image_id},
        )
    if default_version != 1:
        ec2.modify_launch_template(
            LaunchTemplateId=template_id, DefaultVersion=str(default_version)
        )
    return template_id


def auto_scaling_group(
    session: boto3.Session,
    name: str,
    template_id: str,
    version: str,
    *,
    capacity: int = 4,
    mixed: bool = False,
    extra_overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A group on `template_id`/`version`, directly or through a MixedInstancesPolicy."""
    spec = {"LaunchTemplateId": template_id, "Version": version}
    placement: dict[str, Any] = {
        "AutoScalingGroupName": name,
        "MinSize": 0,
        "MaxSize": capacity * 2,
        "DesiredCapacity": capacity,
        "AvailabilityZones": [f"{REGION}a", f"{REGION}b"],
    }
    if mixed:
        placement["MixedInstancesPolicy"] = {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": spec,
                "Overrides": [
                    {"InstanceType": "m7i.large"},
                    {"InstanceType": "m6i.large"},
                    *(extra_overrides or []),
                ],
            },
            "InstancesDistribution": {
                "OnDemandBaseCapacity": 1,
                "OnDemandPercentageAboveBaseCapacity": 50,
                "SpotAllocationStrategy": "price-capacity-optimized",
            },
        }
    else:
        placement["LaunchTemplate"] = spec
    autoscaling = session.client("autoscaling")
    autoscaling.create_auto_scaling_group(**placement)
    return autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
        "AutoScalingGroups"
    ][0]


def ecs_cluster(
    session: boto3.Session, name: str, group_arn: str, managed_draining: str = "ENABLED"
) -> None:
    ecs = session.client("ecs")
    provider = f"{name}-provider"
    ecs.create_capacity_provider(
        name=provider,
        autoScalingGroupProvider={
            "autoScalingGroupArn": group_arn,
            "managedTerminationProtection": "ENABLED",
            "managedDraining": managed_draining,
        },
    )
    ecs.create_cluster(clusterName=name, capacityProviders=[provider])


def alarm(session: boto3.Session, name: str) -> None:
    session.client("cloudwatch").put_metric_alarm(
        AlarmName=name,
        Namespace="GoldenAmi/Ecs",
        MetricName="EcsErrors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=3,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
    )


def set_alarm_state(session: boto3.Session, name: str, state: str) -> None:
    session.client("cloudwatch").set_alarm_state(
        AlarmName=name, StateValue=state, StateReason="test"
    )


def instance_images(session: boto3.Session, group_name: str) -> list[str]:
    """The image every in-service instance of the group runs, sorted."""
    autoscaling = session.client("autoscaling")
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])[
        "AutoScalingGroups"
    ][0]
    ids = [instance["InstanceId"] for instance in group["Instances"]]
    reservations = session.client("ec2").describe_instances(InstanceIds=ids)["Reservations"]
    return sorted(i["ImageId"] for r in reservations for i in r["Instances"])


def group_template_spec(session: boto3.Session, group_name: str) -> dict[str, Any]:
    group = session.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group_name]
    )["AutoScalingGroups"][0]
    if "MixedInstancesPolicy" in group:
        return group["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
    return group["LaunchTemplate"]


def group_tags(session: boto3.Session, group_name: str) -> dict[str, str]:
    group = session.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[group_name]
    )["AutoScalingGroups"][0]
    return {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
