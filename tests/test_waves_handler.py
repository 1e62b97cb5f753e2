"""The waves Lambda's steps on moto, called as the state machine calls them (no interpreter).

tests/test_rollout_waves.py runs the same steps inside the real state machine; here each step is
one direct call, so the suite's IAM recorder sees every AWS call the handler makes even where
moto's ASL interpreter (antlr4) is not installed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from handlers.common.status import GroupStatus
from handlers.waves import app
from handlers.waves.logic import ConfigurationError, MalformedInputError
from rollout.__main__ import main

REGION = "eu-west-1"
TABLE = "golden-ami-rollout-status"
CANARY, OTHER = "222233334444", "333344445555"
WAVES = [
    {"name": "canary", "accounts": [CANARY], "soakSeconds": 600, "maxFailedGroups": 0,
     "approval": "manual", "timeoutSeconds": 300},
    {"name": "rest", "accounts": ["rest"], "soakSeconds": 0, "maxFailedGroups": 0,
     "approval": "auto", "timeoutSeconds": 300},
]  # fmt: skip
MESSAGE = {
    "arn": f"arn:aws:imagebuilder:{REGION}:123456789012:image/golden/1.0.0/3",
    "version": "1.0.0",
    "buildVersion": 3,
    "state": {"status": "AVAILABLE"},
}


@pytest.fixture
def world(monkeypatch) -> Iterator[dict]:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        table = session.resource("dynamodb").create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )  # fmt: skip
        sfn = session.client("stepfunctions")
        machine = sfn.create_state_machine(
            name="golden-ami-rollout-waves",
            definition=json.dumps({"StartAt": "S", "States": {"S": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/states",
        )["stateMachineArn"]
        sns = session.client("sns")
        topic = sns.create_topic(Name="alarms")["TopicArn"]
        for name, value in {
            "WAVES_JSON": json.dumps(WAVES),
            "POLL_SECONDS": "60",
            "TABLE_NAME": TABLE,
            "STATE_MACHINE_ARN": machine,
            "ALARM_TOPIC_ARN": topic,
        }.items():
            monkeypatch.setenv(name, value)
        yield {"session": session, "table": table, "sfn": sfn, "machine": machine}


def step(world: dict, action: str, state: dict, **extra) -> dict:
    event = {"action": action, "state": state, "executionArn": "arn:exec", **extra}
    return app.lambda_handler(event, None, world["session"])


def sns_event(message: dict, message_id: str = "m-1") -> dict:
    sns = {"MessageId": message_id, "Message": json.dumps(message)}
    return {"Records": [{"EventSource": "aws:sns", "Sns": sns}]}


def test_an_available_image_starts_one_execution_and_a_redelivery_none(world):
    first = app.lambda_handler(sns_event(MESSAGE), None, world["session"])
    assert first["started"] and first["rolloutId"] == "1.0.0/3"
    (execution,) = world["sfn"].list_executions(stateMachineArn=world["machine"])["executions"]
    assert execution["name"] == "rollout-1.0.0-3"
    # Running (plain moto never ends it): the same name and input answer the same execution.
    again = app.lambda_handler(sns_event(MESSAGE), None, world["session"])
    assert again["executionArn"] == first["executionArn"]
    # Once it has ended (stopped here), the name is taken: ExecutionAlreadyExists, no start.
    world["sfn"].stop_execution(executionArn=first["executionArn"])
    late = app.lambda_handler(sns_event(MESSAGE), None, world["session"])
    assert late == {"rolloutId": "1.0.0/3", "started": False, "executionName": "rollout-1.0.0-3"}
    assert len(world["sfn"].list_executions(stateMachineArn=world["machine"])["executions"]) == 1


def test_a_failed_build_starts_nothing(world):
    failed = MESSAGE | {"state": {"status": "FAILED", "reason": "boom"}}
    assert app.lambda_handler(sns_event(failed), None, world["session"]) == {
        "status": "FAILED",
        "started": False,
    }
    assert world["sfn"].list_executions(stateMachineArn=world["machine"])["executions"] == []


def test_steps_record_the_wave_judge_it_and_halt_with_the_reason(world):
    start = {"rolloutId": "1.0.0/3", "waveIndex": 0, "startWave": 0}
    state = step(world, "begin", start)
    assert state["next"] == "fanout"
    assert state["wave"]["accountFilter"] == {"include": [CANARY]}
    state["fanout"] = {
        "accounts": [{"accountId": CANARY, "regions": {REGION: "invoked"}}],
        "counts": {"invoked": 1},
    }
    state = step(world, "record", state)
    assert "fanout" not in state
    assert step(world, "check", state, stage="settle")["next"] == "wait"  # silent so far
    status = GroupStatus(CANARY, REGION, "ecs", "RollbackSuccessful", "2026-11-29T10:05:00Z")
    world["table"].put_item(Item=status.to_item("1.0.0/3"))
    state = step(world, "check", state, stage="settle")
    assert state["next"] == "halt"
    halted = step(world, "halt", state)
    assert "RollbackSuccessful" in halted["reason"]
    item = world["table"].get_item(Key={"pk": "ROLLOUT#1.0.0/3", "sk": "WAVE#00"})["Item"]
    assert (item["state"], item["invoked"]) == ("halted", [f"{CANARY}#{REGION}"])


def test_a_passed_manual_wave_stores_its_token_and_a_newer_rollout_supersedes(world):
    state = step(world, "begin", {"rolloutId": "1.0.0/3", "waveIndex": 0, "startWave": 0})
    state["fanout"] = {"accounts": [], "counts": {"invoked": 0}}
    state = step(world, "record", state)
    state = step(world, "check", state, stage="settle")
    assert state["next"] == "soak"  # nothing invoked: nothing to wait for
    state = step(world, "check", state, stage="soak")
    assert (state["next"], state["waveIndex"]) == ("approve", 1)
    assert step(world, "await-approval", state, taskToken="token-1") == {"awaiting": True}
    item = world["table"].get_item(Key={"pk": "ROLLOUT#1.0.0/3", "sk": "WAVE#00"})["Item"]
    assert (item["state"], item["taskToken"], item["nextWave"]) == (
        "awaiting-approval",
        "token-1",
        "rest",
    )
    step(world, "begin", {"rolloutId": "1.0.1/1", "waveIndex": 0, "startWave": 0})
    stopped = step(world, "begin", state)
    assert stopped["next"] == "superseded"
    assert stopped["reason"] == "superseded by the rollout of 1.0.1/1: stopped before wave 1"


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"action": "dance", "state": {}}, "expected an SNS delivery or"),
        ({"action": "begin"}, "expected an SNS delivery or"),
        ({"action": "check", "state": {"rolloutId": "1.0.0/3", "wave": {"index": 0}}},
         "check stage None is not 'settle' or 'soak'"),
        ({"action": "await-approval", "state": {"rolloutId": "1.0.0/3", "wave": {"index": 0}}},
         "needs the task token"),
    ],
)  # fmt: skip
def test_malformed_steps_are_refused(world, event, problem):
    with pytest.raises(MalformedInputError, match=problem):
        app.lambda_handler(event, None, world["session"])


def test_a_broken_environment_is_refused_before_any_call(world, monkeypatch):
    monkeypatch.setenv("WAVES_JSON", "[]")
    with pytest.raises(ConfigurationError, match="lists no wave"):
        app.lambda_handler(sns_event(MESSAGE), None, world["session"])


def test_the_cli_says_why_it_did_nothing_and_exits_1(world, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    out = io.StringIO()
    assert main(["abort", "1.0.0/3", "--table", TABLE, "--as", "dana"], out) == 1
    assert out.getvalue() == (
        "rollout abort: nothing done: no rollout '1.0.0/3' in the table (no wave began)\n"
    )
    step(world, "begin", {"rolloutId": "1.0.0/3", "waveIndex": 0, "startWave": 0})
    out = io.StringIO()
    monkeypatch.setenv("GOLDEN_AMI_ROLLOUT_TABLE", TABLE)
    assert main(["resume", "1.0.0/3"], out) == 1
    assert "is not halted (canary invoking): nothing to resume" in out.getvalue()
