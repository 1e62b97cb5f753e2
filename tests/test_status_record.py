"""The rollout status record shared by the recorder, the wave checker and the CLI (DESIGN §10)."""

import pytest

from handlers.common.status import (
    STATE_PHASES,
    GroupStatus,
    Invocation,
    Phase,
    order_key,
    parse_item,
    summarize,
)

ROLLOUT = "1.0.0/3"


def _group(
    account="111111111111",
    region="eu-west-1",
    group="ecs",
    state="started",
    at="2026-11-29T10:00:00Z",
):
    return GroupStatus(account=account, region=region, group=group, state=state, updated_at=at)


def test_newer_time_wins_over_any_state_of_an_older_time():
    assert order_key("2026-11-29T10:00:01Z", "started") > order_key(
        "2026-11-29T10:00:00Z", "Successful"
    )


def test_same_second_a_terminal_state_is_newer_than_a_started_one():
    at = "2026-11-29T10:00:00Z"
    assert order_key(at, "Successful") > order_key(at, "started") > order_key(at, "deferred")


def test_unknown_state_is_refused():
    with pytest.raises(ValueError, match="unknown rollout state 'Rolling'"):
        order_key("2026-11-29T10:00:00Z", "Rolling")


def test_items_round_trip_and_group_names_may_hold_hashes():
    group = GroupStatus(
        "111111111111",
        "eu-west-1",
        "ecs#blue",
        "RollbackSuccessful",
        "2026-11-29T10:00:00Z",
        reason="alarm",
        ami_before="ami-0a",
        ami_after="ami-0b",
        refresh_id="r-1",
    )
    item = group.to_item(ROLLOUT)
    assert item["pk"] == "ROLLOUT#1.0.0/3"
    assert item["sk"] == "GROUP#111111111111#eu-west-1#ecs#blue"
    assert parse_item(item) == group
    invocation = Invocation("222222222222", "us-east-1", "2026-11-29T09:59:00Z")
    assert parse_item(invocation.to_item(ROLLOUT)) == invocation
    assert parse_item({"pk": "ROLLOUT#x", "sk": "WAVE#00"}) is None


def test_summary_counts_states_names_silent_invocations_and_filters_accounts():
    records = [
        _group("111111111111", state="Successful"),
        _group("111111111111", group="ecs-2", state="RollbackSuccessful"),
        _group("222222222222", state="started"),
        Invocation("111111111111", "eu-west-1", "t"),
        Invocation("222222222222", "eu-west-1", "t"),
        Invocation("333333333333", "eu-west-1", "t"),
    ]
    summary = summarize(records)
    assert summary.counts == {"RollbackSuccessful": 1, "Successful": 1, "started": 1}
    assert [i.account for i in summary.silent] == ["333333333333"]
    assert [g.group for g in summary.in_phase(Phase.FAILED)] == ["ecs-2"]
    assert not summary.settled

    wave = summarize(records, accounts=["111111111111"])
    assert wave.counts == {"RollbackSuccessful": 1, "Successful": 1}
    assert wave.silent == ()
    assert wave.settled


def test_every_failure_a_person_must_look_at_is_failed_phase():
    failed = {state for state, phase in STATE_PHASES.items() if phase is Phase.FAILED}
    assert failed == {
        "held",
        "quarantined",
        "rejected",
        "failed",
        "Failed",
        "Cancelled",
        "RollbackSuccessful",
        "RollbackFailed",
    }


def test_newest_rollout_is_the_one_first_seen_last_not_the_greatest_text():
    from handlers.common.status import newest_rollout, rollout_index_item

    items = [
        rollout_index_item("1.0.0/9", "2026-11-28T10:00:00Z"),
        rollout_index_item("1.0.0/10", "2026-11-29T10:00:00Z"),
    ]
    assert newest_rollout(items) == "1.0.0/10"
    assert newest_rollout([]) is None
