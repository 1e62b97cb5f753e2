"""RefreshWithRollback under Pulumi mocks: IAM once, regional parts per region, the alarm chain.

The component is built from the example workload stacks' config (plus overrides), the way
`__main__.py` builds it, and every assertion reads the recorded resource graph.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from functools import cache
from typing import Any

import pulumi
import pytest
from moto.events.models import EventPattern

from components.config import Target
from components.ecs_errors import METRIC_FILTER_PATTERN, ecs_error_event_pattern
from components.lambda_code import LAMBDA_RUNTIME
from components.refresh_rollback import (
    AUTO_SCALING_KEY_OPERATIONS,
    RefreshWithRollback,
    RefreshWithRollbackArgs,
)
from handlers.refresh import rules
from handlers.refresh.app import METRIC_NAMESPACE, OUTCOME_METRIC_NAMES
from sandbox.identity_policy import arn_matches
from tests.pulumi_harness import FIXTURES, RecordedResource, StackRun, run_program

ACCOUNT = "555566667777"  # the prod example's workload account
NAME = "golden-ami"
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"
KMS_KEY_US = KMS_KEY.replace("eu-west-1", "us-east-1")
ALARM_TOPIC = f"arn:aws:sns:eu-west-1:{ACCOUNT}:platform-alerts"

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
FUNCTION = "aws:lambda/function:Function"
PERMISSION = "aws:lambda/permission:Permission"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"
METRIC_FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
LOG_POLICY = "aws:cloudwatch/logResourcePolicy:LogResourcePolicy"
GRANT = "aws:kms/grant:Grant"
PROVIDER = "pulumi:providers:aws"


def target(group: str, template: str, cluster: str, region: str = "eu-west-1") -> Target:
    return Target(
        auto_scaling_group_name=group,
        launch_template_id=template,
        cluster_name=cluster,
        region=region,
    )


# Like the prod example stack: one group in each of two regions, every option on.
PROD = RefreshWithRollbackArgs(
    environment_name="golden-ami",
    regions=("eu-west-1", "us-east-1"),
    targets=(
        target("prod-ecs-web", "lt-0a1b2c3d4e5f60718", "prod-web"),
        target("prod-ecs-web", "lt-0b1c2d3e4f5a60719", "prod-web", region="us-east-1"),
    ),
    account_id=ACCOUNT,
    infra_account_id="111122223333",
    image_prefix="golden-ecs-al2023",
    fanout_role_arn="arn:aws:iam::111122223333:role/GoldenAmiFanoutRole",
    organization_id="o-a1b2c3d4e5",
    invoke_role_name="InvokeInstanceRefreshHandlerRole",
    function_name="LambdaForUpdateLaunchTemplate-And-InstanceRefresh",
    refresh_preferences={
        "MinHealthyPercentage": 100,
        "MaxHealthyPercentage": 125,
        "InstanceWarmup": 300,
        "CheckpointPercentages": [20, 50, 100],
        "CheckpointDelay": 900,
        "BakeTime": 1800,
        "StandbyInstances": "Ignore",
    },
    ecs_instance_role_arn=f"arn:aws:iam::{ACCOUNT}:role/ecsInstanceRole",
    log_retention_days=90,
    alarm_threshold=2,
    alarm_period_seconds=300,
    alarm_evaluation_periods=2,
    instance_count_alarm=True,
    converge_schedule="rate(6 hours)",
)
# Like the dev example: two clusters in the home region, no optional extras.
DEV = replace(
    PROD,
    regions=("eu-west-1",),
    targets=(
        target("dev-ecs-general", "lt-0123456789abcdef0", "dev-general"),
        target("dev-ecs-batch", "lt-0fedcba9876543210", "dev-batch"),
    ),
    refresh_preferences={"MinHealthyPercentage": 50, "MaxHealthyPercentage": 150},
    log_retention_days=14,
    alarm_threshold=3,
    alarm_evaluation_periods=1,
    instance_count_alarm=False,
    converge_schedule="",
)
VARIANTS = {
    "prod": PROD,
    "dev": DEV,
    "prod-encrypted": replace(
        PROD, ami_kms_key_arns={"eu-west-1": KMS_KEY, "us-east-1": KMS_KEY_US}
    ),
    "dev-alarm-topic": replace(DEV, alarm_topic_arns={"eu-west-1": ALARM_TOPIC}),
}


def run_component(args: RefreshWithRollbackArgs, allow_failure: bool = False) -> StackRun:
    def program() -> None:
        component = RefreshWithRollback(NAME, args)
        pulumi.export("functionArns", component.function_arns)
        pulumi.export("invokeRoleArn", component.invoke_role_arn)
        pulumi.export("alarmNames", component.alarm_names)

    return run_program(
        program, account_id=ACCOUNT, region=args.regions[0], allow_failure=allow_failure
    )


@cache
def deploy(variant: str = "prod") -> StackRun:
    """One recorded run per variant, shared by the tests that read it."""
    return run_component(VARIANTS[variant])


def in_region(run: StackRun, type_token: str, region: str) -> list[RecordedResource]:
    return [r for r in run.resources_of_type(type_token) if f"{NAME}-{region}-" in r.name]


def refresh_function(run: StackRun, region: str) -> RecordedResource:
    return run.one(FUNCTION, f"{NAME}-{region}-refresh")


def environment(function: RecordedResource) -> dict[str, str]:
    return function["environment"]["variables"]


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["Statement"]


def statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in statements(document) if s.get("Sid") == sid)


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


# --- IAM: global, created once --------------------------------------------------------------------


def test_iam_is_created_once_with_the_default_provider() -> None:
    run = deploy()
    regional_providers = {p.urn for p in run.resources_of_type(PROVIDER)}
    iam = run.resources_of_type(ROLE) + run.resources_of_type(ROLE_POLICY)
    assert sorted(r.name for r in iam) == sorted(
        [
            f"{NAME}-refresh-role",
            f"{NAME}-refresh-policy",
            f"{NAME}-release-role",
            f"{NAME}-release-policy",
            f"{NAME}-invoke-role",
            f"{NAME}-invoke-policy",
        ]
    )
    for resource in iam:
        assert not any(resource.provider.startswith(urn) for urn in regional_providers)


def test_invoke_role_trusts_exactly_the_fanout_role_within_the_organization() -> None:
    role = deploy().one(ROLE, f"{NAME}-invoke-role")
    assert role["name"] == "InvokeInstanceRefreshHandlerRole"
    assert role.json("assumeRolePolicy") == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:role/GoldenAmiFanoutRole"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}},
            }
        ],
    }


def test_invoke_role_may_only_invoke_the_refresh_function_in_any_region() -> None:
    run = deploy()
    policy = run.one(ROLE_POLICY, f"{NAME}-invoke-policy")
    assert policy["role"] == "InvokeInstanceRefreshHandlerRole"
    name = refresh_function(run, "eu-west-1")["name"]
    # Every region: IAM decides before Lambda looks the function up, so a region the stack does
    # not cover must answer "not found" (not-enrolled), not AccessDenied (failed).
    assert statements(policy.json("policy")) == [
        {
            "Sid": "InvokeRefreshFunctions",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": f"arn:aws:lambda:*:{ACCOUNT}:function:{name}",
        }
    ]


def test_refresh_role_launches_only_from_the_configured_templates() -> None:
    policy = deploy().one(ROLE_POLICY, f"{NAME}-refresh-policy").json("policy")
    templates = [
        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:launch-template/lt-0a1b2c3d4e5f60718",
        f"arn:aws:ec2:us-east-1:{ACCOUNT}:launch-template/lt-0b1c2d3e4f5a60719",
    ]
    run_instances = statement(policy, "LaunchFromConfiguredTemplates")
    assert run_instances["Action"] == "ec2:RunInstances"
    assert run_instances["Condition"] == {"ArnEquals": {"ec2:LaunchTemplate": templates}}
    assert statement(policy, "VersionConfiguredTemplates")["Resource"] == templates
    assert statement(policy, "RefreshConfiguredGroups")["Resource"] == [
        f"arn:aws:autoscaling:{region}:{ACCOUNT}:autoScalingGroup:*"
        ":autoScalingGroupName/prod-ecs-web"
        for region in ("eu-west-1", "us-east-1")
    ]


def test_refresh_role_passes_only_the_instance_role_and_only_to_ec2() -> None:
    policy = deploy().one(ROLE_POLICY, f"{NAME}-refresh-policy").json("policy")
    pass_role = [s for s in statements(policy) if "iam:PassRole" in as_list(s["Action"])]
    assert pass_role == [
        {
            "Sid": "PassInstanceRoleToEc2",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": f"arn:aws:iam::{ACCOUNT}:role/ecsInstanceRole",
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        }
    ]
    create_tags = statement(policy, "TagInstancesAtLaunch")
    assert create_tags["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}


def test_refresh_role_reads_only_the_rollback_alarms_it_pre_flights() -> None:
    policy = deploy().one(ROLE_POLICY, f"{NAME}-refresh-policy").json("policy")
    assert statement(policy, "PreflightRollbackAlarms")["Resource"] == [
        f"arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:golden-ami-prod-web-{suffix}"
        for region in ("eu-west-1", "us-east-1")
        for suffix in ("container-instances", "ecs-errors")
    ]


def test_refresh_role_writes_only_its_own_log_groups() -> None:
    policy = deploy().one(ROLE_POLICY, f"{NAME}-refresh-policy").json("policy")
    assert statement(policy, "WriteOwnLogs")["Resource"] == [
        f"arn:aws:logs:{region}:{ACCOUNT}:log-group:"
        "/aws/lambda/LambdaForUpdateLaunchTemplate-And-InstanceRefresh:*"
        for region in ("eu-west-1", "us-east-1")
    ]


def test_no_wildcard_action_and_no_managed_policy() -> None:
    run = deploy()
    assert not run.resources_of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    for role in run.resources_of_type(ROLE):
        assert not role.inputs.get("managedPolicyArns")
    for policy in run.resources_of_type(ROLE_POLICY):
        for entry in statements(policy.json("policy")):
            for action in as_list(entry["Action"]):
                assert "*" not in action, (policy.name, action)


def test_policies_pass_parliament() -> None:
    from parliament import analyze_policy_string

    for policy in deploy().resources_of_type(ROLE_POLICY):
        findings = [
            f
            for f in analyze_policy_string(policy.inputs["policy"]).findings
            # DESIGN §7: RunInstances authorises instance, volume, network interface, subnet,
            # security group and the infra account's image, so it takes "*" narrowed by the
            # ec2:LaunchTemplate condition (asserted in the test above).
            if (f.issue, f.detail) != ("RESOURCE_STAR", ["ec2:RunInstances"])
        ]
        assert not findings, (policy.name, [str(f) for f in findings])


# --- regional parts -------------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1"])
def test_regional_resources_use_that_regions_provider(region: str) -> None:
    run = deploy()
    provider = run.one(PROVIDER, f"{NAME}-{region}")
    assert provider["region"] == region
    regional = in_region(run, FUNCTION, region) + in_region(run, RULE, region)
    regional += in_region(run, ALARM, region) + in_region(run, LOG_GROUP, region)
    assert len(regional) >= 4
    for resource in regional:
        assert resource.provider.startswith(provider.urn), resource.name


def test_every_child_belongs_to_the_component() -> None:
    run = deploy()
    component = run.one("golden-ami:refresh_rollback:RefreshWithRollback")
    for resource in run.resources:
        if resource is not component:
            assert resource.parent == component.urn, resource.name
            assert resource.name.startswith(f"{NAME}-"), resource.name


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1"])
def test_refresh_function_environment(region: str) -> None:
    run = deploy()
    function = refresh_function(run, region)
    assert function["name"] == "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
    assert function["runtime"] == LAMBDA_RUNTIME
    assert function["handler"] == "handlers.refresh.app.lambda_handler"
    env = environment(function)
    assert set(env) == {
        "INFRA_ACCOUNT_ID",
        "IMAGE_PREFIX",
        "TARGETS_JSON",
        "REFRESH_PREFERENCES_JSON",
    }
    assert env["INFRA_ACCOUNT_ID"] == "111122223333"
    assert env["IMAGE_PREFIX"] == "golden-ecs-al2023"
    template = {"eu-west-1": "lt-0a1b2c3d4e5f60718", "us-east-1": "lt-0b1c2d3e4f5a60719"}[region]
    assert json.loads(env["TARGETS_JSON"]) == [
        {
            "autoScalingGroupName": "prod-ecs-web",
            "launchTemplateId": template,
            "clusterName": "prod-web",
            "rollbackAlarmNames": [
                "golden-ami-prod-web-ecs-errors",
                "golden-ami-prod-web-container-instances",
            ],
        }
    ]
    assert json.loads(env["REFRESH_PREFERENCES_JSON"]) == {
        "MinHealthyPercentage": 100,
        "MaxHealthyPercentage": 125,
        "InstanceWarmup": 300,
        "CheckpointPercentages": [20, 50, 100],
        "CheckpointDelay": 900,
        "BakeTime": 1800,
        "StandbyInstances": "Ignore",
    }


def test_preferences_are_passed_through_as_given() -> None:
    env = environment(refresh_function(deploy("dev"), "eu-west-1"))
    assert json.loads(env["REFRESH_PREFERENCES_JSON"]) == DEV.refresh_preferences


def test_refresh_function_log_group_exists_first_with_retention() -> None:
    run = deploy()
    function = refresh_function(run, "eu-west-1")
    log_group = run.one(LOG_GROUP, f"{NAME}-eu-west-1-refresh-logs")
    assert log_group["name"] == "/aws/lambda/LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
    assert log_group["retentionInDays"] == 90
    assert log_group.urn in function.dependencies


# --- the rollback alarm chain ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "region", "cluster"),
    [
        ("prod", "eu-west-1", "prod-web"),
        ("prod", "us-east-1", "prod-web"),
        ("dev", "eu-west-1", "dev-general"),
        ("dev", "eu-west-1", "dev-batch"),
    ],
)
def test_alarm_chain_from_ecs_events_to_the_refresh(
    variant: str, region: str, cluster: str
) -> None:
    run = deploy(variant)
    args = VARIANTS[variant]
    prefix = f"{NAME}-{region}-{cluster}"

    rule = run.one(RULE, f"{prefix}-ecs-errors")
    assert rule.json("eventPattern") == ecs_error_event_pattern(cluster)

    log_group = run.one(LOG_GROUP, f"{prefix}-ecs-errors-logs")
    assert log_group["name"] == f"/aws/events/golden-ami-{cluster}-ecs-errors"
    assert log_group["retentionInDays"] == args.log_retention_days

    target = run.one(TARGET, f"{prefix}-ecs-errors-target")
    assert target["rule"] == rule.outputs["name"]
    assert target["arn"] == log_group.outputs["arn"]

    delivery = run.one(LOG_POLICY, f"{NAME}-{region}-ecs-errors-delivery")
    assert delivery.urn in target.dependencies, "events would be dropped before the policy exists"
    grant = delivery.json("policyDocument")["Statement"][0]
    assert f"{log_group.outputs['arn']}:*" in grant["Resource"]
    assert grant["Principal"]["Service"][0] == "events.amazonaws.com"

    metric_filter = run.one(METRIC_FILTER, f"{prefix}-ecs-errors-filter")
    assert metric_filter["logGroupName"] == log_group.outputs["name"]
    assert metric_filter["pattern"] == METRIC_FILTER_PATTERN
    transformation = metric_filter["metricTransformation"]
    assert transformation["value"] == "1"
    assert "defaultValue" not in transformation

    alarm = run.one(ALARM, f"{prefix}-ecs-errors-alarm")
    assert (alarm["namespace"], alarm["metricName"]) == (
        transformation["namespace"],
        transformation["name"],
    )
    assert alarm["statistic"] == "Sum"
    assert alarm["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["threshold"] == args.alarm_threshold
    assert alarm["period"] == args.alarm_period_seconds
    assert alarm["evaluationPeriods"] == args.alarm_evaluation_periods
    assert alarm["treatMissingData"] == "notBreaching"

    targets = json.loads(environment(refresh_function(run, region))["TARGETS_JSON"])
    for group in (t for t in targets if t["clusterName"] == cluster):
        assert alarm["name"] in group["rollbackAlarmNames"]


def test_one_log_resource_policy_per_region_covers_every_cluster() -> None:
    run = deploy("dev")
    (delivery,) = run.resources_of_type(LOG_POLICY)
    arns = sorted(f"{g.outputs['arn']}:*" for g in run.resources_of_type(LOG_GROUP))
    for function_name in (
        "LambdaForUpdateLaunchTemplate-And-InstanceRefresh",
        "golden-ami-release",
    ):
        arns.remove(f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/lambda/{function_name}:*")
    assert delivery.json("policyDocument")["Statement"][0]["Resource"] == arns


def test_alarms_notify_the_topic_for_humans_only_when_configured() -> None:
    for alarm in deploy("dev-alarm-topic").resources_of_type(ALARM):
        assert alarm["alarmActions"] == [ALARM_TOPIC]
        if alarm.name not in OUTCOME_ALARMS:  # rollback alarms also say when they are OK again
            assert alarm["okActions"] == [ALARM_TOPIC]
    for alarm in deploy("dev").resources_of_type(ALARM):
        assert not alarm.inputs.get("alarmActions")


OUTCOME_ALARMS = {
    f"{NAME}-eu-west-1-refresh-{suffix}" for suffix in ("failed", "rejected", "errors")
}


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1"])
def test_failed_and_rejected_groups_and_lambda_errors_alarm_in_every_region(region: str) -> None:
    """The fan-out only sees the 202 of its asynchronous invoke: the account must alarm itself."""
    run = deploy()
    function = "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
    for outcome, metric in (("failed", "GroupsFailed"), ("rejected", "GroupsRejected")):
        alarm = run.one(ALARM, f"{NAME}-{region}-refresh-{outcome}")
        assert alarm["name"] == f"{function}-{outcome}-groups"
        assert (alarm["namespace"], alarm["metricName"]) == (METRIC_NAMESPACE, metric)
        assert metric == OUTCOME_METRIC_NAMES[outcome]  # the name the handler publishes
        assert (alarm["statistic"], alarm["threshold"], alarm["evaluationPeriods"]) == ("Sum", 0, 1)
        assert alarm["comparisonOperator"] == "GreaterThanThreshold"
        assert alarm["treatMissingData"] == "notBreaching"
    errors = run.one(ALARM, f"{NAME}-{region}-refresh-errors")
    assert (errors["namespace"], errors["metricName"]) == ("AWS/Lambda", "Errors")
    assert errors["dimensions"] == {"FunctionName": function}
    assert errors.provider == refresh_function(run, region).provider


def test_refresh_role_publishes_metrics_only_in_its_namespace() -> None:
    policy = deploy().one(ROLE_POLICY, f"{NAME}-refresh-policy").json("policy")
    assert statement(policy, "PublishRefreshOutcomeMetrics") == {
        "Sid": "PublishRefreshOutcomeMetrics",
        "Effect": "Allow",
        "Action": "cloudwatch:PutMetricData",
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": "GoldenAmi/Refresh"}},
    }


def test_instance_count_alarm_compares_registered_instances_with_desired_capacity() -> None:
    run = deploy()
    alarm = run.one(ALARM, f"{NAME}-eu-west-1-prod-web-instance-count-alarm")
    queries = {q["id"]: q for q in alarm["metricQueries"]}
    assert queries["registered"]["metric"]["metricName"] == "ContainerInstanceCount"
    assert queries["registered"]["metric"]["dimensions"] == {"ClusterName": "prod-web"}
    assert queries["desired0"]["metric"]["dimensions"] == {"AutoScalingGroupName": "prod-ecs-web"}
    assert queries["missing"]["expression"] == "desired0 - registered"
    assert queries["missing"]["returnData"] is True
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 0)
    assert not deploy("dev").resources_of_type(ALARM) or all(
        "instance-count" not in a.name for a in deploy("dev").resources_of_type(ALARM)
    )


# --- catch-up and converge ------------------------------------------------------------------------


def refresh_event(detail_type: str, group: str) -> dict[str, Any]:
    event = json.loads((FIXTURES / "autoscaling_instance_refresh_started.json").read_text())
    event = copy.deepcopy(event) | {"detail-type": detail_type}
    event["detail"]["AutoScalingGroupName"] = group
    return event


@pytest.mark.parametrize(
    ("detail_type", "group", "matched"),
    [
        ("EC2 Auto Scaling Instance Refresh Succeeded", "prod-ecs-web", True),
        ("EC2 Auto Scaling Instance Refresh Rollback Succeeded", "prod-ecs-web", True),
        ("EC2 Auto Scaling Instance Refresh Cancelled", "prod-ecs-web", True),
        ("EC2 Auto Scaling Instance Refresh Started", "prod-ecs-web", False),
        ("EC2 Auto Scaling Instance Refresh Succeeded", "prod-ecs-web-canary", False),
        ("EC2 Auto Scaling Instance Refresh Succeeded", "my-asg", False),
    ],
)
def test_catch_up_rule_matches_finished_refreshes_of_configured_groups(
    detail_type: str, group: str, matched: bool
) -> None:
    rule = deploy().one(RULE, f"{NAME}-eu-west-1-refresh-finished")
    pattern = EventPattern.load(rule.inputs["eventPattern"])
    assert pattern.matches_event(refresh_event(detail_type, group)) is matched


@pytest.mark.parametrize("rule_suffix", ["refresh-finished", "converge"])
def test_rules_invoke_the_regional_function_with_permission(rule_suffix: str) -> None:
    run = deploy()
    function = refresh_function(run, "us-east-1")
    rule = run.one(RULE, f"{NAME}-us-east-1-{rule_suffix}")
    target = run.one(TARGET, f"{NAME}-us-east-1-{rule_suffix}-target")
    permission = run.one(PERMISSION, f"{NAME}-us-east-1-{rule_suffix}-invoke")
    assert (target["rule"], target["arn"]) == (rule.outputs["name"], function.outputs["arn"])
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["sourceArn"] == rule.outputs["arn"]
    assert permission["function"] == function.outputs["name"]
    assert permission.urn in target.dependencies


def test_converge_schedule_sends_the_converge_action() -> None:
    run = deploy()
    rule = run.one(RULE, f"{NAME}-eu-west-1-converge")
    assert rule["scheduleExpression"] == "rate(6 hours)"
    target = run.one(TARGET, f"{NAME}-eu-west-1-converge-target")
    assert json.loads(target["input"]) == {"action": "converge"}
    assert not [r for r in deploy("dev").resources_of_type(RULE) if "converge" in r.name]


# --- KMS ------------------------------------------------------------------------------------------


def test_kms_grant_only_when_the_amis_are_encrypted() -> None:
    assert not deploy().resources_of_type(GRANT)
    run = deploy("prod-encrypted")
    grants = {g.name: g for g in run.resources_of_type(GRANT)}
    assert sorted(grants) == [
        f"{NAME}-eu-west-1-autoscaling-ami-key",
        f"{NAME}-us-east-1-autoscaling-ami-key",
    ]
    us_grant = grants[f"{NAME}-us-east-1-autoscaling-ami-key"]
    assert us_grant["keyId"] == KMS_KEY_US
    assert us_grant["granteePrincipal"] == (
        f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/"
        "AWSServiceRoleForAutoScaling"
    )
    assert sorted(us_grant["operations"]) == sorted(AUTO_SCALING_KEY_OPERATIONS)
    assert us_grant.provider.startswith(run.one(PROVIDER, f"{NAME}-us-east-1").urn)


# --- outputs and bad input ------------------------------------------------------------------------


def test_outputs_name_the_functions_and_alarms() -> None:
    run = deploy()
    assert run.outputs["functionArns"] == {
        region: f"arn:aws:lambda:{region}:{ACCOUNT}:function:"
        "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
        for region in ("eu-west-1", "us-east-1")
    }
    assert run.outputs["invokeRoleArn"] == (
        f"arn:aws:iam::{ACCOUNT}:role/InvokeInstanceRefreshHandlerRole"
    )
    assert run.outputs["alarmNames"]["us-east-1"] == {
        "prod-web": ["golden-ami-prod-web-ecs-errors", "golden-ami-prod-web-container-instances"]
    }


def test_cluster_name_too_long_for_a_rule_name_is_rejected_by_name() -> None:
    long_cluster = "c" * 60
    args = replace(DEV, targets=(target("dev-ecs-general", "lt-0123456789abcdef0", long_cluster),))
    run = run_component(args, allow_failure=True)
    assert isinstance(run.error, ValueError)
    assert f"ECS cluster name '{long_cluster}' is too long" in str(run.error)
    assert not run.resources_of_type(ROLE), "nothing may be declared before the error"


def test_no_target_is_rejected() -> None:
    run = run_component(replace(DEV, targets=()), allow_failure=True)
    assert isinstance(run.error, ValueError)
    assert "needs at least one target group" in str(run.error)


def test_a_region_without_groups_gets_no_regional_parts() -> None:
    run = run_component(replace(DEV, regions=("eu-west-1", "ap-southeast-2")))
    assert [p["region"] for p in run.resources_of_type(PROVIDER)] == ["eu-west-1"]
    functions = run.resources_of_type(FUNCTION)
    assert sorted(f.name for f in functions) == [
        f"{NAME}-eu-west-1-refresh",
        f"{NAME}-eu-west-1-release",
    ]


def test_a_target_outside_the_regions_is_rejected() -> None:
    stray = target("dev-ecs-general", "lt-0123456789abcdef0", "dev-general", region="us-west-2")
    run = run_component(replace(DEV, targets=(*DEV.targets, stray)), allow_failure=True)
    assert isinstance(run.error, ValueError)
    assert "targets in ['us-west-2'] are outside the stack's regions" in str(run.error)


# --- release: its own function and role, out of the fan-out's reach (issue 11 item 13) ---------


def test_each_region_has_a_release_function_with_a_role_of_its_own() -> None:
    run = deploy()
    release = [f for f in run.resources_of_type(FUNCTION) if f.name.endswith("-release")]
    assert sorted(f["name"] for f in release) == ["golden-ami-release", "golden-ami-release"]
    refresh_role = run.one(ROLE, f"{NAME}-refresh-role").outputs["arn"]
    release_role = run.one(ROLE, f"{NAME}-release-role").outputs["arn"]
    for region in ("eu-west-1", "us-east-1"):
        function = run.one(FUNCTION, f"{NAME}-{region}-release")
        assert function["handler"] == "handlers.release.app.lambda_handler"
        assert function["role"] == release_role != refresh_role
        assert environment(function) == environment(refresh_function(run, region))
        # The zip runs the refresh rules.
        assert "handlers/refresh/app.py" in function["code"].assets
    # Nothing but people invokes it: no rule targets it and no resource policy names it.
    release_arns = {f.outputs["arn"] for f in release}
    assert not [t for t in run.resources_of_type(TARGET) if t["arn"] in release_arns]
    assert not [p for p in run.resources_of_type(PERMISSION) if p["function"].endswith("-release")]


def test_the_invoke_role_cannot_invoke_the_release_function() -> None:
    run = deploy()
    [statement] = statements(run.one(ROLE_POLICY, f"{NAME}-invoke-policy").json("policy"))
    for function in run.resources_of_type(FUNCTION):
        covered = arn_matches(statement["Resource"], function.outputs["arn"])
        assert covered == function.name.endswith("-refresh"), function.name


def test_release_role_has_the_refresh_rules_grants_and_its_own_logs() -> None:
    run = deploy()
    refresh = run.one(ROLE_POLICY, f"{NAME}-refresh-policy").json("policy")
    release = run.one(ROLE_POLICY, f"{NAME}-release-policy").json("policy")
    without_logs = [s for s in statements(refresh) if s["Sid"] != "WriteOwnLogs"]
    assert [s for s in statements(release) if s["Sid"] != "WriteOwnLogs"] == without_logs
    assert statement(release, "WriteOwnLogs")["Resource"] == [
        f"arn:aws:logs:{region}:{ACCOUNT}:log-group:/aws/lambda/golden-ami-release:*"
        for region in ("eu-west-1", "us-east-1")
    ]


def test_update_auto_scaling_group_may_only_pin_a_numbered_version() -> None:
    policy = deploy().one(ROLE_POLICY, f"{NAME}-refresh-policy").json("policy")
    pin = statement(policy, "PinConfiguredGroupsToANumberedVersion")
    assert pin["Action"] == "autoscaling:UpdateAutoScalingGroup"
    assert pin["Resource"] == statement(policy, "RefreshConfiguredGroups")["Resource"]
    assert pin["Condition"] == {
        "Bool": {"autoscaling:LaunchTemplateVersionSpecified": "true"},
        "Null": {
            "autoscaling:LaunchConfigurationName": "true",
            "autoscaling:MaxSize": "true",
            "autoscaling:MinSize": "true",
            "autoscaling:VPCZoneIdentifiers": "true",
        },
    }
    assert not [
        s
        for s in statements(policy)
        if s is not pin and "autoscaling:UpdateAutoScalingGroup" in as_list(s["Action"])
    ]


@pytest.mark.parametrize("mixed", [False, True])
def test_the_handlers_pin_is_within_the_update_condition(mixed: bool) -> None:
    """The request the refresh rules send satisfies the condition as Auto Scaling evaluates it."""
    policy = {"MixedInstancesPolicy": {"InstancesDistribution": {}}} if mixed else None
    ref = rules.TemplateRef("lt-0a1b2c3d4e5f60718", "$Latest", policy)
    request = rules.pinned_group_update("prod-ecs-web", ref, 7)
    spec = (
        request["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
        if mixed
        else request["LaunchTemplate"]
    )
    # autoscaling:LaunchTemplateVersionSpecified is true for a version number, false for
    # $Latest/$Default; the size, subnet and launch-configuration keys exist only when sent.
    assert spec["Version"].isdigit()
    assert not {"LaunchConfigurationName", "MinSize", "MaxSize", "VPCZoneIdentifier"} & set(request)
