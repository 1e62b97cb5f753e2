"""Pure decisions of the progressive rollout (handlers/waves/logic.py), on plain data."""

from __future__ import annotations

import json
import re

import pytest

from handlers.common.status import GroupStatus, Invocation, summarize
from handlers.waves import logic
from handlers.waves.logic import (
    ConfigurationError,
    MalformedInputError,
    Wave,
    account_filter,
    execution_name,
    judge,
    version_order,
)

# Step Functions: 1-80 characters; no whitespace, brackets, wildcards, " # % \ ^ | ~ ` $ & , ; : /
EXECUTION_NAME = re.compile(r"^[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]{1,80}$")


def test_execution_names_are_valid_distinct_per_image_and_start_and_stable():
    names = {
        execution_name("1.0.0/3"),
        execution_name("1.0.0/31"),
        execution_name("1.0.3/1"),
        execution_name("10.0.0/3"),
        execution_name("1.0.0/3", start_wave=2),
    }
    assert len(names) == 5
    assert all(EXECUTION_NAME.match(name) for name in names)
    assert execution_name("1.0.0/3") == "rollout-1.0.0-3" == execution_name("1.0.0/3")
    assert execution_name("1.0.0/3", 2) == "rollout-1.0.0-3-from-2"
    longest = execution_name(f"{'9' * 20}.{'9' * 20}.{'9' * 20}/{'9' * 20}", 99)
    assert len(longest) <= 80


def test_versions_order_numerically_not_as_text():
    assert version_order("1.0.10/1") > version_order("1.0.9/4")
    assert version_order("1.0.9/10") > version_order("1.0.9/9")
    assert version_order("2.0.0/1") > version_order("1.99.99/99")
    with pytest.raises(MalformedInputError, match="not an image build version"):
        version_order("1.0/3")


def test_superseded_only_by_a_newer_rollout():
    latest = {"rolloutId": "1.0.1/1", "order": version_order("1.0.1/1")}
    assert logic.superseded_by("1.0.0/3", latest) == "1.0.1/1"
    assert logic.superseded_by("1.0.1/1", latest) is None
    assert logic.superseded_by("1.0.2/1", latest) is None
    assert logic.superseded_by("1.0.0/3", None) is None


WAVES = (
    Wave("canary", ("222233334444",), 1800, 0, "manual", 3600),
    Wave("early", ("ou-ab12-abcd1234", "333344445555"), 0, 1, "auto", 3600),
    Wave("rest", ("rest",), 0, 0, "auto", 3600),
)


def test_account_filters_include_a_waves_members_and_rest_excludes_every_earlier_one():
    assert account_filter(WAVES, 0) == {"include": ["222233334444"]}
    assert account_filter(WAVES, 1) == {"include": ["333344445555", "ou-ab12-abcd1234"]}
    assert account_filter(WAVES, 2) == {
        "exclude": ["222233334444", "333344445555", "ou-ab12-abcd1234"]
    }


def test_the_first_check_is_immediate_so_the_timeout_counts_one_poll_more():
    state = logic.wave_state(WAVES, 0, poll_seconds=60)
    assert (state["timeoutPolls"] - 1) * 60 >= 3600
    assert state["last"] is False and logic.wave_state(WAVES, 2, 60)["last"] is True


def _wave(max_failed=0, approval="auto", last=False, timeout_polls=5):
    return {"name": "canary", "maxFailedGroups": max_failed, "approval": approval,
            "last": last, "timeoutPolls": timeout_polls}  # fmt: skip


def _summary(*states, silent=()):
    groups = [
        GroupStatus("111111111111", "eu-west-1", f"g{n}", s, "t") for n, s in enumerate(states)
    ]
    invocations = [Invocation("111111111111", "eu-west-1", "t")]
    invocations += [Invocation(a, "eu-west-1", "t") for a in silent]
    return summarize([*groups, *invocations])


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ((("started",), (), "settle", 1, _wave()), "wait"),
        ((("Successful", "current"), (), "settle", 1, _wave()), "soak"),
        ((("Successful",), ("222222222222",), "settle", 1, _wave()), "wait"),
        ((("Successful",), ("222222222222",), "settle", 5, _wave()), "halt"),  # silence at timeout
        ((("Successful",), ("222222222222",), "settle", 5, _wave(max_failed=1)), "soak"),
        ((("RollbackSuccessful", "started"), (), "settle", 1, _wave()), "halt"),  # early halt
        ((("RollbackSuccessful", "started"), (), "settle", 1, _wave(max_failed=1)), "wait"),
        ((("started",), (), "soak", 1, _wave()), "halt"),  # still pending after the soak
        ((("Successful",), (), "soak", 1, _wave(approval="manual")), "approve"),
        ((("Successful",), (), "soak", 1, _wave()), "continue"),
        ((("Successful",), (), "soak", 1, _wave(last=True, approval="manual")), "done"),
        ((("quarantined",), (), "soak", 1, _wave()), "halt"),
    ],
)
def test_judge(case, expected):
    states, silent, stage, polls, wave = case
    assert judge(_summary(*states, silent=silent), wave, stage, polls).next == expected


def test_halt_reason_names_the_wave_the_tolerance_and_each_failure():
    verdict = judge(_summary("RollbackSuccessful", silent=("222222222222",)), _wave(), "soak", 1)
    reason = logic.halt_reason(_wave(), verdict.failures)
    assert reason == (
        "wave 'canary': 2 failed (tolerated 0): 111111111111 eu-west-1 g0: RollbackSuccessful; "
        "222222222222 eu-west-1: invoked, no group reported"
    )


def test_a_failed_fanout_task_reads_as_the_halt_reason():
    error = {"Error": "FanoutFailedError", "Cause": json.dumps({"errorMessage": "2 pairs failed"})}
    assert logic.task_failure_reason(_wave(), error) == (
        "wave 'canary': FanoutFailedError: 2 pairs failed"
    )


def test_invoked_pairs_keep_only_invoked_outcomes():
    accounts = [
        {"accountId": "111111111111", "regions": {"eu-west-1": "invoked", "us-east-1": "invoked"}},
        {"accountId": "222222222222", "regions": {"eu-west-1": "not-enrolled"}},
    ]
    assert logic.invoked_pairs(accounts) == [
        ["111111111111", "eu-west-1"],
        ["111111111111", "us-east-1"],
    ]


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({}, "not an SNS delivery"),
        ({"Records": [{"EventSource": "aws:sqs", "Sns": {}}]}, "not an SNS record"),
        ({"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "m"}}]}, "no MessageId"),
        ({"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "m", "Message": "{"}}]},
         "Message is not JSON"),
        ({"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "m", "Message": "{}"}}]},
         "no state.status"),
    ],
)  # fmt: skip
def test_malformed_notifications_are_refused(event, problem):
    with pytest.raises(MalformedInputError, match=re.escape(problem)):
        logic.parse_image_notification(event)


def test_rollout_id_needs_a_version_and_an_integer_build():
    assert logic.rollout_id_of({"version": "1.2.3", "buildVersion": 4}) == "1.2.3/4"
    for message in ({"version": "1.2.3", "buildVersion": True}, {"version": "1.2.3"}):
        with pytest.raises(MalformedInputError, match="integer buildVersion"):
            logic.rollout_id_of(message)


GOOD_ENV = {
    "WAVES_JSON": json.dumps([{"name": "all", "accounts": ["rest"], "soakSeconds": 0,
                               "maxFailedGroups": 0, "approval": "auto", "timeoutSeconds": 60}]),
    "TABLE_NAME": "t",
    "STATE_MACHINE_ARN": "arn:aws:states:eu-west-1:111122223333:stateMachine:m",
}  # fmt: skip


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"WAVES_JSON": "[]"}, "WAVES_JSON lists no wave"),
        ({"WAVES_JSON": '[{"name": "x"}]'}, "WAVES_JSON is not a list of waves"),
        ({"POLL_SECONDS": "0"}, "POLL_SECONDS='0'"),
        ({"TABLE_NAME": ""}, "TABLE_NAME is not set"),
    ],
)
def test_bad_environment_is_refused(override, problem):
    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        logic.parse_settings(GOOD_ENV | override)
    assert logic.parse_settings(GOOD_ENV).poll_seconds == 60
