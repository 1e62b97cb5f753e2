"""Every alarm notifies only SNS topics in its own region (DESIGN §11).

CloudWatch refuses an alarm action in another region ("Invalid region <topic region> specified.
Only <alarm region> is supported."), so a single `alarmTopicArn` cannot serve a workload stack
with groups in several regions: it takes one topic per region (`alarmTopicArns`), and a topic
outside the stack's alarm regions is refused at config time.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from components.config import ConfigError, parse_config
from sandbox import moto_deploy
from tests.pulumi_harness import RecordedResource, StackRun, run_stack, stack_config

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ACTIONS = ("alarmActions", "okActions", "insufficientDataActions")


def topic(region: str, account: str = "111122223333") -> str:
    return f"arn:aws:sns:{region}:{account}:platform-alerts"


def alarm_actions_by_region(run: StackRun) -> list[tuple[str, str, list[str]]]:
    """(alarm, the region it is created in, every action it notifies) for each alarm."""
    provider_regions = {
        r.urn: r.inputs["region"] for r in run.resources if r.type == "pulumi:providers:aws"
    }
    home = run.config["aws:region"]
    found = []
    for alarm in run.resources_of_type(ALARM):
        region = provider_regions.get(alarm.provider.rsplit("::", 1)[0], home)
        actions = [arn for key in ACTIONS for arn in alarm.inputs.get(key) or []]
        found.append((alarm.name, region, actions))
    return found


STACKS_WITH_TOPICS = [
    ("infra", {}),
    ("infra", {"alarmTopicArn": topic("eu-west-1")}),
    ("infra", {"alarmTopicArns": [topic("eu-west-1")]}),
    ("workload-dev", {}),
    ("workload-dev", {"alarmTopicArn": topic("eu-west-1", "222233334444")}),
    ("workload-prod", {}),
    (
        "workload-prod",
        {
            "alarmTopicArns": [
                topic("us-east-1", "555566667777"),
                topic("eu-west-1", "555566667777"),
            ]
        },
    ),
]


@pytest.mark.parametrize(
    ("stack", "overrides"),
    STACKS_WITH_TOPICS,
    ids=[f"{stack}-{'-'.join(o) or 'no-topic'}" for stack, o in STACKS_WITH_TOPICS],
)
def test_every_alarm_notifies_only_a_topic_in_its_own_region(
    stack: str, overrides: dict[str, Any]
) -> None:
    alarms = alarm_actions_by_region(run_stack(stack, overrides))
    assert alarms
    crossed = [
        (name, region, arn)
        for name, region, actions in alarms
        for arn in actions
        if arn.split(":")[3] != region
    ]
    assert crossed == []
    if overrides:
        # Every alarm notifies the configured topic of its region, ALARM and OK alike.
        assert all(actions for _, _, actions in alarms), alarms


def test_a_multi_region_workload_stack_notifies_each_regions_topic() -> None:
    topics = [topic("eu-west-1", "555566667777"), topic("us-east-1", "555566667777")]
    alarms = alarm_actions_by_region(run_stack("workload-prod", {"alarmTopicArns": topics}))
    notified = {region: set(actions) for _, region, actions in alarms}
    assert notified == {"eu-west-1": {topics[0]}, "us-east-1": {topics[1]}}


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "problem"),
    [
        # One topic for alarms in two regions: us-east-1's alarms could not notify it.
        ("workload-prod", {"alarmTopicArn": topic("eu-west-1")}, "alarmTopicArn",
         "no topic in us-east-1, where this stack has alarms too"),
        ("workload-dev", {"alarmTopicArn": topic("us-east-1")}, "alarmTopicArn",
         "this stack's alarms are in eu-west-1"),
        # The infra stack's alarms are all in its home region.
        ("infra", {"alarmTopicArn": topic("us-east-1")}, "alarmTopicArn",
         "this stack's alarms are in eu-west-1"),
        ("workload-prod", {"alarmTopicArns": [topic("eu-west-1")]}, "alarmTopicArns",
         "no topic in us-east-1"),
        ("workload-prod", {"alarmTopicArns": [topic("eu-west-1"), topic("eu-west-1", "1" * 12)]},
         "alarmTopicArns", "one topic per region; eu-west-1 has two"),
        ("workload-dev", {"alarmTopicArns": [topic("eu-west-1")],
                          "alarmTopicArn": topic("eu-west-1")},
         "alarmTopicArns", "not both"),
    ],
)  # fmt: skip
def test_a_topic_an_alarm_could_not_notify_is_refused_at_config_time(
    stack: str, overrides: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(stack_config(stack, overrides))
    [message] = raised.value.problems
    assert message.startswith(f"golden-ami:{key} = ") and problem in message
    assert "its own region" in message or "not both" in message or "one topic per" in message


def test_the_sandbox_refuses_an_alarm_notifying_another_regions_topic_as_cloudwatch_does() -> None:
    alarm = RecordedResource(
        urn="urn:pulumi:test::golden-ami::aws:cloudwatch/metricAlarm:MetricAlarm::errors",
        type=ALARM,
        name="errors",
        parent="",
        custom=True,
        inputs={
            "name": "errors",
            "namespace": "GoldenAmi/EcsErrors",
            "metricName": "errors",
            "statistic": "Sum",
            "period": 300,
            "evaluationPeriods": 1,
            "threshold": 3,
            "comparisonOperator": "GreaterThanOrEqualToThreshold",
            "alarmActions": [topic("eu-west-1")],
        },
        outputs={},
        protect=False,
        dependencies=[],
        provider="",
    )
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        with pytest.raises(ClientError) as raised:
            moto_deploy._metric_alarm(alarm, session, "us-east-1")
        assert raised.value.response["Error"] == {
            "Code": "ValidationError",
            "Message": "Invalid region eu-west-1 specified. Only us-east-1 is supported.",
        }
        assert session.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
        moto_deploy._metric_alarm(alarm, boto3.Session(region_name="eu-west-1"), "eu-west-1")
