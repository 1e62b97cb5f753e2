"""The DESIGN §5 rules as pure functions: each test breaks when its rule is broken."""

from __future__ import annotations

import pytest

from handlers.refresh import rules
from handlers.refresh.rules import Image, TemplateRef

INFRA = "210987654321"
PREFIX = "golden-ecs-al2023"


def image(ami_id: str = "ami-0aaa", day: int = 2, **overrides: str) -> Image:
    fields = {
        "image_id": ami_id,
        "name": f"{PREFIX}-2025-01-{day:02d}",
        "owner_id": INFRA,
        "state": "available",
        "creation_date": f"2025-01-{day:02d}T00:00:00.000Z",
    }
    return Image(**{**fields, **overrides})


MIXED_POLICY = {
    "LaunchTemplate": {
        "LaunchTemplateSpecification": {"LaunchTemplateId": "lt-1", "Version": "3"},
        "Overrides": [{"InstanceType": "m7i.large"}, {"InstanceType": "m6i.large"}],
    },
    "InstancesDistribution": {"OnDemandBaseCapacity": 1},
}


# --- rule 1 -----------------------------------------------------------------------------------


def test_trusted_image_passes():
    assert rules.untrusted_image_reason("ami-0aaa", image(), INFRA, PREFIX) is None


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (None, "does not exist"),
        (image(state="pending"), "is pending, not available"),
        (image(state="disabled"), "is disabled"),
        (image(owner_id="333333333333"), "owned by 333333333333"),
        (image(name="other-ecs-al2023-2025"), "lacks the image prefix"),
    ],
)
def test_untrusted_images_are_named_with_the_reason(candidate, expected):
    assert expected in rules.untrusted_image_reason("ami-0aaa", candidate, INFRA, PREFIX)


def test_an_older_image_never_replaces_the_current_one():
    reason = rules.older_than_current_reason(image("ami-old", day=1), image("ami-cur", day=2))
    assert "ami-old" in reason and "older than" in reason and "ami-cur" in reason


def test_same_age_or_newer_images_and_a_deregistered_current_image_are_not_older():
    assert rules.older_than_current_reason(image(day=3), image("ami-cur", day=2)) is None
    assert rules.older_than_current_reason(image(day=2), image("ami-cur", day=2)) is None
    assert rules.older_than_current_reason(image(day=1), None) is None


def test_converge_picks_the_newest_trusted_image_ignoring_other_owners_and_states():
    candidates = [
        image("ami-old", day=1),
        image("ami-new", day=3),
        image("ami-foreign", day=9, owner_id="333333333333"),
        image("ami-pending", day=8, state="pending"),
        image("ami-unprefixed", day=7, name="my-own-ami"),
    ]
    assert rules.newest_trusted_image(candidates, INFRA, PREFIX).image_id == "ami-new"
    assert rules.newest_trusted_image(candidates[2:], INFRA, PREFIX) is None


# --- rule 2 -----------------------------------------------------------------------------------


def test_ssm_alias_is_rejected_with_an_explanation():
    reason = rules.ssm_alias_reason("lt-1", 3, "resolve:ssm:/aws/service/ecs/optimized-ami")
    assert "SSM" in reason and "roll back" in reason and "lt-1" in reason
    assert rules.ssm_alias_reason("lt-1", 3, "ami-0aaa") is None


@pytest.mark.parametrize(("version", "pin"), [("$Latest", True), ("$Default", True), ("7", False)])
def test_only_latest_and_default_need_pinning(version, pin):
    assert rules.needs_numbered_pin(TemplateRef("lt-1", version)) is pin


def test_pin_names_the_resolved_number_and_nothing_else():
    assert rules.pinned_group_update("g", TemplateRef("lt-1", "$Latest"), 4) == {
        "AutoScalingGroupName": "g",
        "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "4"},
    }


def test_pin_of_a_mixed_group_keeps_overrides_and_distribution():
    update = rules.pinned_group_update("g", TemplateRef("lt-1", "$Default", MIXED_POLICY), 4)
    policy = update["MixedInstancesPolicy"]
    assert policy["LaunchTemplate"]["LaunchTemplateSpecification"]["Version"] == "4"
    assert policy["LaunchTemplate"]["Overrides"] == MIXED_POLICY["LaunchTemplate"]["Overrides"]
    assert policy["InstancesDistribution"] == MIXED_POLICY["InstancesDistribution"]
    assert "LaunchTemplate" not in update


# --- rule 3 -----------------------------------------------------------------------------------


def test_desired_configuration_names_the_new_version():
    assert rules.desired_configuration(TemplateRef("lt-1", "3"), 5) == {
        "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "5"}
    }


def test_desired_configuration_of_a_mixed_group_keeps_its_policy():
    desired = rules.desired_configuration(TemplateRef("lt-1", "3", MIXED_POLICY), 5)
    expected_launch_template = {
        "LaunchTemplateSpecification": {"LaunchTemplateId": "lt-1", "Version": "5"},
        "Overrides": MIXED_POLICY["LaunchTemplate"]["Overrides"],
    }
    assert desired == {
        "MixedInstancesPolicy": {
            "LaunchTemplate": expected_launch_template,
            "InstancesDistribution": {"OnDemandBaseCapacity": 1},
        }
    }
    assert MIXED_POLICY["LaunchTemplate"]["LaunchTemplateSpecification"]["Version"] == "3"


# --- rule 4 -----------------------------------------------------------------------------------

SOURCE = {"ImageId": "ami-cur", "InstanceType": "m7i.large", "UserData": "ZWNobw=="}


def test_new_version_changes_only_the_image():
    assert rules.new_version_data(SOURCE, "ami-new") == {**SOURCE, "ImageId": "ami-new"}


def test_an_existing_version_with_the_same_source_and_image_is_reused():
    ours = rules.version_description("ami-new", None)
    new_data = {**SOURCE, "ImageId": "ami-new"}
    versions = [
        {"VersionNumber": 3, "LaunchTemplateData": SOURCE},
        {"VersionNumber": 4, "LaunchTemplateData": new_data, "VersionDescription": ours},
        {"VersionNumber": 5, "LaunchTemplateData": {"ImageId": "ami-new"}},  # other source
        {"VersionNumber": 6, "LaunchTemplateData": new_data, "VersionDescription": "by hand"},
    ]
    assert rules.reusable_version(versions, SOURCE, "ami-new") == 4
    assert rules.reusable_version(versions, SOURCE, "ami-other") is None
    assert rules.reusable_version(versions[2:], SOURCE, "ami-new") is None


def test_version_description_names_the_image_arn_within_the_api_limit():
    arn = "arn:aws:imagebuilder:eu-west-1:210987654321:image/golden/1.0.0/3"
    assert arn in rules.version_description("ami-new", arn)
    assert "converge" in rules.version_description("ami-new", None)
    assert len(rules.version_description("ami-new", "arn:" + "x" * 400)) == 255


# --- rule 5 -----------------------------------------------------------------------------------


def test_preferences_add_the_rollback_safety_members_over_configuration():
    configured = {"MinHealthyPercentage": 90, "BakeTime": 900, "AutoRollback": False}
    assert rules.refresh_preferences(configured, ["ecs-errors"]) == {
        "MinHealthyPercentage": 90,
        "BakeTime": 900,
        "AutoRollback": True,
        "SkipMatching": True,
        "ScaleInProtectedInstances": "Refresh",
        "AlarmSpecification": {"Alarms": ["ecs-errors"]},
    }


def test_no_alarm_specification_without_alarms():
    assert "AlarmSpecification" not in rules.refresh_preferences({}, [])


GROUP_ARN = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:x:autoScalingGroupName/g"


def provider(draining: str | None, arn: str = GROUP_ARN) -> dict:
    asg_provider = {"autoScalingGroupArn": arn}
    if draining:
        asg_provider["managedDraining"] = draining
    return {"name": "cp", "autoScalingGroupProvider": asg_provider}


def test_draining_warning_only_when_the_groups_provider_lacks_managed_draining():
    assert rules.draining_warning("main", GROUP_ARN, [provider("ENABLED")]) is None
    assert "managedDraining" in rules.draining_warning("main", GROUP_ARN, [provider("DISABLED")])
    assert "managedDraining" in rules.draining_warning("main", GROUP_ARN, [provider(None)])
    other = [provider("ENABLED", arn="arn:other")]
    assert "no capacity provider" in rules.draining_warning("main", GROUP_ARN, other)


# --- rule 6 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status", ["Pending", "InProgress", "Baking", "Cancelling", "RollbackInProgress"]
)
def test_active_statuses_defer(status):
    refreshes = [{"InstanceRefreshId": "r2", "Status": status}, {"Status": "Successful"}]
    assert rules.active_refresh(refreshes)["InstanceRefreshId"] == "r2"


@pytest.mark.parametrize(
    "status", ["Successful", "Failed", "Cancelled", "RollbackSuccessful", "RollbackFailed"]
)
def test_finished_statuses_do_not_defer(status):
    assert rules.active_refresh([{"Status": status}]) is None


# --- rule 7 -----------------------------------------------------------------------------------


def refresh(status: str, end: str, version: str = "4", **extra) -> dict:
    return {
        "InstanceRefreshId": f"r-{version}-{status}",
        "Status": status,
        "EndTime": end,
        "DesiredConfiguration": {
            "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": version}
        },
        **extra,
    }


def test_rollbacks_quarantine_and_cancellations_hold_oldest_first_others_ignored():
    history = [
        refresh("RollbackFailed", "2025-01-03T00:00:00.000000Z", "6"),
        refresh("Successful", "2025-01-02T12:00:00.000000Z", "5"),
        refresh("Failed", "2025-01-02T06:00:00.000000Z", "7", RollbackDetails={"X": 1}),
        refresh("Failed", "2025-01-02T05:00:00.000000Z", "8"),
        refresh("Cancelled", "2025-01-02T04:00:00.000000Z", "9"),
        refresh("RollbackSuccessful", "2025-01-02T00:00:00.000000Z", "4"),
    ]
    found = rules.refreshes_to_record(history, None)
    assert [(r.version, r.template, r.verdict) for r in found] == [
        ("4", {"LaunchTemplateId": "lt-1"}, rules.QUARANTINE),
        ("9", {"LaunchTemplateId": "lt-1"}, rules.HOLD),
        ("7", {"LaunchTemplateId": "lt-1"}, rules.QUARANTINE),
        ("6", {"LaunchTemplateId": "lt-1"}, rules.QUARANTINE),
    ]


def test_refreshes_already_reviewed_are_not_folded_in_again():
    history = [
        refresh("RollbackSuccessful", "2025-01-03T00:00:00.000000Z", "6"),
        refresh("Cancelled", "2025-01-02T00:00:00.000000Z", "4"),
    ]
    found = rules.refreshes_to_record(history, "2025-01-02T00:00:00.000000Z")
    assert [r.version for r in found] == ["6"]


def test_rollback_of_a_mixed_instances_refresh_is_found():
    desired = {
        "MixedInstancesPolicy": {
            "LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateId": "lt-1", "Version": "9"}
            }
        }
    }
    history = [
        {
            "InstanceRefreshId": "r",
            "Status": "RollbackSuccessful",
            "EndTime": "2025-01-02T00:00:00.000000Z",
            "DesiredConfiguration": desired,
        }
    ]
    assert [r.version for r in rules.refreshes_to_record(history, None)] == ["9"]


def test_a_template_named_by_name_is_kept_and_floating_or_missing_versions_are_not_ours():
    """DesiredConfiguration's LaunchTemplateSpecification has LaunchTemplateId *or*
    LaunchTemplateName, and Version is optional (botocore autoscaling model)."""
    end = "2025-01-02T00:00:00.000000Z"
    history = [
        {**refresh("RollbackSuccessful", end), "DesiredConfiguration": desired}
        for desired in (
            {"LaunchTemplate": {"LaunchTemplateName": "ecs", "Version": "3"}},
            {"LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "$Latest"}},
            {"LaunchTemplate": {"LaunchTemplateId": "lt-1"}},
            {},
        )
    ]
    [found] = rules.refreshes_to_record(history, None)
    assert found.template == {"LaunchTemplateName": "ecs"} and found.version == "3"


def version(description: str, image_id: str = "ami-1", template_id: str = "lt-1") -> dict:
    return {
        "LaunchTemplateId": template_id,
        "VersionNumber": 4,
        "VersionDescription": description,
        "LaunchTemplateData": {"ImageId": image_id},
    }


def test_only_versions_this_tool_created_on_the_target_template_are_its_own():
    ours = rules.version_description("ami-1", "arn:aws:imagebuilder:…")
    assert rules.started_by_this_tool(version(ours), "lt-1")
    assert rules.started_by_this_tool(version(rules.version_description("ami-1", None)), "lt-1")
    assert not rules.started_by_this_tool(version(ours, template_id="lt-2"), "lt-1")
    assert not rules.started_by_this_tool(version(ours, image_id="ami-2"), "lt-1")  # edited
    assert not rules.started_by_this_tool(version("hand-made"), "lt-1")
    assert not rules.started_by_this_tool({"LaunchTemplateId": "lt-1"}, "lt-1")


def test_ami_list_tag_keeps_the_newest_ids_that_fit_in_256_characters():
    ami_ids = [f"ami-{n:017x}" for n in range(15)]  # 21 characters each
    value, forgotten = rules.ami_list_tag_value(ami_ids)
    assert len(value) <= 256
    kept = rules.parse_ami_list_tag(value)
    assert kept == ami_ids[-len(kept) :] and len(kept) == 11
    assert forgotten == ami_ids[: 15 - 11]


def test_ami_list_tag_round_trip_and_duplicates():
    value, forgotten = rules.ami_list_tag_value(["ami-1", "ami-2", "ami-1"])
    assert rules.parse_ami_list_tag(value) == ["ami-1", "ami-2"] and forgotten == []
    assert rules.parse_ami_list_tag(None) == [] and rules.parse_ami_list_tag("") == []


# --- rule 8 -----------------------------------------------------------------------------------


def test_current_means_same_image():
    assert rules.is_current("ami-1", ["ami-1", "ami-1"], "ami-1")
    assert rules.is_current("ami-1", [], "ami-1")  # no instances: the configuration decides
    assert not rules.is_current("ami-1", ["ami-1"], "ami-2")
    # The version names the image, an instance still runs the old one: not current.
    assert not rules.is_current("ami-2", ["ami-1", "ami-2"], "ami-2")


# --- rule 9: failing cluster ----------------------------------------------------------------------


def test_only_an_alarm_in_alarm_state_blocks_the_start():
    assert rules.failing_alarms_reason({}) is None
    assert rules.failing_alarms_reason({"a": "OK", "b": "INSUFFICIENT_DATA"}) is None
    reason = rules.failing_alarms_reason({"a": "OK", "c": "ALARM", "b": "ALARM"})
    assert reason is not None and reason.startswith("rollback alarm b, c is already in ALARM")


# --- rule 10: mixed overrides -------------------------------------------------------------------


def test_only_overrides_with_their_own_template_or_image_are_refused():
    def ref(*overrides: dict) -> rules.TemplateRef:
        policy = {"LaunchTemplate": {"Overrides": list(overrides)}}
        return rules.TemplateRef("lt-1", "3", policy)

    assert rules.mixed_overrides_reason(rules.TemplateRef("lt-1", "3")) is None
    assert rules.mixed_overrides_reason(ref()) is None
    plain = {"InstanceType": "m7i.large", "WeightedCapacity": "2"}
    assert rules.mixed_overrides_reason(ref(plain, {"InstanceRequirements": {}})) is None
    reason = rules.mixed_overrides_reason(
        ref(
            plain,
            {"InstanceType": "m7g.large", "LaunchTemplateSpecification": {"LaunchTemplateId": "x"}},
            {"InstanceRequirements": {}, "ImageId": "ami-1"},
        )
    )
    assert reason is not None
    assert reason.startswith("the MixedInstancesPolicy overrides for m7g.large, override 2 carry")


# --- rule 10: a shared launch template -----------------------------------------------------------


def test_latest_followers_by_id_or_name_main_or_override():
    def group(name: str, spec: dict, *, override: dict | None = None, mixed: bool = False) -> dict:
        if not mixed and override is None:
            return {"AutoScalingGroupName": name, "LaunchTemplate": spec}
        overrides = [{"InstanceType": "m7g.large", "LaunchTemplateSpecification": override}]
        policy = {"LaunchTemplate": {"LaunchTemplateSpecification": spec, "Overrides": overrides}}
        return {"AutoScalingGroupName": name, "MixedInstancesPolicy": policy}

    groups = [
        group("self", {"LaunchTemplateId": "lt-1", "Version": "$Latest"}),
        group("by-id", {"LaunchTemplateId": "lt-1", "Version": "$Latest"}),
        group("by-name", {"LaunchTemplateName": "ecs", "Version": "$Latest"}),
        group("default", {"LaunchTemplateId": "lt-1", "Version": "$Default"}),
        group("numbered", {"LaunchTemplateId": "lt-1", "Version": "3"}),
        group("other-template", {"LaunchTemplateId": "lt-2", "Version": "$Latest"}),
        group(
            "override",
            {"LaunchTemplateId": "lt-2", "Version": "1"},
            override={"LaunchTemplateId": "lt-1", "Version": "$Latest"},
        ),
    ]
    found = rules.latest_followers(groups, "lt-1", "ecs", exclude="self")
    assert [(f.group_name, f.ref is not None) for f in found] == [
        ("by-id", True),
        ("by-name", True),
        ("override", False),  # cannot be pinned by pinning the main specification
    ]
    assert found[0].ref == rules.TemplateRef("lt-1", "$Latest", None)
