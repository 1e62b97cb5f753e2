"""OrgFanout under Pulumi mocks: the protected fixed-name role, its policy, SNS wiring, alarms."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from typing import Any

import pulumi
import pytest

from components.lambda_code import LAMBDA_RUNTIME
from components.org_fanout import FANOUT_MEMORY_MB, OrgFanout, OrgFanoutArgs
from components.policies import fanout_policy
from handlers.fanout.app import METRIC_NAMES
from handlers.fanout.logic import FAILED
from tests.pulumi_harness import RecordedResource, StackRun, run_program

ACCOUNT = "111122223333"
NAME = "golden-ami-fanout"
TOPIC = f"arn:aws:sns:eu-west-1:{ACCOUNT}:golden-ami-image-state"
ALARM_TOPIC = f"arn:aws:sns:eu-west-1:{ACCOUNT}:platform-alerts"
FUNCTION_NAME = "Lambda-Invoke-Another-LambdaInMultiAccout-For-InstanceRefresh"
LOG_GROUP_ARN = f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/lambda/{FUNCTION_NAME}"

ARGS = OrgFanoutArgs(
    function_name=FUNCTION_NAME,
    role_name="GoldenAmiFanoutRole",
    region="eu-west-1",
    infra_account_id=ACCOUNT,
    organization_id="o-a1b2c3d4e5",
    image_topic_arn=TOPIC,
    invoke_role_name="InvokeInstanceRefreshHandlerRole",
    target_function_name="LambdaForUpdateLaunchTemplate-And-InstanceRefresh",
    account_source="organizations",
    timeout_seconds=300,
    max_concurrency=16,
    log_retention_days=30,
    expected_account_ids=("222233334444", "555566667777"),
)
VARIANTS = {
    "default": ARGS,
    "static-with-alarm-topic": replace(
        ARGS,
        account_source="static",
        static_account_ids=("222233334444", "555566667777"),
        include_infra_account=True,
        alarm_topic_arn=ALARM_TOPIC,
    ),
}


@cache
def deploy(variant: str = "default") -> StackRun:
    def program() -> None:
        fanout = OrgFanout(NAME, VARIANTS[variant])
        pulumi.export("functionArn", fanout.function_arn)
        pulumi.export("roleArn", fanout.role_arn)
        pulumi.export("roleName", fanout.role_name)
        pulumi.export("logGroupName", fanout.log_group_name)

    return run_program(program, account_id=ACCOUNT, region="eu-west-1")


def function(run: StackRun) -> RecordedResource:
    return run.one("aws:lambda/function:Function")


def test_role_has_the_fixed_name_and_is_protected() -> None:
    role = deploy().one("aws:iam/role:Role")
    assert role["name"] == "GoldenAmiFanoutRole"
    assert role.protect is True
    assert role.json("assumeRolePolicy")["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


def test_nothing_else_is_protected_and_every_child_belongs_to_the_component() -> None:
    run = deploy()
    component = run.one("golden-ami:org_fanout:OrgFanout")
    for resource in run.resources:
        if resource is component:
            continue
        assert resource.parent == component.urn, resource.name
        assert resource.name.startswith(f"{NAME}-"), resource.name
        assert resource.protect is (resource.type == "aws:iam/role:Role"), resource.name


def test_outputs() -> None:
    assert deploy().outputs == {
        "functionArn": f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{FUNCTION_NAME}",
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/GoldenAmiFanoutRole",
        "roleName": "GoldenAmiFanoutRole",
        "logGroupName": f"/aws/lambda/{FUNCTION_NAME}",
    }


def test_function_settings_and_log_group_first() -> None:
    run = deploy()
    fn = function(run)
    log_group = run.one("aws:cloudwatch/logGroup:LogGroup")
    assert fn["name"] == FUNCTION_NAME
    assert (fn["runtime"], fn["handler"]) == (LAMBDA_RUNTIME, "handlers.fanout.app.lambda_handler")
    assert (fn["memorySize"], fn["timeout"]) == (FANOUT_MEMORY_MB, 300)
    assert fn["role"] == run.one("aws:iam/role:Role").outputs["arn"]
    assert log_group["name"] == f"/aws/lambda/{FUNCTION_NAME}"
    assert log_group["retentionInDays"] == 30
    assert log_group.urn in fn.dependencies
    assert run.one("aws:iam/rolePolicy:RolePolicy").urn in fn.dependencies


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        (
            "default",
            {
                "ACCOUNT_SOURCE": "organizations",
                "STATIC_ACCOUNT_IDS": "",
                "INCLUDE_INFRA_ACCOUNT": "false",
            },
        ),
        (
            "static-with-alarm-topic",
            {
                "ACCOUNT_SOURCE": "static",
                "STATIC_ACCOUNT_IDS": "222233334444,555566667777",
                "INCLUDE_INFRA_ACCOUNT": "true",
            },
        ),
    ],
)
def test_environment_follows_the_handler_contract(variant: str, expected: dict[str, str]) -> None:
    assert function(deploy(variant))["environment"]["variables"] == {
        "INVOKE_ROLE_NAME": "InvokeInstanceRefreshHandlerRole",
        "TARGET_FUNCTION_NAME": "LambdaForUpdateLaunchTemplate-And-InstanceRefresh",
        "ORGANIZATIONAL_UNIT_IDS": "",
        "LIST_ACCOUNTS_ROLE_ARN": "",
        "EXPECTED_ACCOUNT_IDS": "222233334444,555566667777",
        "MAX_CONCURRENCY": "16",
        "METRIC_NAMESPACE": "GoldenAmi",
        "ROLLOUT_TABLE_NAME": "",
        **expected,
    }


def test_subscribed_to_the_image_topic_with_permission_first() -> None:
    run = deploy()
    fn = function(run)
    subscription = run.one("aws:sns/topicSubscription:TopicSubscription")
    permission = run.one("aws:lambda/permission:Permission")
    assert (subscription["topic"], subscription["protocol"]) == (TOPIC, "lambda")
    assert subscription["endpoint"] == fn.outputs["arn"]
    assert permission["principal"] == "sns.amazonaws.com"
    assert permission["sourceArn"] == TOPIC
    assert permission["function"] == fn.outputs["name"]
    assert permission.urn in subscription.dependencies


def test_failure_alarms_watch_errors_and_failed_accounts() -> None:
    alarms = {
        a.name: a for a in deploy().resources_of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    errors, failed = alarms[f"{NAME}-errors"], alarms[f"{NAME}-failed-accounts"]
    assert (errors["namespace"], errors["metricName"]) == ("AWS/Lambda", "Errors")
    assert errors["dimensions"] == {"FunctionName": FUNCTION_NAME}
    assert (failed["namespace"], failed["metricName"]) == ("GoldenAmi", METRIC_NAMES[FAILED])
    for alarm in (errors, failed):
        assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["treatMissingData"] == "notBreaching"
        assert not alarm.inputs.get("alarmActions")


def test_alarms_notify_the_topic_for_humans_when_configured() -> None:
    alarms = deploy("static-with-alarm-topic").resources_of_type(
        "aws:cloudwatch/metricAlarm:MetricAlarm"
    )
    assert len(alarms) == 2
    for alarm in alarms:
        assert alarm["alarmActions"] == [ALARM_TOPIC]


def test_deployed_policy_is_the_builders_document() -> None:
    policy = deploy().one("aws:iam/rolePolicy:RolePolicy")
    assert policy["role"] == "GoldenAmiFanoutRole"
    assert policy.json("policy") == fanout_policy(**POLICY_ARGS)


# --- the policy builder, per account source ---------------------------------------------------


POLICY_ARGS = {
    "invoke_role_name": "InvokeInstanceRefreshHandlerRole",
    "organization_id": "o-a1b2c3d4e5",
    "log_group_arn": LOG_GROUP_ARN,
    "account_source": "organizations",
}


def fanout_statements(**changes: Any) -> dict[str, dict[str, Any]]:
    document = fanout_policy(**(POLICY_ARGS | changes))
    return {s["Sid"]: s for s in document["Statement"]}


def test_assumes_only_the_invoke_role_and_only_inside_the_organization() -> None:
    assume = fanout_statements()["AssumeInvokeRoleInOrganizationAccounts"]
    assert assume["Action"] == "sts:AssumeRole"
    assert assume["Resource"] == "arn:aws:iam::*:role/InvokeInstanceRefreshHandlerRole"
    assert assume["Condition"] == {"StringEquals": {"aws:ResourceOrgID": "o-a1b2c3d4e5"}}


def test_metrics_only_in_its_namespace_and_logs_only_to_its_group() -> None:
    statements = fanout_statements()
    assert statements["PublishFanoutMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "GoldenAmi"}
    }
    assert statements["WriteOwnLogs"]["Resource"] == [f"{LOG_GROUP_ARN}:*"]


@pytest.mark.parametrize(
    ("changes", "listing"),
    [
        ({}, {"Action": ["organizations:ListAccounts"], "Resource": "*"}),
        (
            {"organizational_unit_ids": ["ou-ab12-cdef3456"]},
            {
                "Action": [
                    "organizations:ListAccountsForParent",
                    "organizations:ListOrganizationalUnitsForParent",
                ],
                "Resource": "*",
            },
        ),
        ({"account_source": "static", "organizational_unit_ids": []}, None),
    ],
)
def test_organizations_listing_is_granted_only_as_the_handler_lists(
    changes: dict[str, Any], listing: dict[str, Any] | None
) -> None:
    statement = fanout_statements(**changes).get("ListOrganizationAccounts")
    assert (statement and {k: statement[k] for k in ("Action", "Resource")}) == listing
    assert "AssumeListAccountsRole" not in fanout_statements(**changes)


def test_listing_through_a_read_role_grants_only_assuming_it() -> None:
    role = "arn:aws:iam::999988887777:role/OrganizationAccountsReader"
    statements = fanout_statements(list_accounts_role_arn=role)
    assert "ListOrganizationAccounts" not in statements
    assert statements["AssumeListAccountsRole"] == {
        "Sid": "AssumeListAccountsRole",
        "Effect": "Allow",
        "Action": "sts:AssumeRole",
        "Resource": role,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"organizational_unit_ids": ["ou-ab12-cdef3456"]},
        {"list_accounts_role_arn": "arn:aws:iam::999988887777:role/OrganizationAccountsReader"},
    ],
)
def test_fanout_policy_passes_parliament(changes: dict[str, Any]) -> None:
    from parliament import analyze_policy_string

    document = json.dumps(fanout_policy(**(POLICY_ARGS | changes)))
    assert [str(f) for f in analyze_policy_string(document).findings] == []


def test_the_infra_stack_fanout_records_invocations_in_the_rollout_table(stack_run) -> None:
    run = stack_run("infra")
    table = run.one("aws:dynamodb/table:Table")
    fanout = run.one("aws:lambda/function:Function", "fanout")
    assert fanout["environment"]["variables"]["ROLLOUT_TABLE_NAME"] == table["name"]
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "fanout-policy").json("policy")
    [record] = [s for s in policy["Statement"] if s["Sid"] == "RecordInvocations"]
    assert record["Resource"] == table.outputs["arn"]
    assert record["Action"] == ["dynamodb:BatchWriteItem", "dynamodb:PutItem"]
