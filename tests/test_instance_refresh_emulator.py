"""The instance-refresh emulation against the documented behaviour and the botocore model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto import mock_aws

from sandbox.instance_refresh import InstanceRefreshEmulator
from tests import refresh_fixtures as fx


@dataclass
class Setup:
    session: boto3.Session
    emulator: InstanceRefreshEmulator
    old_ami: str
    new_ami: str
    template_id: str

    @property
    def autoscaling(self):
        return self.session.client("autoscaling")

    def start(self, version: str = "2", **preferences) -> str:
        return self.autoscaling.start_instance_refresh(
            AutoScalingGroupName="g",
            DesiredConfiguration={
                "LaunchTemplate": {"LaunchTemplateId": self.template_id, "Version": version}
            },
            Preferences={"AutoRollback": True, "InstanceWarmup": 60, **preferences},
        )["InstanceRefreshId"]

    def refresh(self) -> dict:
        return self.autoscaling.describe_instance_refreshes(AutoScalingGroupName="g")[
            "InstanceRefreshes"
        ][0]

    def detail_types(self) -> list[str]:
        return [
            e["detail-type"].removeprefix("EC2 Auto Scaling Instance Refresh ")
            for e in self.emulator.events
        ]


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    with mock_aws(), InstanceRefreshEmulator() as emulator:
        session = boto3.Session(region_name=fx.REGION)
        old, new = fx.register_image(1), fx.register_image(2)
        template_id = fx.launch_template(session, [old, new])
        fx.auto_scaling_group(session, "g", template_id, "1", capacity=4)
        fx.alarm(session, "errors")
        yield Setup(session, emulator, old, new, template_id)


def test_refresh_replaces_in_batches_keeping_min_healthy_then_bakes_and_saves_the_config(setup):
    setup.start(MinHealthyPercentage=50, MaxHealthyPercentage=100, BakeTime=300)
    assert setup.refresh()["Status"] == "Pending"

    setup.emulator.step()  # starts, replaces the first batch: 50 % of 4 may be out of service
    assert sorted(fx.instance_images(setup.session, "g")) == sorted(
        [setup.old_ami] * 2 + [setup.new_ami] * 2
    )
    assert setup.refresh()["Status"] == "InProgress"
    setup.emulator.advance(60)  # warm-up of the first batch
    setup.emulator.advance(60)  # second batch
    assert setup.refresh()["Status"] == "Baking"
    assert fx.group_template_spec(setup.session, "g")["Version"] == "1"  # not saved before success
    setup.emulator.advance(300)

    refresh = setup.refresh()
    assert refresh["Status"] == "Successful" and refresh["PercentageComplete"] == 100
    assert fx.instance_images(setup.session, "g") == [setup.new_ami] * 4
    assert fx.group_template_spec(setup.session, "g")["Version"] == "2"
    assert setup.detail_types() == ["Started", "Succeeded"]
    event = setup.emulator.events[-1]
    assert event["source"] == "aws.autoscaling" and event["account"] == fx.WORKLOAD_ACCOUNT
    assert event["detail"] == {
        "InstanceRefreshId": refresh["InstanceRefreshId"],
        "AutoScalingGroupName": "g",
    }


def test_checkpoints_pause_for_their_delay(setup):
    setup.start(MinHealthyPercentage=75, CheckpointPercentages=[25, 100], CheckpointDelay=1000)
    setup.emulator.advance(60)  # first instance replaced and warmed: 25 %
    assert setup.detail_types()[-1] == "Checkpoint Reached"
    setup.emulator.advance(900)
    assert setup.refresh()["PercentageComplete"] == 25
    setup.emulator.run_until_settled()
    assert setup.refresh()["Status"] == "Successful"


def test_skip_matching_leaves_instances_already_on_the_desired_image(setup):
    setup.autoscaling.update_auto_scaling_group(
        AutoScalingGroupName="g",
        LaunchTemplate={"LaunchTemplateId": setup.template_id, "Version": "2"},
    )
    setup.autoscaling.set_desired_capacity(AutoScalingGroupName="g", DesiredCapacity=6)
    setup.start(SkipMatching=True)
    assert setup.refresh()["InstancesToUpdate"] == 4


def test_alarm_during_bake_rolls_back_to_the_saved_configuration(setup):
    setup.start(MinHealthyPercentage=50, BakeTime=600, AlarmSpecification={"Alarms": ["errors"]})
    setup.emulator.advance(200)
    assert setup.refresh()["Status"] == "Baking"
    fx.set_alarm_state(setup.session, "errors", "ALARM")
    setup.emulator.run_until_settled()

    refresh = setup.refresh()
    assert refresh["Status"] == "RollbackSuccessful"
    assert refresh["RollbackDetails"]["RollbackReason"] == "CloudWatch alarm errors is in ALARM"
    assert fx.instance_images(setup.session, "g") == [setup.old_ami] * 4
    assert fx.group_template_spec(setup.session, "g")["Version"] == "1"
    assert setup.detail_types() == ["Started", "Rollback Started", "Rollback Succeeded"]


def test_alarm_without_auto_rollback_fails_the_refresh(setup):
    setup.start(AutoRollback=False, AlarmSpecification={"Alarms": ["errors"]})
    fx.set_alarm_state(setup.session, "errors", "ALARM")
    setup.emulator.step()
    assert setup.refresh()["Status"] == "Failed" and setup.detail_types() == ["Failed"]


def test_an_alarm_after_the_refresh_ended_changes_nothing(setup):
    setup.start(AlarmSpecification={"Alarms": ["errors"]})
    setup.emulator.run_until_settled()
    fx.set_alarm_state(setup.session, "errors", "ALARM")
    setup.emulator.advance(3600)
    assert setup.refresh()["Status"] == "Successful"


def test_second_start_while_active_is_instance_refresh_in_progress(setup):
    setup.start()
    with pytest.raises(setup.autoscaling.exceptions.InstanceRefreshInProgressFault):
        setup.start()


def test_manual_rollback_only_while_in_progress(setup):
    setup.start()
    setup.emulator.step()
    assert setup.autoscaling.rollback_instance_refresh(AutoScalingGroupName="g")[
        "InstanceRefreshId"
    ]
    setup.emulator.run_until_settled()
    assert setup.refresh()["Status"] == "RollbackSuccessful"
    with pytest.raises(setup.autoscaling.exceptions.ActiveInstanceRefreshNotFoundFault):
        setup.autoscaling.rollback_instance_refresh(AutoScalingGroupName="g")


def test_rollback_without_desired_configuration_is_irreversible(setup):
    setup.autoscaling.start_instance_refresh(AutoScalingGroupName="g")
    with pytest.raises(setup.autoscaling.exceptions.IrreversibleInstanceRefreshFault):
        setup.autoscaling.rollback_instance_refresh(AutoScalingGroupName="g")


def test_cancel_ends_cancelled_and_needs_an_active_refresh(setup):
    with pytest.raises(setup.autoscaling.exceptions.ActiveInstanceRefreshNotFoundFault):
        setup.autoscaling.cancel_instance_refresh(AutoScalingGroupName="g")
    setup.start()
    setup.autoscaling.cancel_instance_refresh(AutoScalingGroupName="g")
    assert setup.refresh()["Status"] == "Cancelling"
    setup.emulator.step()
    assert setup.refresh()["Status"] == "Cancelled" and setup.detail_types() == ["Cancelled"]


def test_injected_failure_rolls_back_with_the_reason(setup):
    setup.start()
    setup.emulator.step()
    setup.emulator.fail(fx.WORKLOAD_ACCOUNT, fx.REGION, "g", "instances failed health checks")
    setup.emulator.run_until_settled()
    assert setup.refresh()["RollbackDetails"]["RollbackReason"] == "instances failed health checks"


@pytest.mark.parametrize(
    ("preferences", "message"),
    [
        ({"MinHealthyPercentage": 101}, "MinHealthyPercentage"),  # model range
        ({"ScaleInProtectedInstances": "Never"}, "ScaleInProtectedInstances"),  # model enum
        ({"MaxHealthyPercentage": 150}, "requires MinHealthyPercentage"),
        ({"MinHealthyPercentage": 0, "MaxHealthyPercentage": 200}, "cannot exceed 100"),
        ({"CheckpointDelay": 60}, "requires CheckpointPercentages"),
        ({"CheckpointPercentages": [50, 20]}, "ascending"),
    ],
)
def test_invalid_preferences_are_validation_errors(setup, preferences, message):
    with pytest.raises(setup.autoscaling.exceptions.ClientError, match=message) as raised:
        setup.start(**preferences)
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert (
        setup.autoscaling.describe_instance_refreshes(AutoScalingGroupName="g")["InstanceRefreshes"]
        == []
    )


@pytest.mark.parametrize("version", ["$Latest", "$Default"])
def test_auto_rollback_needs_numbered_versions(setup, version):
    with pytest.raises(setup.autoscaling.exceptions.ClientError, match="version"):
        setup.start(version)


def test_unknown_group_and_unknown_version_are_validation_errors(setup):
    with pytest.raises(setup.autoscaling.exceptions.ClientError, match="not found"):
        setup.autoscaling.start_instance_refresh(AutoScalingGroupName="nope")
    with pytest.raises(setup.autoscaling.exceptions.ClientError, match="launch template"):
        setup.start("9")


def test_describe_pages_newest_first(setup):
    for _ in range(3):
        setup.start()
        setup.emulator.run_until_settled()
    first = setup.autoscaling.describe_instance_refreshes(AutoScalingGroupName="g", MaxRecords=2)
    rest = setup.autoscaling.describe_instance_refreshes(
        AutoScalingGroupName="g", MaxRecords=2, NextToken=first["NextToken"]
    )
    starts = [r["EndTime"] for r in first["InstanceRefreshes"] + rest["InstanceRefreshes"]]
    assert len(starts) == 3 and starts == sorted(starts, reverse=True) and "NextToken" not in rest


def test_state_is_per_account_and_calls_are_recorded_with_the_callers_account(setup):
    organizations = setup.session.client("organizations")
    organizations.create_organization(FeatureSet="ALL")
    account = organizations.create_account(AccountName="w", Email="w@example.com")[
        "CreateAccountStatus"
    ]["AccountId"]
    credentials = setup.session.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole",
        RoleSessionName="test",
    )["Credentials"]
    other = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=fx.REGION,
    )
    setup.start()
    with pytest.raises(other.client("autoscaling").exceptions.ClientError, match="not found"):
        other.client("autoscaling").start_instance_refresh(AutoScalingGroupName="g")
    accounts = [c.account_id for c in setup.emulator.calls_to("StartInstanceRefresh")]
    assert accounts == [fx.WORKLOAD_ACCOUNT, account]
    assert (
        setup.emulator.calls_to("StartInstanceRefresh")[0].action
        == "autoscaling:StartInstanceRefresh"
    )


def test_update_auto_scaling_group_is_recorded_and_still_handled_by_moto(setup):
    setup.autoscaling.update_auto_scaling_group(AutoScalingGroupName="g", MaxSize=9)
    [call] = setup.emulator.calls_to("UpdateAutoScalingGroup")
    assert call.params == {"AutoScalingGroupName": "g", "MaxSize": 9}
    group = setup.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["g"])
    assert group["AutoScalingGroups"][0]["MaxSize"] == 9


def test_source_version_is_inherited_by_the_new_launch_template_version(setup):
    ec2 = setup.session.client("ec2")
    version = ec2.create_launch_template_version(
        LaunchTemplateId=setup.template_id,
        SourceVersion="1",
        LaunchTemplateData={"ImageId": setup.new_ami},
    )["LaunchTemplateVersion"]["VersionNumber"]
    data = {
        v["VersionNumber"]: v["LaunchTemplateData"]
        for v in ec2.describe_launch_template_versions(LaunchTemplateId=setup.template_id)[
            "LaunchTemplateVersions"
        ]
    }
    assert data[version] == {**data[1], "ImageId": setup.new_ami}


def test_hooks_are_removed_on_exit(monkeypatch):
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    with mock_aws():
        with InstanceRefreshEmulator():
            pass
        client = boto3.Session(region_name=fx.REGION).client("autoscaling")
        with pytest.raises(NotImplementedError):
            client.describe_instance_refreshes(AutoScalingGroupName="g")


# --- DeleteLaunchTemplateVersions (moto has none) -------------------------------------------------


def test_deleted_version_is_not_found_by_number_and_missing_from_listings(setup):
    ec2 = setup.session.client("ec2")
    ec2.create_launch_template_version(
        LaunchTemplateId=setup.template_id, SourceVersion="1", LaunchTemplateData={}
    )  # version 3: the latest cannot be deleted in the emulation

    answer = ec2.delete_launch_template_versions(
        LaunchTemplateId=setup.template_id, Versions=["2", "1", "9"]
    )

    assert [v["VersionNumber"] for v in answer["SuccessfullyDeletedLaunchTemplateVersions"]] == [2]
    failed = {
        v["VersionNumber"]: v["ResponseError"]["Code"]
        for v in answer["UnsuccessfullyDeletedLaunchTemplateVersions"]
    }
    assert failed == {1: "unexpectedError", 9: "launchTemplateVersionDoesNotExist"}  # 1: default
    with pytest.raises(ec2.exceptions.ClientError) as error:
        ec2.describe_launch_template_versions(LaunchTemplateId=setup.template_id, Versions=["2"])
    assert error.value.response["Error"]["Code"] == "InvalidLaunchTemplateId.VersionNotFound"
    listed = ec2.describe_launch_template_versions(LaunchTemplateId=setup.template_id)
    assert sorted(v["VersionNumber"] for v in listed["LaunchTemplateVersions"]) == [1, 3]
    with pytest.raises(setup.autoscaling.exceptions.ClientError, match="does not exist"):
        setup.start("2")


def test_mixed_override_with_its_own_template_keeps_launching_that_templates_image(setup):
    """Auto Scaling launches an override's instances from the override's own launch template,
    whatever the DesiredConfiguration says of the group's template."""
    arm_template = fx.launch_template(setup.session, [setup.old_ami])
    override = {
        "InstanceType": "m7g.large",
        "LaunchTemplateSpecification": {"LaunchTemplateId": arm_template, "Version": "1"},
    }
    group = fx.auto_scaling_group(
        setup.session, "mixed", setup.template_id, "1", mixed=True, extra_overrides=[override]
    )
    policy = group["MixedInstancesPolicy"]
    policy["LaunchTemplate"]["LaunchTemplateSpecification"] = {
        "LaunchTemplateId": setup.template_id,
        "Version": "2",
    }
    setup.autoscaling.start_instance_refresh(
        AutoScalingGroupName="mixed",
        DesiredConfiguration={"MixedInstancesPolicy": policy},
        Preferences={"MinHealthyPercentage": 50},
    )
    setup.emulator.run_until_settled()

    # Every instance was replaced; those that took the m7g.large override run its template's AMI.
    assert set(fx.instance_images(setup.session, "mixed")) == {setup.old_ami, setup.new_ami}
