"""RolloutStatus in the infra stack under Pulumi mocks: bus, table, recorder, DLQ, dashboard."""

from __future__ import annotations

import json

import pytest

from handlers.recorder.app import METRIC_NAMESPACE, REFUSED_METRIC, REPORTS_METRIC
from handlers.recorder.logic import IN_USE_TAG

ORGANIZATION = "o-a1b2c3d4e5"


@pytest.fixture(scope="module")
def run(stack_run):
    return stack_run("infra")


def test_the_bus_admits_only_the_organizations_accounts(run):
    bus = run.one("aws:cloudwatch/eventBus:EventBus")
    assert bus["name"] == "golden-ami-rollout"
    policy = run.one("aws:cloudwatch/eventBusPolicy:EventBusPolicy")
    [statement] = policy.json("policy")["Statement"]
    assert statement["Action"] == "events:PutEvents"
    assert statement["Resource"] == bus.outputs["arn"]
    assert statement["Condition"] == {
        "StringEquals": {"aws:PrincipalOrgID": run.config["golden-ami:organizationId"]}
    }
    assert run.outputs["rolloutBusArn"] == bus.outputs["arn"]


def test_the_table_is_on_demand_recoverable_encrypted_and_keyed_as_the_status_module(run):
    table = run.one("aws:dynamodb/table:Table")
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert (table["hashKey"], table["rangeKey"]) == ("pk", "sk")
    assert {(a["name"], a["type"]) for a in table["attributes"]} == {("pk", "S"), ("sk", "S")}
    assert table["pointInTimeRecovery"] == {"enabled": True}
    assert table["serverSideEncryption"] == {"enabled": True}
    assert table["deletionProtectionEnabled"] is True
    assert run.outputs["rolloutTableName"] == table["name"]


def test_the_recorder_gets_every_bus_event_and_dead_letters_go_to_an_alarmed_queue(run):
    function = run.one("aws:lambda/function:Function", "rollout-recorder")
    assert function["handler"] == "handlers.recorder.app.lambda_handler"
    table = run.one("aws:dynamodb/table:Table")
    assert function["environment"]["variables"] == {"TABLE_NAME": table["name"]}
    queue = run.one("aws:sqs/queue:Queue", "rollout-recorder-dlq")
    assert function["deadLetterConfig"]["targetArn"] == queue.outputs["arn"]

    rule = run.one("aws:cloudwatch/eventRule:EventRule", "rollout-rule")
    assert rule["eventBusName"] == "golden-ami-rollout"
    assert rule.json("eventPattern") == {"source": ["golden-ami.refresh", "aws.autoscaling"]}
    target = run.one("aws:cloudwatch/eventTarget:EventTarget", "rollout-rule-target")
    assert target["arn"] == function.outputs["arn"]
    assert target["eventBusName"] == "golden-ami-rollout"
    assert target["deadLetterConfig"]["arn"] == queue.outputs["arn"]
    permission = run.one("aws:lambda/permission:Permission", "rollout-rule-invoke")
    assert permission["sourceArn"] == rule.outputs["arn"]

    queue_policy = run.one("aws:sqs/queuePolicy:QueuePolicy", "rollout-recorder-dlq")
    [statement] = queue_policy.json("policy")["Statement"]
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": rule.outputs["arn"]}}
    alarm = run.one("aws:cloudwatch/metricAlarm:MetricAlarm", "rollout-recorder-dlq")
    assert alarm["dimensions"] == {"QueueName": queue.outputs["name"]}
    refused = run.one("aws:cloudwatch/metricAlarm:MetricAlarm", "refused-events")
    assert (refused["namespace"], refused["metricName"]) == (METRIC_NAMESPACE, REFUSED_METRIC)


def test_the_in_use_tag_grant_is_limited_to_that_tag_on_the_pipelines_amis(run):
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "rollout-recorder-policy").json("policy")
    [tagging] = [s for s in policy["Statement"] if s["Sid"] == "MaintainInUseTag"]
    assert tagging["Action"] == ["ec2:CreateTags", "ec2:DeleteTags"]
    assert tagging["Condition"]["ForAllValues:StringEquals"] == {"aws:TagKeys": [IN_USE_TAG]}
    pipeline = run.one("aws:imagebuilder/imagePipeline:ImagePipeline")
    assert tagging["Condition"]["StringEquals"] == {
        "aws:ResourceTag/golden-ami:pipeline": pipeline["name"]
    }
    distribution = run.one("aws:imagebuilder/distributionConfiguration:DistributionConfiguration")
    for entry in distribution["distributions"]:
        tags = entry["amiDistributionConfiguration"]["amiTags"]
        assert tags["golden-ami:pipeline"] == pipeline["name"]


def test_the_dashboard_charts_the_metric_the_recorder_emits_per_rollout_and_state(run):
    dashboard = run.one("aws:cloudwatch/dashboard:Dashboard")
    assert run.outputs["rolloutDashboardName"] == dashboard["dashboardName"]
    body = json.loads(dashboard["dashboardBody"])
    [expression] = [
        metric[0]["expression"]
        for widget in body["widgets"]
        for metric in widget["properties"]["metrics"]
        if isinstance(metric[0], dict)
    ]
    assert f"{{{METRIC_NAMESPACE},Rollout,State}}" in expression
    assert f'MetricName="{REPORTS_METRIC}"' in expression


# --- the workload side: results and refresh ends forwarded to the rollout bus ------------------


def test_each_workload_region_forwards_results_and_its_groups_refresh_ends_with_a_role(stack_run):
    from sandbox.ecs_alarm import event_matches

    run = stack_run("workload-prod")
    bus = run.config["golden-ami:rolloutBusArn"]
    [role] = [r for r in run.resources_of_type("aws:iam/role:Role") if "forwarder" in r.name]
    [statement] = role.json("assumeRolePolicy")["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "555566667777"}}
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "rollout-forwarder").json("policy")
    assert policy["Statement"][0]["Action"] == "events:PutEvents"
    assert policy["Statement"][0]["Resource"] == bus

    targets = [t for t in run.resources_of_type("aws:cloudwatch/eventTarget:EventTarget")
               if "rollout-forward" in t.name]  # fmt: skip
    targets_config = json.loads(run.config["golden-ami:targets"])
    regions = {t.get("region", run.config["aws:region"]) for t in targets_config}
    assert targets and all(t["arn"] == bus for t in targets)
    # The bus admits the Organization, so EventBridge requires a role on the target, in every
    # region (PutPermission API reference): none may rely on same-region account grants.
    assert all(t["roleArn"] == role.outputs["arn"] for t in targets)
    assert len(targets) == len(regions)

    for rule in [r for r in run.resources_of_type("aws:cloudwatch/eventRule:EventRule")
                 if "rollout-forward" in r.name]:  # fmt: skip
        pattern = rule.json("eventPattern")
        groups = pattern["$or"][1]["detail"]["AutoScalingGroupName"]
        result = {"source": "golden-ami.refresh", "detail-type": "Golden AMI Refresh Result",
                  "detail": {"autoScalingGroupName": groups[0]}}  # fmt: skip
        assert event_matches(pattern, result)
        end = {"source": "aws.autoscaling",
               "detail-type": "EC2 Auto Scaling Instance Refresh Rollback Succeeded",
               "detail": {"AutoScalingGroupName": groups[0]}}  # fmt: skip
        assert event_matches(pattern, end)
        assert not event_matches(pattern, end | {"detail": {"AutoScalingGroupName": "other"}})
        started = end | {"detail-type": "EC2 Auto Scaling Instance Refresh Started"}
        assert not event_matches(pattern, started)


def test_a_workload_stack_without_a_rollout_bus_forwards_nothing(stack_run):
    run = stack_run("workload-dev", {"rolloutBusArn": None})
    assert not [r for r in run.resources if "rollout-forward" in r.name]
