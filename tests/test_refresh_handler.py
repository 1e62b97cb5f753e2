"""The refresh handler end to end on moto plus the instance-refresh emulation (DESIGN §4, §5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from handlers.common.log import JsonFormatter
from handlers.refresh import app, rules
from handlers.refresh.parse import InvalidInputError
from sandbox.instance_refresh import InstanceRefreshEmulator
from tests import refresh_fixtures as fx
from tests.pulumi_harness import FIXTURES

IMAGE_ARN = "arn:aws:imagebuilder:eu-west-1:210987654321:image/golden-ecs-al2023/1.0.0/3"
PREFERENCES = {
    "MinHealthyPercentage": 50,
    "MaxHealthyPercentage": 150,
    "InstanceWarmup": 60,
    "CheckpointPercentages": [50, 100],
    "CheckpointDelay": 120,
    "BakeTime": 600,
    "StandbyInstances": "Ignore",
}
WRITES = {
    "CreateLaunchTemplateVersion",
    "StartInstanceRefresh",
    "UpdateAutoScalingGroup",
    "CreateOrUpdateTags",
    "ModifyLaunchTemplate",
}


@dataclass
class World:
    session: boto3.Session
    emulator: InstanceRefreshEmulator
    current_ami: str
    new_ami: str
    template_id: str
    targets: list[dict]

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "INFRA_ACCOUNT_ID": fx.INFRA_ACCOUNT,
            "IMAGE_PREFIX": fx.PREFIX,
            "TARGETS_JSON": json.dumps(self.targets),
            "REFRESH_PREFERENCES_JSON": json.dumps(PREFERENCES),
            **overrides,
        }

    def run(self, event: dict, **env: str) -> list[dict]:
        self.mark = len(self.emulator.calls)
        return app.handle(event, self.env(**env), self.session)["results"]

    def release(self, group_name: str, ami_id: str) -> list[dict]:
        """As the release function (handlers/release) runs it: the refresh function refuses it."""
        self.mark = len(self.emulator.calls)
        event = {"action": "release", "autoScalingGroupName": group_name, "amiId": ami_id}
        return app.handle(event, self.env(), self.session, release=True)["results"]

    def rollout(self, ami_id: str) -> dict:
        return {
            "schemaVersion": 1,
            "imageArn": IMAGE_ARN,
            "imageName": "golden-ecs-al2023",
            "imageVersion": "1.0.0/3",
            "amis": {fx.REGION: ami_id, "us-east-1": "ami-0123456789abcdef0"},
            "correlationId": "sns-message-id",
        }

    def ran(self, operation: str) -> list:
        """Calls of `operation` made by the last handler run."""
        return [c for c in self.emulator.calls[self.mark :] if c.operation == operation]

    def writes(self) -> list[str]:
        return [c.operation for c in self.emulator.calls[self.mark :] if c.operation in WRITES]

    def add_group(self, name: str, template_id: str, version: str = "1", **kwargs) -> dict:
        group = fx.auto_scaling_group(self.session, name, template_id, version, **kwargs)
        fx.ecs_cluster(self.session, f"cluster-{name}", group["AutoScalingGroupARN"])
        fx.alarm(self.session, f"{name}-ecs-errors")
        self.targets.append(
            {
                "autoScalingGroupName": name,
                "launchTemplateId": template_id,
                "clusterName": f"cluster-{name}",
                "rollbackAlarmNames": [f"{name}-ecs-errors"],
            }
        )
        return group


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    with mock_aws(), InstanceRefreshEmulator() as emulator:
        session = boto3.Session(region_name=fx.REGION)
        current, new = fx.register_image(1), fx.register_image(3)
        template_id = fx.launch_template(session, [current])
        world = World(session, emulator, current, new, template_id, [])
        world.add_group("ecs-a", template_id)
        yield world


STATIC_ENV = {
    "INFRA_ACCOUNT_ID": fx.INFRA_ACCOUNT,
    "IMAGE_PREFIX": fx.PREFIX,
    "TARGETS_JSON": json.dumps(
        [{"autoScalingGroupName": "ecs-a", "launchTemplateId": "lt-0a", "clusterName": "main"}]
    ),
    "REFRESH_PREFERENCES_JSON": json.dumps(PREFERENCES),
}


@pytest.fixture
def bare() -> Iterator[tuple[boto3.Session, InstanceRefreshEmulator]]:
    """No resources: for input that must fail before any AWS call."""
    with mock_aws(), InstanceRefreshEmulator() as emulator:
        yield boto3.Session(region_name=fx.REGION), emulator


def only(results: list[dict]) -> dict:
    assert len(results) == 1, results
    return results[0]


# --- happy path, rules 3, 4, 5 ----------------------------------------------------------------


def test_rollout_starts_a_refresh_with_the_new_version_only_in_desired_configuration(world):
    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "started", result
    assert result["launchTemplateVersion"] == 2 and result["amiId"] == world.new_ami
    [create] = world.ran("CreateLaunchTemplateVersion")
    create.params.pop("ClientToken")  # botocore's idempotency token
    assert create.params == {
        "LaunchTemplateId": world.template_id,
        "SourceVersion": "1",
        "VersionDescription": f"golden-ami {world.new_ami} from {IMAGE_ARN}",
        "LaunchTemplateData": {"ImageId": world.new_ami},
    }
    [start] = world.ran("StartInstanceRefresh")
    assert start.params == {
        "AutoScalingGroupName": "ecs-a",
        "Strategy": "Rolling",
        "DesiredConfiguration": {
            "LaunchTemplate": {"LaunchTemplateId": world.template_id, "Version": "2"}
        },
        "Preferences": {
            **PREFERENCES,
            "AutoRollback": True,
            "SkipMatching": True,
            "ScaleInProtectedInstances": "Refresh",
            "AlarmSpecification": {"Alarms": ["ecs-a-ecs-errors"]},
        },
    }
    assert world.ran("UpdateAutoScalingGroup") == []
    assert fx.group_template_spec(world.session, "ecs-a")["Version"] == "1"
    assert "warnings" not in result  # managed draining is enabled

    world.emulator.run_until_settled()
    assert fx.group_template_spec(world.session, "ecs-a")["Version"] == "2"
    assert fx.instance_images(world.session, "ecs-a") == [world.new_ami] * 4


def test_new_version_is_the_current_one_with_only_the_image_changed(world):
    world.run(world.rollout(world.new_ami))
    versions = world.session.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=world.template_id
    )["LaunchTemplateVersions"]
    data = {v["VersionNumber"]: v["LaunchTemplateData"] for v in versions}
    assert data[2] == {**data[1], "ImageId": world.new_ami}


def test_race_with_another_refresh_defers_and_the_rerun_reuses_the_version(world):
    world.emulator.inject_error("StartInstanceRefresh", "InstanceRefreshInProgress", "raced")
    assert only(world.run(world.rollout(world.new_ami)))["outcome"] == "deferred"

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "started" and result["launchTemplateVersion"] == 2
    assert world.writes() == ["StartInstanceRefresh"]  # no second CreateLaunchTemplateVersion


def test_mixed_instances_group_keeps_its_policy_in_desired_configuration(world):
    group = world.add_group("ecs-mixed", world.template_id, mixed=True)
    world.targets = world.targets[1:]

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "started"
    [start] = world.ran("StartInstanceRefresh")
    policy = start.params["DesiredConfiguration"]["MixedInstancesPolicy"]
    assert policy["LaunchTemplate"]["LaunchTemplateSpecification"] == {
        "LaunchTemplateId": world.template_id,
        "Version": "2",
    }
    original = group["MixedInstancesPolicy"]
    assert policy["LaunchTemplate"]["Overrides"] == original["LaunchTemplate"]["Overrides"]
    assert policy["InstancesDistribution"] == original["InstancesDistribution"]
    world.emulator.run_until_settled()
    assert fx.group_template_spec(world.session, "ecs-mixed")["Version"] == "2"


def test_missing_managed_draining_is_a_warning_not_a_failure(world):
    world.add_group("ecs-b", world.template_id)
    world.session.client("ecs").update_capacity_provider(
        name="cluster-ecs-b-provider",
        autoScalingGroupProvider={"managedDraining": "DISABLED"},
    )
    world.targets[1]["clusterName"] = "no-such-cluster"

    results = world.run(world.rollout(world.new_ami))

    assert [r["outcome"] for r in results] == ["started", "started"]
    assert "no capacity provider of cluster no-such-cluster" in results[1]["warnings"][0]


# --- rule 1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ({"owner": fx.OTHER_ACCOUNT}, "not the infra account"),
        ({"name": "community-ecs-al2023-2025"}, "lacks the image prefix"),
        ({"state": "pending"}, "not available"),
    ],
)
def test_untrusted_rollout_images_are_rejected_without_writes(world, image, reason):
    ami_id = fx.register_image(5, **image)
    result = only(world.run(world.rollout(ami_id)))
    assert result["outcome"] == "rejected" and reason in result["reason"]
    assert world.writes() == []


def test_deregistered_rollout_image_is_rejected(world):
    fx.deregister_image(world.new_ami)
    result = only(world.run(world.rollout(world.new_ami)))
    assert result["outcome"] == "rejected" and "does not exist" in result["reason"]
    assert world.writes() == []


def test_rollout_without_an_ami_for_this_region_is_rejected(world):
    event = world.rollout(world.new_ami)
    event["amis"] = {"us-east-1": world.new_ami}
    result = only(world.run(event))
    assert result["outcome"] == "rejected" and fx.REGION in result["reason"]


def test_an_older_image_is_not_applied(world):
    older = fx.register_image(1)
    newer_template = fx.launch_template(world.session, [world.new_ami])
    world.add_group("ecs-new", newer_template)
    world.targets = world.targets[1:]

    result = only(world.run(world.rollout(older)))

    assert result["outcome"] == "rejected" and "older than" in result["reason"]
    assert world.writes() == []


def test_a_deregistered_current_image_does_not_block_the_rollout(world):
    fx.deregister_image(world.current_ami)
    assert only(world.run(world.rollout(world.new_ami)))["outcome"] == "started"


def test_converge_picks_the_newest_infra_image_and_ignores_other_owners(world):
    fx.register_image(9, owner=fx.OTHER_ACCOUNT)  # same prefix, newer, foreign
    fx.register_image(2)

    result = only(world.run({}))

    assert result["outcome"] == "started" and result["amiId"] == world.new_ami
    [create] = world.ran("CreateLaunchTemplateVersion")
    assert create.params["VersionDescription"] == f"golden-ami {world.new_ami} from converge"


# --- rule 2 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "default", "expected"), [("$Latest", 1, "3"), ("$Default", 2, "2")]
)
def test_latest_and_default_are_pinned_to_their_number_before_anything_else(
    world, version, default, expected
):
    template_id = fx.launch_template(
        world.session, [world.current_ami, world.current_ami, world.current_ami], default
    )
    world.add_group("ecs-floating", template_id, version)
    world.targets = world.targets[1:]

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "started" and result["pinnedVersion"] == int(expected)
    assert world.writes() == [
        "UpdateAutoScalingGroup",
        "CreateLaunchTemplateVersion",
        "StartInstanceRefresh",
    ]
    [pin] = world.ran("UpdateAutoScalingGroup")
    assert pin.params == {
        "AutoScalingGroupName": "ecs-floating",
        "LaunchTemplate": {"LaunchTemplateId": template_id, "Version": expected},
    }
    [create] = world.ran("CreateLaunchTemplateVersion")
    assert create.params["SourceVersion"] == expected


def test_ssm_alias_template_is_rejected_with_an_explanation(world):
    template_id = fx.launch_template(
        world.session, ["resolve:ssm:/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended"]
    )
    world.targets[0]["launchTemplateId"] = template_id
    world.session.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="ecs-a",
        LaunchTemplate={"LaunchTemplateId": template_id, "Version": "1"},
    )

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "rejected" and "SSM alias" in result["reason"]
    assert world.writes() == []


def test_group_on_another_launch_template_than_configured_is_rejected(world):
    world.targets[0]["launchTemplateId"] = "lt-0123456789abcdef0"
    result = only(world.run(world.rollout(world.new_ami)))
    assert result["outcome"] == "rejected" and "lt-0123456789abcdef0" in result["reason"]


# --- rule 6 -----------------------------------------------------------------------------------


def test_an_active_refresh_defers_without_writes(world):
    world.session.client("autoscaling").start_instance_refresh(AutoScalingGroupName="ecs-a")
    result = only(world.run(world.rollout(world.new_ami)))
    assert result["outcome"] == "deferred" and "Pending" in result["reason"]
    assert world.writes() == []


# --- rule 7 -----------------------------------------------------------------------------------


def roll_back(world: World) -> dict:
    """Roll the new AMI out on ecs-a and let its alarm roll it back; returns the catch-up event."""
    assert only(world.run(world.rollout(world.new_ami)))["outcome"] == "started"
    world.emulator.advance(30)
    fx.set_alarm_state(world.session, "ecs-a-ecs-errors", "ALARM")
    world.emulator.run_until_settled()
    fx.set_alarm_state(world.session, "ecs-a-ecs-errors", "OK")
    return world.emulator.events[-1]


def test_a_rolled_back_ami_is_quarantined_durably_and_not_reapplied(world):
    event = roll_back(world)
    assert event["detail-type"] == "EC2 Auto Scaling Instance Refresh Rollback Succeeded"
    assert fx.instance_images(world.session, "ecs-a") == [world.current_ami] * 4

    result = only(world.run(event))

    assert result["outcome"] == "quarantined" and result["amiId"] == world.new_ami
    assert fx.group_tags(world.session, "ecs-a")["golden-ami:quarantined"] == world.new_ami
    assert world.writes() == ["CreateOrUpdateTags"]
    assert only(world.run(world.rollout(world.new_ami)))["outcome"] == "quarantined"
    assert world.writes() == []  # already recorded: nothing to write


def test_release_takes_the_ami_out_of_quarantine_and_converges(world):
    roll_back(world)
    world.run({})  # records the quarantine

    result = only(world.release("ecs-a", world.new_ami))

    assert result["released"] == world.new_ami and result["outcome"] == "started"
    assert fx.group_tags(world.session, "ecs-a")["golden-ami:quarantined"] == ""
    assert world.writes() == ["CreateOrUpdateTags", "StartInstanceRefresh"]  # version reused


def test_release_survives_the_next_run_reading_the_same_rollback_history(world):
    roll_back(world)
    world.release("ecs-a", world.new_ami)
    world.emulator.run_until_settled()
    assert only(world.run({}))["outcome"] == "current"
    assert fx.group_tags(world.session, "ecs-a")[rules.QUARANTINE_TAG] == ""


# --- rule 9: never start into a failing cluster -------------------------------------------------


def test_a_rollback_alarm_already_in_alarm_defers_without_writes_and_quarantines_nothing(world):
    fx.set_alarm_state(world.session, "ecs-a-ecs-errors", "ALARM")

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "deferred", result
    assert "ecs-a-ecs-errors is already in ALARM" in result["reason"]
    assert world.writes() == []
    fx.set_alarm_state(world.session, "ecs-a-ecs-errors", "OK")  # the cluster recovered
    assert only(world.run({}))["outcome"] == "started"
    assert rules.QUARANTINE_TAG not in fx.group_tags(world.session, "ecs-a")


def test_the_alarm_pre_flight_is_not_skipped_when_it_is_denied(world):
    world.emulator.inject_error("DescribeAlarms", "AccessDenied", "not allowed")
    result = only(world.run(world.rollout(world.new_ami)))
    assert result["outcome"] == "failed" and "AccessDenied" in result["reason"]
    assert world.writes() == []


# --- rule 10: an operator's cancel holds the AMI ------------------------------------------------


def cancel(world: World) -> dict:
    """Roll the new AMI out on ecs-a and let an operator cancel it; returns the Cancelled event."""
    assert only(world.run(world.rollout(world.new_ami)))["outcome"] == "started"
    world.emulator.advance(30)
    world.session.client("autoscaling").cancel_instance_refresh(AutoScalingGroupName="ecs-a")
    world.emulator.run_until_settled()
    return world.emulator.events[-1]


def test_an_operator_cancel_holds_the_ami_on_the_group_until_release(world):
    event = cancel(world)
    assert event["detail-type"] == "EC2 Auto Scaling Instance Refresh Cancelled"

    # The catch-up rule's run, then the schedule's and a redelivered rollout: none restarts it.
    for trigger in (event, {"action": "converge"}, world.rollout(world.new_ami)):
        result = only(world.run(trigger))
        assert result["outcome"] == "held", result
        assert "cancelled" in result["reason"] and result["amiId"] == world.new_ami
    assert len(world.emulator.calls_to("StartInstanceRefresh")) == 1
    tags = fx.group_tags(world.session, "ecs-a")
    assert tags[rules.HELD_TAG] == world.new_ami and tags[rules.QUARANTINE_TAG] == ""

    result = only(world.release("ecs-a", world.new_ami))

    assert result["released"] == world.new_ami and result["outcome"] == "started"
    assert fx.group_tags(world.session, "ecs-a")[rules.HELD_TAG] == ""
    world.emulator.run_until_settled()
    assert only(world.run({}))["outcome"] == "current"  # the release is not undone


def test_a_hold_is_per_ami_a_newer_image_rolls_out(world):
    cancel(world)
    newer = fx.register_image(5)
    assert only(world.run(world.rollout(newer)))["outcome"] == "started"


# --- rule 9: only refreshes this tool started quarantine or hold ---------------------------------


def operator_refresh(world: World, desired: dict, *, version_description: str = "by hand") -> None:
    """An operator's own refresh to a hand-made version 2 (the new AMI), rolled back."""
    world.session.client("ec2").create_launch_template_version(
        LaunchTemplateId=world.template_id,
        SourceVersion="1",
        VersionDescription=version_description,
        LaunchTemplateData={"ImageId": world.new_ami},
    )
    world.session.client("autoscaling").start_instance_refresh(
        AutoScalingGroupName="ecs-a",
        DesiredConfiguration=desired,
        Preferences={
            "AutoRollback": True,
            "AlarmSpecification": {"Alarms": ["ecs-a-ecs-errors"]},
            "MinHealthyPercentage": 50,
        },
    )
    world.emulator.advance(30)
    fx.set_alarm_state(world.session, "ecs-a-ecs-errors", "ALARM")
    world.emulator.run_until_settled()
    fx.set_alarm_state(world.session, "ecs-a-ecs-errors", "OK")
    [refresh] = world.emulator.refreshes(fx.WORKLOAD_ACCOUNT, fx.REGION, "ecs-a")
    assert refresh["Status"] == "RollbackSuccessful"


def test_rollback_of_a_refresh_this_tool_did_not_start_quarantines_nothing(world):
    spec = {"LaunchTemplateId": world.template_id, "Version": "2"}
    operator_refresh(world, {"LaunchTemplate": spec})

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "started", result
    assert fx.group_tags(world.session, "ecs-a")[rules.QUARANTINE_TAG] == ""
    # The hand-made version carries the same data but is not reused: a rollback of the refresh
    # to it would not be recognisable as this tool's.
    assert result["launchTemplateVersion"] == 3


def test_history_naming_the_template_by_name_neither_crashes_nor_fails_other_groups(world):
    world.add_group("ecs-b", world.template_id)
    name = world.session.client("ec2").describe_launch_templates(
        LaunchTemplateIds=[world.template_id]
    )["LaunchTemplates"][0]["LaunchTemplateName"]
    ours = rules.version_description(world.new_ami, IMAGE_ARN)
    operator_refresh(
        world,
        {"LaunchTemplate": {"LaunchTemplateName": name, "Version": "2"}},
        version_description=ours,  # looks like ours: the template is found by name
    )

    results = world.run(world.rollout(world.new_ami))

    assert [(r["autoScalingGroupName"], r["outcome"]) for r in results] == [
        ("ecs-a", "quarantined"),
        ("ecs-b", "started"),
    ]


def test_a_deleted_launch_template_version_in_the_history_does_not_fail_the_group(world):
    roll_back(world)  # this tool's refresh to version 2, rolled back
    ec2 = world.session.client("ec2")
    ec2.create_launch_template_version(  # an operator's later version, then the cleanup
        LaunchTemplateId=world.template_id, SourceVersion="1", LaunchTemplateData={}
    )
    deleted = ec2.delete_launch_template_versions(
        LaunchTemplateId=world.template_id, Versions=["2"]
    )
    assert deleted["UnsuccessfullyDeletedLaunchTemplateVersions"] == []

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "started", result
    assert "version 2, which no longer exists" in result["warnings"][0]
    assert result["launchTemplateVersion"] == 4


# --- rule 8 and isolation ---------------------------------------------------------------------


def test_already_on_the_target_is_current_with_zero_writes(world):
    result = only(world.run(world.rollout(world.current_ami)))
    assert result["outcome"] == "current"
    assert world.writes() == []


def test_one_failing_group_does_not_stop_the_others(world):
    world.add_group("ecs-b", world.template_id)
    world.targets.insert(0, {**world.targets[0], "autoScalingGroupName": "missing"})
    world.emulator.inject_error("DescribeInstanceRefreshes", "AccessDenied", "not allowed")

    results = world.run(world.rollout(world.new_ami))

    outcomes = {r["autoScalingGroupName"]: (r["outcome"], r["reason"]) for r in results}
    assert outcomes["missing"] == ("failed", "Auto Scaling group missing does not exist")
    assert outcomes["ecs-a"][0] == "failed" and "AccessDenied" in outcomes["ecs-a"][1]
    assert outcomes["ecs-b"][0] == "started"


def test_an_unexpected_exception_fails_only_its_group_and_is_logged_with_its_traceback(
    world, caplog
):
    """DESIGN §5.8: a crash in one group (here an API answer of an unexpected shape) must not
    skip the account's other groups; the run returns, as it does for AWS errors."""
    world.add_group("ecs-b", world.template_id)
    answers = []

    def version_without_data(params, **_):
        if answers:  # only the first read, ecs-a's
            return None
        answers.append(params)
        return botocore_response(200), {
            "LaunchTemplateVersions": [{"LaunchTemplateId": world.template_id, "VersionNumber": 1}]
        }

    world.session.events.register_first(
        "before-call.ec2.DescribeLaunchTemplateVersions", version_without_data
    )
    reported = _put_events(world.session)

    results = world.run(world.rollout(world.new_ami))

    a, b = results
    assert (a["autoScalingGroupName"], a["outcome"]) == ("ecs-a", "failed"), a
    assert a["reason"] == "unexpected error: KeyError: 'LaunchTemplateData'"
    assert (b["autoScalingGroupName"], b["outcome"]) == ("ecs-b", "started"), b
    [record] = [r for r in caplog.records if r.getMessage() == "group handling crashed"]
    crash = json.loads(JsonFormatter().format(record))  # the line Lambda ships to CloudWatch
    assert crash["level"] == "ERROR" and crash["autoScalingGroupName"] == "ecs-a"
    assert crash["exception"].startswith("Traceback (most recent call last)")
    assert "KeyError: 'LaunchTemplateData'" in crash["exception"]
    assert published(world)["GroupsFailed"] == 1
    assert published(world)["GroupsStarted"] == 1
    details = [json.loads(entry["Detail"]) for entry in reported[0]["Entries"]]
    assert [(d["autoScalingGroupName"], d["outcome"]) for d in details] == [
        ("ecs-a", "failed"),
        ("ecs-b", "started"),
    ]  # the rollout status sees the crash too (DESIGN §10)


# --- outcome metrics: failed and rejected must be visible in the account ------------------------


def published(world: World) -> dict[str, float]:
    """Sum of each GoldenAmi/Refresh metric in moto's CloudWatch."""
    cloudwatch = world.session.client("cloudwatch")
    now = datetime.now(UTC)
    sums = {}
    for metric in cloudwatch.list_metrics(Namespace=app.METRIC_NAMESPACE)["Metrics"]:
        [point] = cloudwatch.get_metric_statistics(
            Namespace=app.METRIC_NAMESPACE,
            MetricName=metric["MetricName"],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(hours=1),
            Period=7200,
            Statistics=["Sum"],
        )["Datapoints"]
        sums[metric["MetricName"]] = point["Sum"]
    return sums


def test_every_run_publishes_the_count_of_each_outcome(world):
    world.targets.append({**world.targets[0], "autoScalingGroupName": "missing"})
    older = fx.register_image(1)
    world.add_group("ecs-newer", fx.launch_template(world.session, [world.new_ami]))

    outcomes = [r["outcome"] for r in world.run(world.rollout(world.new_ami))]
    outcomes += [r["outcome"] for r in world.run(world.rollout(older))]

    assert outcomes == ["started", "failed", "current", "deferred", "failed", "rejected"]
    assert published(world) == {
        "GroupsStarted": 1,
        "GroupsCurrent": 1,
        "GroupsDeferred": 1,
        "GroupsHeld": 0,
        "GroupsQuarantined": 0,
        "GroupsRejected": 1,
        "GroupsFailed": 2,
    }
    [first, _] = world.emulator.calls_to("PutMetricData")
    assert first.params["Namespace"] == "GoldenAmi/Refresh"


def test_a_metrics_outage_does_not_fail_the_run(world, caplog):
    world.emulator.inject_error("PutMetricData", "AccessDenied", "not allowed")
    assert only(world.run(world.rollout(world.new_ami)))["outcome"] == "started"
    assert published(world) == {}
    assert "could not publish refresh metrics" in caplog.text


# --- events -----------------------------------------------------------------------------------


def test_catch_up_event_converges_only_the_named_group(world):
    world.add_group("ecs-b", world.template_id)
    event = json.loads((FIXTURES / "autoscaling_instance_refresh_started.json").read_text())
    event["detail-type"] = "EC2 Auto Scaling Instance Refresh Succeeded"
    event["detail"]["AutoScalingGroupName"] = "ecs-b"

    results = world.run(event)

    assert [(r["autoScalingGroupName"], r["outcome"]) for r in results] == [("ecs-b", "started")]


def test_catch_up_event_for_an_unknown_group_is_ignored(world):
    event = {
        "source": "aws.autoscaling",
        "detail-type": "EC2 Auto Scaling Instance Refresh Failed",
        "detail": {"AutoScalingGroupName": "someone-elses"},
    }
    response = app.handle(event, world.env(), world.session)
    assert response["results"] == [] and "someone-elses" in response["ignored"]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "must be a JSON object"),
        ({"action": "explode"}, "neither a rollout payload"),
        ({"schemaVersion": 2, "imageArn": IMAGE_ARN, "amis": {}}, "schemaVersion"),
        # JSON true == 1 in Python: a boolean is no schema version.
        (
            {"schemaVersion": True, "imageArn": IMAGE_ARN, "amis": {"eu-west-1": "ami-0abcdef12"}},
            r"schemaVersion must be the number 1, got True \(bool\)",
        ),
        (
            {"schemaVersion": 1.0, "imageArn": IMAGE_ARN, "amis": {"eu-west-1": "img"}},
            "AMI id",  # 1.0 is the JSON number 1
        ),
        ({"schemaVersion": 1, "imageArn": "nope", "amis": {"eu-west-1": "ami-1"}}, "imageArn"),
        ({"schemaVersion": 1, "imageArn": IMAGE_ARN, "amis": {}}, "non-empty object"),
        ({"schemaVersion": 1, "imageArn": IMAGE_ARN, "amis": {"eu-west-1": "img"}}, "AMI id"),
        ({"action": "release", "autoScalingGroupName": "ecs-a"}, "amiId"),
        (
            {"action": "release", "autoScalingGroupName": "ecs-a", "amiId": "ami-0abcdef12"},
            "release is not accepted by the refresh function",
        ),
        (
            {
                "source": "aws.autoscaling",
                "detail-type": "EC2 Auto Scaling Instance Refresh Started",
            },
            "not a finished",
        ),
        (
            {
                "source": "aws.autoscaling",
                "detail-type": "EC2 Auto Scaling Instance Refresh Failed",
            },
            "AutoScalingGroupName",
        ),
    ],
)
def test_malformed_events_fail_clearly_before_any_aws_call(bare, event, message):
    session, emulator = bare
    with pytest.raises(InvalidInputError, match=message):
        app.handle(event, STATIC_ENV, session)
    assert emulator.calls == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"INFRA_ACCOUNT_ID": "12345"}, "INFRA_ACCOUNT_ID"),
        ({"IMAGE_PREFIX": " "}, "IMAGE_PREFIX"),
        ({"TARGETS_JSON": "{"}, "TARGETS_JSON is not valid JSON"),
        ({"TARGETS_JSON": "[]"}, "non-empty JSON array"),
        (
            {"TARGETS_JSON": '[{"autoScalingGroupName": "g"}]'},
            r"TARGETS_JSON\[0\].launchTemplateId",
        ),
        ({"REFRESH_PREFERENCES_JSON": "[]"}, "REFRESH_PREFERENCES_JSON"),
        (
            {"REFRESH_PREFERENCES_JSON": '{"BakeTime": true}'},
            r"REFRESH_PREFERENCES_JSON.BakeTime must be an integer, got True",
        ),
        (
            {"REFRESH_PREFERENCES_JSON": '{"CheckpointPercentages": [50, false]}'},
            "CheckpointPercentages must be an array of integers",
        ),
    ],
)
def test_bad_environment_is_named(bare, override, message):
    session, emulator = bare
    with pytest.raises(InvalidInputError, match=message):
        app.handle({}, {**STATIC_ENV, **override}, session)
    assert emulator.calls == []


# --- rule 10: MixedInstancesPolicy overrides with their own template or image --------------------


@pytest.mark.parametrize("carries", ["LaunchTemplateSpecification", "ImageId"])
def test_mixed_overrides_with_their_own_template_or_image_are_rejected(world, carries):
    own = fx.launch_template(world.session, [world.current_ami])  # e.g. an arm64 build
    override = {"InstanceType": "m7g.large"}
    if carries == "ImageId":
        override["ImageId"] = world.current_ami
    else:
        override["LaunchTemplateSpecification"] = {"LaunchTemplateId": own, "Version": "1"}
    world.add_group("ecs-mixed", world.template_id, mixed=True, extra_overrides=[override])
    world.targets = world.targets[1:]

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "rejected", result
    assert "overrides for m7g.large carry their own launch template or ImageId" in result["reason"]
    assert world.writes() == []


# --- the report to the rollout status (DESIGN §10) --------------------------------------------


def _put_events(session: boto3.Session) -> list[dict]:
    """PutEvents requests the handler makes through `session`, as sent."""
    requests: list[dict] = []
    session.events.register(
        "before-parameter-build.events.PutEvents", lambda params, **_: requests.append(params)
    )
    return requests


def test_every_group_result_is_put_on_the_default_bus_with_its_images(world):
    requests = _put_events(world.session)
    world.add_group("ecs-b", world.template_id)
    results = world.run(world.rollout(world.new_ami))
    [request] = requests
    assert "EventBusName" not in request  # the default bus: the only one granted
    details = [json.loads(entry["Detail"]) for entry in request["Entries"]]
    assert {entry["Source"] for entry in request["Entries"]} == {"golden-ami.refresh"}
    assert {entry["DetailType"] for entry in request["Entries"]} == {"Golden AMI Refresh Result"}
    assert [
        (d["autoScalingGroupName"], d["outcome"], d["amiBefore"], d["amiAfter"]) for d in details
    ] == [(r["autoScalingGroupName"], "started", world.current_ami, world.new_ami) for r in results]
    assert {d["imageArn"] for d in details} == {IMAGE_ARN}
    assert [d["instanceRefreshId"] for d in details] == [r["instanceRefreshId"] for r in results]
    assert all(
        set(d)
        <= {
            "schemaVersion",
            "autoScalingGroupName",
            "outcome",
            "reason",
            "imageArn",
            "amiBefore",
            "amiAfter",
            "instanceRefreshId",
        }
        for d in details
    )  # fmt: skip - no account: EventBridge sets it from the sender


def test_a_convergence_reports_without_an_image_arn(world):
    requests = _put_events(world.session)
    world.run({"action": "converge"})
    [detail] = [json.loads(entry["Detail"]) for entry in requests[0]["Entries"]]
    assert "imageArn" not in detail
    assert detail["amiAfter"] == world.new_ami  # the recorder finds the rollout from it


def test_a_failed_report_is_logged_and_never_fails_the_groups(world, monkeypatch):
    def refuse(self, entries):
        raise app.ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutEvents"
        )

    monkeypatch.setattr(app.RefreshAws, "put_events", refuse)
    result = only(world.run(world.rollout(world.new_ami)))
    assert result["outcome"] == "started"


def test_entries_refused_by_eventbridge_are_reported_as_errors(world):
    world.session.events.register(
        "before-call.events.PutEvents",
        lambda **_: (
            botocore_response(200),
            {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure",
                                                 "ErrorMessage": "try again"}]},
        ),
    )  # fmt: skip
    aws = app.RefreshAws(world.session)
    assert aws.put_events(
        [{"Source": "golden-ami.refresh", "DetailType": "x", "Detail": "{}"}]
    ) == ["InternalFailure: try again"]


def botocore_response(status: int):
    from botocore.awsrequest import AWSResponse

    return AWSResponse("https://events.amazonaws.com/", status, {}, None)


# --- rule 10: a launch template shared with a group that follows $Latest ------------------------


def test_another_target_following_latest_on_the_template_is_pinned_before_the_new_version(world):
    world.add_group("ecs-b", world.template_id, "$Latest")

    results = world.run(world.rollout(world.new_ami))

    a, b = results
    assert a["outcome"] == "started" and a["pinnedGroups"] == {"ecs-b": 1}, a
    # Without the pin, version 2 (the new AMI) is what ecs-b's $Latest resolves to and it would
    # be reported current while all its instances run the old AMI.
    assert b["outcome"] == "started" and b["launchTemplateVersion"] == 2, b
    [pin] = world.ran("UpdateAutoScalingGroup")
    assert pin.params == {
        "AutoScalingGroupName": "ecs-b",
        "LaunchTemplate": {"LaunchTemplateId": world.template_id, "Version": "1"},
    }
    assert world.writes().index("UpdateAutoScalingGroup") < world.writes().index(
        "CreateLaunchTemplateVersion"
    )
    world.emulator.run_until_settled()
    assert fx.instance_images(world.session, "ecs-b") == [world.new_ami] * 4


def test_a_group_of_someone_else_following_latest_on_the_template_is_refused(world):
    fx.auto_scaling_group(world.session, "batch-jobs", world.template_id, "$Latest")

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "rejected", result
    assert f"launch template {world.template_id} is shared with batch-jobs" in result["reason"]
    assert world.writes() == []


def test_a_group_following_default_is_not_moved_by_a_new_version_and_not_refused(world):
    fx.auto_scaling_group(world.session, "batch-jobs", world.template_id, "$Default")
    assert only(world.run(world.rollout(world.new_ami)))["outcome"] == "started"


def test_a_version_naming_the_image_while_the_instances_run_the_old_one_is_not_current(world):
    world.session.client("ec2").create_launch_template_version(
        LaunchTemplateId=world.template_id,
        SourceVersion="1",
        VersionDescription="switched by hand",
        LaunchTemplateData={"ImageId": world.new_ami},
    )
    world.session.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName="ecs-a",
        LaunchTemplate={"LaunchTemplateId": world.template_id, "Version": "2"},
    )

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "started", result
    world.emulator.run_until_settled()
    assert fx.instance_images(world.session, "ecs-a") == [world.new_ami] * 4
    assert only(world.run(world.rollout(world.new_ami)))["outcome"] == "current"


def test_the_shared_template_check_reads_every_page_of_groups(world):
    other_template = fx.launch_template(world.session, [world.current_ami])
    for n in range(120):  # DescribeAutoScalingGroups answers 100 per page at most
        fx.auto_scaling_group(world.session, f"other-{n:03d}", other_template, "1", capacity=0)
    fx.auto_scaling_group(world.session, "zz-follower", world.template_id, "$Latest", capacity=0)

    result = only(world.run(world.rollout(world.new_ami)))

    assert result["outcome"] == "rejected" and "zz-follower" in result["reason"], result
    assert len(world.ran("DescribeAutoScalingGroups")) == 3  # the group, then two pages
