"""`__main__.py` for the example stacks: the fan-out and the workload stacks fit together.

Enrolment only works when the infra stack's fan-out role is exactly what each workload stack's
invoke role trusts, and the fan-out looks for the role and function names the workload creates.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.pulumi_harness import RecordedResource, StackRun

StackRunner = Callable[..., StackRun]
WORKLOAD_STACKS = ("workload-dev", "workload-prod")
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"


def config_list(run: StackRun, key: str) -> list:
    return json.loads(run.config[f"golden-ami:{key}"])


def region_of(run: StackRun, resource: RecordedResource) -> str:
    """The region of the explicit provider a resource was created with."""
    return run.by_urn(resource.provider.rpartition("::")[0])["region"]


@pytest.mark.parametrize("stack", WORKLOAD_STACKS)
def test_invoke_role_trusts_the_infra_stacks_fanout_role(
    stack_run: StackRunner, stack: str
) -> None:
    infra, workload = stack_run("infra"), stack_run(stack)
    trust = workload.one("aws:iam/role:Role", "invoke-role").json("assumeRolePolicy")
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"AWS": infra.outputs["fanoutRoleArn"]}
    assert statement["Condition"] == {
        "StringEquals": {"aws:PrincipalOrgID": infra.config["golden-ami:organizationId"]}
    }


@pytest.mark.parametrize("stack", WORKLOAD_STACKS)
def test_fanout_looks_for_the_names_the_workload_creates(
    stack_run: StackRunner, stack: str
) -> None:
    fanout_env = stack_run("infra").one("aws:lambda/function:Function", "fanout")["environment"][
        "variables"
    ]
    workload = stack_run(stack)
    assert workload.outputs["invokeRoleArn"].endswith(f":role/{fanout_env['INVOKE_ROLE_NAME']}")
    for arn in workload.outputs["refreshFunctionArns"].values():
        assert arn.endswith(f":function:{fanout_env['TARGET_FUNCTION_NAME']}")


def test_fanout_is_subscribed_to_the_pipelines_image_topic(stack_run: StackRunner) -> None:
    infra = stack_run("infra")
    topic = infra.one("aws:sns/topic:Topic")
    subscription = infra.one("aws:sns/topicSubscription:TopicSubscription", "fanout")
    assert subscription["topic"] == topic.outputs["arn"] == infra.outputs["imageTopicArn"]
    assert infra.one("aws:iam/role:Role", "fanout-role").protect is True


@pytest.mark.parametrize("stack", WORKLOAD_STACKS)
def test_every_configured_group_is_handed_its_clusters_alarm(
    stack_run: StackRunner, stack: str
) -> None:
    run = stack_run(stack)
    home = run.config["aws:region"]
    alarm_names = {
        a["name"] for a in run.resources_of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    configured = {
        (t.get("region", home), t["autoScalingGroupName"], t["clusterName"])
        for t in config_list(run, "targets")
    }
    handed = set()
    for function in run.resources_of_type("aws:lambda/function:Function"):
        region = region_of(run, function)
        for target in json.loads(function["environment"]["variables"]["TARGETS_JSON"]):
            assert f"golden-ami-{target['clusterName']}-ecs-errors" in target["rollbackAlarmNames"]
            assert set(target["rollbackAlarmNames"]) <= alarm_names
            handed.add((region, target["autoScalingGroupName"], target["clusterName"]))
    assert handed == configured


def test_policies_name_the_deploying_account(stack_run: StackRunner) -> None:
    run = stack_run("workload-prod")
    account = run.config["golden-ami:ecsInstanceRoleArn"].split(":")[4]  # the mocks' account
    assert any(token == "aws:index/getCallerIdentity:getCallerIdentity" for token, _ in run.calls)
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "refresh-policy").json("policy")
    group_arns = next(s for s in policy["Statement"] if s["Sid"] == "RefreshConfiguredGroups")
    assert all(f":{account}:autoScalingGroup:" in arn for arn in group_arns["Resource"])


def test_encrypted_amis_get_a_grant_in_every_region(stack_run: StackRunner) -> None:
    run = stack_run("workload-prod", {"amiKmsKeyArn": KMS_KEY})
    grants = {g.name: g["keyId"] for g in run.resources_of_type("aws:kms/grant:Grant")}
    assert grants == {
        "golden-ami-eu-west-1-autoscaling-ami-key": KMS_KEY,
        "golden-ami-us-east-1-autoscaling-ami-key": KMS_KEY.replace("eu-west-1", "us-east-1"),
    }
