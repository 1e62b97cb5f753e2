"""The RolloutWaves state machine, run by moto's ASL interpreter (DESIGN §10 "Waves").

Every test drives the real definition (components/rollout_definition.py), the real waves and
fan-out handlers and the operator CLI (rollout/control.py) in sandbox/waves_world.py; only the
workload accounts are stand-ins that report their groups' states to the rollout table.
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest

pytest.importorskip(
    "antlr4", reason="moto's ASL interpreter needs antlr4-python3-runtime (requirements.txt)"
)

from components.policies import rollout_operator_policy
from rollout.control import ControlError, RolloutControl
from rollout.status import StatusTable, build_report, render_table
from sandbox.step_functions import ClockStuckError
from sandbox.waves_world import (
    FANOUT_FUNCTION,
    LATE_ROLLBACK,
    POLL_SECONDS,
    REFRESH_SECONDS,
    REGION,
    ROLLS_BACK,
    SILENT,
    TABLE,
    account_id,
    image_message,
    rollout_world,
    wave,
)
from tests.iam_recorder import iam_action

ROLLOUT = "1.0.0/3"


# IAM actions the operator CLI called, per command: held against its policy at the end.
CLI_ACTIONS: dict[str, set[str]] = {}


def control(command: str) -> RolloutControl:
    """The operator CLI's commands, with the infra account's credentials, their calls recorded."""
    session = boto3.Session(region_name=REGION)
    called = CLI_ACTIONS.setdefault(command, set())

    def record(model, **_):
        called.add(iam_action(model.service_model.signing_name, model.name))

    session.events.register("before-call", record)
    return RolloutControl(TABLE, session)


EXECUTION = "rollout-1.0.0-3"
CANARY = [account_id(1)]
REST = [account_id(n) for n in range(2, 5)]
TWO_WAVES = [wave("canary", CANARY, soak=1800), wave("rest", ["rest"], soak=0)]


def test_healthy_image_passes_the_canary_soaks_and_completes_in_the_second_wave():
    with rollout_world(TWO_WAVES, CANARY + REST) as world:
        world.deliver(image_message())
        execution = world.run_until_finished(EXECUTION)
        assert execution["status"] == "SUCCEEDED"
        assert world.accounts_invoked() == sorted(CANARY + REST)
        canary, rest = world.wave_item(ROLLOUT, 0), world.wave_item(ROLLOUT, 1)
        assert canary["state"] == rest["state"] == "passed"
        assert canary["invoked"] == [f"{CANARY[0]}#eu-west-1"]
        assert sorted(rest["invoked"]) == [f"{a}#eu-west-1" for a in REST]
        assert canary["counts"]["Successful"] == 1
        # The rest wave began only after the canary settled and soaked.
        assert world.clock.now >= REFRESH_SECONDS + 1800 + REFRESH_SECONDS


def test_failure_in_the_canary_halts_and_no_account_of_the_next_wave_is_invoked():
    with rollout_world(TWO_WAVES, CANARY + REST, {CANARY[0]: ROLLS_BACK}) as world:
        world.deliver(image_message())
        execution = world.run_until_finished(EXECUTION)
        assert execution["status"] == "FAILED"
        assert execution["error"] == "RolloutHalted"
        assert f"{CANARY[0]} eu-west-1 ecs: RollbackSuccessful" in execution["cause"]
        assert world.accounts_invoked() == CANARY  # zero invocations in wave 2
        halted = world.wave_item(ROLLOUT, 0)
        assert halted["state"] == "halted"
        assert "wave 'canary': 1 failed (tolerated 0)" in halted["reason"]
        assert world.wave_item(ROLLOUT, 1) == {}
        (notice,) = world.alarm_messages()
        assert notice["Subject"] == "Golden AMI rollout 1.0.0/3 halted at wave canary"
        # `python -m rollout status` shows the halt and its reason.
        shown = build_report(
            StatusTable(boto3.Session(region_name=REGION), TABLE), ROLLOUT, datetime.now(UTC)
        )
        assert [(w.name, w.state) for w in shown.waves] == [("canary", "halted")]
        assert render_table(shown, colour=False).count(halted["reason"]) == 1
        assert "python -m rollout resume 1.0.0/3" in notice["Message"]
        # Halted as soon as the rollback was reported: no soak, no timeout.
        assert world.clock.now < REFRESH_SECONDS + 2 * POLL_SECONDS


def test_max_failed_groups_one_lets_one_failure_through_and_two_halt():
    first = [account_id(1), account_id(2)]
    tolerant = [wave("canary", first, soak=600, max_failed=1), wave("rest", ["rest"], soak=0)]
    accounts = [*first, account_id(3)]
    with rollout_world(tolerant, accounts, {first[0]: ROLLS_BACK}) as world:
        world.deliver(image_message())
        assert world.run_until_finished(EXECUTION)["status"] == "SUCCEEDED"
        assert world.accounts_invoked() == sorted(accounts)
        assert world.wave_item(ROLLOUT, 0)["failures"] == [
            f"{first[0]} eu-west-1 ecs: RollbackSuccessful"
        ]
    both_fail = {first[0]: ROLLS_BACK, first[1]: ROLLS_BACK}
    with rollout_world(tolerant, accounts, both_fail) as world:
        world.deliver(image_message())
        execution = world.run_until_finished(EXECUTION)
        assert execution["status"] == "FAILED"
        assert "2 failed (tolerated 1)" in execution["cause"]
        assert world.accounts_invoked() == first


def test_an_invoked_account_that_never_reports_fails_the_wave_after_its_timeout():
    waves = [wave("canary", CANARY, timeout=900), wave("rest", ["rest"])]
    with rollout_world(waves, CANARY + REST, {CANARY[0]: SILENT}) as world:
        world.deliver(image_message())
        execution = world.run_until_finished(EXECUTION)
        assert execution["status"] == "FAILED"
        assert f"{CANARY[0]} eu-west-1: invoked, no group reported" in execution["cause"]
        assert world.accounts_invoked() == CANARY
        # Silence waited out the whole timeout (15 polls), not a poll less.
        assert world.clock.now >= 900
        assert world.wave_item(ROLLOUT, 0)["counts"] == {"silent": 1}


def test_a_rollback_during_the_soak_still_halts():
    with rollout_world(TWO_WAVES, CANARY + REST, {CANARY[0]: LATE_ROLLBACK}) as world:
        world.deliver(image_message())
        execution = world.run_until_finished(EXECUTION)
        assert execution["status"] == "FAILED"
        assert f"{CANARY[0]} eu-west-1 ecs-batch: RollbackSuccessful" in execution["cause"]
        assert world.accounts_invoked() == CANARY
        # The canary had settled (all Successful) and was soaking when the rollback came.
        assert world.clock.now >= REFRESH_SECONDS + 1800


def test_a_manual_gate_waits_for_approve_and_then_the_next_wave_runs():
    waves = [wave("canary", CANARY, soak=600, approval="manual"), wave("rest", ["rest"], soak=0)]
    with rollout_world(waves, CANARY + REST) as world:
        world.deliver(image_message())
        world.clock.run_until(
            lambda: world.wave_item(ROLLOUT, 0).get("state") == "awaiting-approval", world.router
        )
        world.clock.settle()
        assert world.execution(EXECUTION)["status"] == "RUNNING"
        assert world.accounts_invoked() == CANARY
        (notice,) = world.alarm_messages()
        assert "python -m rollout approve 1.0.0/3" in notice["Message"]
        # Nothing is scheduled and nothing moves until a person answers.
        with pytest.raises(ClockStuckError):
            world.clock.run_until(lambda: False, world.router)
        assert world.accounts_invoked() == CANARY

        said = control("approve").approve(ROLLOUT, by="alice")
        assert said == "approved rollout 1.0.0/3 after wave 'canary': wave 'rest' begins"
        assert world.run_until_finished(EXECUTION)["status"] == "SUCCEEDED"
        assert world.accounts_invoked() == sorted(CANARY + REST)
        canary = world.wave_item(ROLLOUT, 0)
        assert (canary["state"], canary["approvedBy"]) == ("approved", "alice")
        with pytest.raises(ControlError, match="waits for no approval"):
            control("approve").approve(ROLLOUT, by="alice")


def test_abort_mid_wave_stops_the_execution_and_no_further_wave_starts():
    with rollout_world(TWO_WAVES, CANARY + REST) as world:
        world.deliver(image_message())
        world.clock.run_until(
            lambda: world.wave_item(ROLLOUT, 0).get("state") == "watching", world.router
        )
        said = control("abort").abort(ROLLOUT, by="bob")
        assert said.startswith("aborted rollout 1.0.0/3 during wave 'canary'")
        assert "groups mid-refresh finish or roll back on their own" in said
        world.clock.settle()
        execution = world.execution(EXECUTION)
        assert execution["status"] == "ABORTED"
        # The canary's refresh still ends on its own; the next wave never begins.
        world.clock.run_until(
            lambda: world.group_state(CANARY[0], ROLLOUT) == "Successful", world.router
        )
        with pytest.raises(ClockStuckError):
            world.clock.run_until(lambda: False, world.router)
        assert world.accounts_invoked() == CANARY
        assert world.wave_item(ROLLOUT, 0)["state"] == "aborted"
        assert world.wave_item(ROLLOUT, 1) == {}
        with pytest.raises(ControlError, match="no running execution"):
            control("abort").abort(ROLLOUT, by="bob")


def test_resume_after_a_halt_continues_with_the_next_wave_once():
    with rollout_world(TWO_WAVES, CANARY + REST, {CANARY[0]: ROLLS_BACK}) as world:
        world.deliver(image_message())
        assert world.run_until_finished(EXECUTION)["status"] == "FAILED"
        said = control("resume").resume(ROLLOUT, by="carol")
        assert said.startswith("resumed rollout 1.0.0/3: wave 'canary' stays halted")
        assert "execution rollout-1.0.0-3-from-1 continues with wave 1" in said
        resumed = world.run_until_finished("rollout-1.0.0-3-from-1")
        assert resumed["status"] == "SUCCEEDED"
        assert world.accounts_invoked() == sorted(CANARY + REST)
        assert world.wave_item(ROLLOUT, 0)["state"] == "resumed"
        assert world.wave_item(ROLLOUT, 1)["state"] == "passed"
        with pytest.raises(ControlError, match="is not halted"):
            control("resume").resume(ROLLOUT, by="carol")


def test_a_halt_at_the_last_wave_has_nothing_to_resume():
    waves = [wave("canary", CANARY), wave("rest", ["rest"], soak=0)]
    with rollout_world(waves, CANARY + REST, {REST[0]: ROLLS_BACK}) as world:
        world.deliver(image_message())
        assert world.run_until_finished(EXECUTION)["status"] == "FAILED"
        with pytest.raises(ControlError, match="halted at its last wave 'rest'"):
            control("resume").resume(ROLLOUT, by="carol")
        assert [e["name"] for e in world.executions()] == [EXECUTION]


def test_a_redelivered_notification_starts_no_second_execution():
    with rollout_world(TWO_WAVES, CANARY + REST) as world:
        world.deliver(image_message(), message_id="msg-1")
        world.deliver(image_message(), message_id="msg-1")  # SNS redelivery: same message
        world.clock.run_until(lambda: bool(world.executions()), world.router)
        assert world.run_until_finished(EXECUTION)["status"] == "SUCCEEDED"
        world.deliver(image_message(), message_id="msg-1")  # after it finished
        world.clock.run_until(lambda: world.router.pending == 0, world.router)
        assert [e["name"] for e in world.executions()] == [EXECUTION]
        assert world.accounts_invoked() == sorted(CANARY + REST)  # once each
        assert len(world.invoked) == len(CANARY + REST)


def test_a_newer_image_supersedes_the_older_rollout_before_its_next_wave():
    with rollout_world(TWO_WAVES, CANARY + REST) as world:
        world.deliver(image_message("1.0.0", 3), message_id="msg-old")
        world.clock.run_until(
            lambda: world.wave_item(ROLLOUT, 0).get("state") == "soaking", world.router
        )
        world.deliver(image_message("1.0.1", 1), message_id="msg-new")
        old = world.run_until_finished(EXECUTION)
        new = world.run_until_finished("rollout-1.0.1-1")
        assert (old["status"], new["status"]) == ("SUCCEEDED", "SUCCEEDED")
        superseded = world.wave_item(ROLLOUT, 1)
        assert superseded["state"] == "superseded"
        assert superseded["reason"] == (
            "superseded by the rollout of 1.0.1/1: stopped before wave 1"
        )
        assert world.accounts_invoked("1.0.0/3") == CANARY
        assert world.accounts_invoked("1.0.1/1") == sorted(CANARY + REST)


def test_the_operator_policy_grants_exactly_what_approve_abort_and_resume_call():
    if set(CLI_ACTIONS) != {"approve", "abort", "resume"}:
        pytest.skip("the approve, abort and resume tests did not all run in this session")
    policy = rollout_operator_policy(
        table_arn="arn:aws:dynamodb:eu-west-1:123456789012:table/t",
        state_machine_arn="arn:aws:states:eu-west-1:123456789012:stateMachine:m",
        executions_arn="arn:aws:states:eu-west-1:123456789012:execution:m:*",
    )
    granted = {
        action
        for statement in policy["Statement"]
        for action in (
            [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        )
    }
    assert set().union(*CLI_ACTIONS.values()) == granted


def test_a_fanout_that_cannot_reach_a_canary_account_is_retried_then_halts():
    broken = account_id(9)  # expected (the fan-out's list), but its enrolment is broken
    accounts = [*CANARY, broken, *REST]
    waves = [wave("canary", [*CANARY, broken]), wave("rest", ["rest"], soak=0)]
    with rollout_world(waves, accounts, unenrolled=[broken]) as world:
        world.deliver(image_message())
        execution = world.run_until_finished(EXECUTION)
        assert execution["status"] == "FAILED"
        assert "wave 'canary': FanoutFailedError" in execution["cause"]
        assert "1 (account, region) pairs failed" in execution["cause"]
        # The first attempt and two retries, each re-invoking the reachable canary account.
        fanouts = [t for t in world.timings if t[0] == FANOUT_FUNCTION]
        assert len(fanouts) == 3
        assert world.accounts_invoked() == CANARY
        assert world.wave_item(ROLLOUT, 1) == {}
