"""The rollout recorder on moto: validation, trust, conditional writes, in-use AMI tags (§10)."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from handlers.common import status
from handlers.common.log import JsonFormatter
from handlers.recorder import app
from handlers.recorder.app import Recorder
from handlers.recorder.aws import RecorderAws
from handlers.recorder.logic import IN_USE_TAG, RESULT_OUTCOMES, Report, amis_in_use
from tests.rollout_fixtures import (
    INFRA_ACCOUNT,
    OTHER_REGION,
    REGION,
    ROLLOUT,
    TABLE,
    WORKLOAD_A,
    WORKLOAD_B,
    at,
    create_table,
    refresh_end_event,
    refresh_id,
    register_golden_image,
    result_event,
)


@pytest.fixture
def session():
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        create_table(session)
        yield session


@pytest.fixture
def recorder(session) -> Recorder:
    return Recorder(RecorderAws(session, TABLE))


def group_item(session, account=WORKLOAD_A, group="web-ecs", rollout=ROLLOUT, region=REGION):
    table = session.resource("dynamodb").Table(TABLE)
    key = {"pk": status.rollout_key(rollout), "sk": status.group_key(account, region, group)}
    return table.get_item(Key=key).get("Item")


def all_items(session) -> list[dict]:
    return session.resource("dynamodb").Table(TABLE).scan()["Items"]


def in_use_tagged(session, region=REGION) -> set[str]:
    images = session.client("ec2", region_name=region).describe_images(
        Owners=["self"], Filters=[{"Name": "tag-key", "Values": [IN_USE_TAG]}]
    )["Images"]
    return {image["ImageId"] for image in images}


class LogLines:
    """The recorder's JSON log lines (its handler writes to the stdout of its creation)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def take(self) -> list[dict]:
        lines = [json.loads(line) for line in self.buffer.getvalue().splitlines() if line]
        self.buffer.seek(0)
        self.buffer.truncate()
        return lines

    def metrics(self) -> list[dict]:
        return [line for line in self.take() if "_aws" in line]


@pytest.fixture
def logs():
    lines = LogLines()
    [handler] = [h for h in app.LOGGER.handlers if isinstance(h.formatter, JsonFormatter)]
    previous = handler.setStream(lines.buffer)
    yield lines
    handler.setStream(previous)


# --- recording and ordering -------------------------------------------------------------------


def test_a_result_is_recorded_under_its_rollout_and_the_sending_account(session, recorder):
    old, new = register_golden_image("1.0.0/2"), register_golden_image()
    result = recorder.record(
        result_event(ami_before=old, ami_after=new, refresh=refresh_id(1), reason="refreshing")
    )
    assert result["recorded"] and result["rolloutId"] == ROLLOUT
    item = group_item(session)
    assert status.parse_item(item) == status.GroupStatus(
        WORKLOAD_A, REGION, "web-ecs", "started", at(0), "refreshing", old, new, refresh_id(1)
    )
    index = (
        session.resource("dynamodb")
        .Table(TABLE)
        .query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": "ROLLOUTS"})[
            "Items"
        ]
    )
    assert status.newest_rollout(index) == ROLLOUT


def test_replayed_and_late_events_never_regress_a_newer_state(session, recorder, logs):
    started = result_event(refresh=refresh_id(1), time=at(0))
    recorder.record(started)
    succeeded = refresh_end_event("Succeeded", refresh=refresh_id(1), time=at(600))
    assert recorder.record(succeeded)["recorded"]
    assert group_item(session)["state"] == "Successful"

    logs.take()
    assert recorder.record(started) == {"recorded": False, "stale": True, "rolloutId": ROLLOUT}
    assert recorder.record(succeeded)["stale"]  # an exact replay changes nothing either
    # Out of order within the same second: a terminal state is newer than a started one.
    late_start = result_event(refresh=refresh_id(1), time=at(600))
    assert recorder.record(late_start)["stale"]
    assert group_item(session)["state"] == "Successful"
    assert [m["StaleEvents"] for m in logs.metrics() if "StaleEvents" in m] == [1, 1, 1]


def test_an_older_event_delivered_first_is_overtaken_by_the_newer(session, recorder):
    recorder.record(result_event(outcome="deferred", time=at(0)))
    recorder.record(result_event(outcome="current", time=at(30)))
    assert group_item(session)["state"] == "current"
    recorder.record(result_event(outcome="deferred", time=at(10)))
    assert group_item(session)["state"] == "current"


def test_a_refresh_end_takes_the_rollout_and_images_of_the_refresh_that_started(session, recorder):
    old, new = register_golden_image("1.0.0/2"), register_golden_image()
    recorder.record(result_event(ami_before=old, ami_after=new, refresh=refresh_id(7)))
    recorder.record(refresh_end_event("Rollback Succeeded", refresh=refresh_id(7), time=at(900)))
    item = status.parse_item(group_item(session))
    assert (item.state, item.ami_before, item.ami_after) == ("RollbackSuccessful", old, new)


def test_a_refresh_no_rollout_started_is_unplaced_not_recorded(session, recorder, logs):
    result = recorder.record(refresh_end_event("Succeeded", refresh=refresh_id(9), time=at(5)))
    assert result == {
        "recorded": False,
        "unplaced": f"instance refresh {refresh_id(9)} was not started by a rollout",
    }
    assert all_items(session) == []
    assert any("UnplacedEvents" in m for m in logs.metrics())


def test_another_account_cannot_end_a_refresh_it_did_not_start(session, recorder):
    recorder.record(result_event(refresh=refresh_id(3)))
    # Same refresh id and group name, sent by another account: its own (unknown) refresh.
    forged = refresh_end_event("Failed", WORKLOAD_B, refresh=refresh_id(3), time=at(60))
    assert "unplaced" in recorder.record(forged)
    assert group_item(session)["state"] == "started"
    assert group_item(session, account=WORKLOAD_B) is None


def test_a_converge_result_finds_its_rollout_from_the_infra_accounts_image_tags(session, recorder):
    ami = register_golden_image("1.0.0/4")
    result = recorder.record(result_event(outcome="current", rollout=None, ami_after=ami))
    assert result["rolloutId"] == "1.0.0/4"
    assert group_item(session, rollout="1.0.0/4")["state"] == "current"


def test_a_result_without_image_or_with_a_foreign_image_is_unplaced(session, recorder):
    no_image = result_event(outcome="rejected", rollout=None, reason="no available image")
    assert recorder.record(no_image)["unplaced"] == "the result names no image, so no rollout"
    foreign = result_event(outcome="rejected", rollout=None, ami_after="ami-0123456789abcdef0")
    assert "is not an image this account built" in recorder.record(foreign)["unplaced"]
    assert all_items(session) == []


# --- refusals -----------------------------------------------------------------------------------


def test_a_forged_event_naming_another_accounts_group_is_refused(session, recorder, logs):
    recorder.record(result_event(WORKLOAD_B, outcome="current", time=at(0)))
    forged = result_event(WORKLOAD_A, outcome="failed", time=at(60), accountId=WORKLOAD_B)
    result = recorder.record(forged)
    assert result["refused"] == (
        f"detail.accountId '{WORKLOAD_B}' is not the sending account {WORKLOAD_A}: an account "
        "reports on its own groups only"
    )
    assert group_item(session, account=WORKLOAD_B)["state"] == "current"
    assert group_item(session, account=WORKLOAD_A) is None
    lines = logs.take()
    [refusal] = [line for line in lines if line["message"] == "event refused"]
    assert refusal["level"] == "WARNING" and refusal["account"] == WORKLOAD_A
    assert any(line.get("RefusedEvents") == 1 for line in lines)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"account": ""}, "event account '' is not a 12-digit account id"),
        ({"region": "mars"}, "event region 'mars' is not a region name"),
        ({"time": "yesterday"}, "event time 'yesterday' is not an ISO 8601 UTC time"),
        ({"detail": None}, "event has no detail object"),
        ({"source": "custom.app"}, "source 'custom.app' with detail-type"),
        ({"detail-type": "Whatever"}, "source 'golden-ami.refresh' with detail-type 'Whatever'"),
        ({"detail.outcome": "rolling"}, "detail.outcome 'rolling' is not one of current"),
        ({"detail.schemaVersion": 2}, "detail.schemaVersion 2 is not 1"),
        ({"detail.autoScalingGroupName": "a:b"}, "detail.autoScalingGroupName 'a:b' is not"),
        ({"detail.amiAfter": "ami-XYZ"}, "detail.amiAfter 'ami-XYZ' is not an AMI id"),
        ({"detail.imageArn": "arn:aws:s3:::x"}, "detail.imageArn 'arn:aws:s3:::x' is not"),
        ({"detail.instanceRefreshId": None}, "a started result has no detail.instanceRefreshId"),
        ({"detail.account": WORKLOAD_B}, f"detail.account '{WORKLOAD_B}' is not the sending"),
    ],
)
def test_malformed_events_are_refused_with_one_reason_and_nothing_written(
    session, recorder, change, reason
):
    event = result_event(refresh=refresh_id(1))
    for path, value in change.items():
        target, _, key = path.rpartition(".")
        (event[target] if target else event)[key] = value
    result = recorder.record(event)
    assert result["recorded"] is False and result["refused"].startswith(reason), result
    assert all_items(session) == []


@pytest.mark.parametrize("event", [None, [], "text", {"detail": {}}])
def test_events_that_are_not_objects_are_refused_not_raised(recorder, event):
    assert recorder.record(event)["recorded"] is False


def test_an_autoscaling_event_other_than_a_refresh_end_is_refused(recorder):
    started = refresh_end_event("Started", refresh=refresh_id(1), time=at(0))
    assert "neither a refresh result" in recorder.record(started)["refused"]


def test_aws_errors_fail_the_invocation_so_lambda_retries_it(session, monkeypatch):
    monkeypatch.setenv("TABLE_NAME", "no-such-table")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    app.recorder.cache_clear()
    try:
        with pytest.raises(ClientError, match="ResourceNotFoundException"):
            app.lambda_handler(result_event(refresh=refresh_id(1)), None)
    finally:
        app.recorder.cache_clear()


def test_the_entry_point_records_through_the_configured_table(session, monkeypatch):
    monkeypatch.setenv("TABLE_NAME", TABLE)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    app.recorder.cache_clear()
    try:
        assert app.lambda_handler(result_event(outcome="deferred"), None)["recorded"]
    finally:
        app.recorder.cache_clear()
    assert group_item(session)["state"] == "deferred"


def test_the_entry_point_names_a_missing_table_setting(monkeypatch):
    monkeypatch.delenv("TABLE_NAME", raising=False)
    with pytest.raises(app.ConfigurationError, match="TABLE_NAME is missing"):
        app.lambda_handler({}, None)


# --- AMIs in use ---------------------------------------------------------------------------------


def test_a_refresh_tags_both_images_and_a_rollback_untags_the_new_one(session, recorder):
    old, new = register_golden_image("1.0.0/2"), register_golden_image()
    recorder.record(result_event(ami_before=old, ami_after=new, refresh=refresh_id(1)))
    assert in_use_tagged(session) == {old, new}
    recorder.record(refresh_end_event("Rollback Succeeded", refresh=refresh_id(1), time=at(600)))
    assert in_use_tagged(session) == {old}


def test_an_image_another_group_still_runs_keeps_its_tag(session, recorder):
    old, new = register_golden_image("1.0.0/2"), register_golden_image()
    recorder.record(result_event(WORKLOAD_B, outcome="current", ami_before=old, ami_after=old))
    recorder.record(result_event(ami_before=old, ami_after=new, refresh=refresh_id(1)))
    recorder.record(refresh_end_event("Succeeded", refresh=refresh_id(1), time=at(600)))
    assert in_use_tagged(session) == {old, new}
    # The next rollout moves group A on: its rollback target changes, B still runs `old`.
    newer = register_golden_image("1.0.0/4")
    recorder.record(
        result_event(
            ami_before=new, ami_after=newer, refresh=refresh_id(2), rollout="1.0.0/4", time=at(900)
        )
    )
    assert in_use_tagged(session) == {old, new, newer}
    recorder.record(
        result_event(
            WORKLOAD_B, outcome="started", ami_before=old, ami_after=newer,
            refresh=refresh_id(3), rollout="1.0.0/4", time=at(950),
        )
    )  # fmt: skip
    recorder.record(
        refresh_end_event("Succeeded", WORKLOAD_B, refresh=refresh_id(3), time=at(1500))
    )
    assert in_use_tagged(session) == {old, new, newer}  # old: B's rollback target
    recorder.record(refresh_end_event("Succeeded", refresh=refresh_id(2), time=at(1600)))
    assert in_use_tagged(session) == {old, new, newer}


def test_the_tag_is_kept_per_region_and_only_on_the_infra_accounts_images(session, recorder):
    here, there = register_golden_image(), register_golden_image(region=OTHER_REGION)
    foreign = "ami-0aaaaaaaaaaaaaaaa"
    recorder.record(result_event(ami_before=foreign, ami_after=here, refresh=refresh_id(1)))
    recorder.record(
        result_event(
            region=OTHER_REGION, ami_before=there, ami_after=there, outcome="current",
            rollout=None,
        )
    )  # fmt: skip
    assert in_use_tagged(session) == {here}
    assert in_use_tagged(session, OTHER_REGION) == {there}


def test_a_late_report_of_an_older_rollout_does_not_change_the_groups_images(session, recorder):
    old, new = register_golden_image("1.0.0/2"), register_golden_image()
    recorder.record(result_event(ami_before=old, ami_after=new, refresh=refresh_id(1), time=at(60)))
    recorder.record(
        result_event(
            outcome="quarantined", ami_before=old, ami_after=new, rollout="1.0.0/2", time=at(0)
        )
    )
    assert in_use_tagged(session) == {old, new}


def _report(state, before="ami-0000000b", after="ami-0000000a") -> Report:
    return Report(WORKLOAD_A, REGION, "g", state, at(0), ami_before=before, ami_after=after)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("started", {"ami-0000000a", "ami-0000000b"}),
        ("Successful", {"ami-0000000a", "ami-0000000b"}),
        ("Failed", {"ami-0000000a", "ami-0000000b"}),
        ("Cancelled", {"ami-0000000a", "ami-0000000b"}),
        ("RollbackFailed", {"ami-0000000a", "ami-0000000b"}),
        ("RollbackSuccessful", {"ami-0000000b", "ami-0000000c"}),
        ("quarantined", {"ami-0000000b", "ami-0000000c"}),
        ("held", {"ami-0000000b", "ami-0000000c"}),
        ("rejected", {"ami-0000000b", "ami-0000000c"}),
        ("failed", {"ami-0000000b", "ami-0000000c"}),
        ("current", {"ami-0000000a", "ami-0000000b", "ami-0000000c"}),
        ("deferred", {"ami-0000000a", "ami-0000000b", "ami-0000000c"}),
    ],
)
def test_amis_in_use_after_each_state(state, expected):
    previous = ("ami-0000000a", "ami-0000000c")
    assert set(amis_in_use(_report(state), previous)) == expected


def test_every_recorded_state_is_a_handler_outcome_or_a_refresh_end():
    assert set(status.STATE_PHASES) == RESULT_OUTCOMES | set(status.REFRESH_END_STATES.values())


def test_the_recorder_writes_in_the_infra_account_only(session, recorder):
    recorder.record(result_event(refresh=refresh_id(1)))
    assert {item["pk"].split("#")[0] for item in all_items(session)} == {
        "ROLLOUT",
        "ROLLOUTS",
        "REFRESH",
    }
    assert session.client("sts").get_caller_identity()["Account"] == INFRA_ACCOUNT
