"""Cross-account EventBridge in the sandbox, as AWS does it (DESIGN §10 Testing, §11)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from components.policies import rollout_bus_policy
from components.refresh_rollback import rollout_forward_event_pattern
from sandbox.ecs_alarm import EventBridgeEmulator
from sandbox.event_buses import EventBuses

INFRA = "123456789012"  # moto's default account
WORKLOAD = "222222222222"
OUTSIDER = "999999999999"
ORG = "o-a1b2c3d4e5"
REGION = "eu-west-1"
BUS = "golden-ami-rollout"
BUS_ARN = f"arn:aws:events:{REGION}:{INFRA}:event-bus/{BUS}"
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
RESULT = {
    "Source": "golden-ami.refresh",
    "DetailType": "Golden AMI Refresh Result",
    "Detail": json.dumps({"autoScalingGroupName": "web", "outcome": "started"}),
}


def session_of(account: str) -> boto3.Session:
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole", RoleSessionName="test"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )


class World:
    def __init__(self, buses: EventBuses) -> None:
        self.buses = buses
        self.infra = boto3.Session(region_name=REGION)
        events = self.infra.client("events")
        events.create_event_bus(Name=BUS)
        events.put_permission(EventBusName=BUS, Policy=json.dumps(rollout_bus_policy(BUS_ARN, ORG)))
        sqs = self.infra.client("sqs")
        self.queue_url = sqs.create_queue(QueueName="recorded")["QueueUrl"]
        queue_arn = f"arn:aws:sqs:{REGION}:{INFRA}:recorded"
        events.put_rule(
            Name="recorder", EventBusName=BUS, EventPattern=json.dumps({"source": [
                "golden-ami.refresh", "aws.autoscaling"]})
        )  # fmt: skip
        events.put_targets(
            Rule="recorder", EventBusName=BUS, Targets=[{"Id": "q", "Arn": queue_arn}]
        )
        buses.register(INFRA, REGION, EventBridgeEmulator(self.infra, REGION, buses))

    def workload(self, account: str, role: bool = True) -> boto3.Session:
        session = session_of(account)
        events = session.client("events")
        events.put_rule(
            Name="forward", EventPattern=json.dumps(rollout_forward_event_pattern(["web"]))
        )
        target = {"Id": "bus", "Arn": BUS_ARN}
        if role:
            target["RoleArn"] = f"arn:aws:iam::{account}:role/golden-ami-rollout-forwarder"
        events.put_targets(Rule="forward", Targets=[target])
        self.buses.register(account, REGION, EventBridgeEmulator(session, REGION, self.buses))
        return session

    def recorded(self) -> list[dict]:
        messages = (
            self.infra.client("sqs")
            .receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            .get("Messages", [])
        )
        return [json.loads(message["Body"]) for message in messages]


@pytest.fixture
def world():
    with mock_aws():
        buses = EventBuses(clock=lambda: NOW, organization_of={INFRA: ORG, WORKLOAD: ORG}.get)
        with buses.installed(boto3.Session(region_name=REGION)):
            yield World(buses)


def test_a_put_event_gets_the_senders_account_and_reaches_the_infra_bus_unchanged(world):
    session = world.workload(WORKLOAD)
    answer = session.client("events").put_events(Entries=[RESULT])
    assert answer["FailedEntryCount"] == 0
    [event] = world.recorded()
    assert event["account"] == WORKLOAD  # set from the caller, as EventBridge does
    assert (event["region"], event["time"]) == (REGION, "2026-11-29T10:00:00Z")
    assert event["id"] == answer["Entries"][0]["EventId"]
    assert event["detail"] == json.loads(RESULT["Detail"])
    assert world.buses.refused == []


def test_a_refresh_end_of_a_target_group_is_forwarded_and_another_groups_is_not(world):
    world.workload(WORKLOAD)
    end = {
        "version": "0", "id": "e1", "source": "aws.autoscaling",
        "detail-type": "EC2 Auto Scaling Instance Refresh Succeeded", "account": WORKLOAD,
        "time": "2026-11-29T10:00:00Z", "region": REGION, "resources": [],
        "detail": {"InstanceRefreshId": "r", "AutoScalingGroupName": "web"},
    }  # fmt: skip
    world.buses.put(WORKLOAD, REGION, "default", end)
    world.buses.put(WORKLOAD, REGION, "default", end | {"detail": {"AutoScalingGroupName": "x"}})
    assert [e["id"] for e in world.recorded()] == ["e1"]


def test_without_a_target_role_nothing_crosses_to_a_bus_that_admits_an_organization(world):
    session = world.workload(WORKLOAD, role=False)
    session.client("events").put_events(Entries=[RESULT])
    assert world.recorded() == []
    assert world.buses.refused == [
        f"{BUS_ARN}: a bus that admits an Organization needs a target role"
    ]


def test_an_account_outside_the_organization_is_not_admitted(world):
    session = world.workload(OUTSIDER)
    session.client("events").put_events(Entries=[RESULT])
    assert world.recorded() == []
    assert world.buses.refused == [f"{BUS_ARN}: the bus policy does not admit account {OUTSIDER}"]


def test_put_events_naming_another_accounts_bus_is_refused(world):
    session = world.workload(WORKLOAD)
    answer = session.client("events").put_events(Entries=[{**RESULT, "EventBusName": BUS_ARN}])
    assert answer["FailedEntryCount"] == 1
    assert answer["Entries"][0]["ErrorCode"] == "NotAuthorizedForSourceException"
    assert world.recorded() == []
