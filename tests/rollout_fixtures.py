"""moto set-up shared by the recorder, rollout CLI and forwarding tests (DESIGN §10)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.utils import random_ami_id

from handlers.common.status import AUTOSCALING_SOURCE, RESULT_DETAIL_TYPE, RESULT_SOURCE
from handlers.recorder.logic import IMAGE_BUILDER_ARN_TAG

INFRA_ACCOUNT = DEFAULT_ACCOUNT_ID  # the recorder runs in the infra account: moto's default
WORKLOAD_A = "222222222222"
WORKLOAD_B = "333333333333"
REGION = "eu-west-1"
OTHER_REGION = "us-east-1"
TABLE = "golden-ami-rollout-status"
PIPELINE = "golden-ami-golden-ecs"
ROLLOUT = "1.0.0/3"
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
_IDS = itertools.count(1)


def image_arn(rollout: str = ROLLOUT, account: str = INFRA_ACCOUNT, region: str = REGION) -> str:
    return f"arn:aws:imagebuilder:{region}:{account}:image/golden-ami-golden-ecs/{rollout}"


def create_table(session: boto3.Session, name: str = TABLE) -> None:
    """The table as RolloutStatus declares it: string pk/sk, on demand."""
    session.client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    )


def register_golden_image(
    rollout: str = ROLLOUT, region: str = REGION, account: str = INFRA_ACCOUNT
) -> str:
    """An AMI the infra account's pipeline distributed, tagged as Image Builder tags it."""
    backend = ec2_backends[account][region]
    ami_id = random_ami_id()
    backend.amis[ami_id] = Ami(
        backend,
        ami_id,
        name=f"golden-ecs-al2023-{next(_IDS)}",
        owner_id=account,
        tags={
            IMAGE_BUILDER_ARN_TAG: image_arn(rollout, account, region),
            "golden-ami:pipeline": PIPELINE,
        },
    )
    return ami_id


def at(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def refresh_id(n: int) -> str:
    return str(uuid.UUID(int=n))


def result_event(
    account: str = WORKLOAD_A,
    *,
    group: str = "web-ecs",
    outcome: str = "started",
    time: str | None = None,
    region: str = REGION,
    ami_before: str | None = None,
    ami_after: str | None = None,
    refresh: str | None = None,
    rollout: str | None = ROLLOUT,
    reason: str = "",
    **detail: Any,
) -> dict[str, Any]:
    """The refresh handler's result event as the rollout bus delivers it."""
    body: dict[str, Any] = {
        "schemaVersion": 1,
        "autoScalingGroupName": group,
        "outcome": outcome,
        "reason": reason,
        **detail,
    }
    if rollout is not None:
        body["imageArn"] = image_arn(rollout)
    if ami_before:
        body["amiBefore"] = ami_before
    if ami_after:
        body["amiAfter"] = ami_after
    if refresh:
        body["instanceRefreshId"] = refresh
    return eventbridge_envelope(
        RESULT_SOURCE, RESULT_DETAIL_TYPE, account, region, time or at(0), body
    )


def refresh_end_event(
    detail_type: str,
    account: str = WORKLOAD_A,
    *,
    group: str = "web-ecs",
    refresh: str,
    time: str,
    region: str = REGION,
) -> dict[str, Any]:
    return eventbridge_envelope(
        AUTOSCALING_SOURCE,
        f"EC2 Auto Scaling Instance Refresh {detail_type}",
        account,
        region,
        time,
        {"InstanceRefreshId": refresh, "AutoScalingGroupName": group},
    )


def eventbridge_envelope(  # noqa: PLR0917 - the envelope's members, in their order
    source: str, detail_type: str, account: str, region: str, time: str, detail: dict
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": time,
        "region": region,
        "resources": [],
        "detail": detail,
    }
