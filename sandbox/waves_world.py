"""A progressive rollout on moto: the real state machine, waves Lambda and fan-out, stand-in fleets.

Used by tests/test_rollout_waves.py and by the benchmark (`python -m bench`). Needs moto's ASL
interpreter (antlr4-python3-runtime, in requirements.txt).

The RolloutWaves definition runs on moto's ASL interpreter; its Lambda tasks reach the real
waves and fan-out handlers through `sandbox.lambda_invoke`; Wait states run on
`sandbox.step_functions.EmulatedClock`. Each workload account's refresh function is a stand-in
for "refresh handler + recorder": on invoke it writes the group's `started` status to the rollout
table and, `refresh_seconds` of emulated time later, its end state, both with the contract's
`GroupStatus(...).to_item()` (handlers/common/status.py). What each account does is its
`Behaviour`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto import mock_aws
from moto.iam.models import iam_backends

from components.policies import invoke_role_policy, lambda_trust_policy
from components.rollout_definition import state_machine_definition
from handlers.common.status import GroupStatus
from handlers.fanout import app as fanout_app
from handlers.waves import app as waves_app
from handlers.waves.logic import wave_key
from sandbox.lambda_invoke import LambdaFunction, LambdaRouter
from sandbox.step_functions import EmulatedClock

INFRA = "123456789012"  # moto's default account: the state machine calls Lambda as it
REGION = "eu-west-1"
TABLE = "golden-ami-rollout"
STATE_MACHINE = "golden-ami-rollout-waves"
WAVES_FUNCTION = "golden-ami-rollout-waves"
FANOUT_FUNCTION = "golden-ami-fanout"
REFRESH_FUNCTION = "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
INVOKE_ROLE = "InvokeInstanceRefreshHandlerRole"
POLL_SECONDS = 60
REFRESH_SECONDS = 120
CLOCK_ORIGIN = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)

HEALTHY, ROLLS_BACK, SILENT, LATE_ROLLBACK = "healthy", "rolls-back", "silent", "late-rollback"


def account_id(n: int) -> str:
    return f"{200000000000 + n:012d}"


def image_message(version: str = "1.0.0", build: int = 3) -> dict[str, Any]:
    return {
        "arn": f"arn:aws:imagebuilder:{REGION}:{INFRA}:image/golden-ecs-al2023/{version}/{build}",
        "name": "golden-ecs-al2023",
        "version": version,
        "buildVersion": build,
        "semver": 1237940039285380274899124227,
        "state": {"status": "AVAILABLE"},
        "outputResources": {
            "amis": [{"region": REGION, "image": "ami-0123456789abcdef0", "accountId": INFRA}]
        },
    }


def sns_delivery(message: dict[str, Any], message_id: str = "msg-1") -> dict[str, Any]:
    topic = f"arn:aws:sns:{REGION}:{INFRA}:golden-ami-image-state"
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventSubscriptionArn": f"{topic}:sub",
                "Sns": {"MessageId": message_id, "TopicArn": topic, "Message": json.dumps(message)},
            }
        ]
    }


def wave(name: str, accounts: Sequence[str], **settings: Any) -> dict[str, Any]:
    """A WAVES_JSON entry (seconds, as the component writes it)."""
    return {
        "name": name,
        "accounts": list(accounts),
        "soakSeconds": settings.get("soak", 1800),
        "maxFailedGroups": settings.get("max_failed", 0),
        "approval": settings.get("approval", "auto"),
        "timeoutSeconds": settings.get("timeout", 3600),
    }


@dataclass
class RolloutWorld:
    router: LambdaRouter
    clock: EmulatedClock
    sfn: Any
    table: Any
    alarm_queue_url: str
    state_machine_arn: str
    behaviour: dict[str, str] = field(default_factory=dict)
    origin: datetime = CLOCK_ORIGIN  # the wall-clock time of emulated second 0
    invoked: list[tuple[str, str]] = field(default_factory=list)  # (account, rollout id)
    # (function, what it was asked, wall-clock start, seconds) of every handler run
    timings: list[tuple[str, str, float, float]] = field(default_factory=list)

    def timed(self, name: str, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def run(event: Any, context: Any) -> Any:
            asked = (
                event.get("action", "sns" if "Records" in event else "")
                if isinstance(event, dict)
                else ""
            )
            started = time.perf_counter()
            try:
                return handler(event, context)
            finally:
                self.timings.append((name, asked, started, time.perf_counter() - started))

        return run

    # --- the outside world ----------------------------------------------------------------

    def at(self, seconds: float) -> str:
        return (self.origin + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def report(self, account: str, rollout_id: str, state: str, group: str = "ecs") -> None:
        status = GroupStatus(account, REGION, group, state, self.at(self.clock.now), reason="")
        self.table.put_item(Item=status.to_item(rollout_id))

    def later(
        self, delay: float, account: str, rollout_id: str, state: str, group: str = "ecs"
    ) -> None:
        """The refresh's end, reported `delay` emulated seconds on (timed as workload work)."""

        def report() -> None:
            started = time.perf_counter()
            self.report(account, rollout_id, state, group)
            self.timings.append(("refresh-end", state, started, time.perf_counter() - started))

        self.clock.at(delay, report)

    def workload_handler(self, account: str) -> Any:
        def refresh(event: dict[str, Any], _context: Any) -> dict[str, Any]:
            rollout_id = event["imageVersion"]
            self.invoked.append((account, rollout_id))
            behaviour = self.behaviour.get(account, HEALTHY)
            if behaviour == SILENT:
                return {"results": []}
            self.report(account, rollout_id, "started")
            end = "RollbackSuccessful" if behaviour == ROLLS_BACK else "Successful"
            self.later(REFRESH_SECONDS, account, rollout_id, end)
            if behaviour == LATE_ROLLBACK:
                # A second group whose refresh ran later rolls back during the wave's soak.
                self.later(
                    REFRESH_SECONDS + 900, account, rollout_id, "RollbackSuccessful", "ecs-batch"
                )
            return {"results": []}

        return refresh

    # --- driving ----------------------------------------------------------------------------

    def deliver(self, message: dict[str, Any], message_id: str = "msg-1") -> None:
        """SNS delivers the image notification to the waves function (asynchronously)."""
        boto3.client("lambda", region_name=REGION).invoke(
            FunctionName=WAVES_FUNCTION,
            InvocationType="Event",
            Payload=json.dumps(sns_delivery(message, message_id)).encode(),
        )

    def executions(self) -> list[dict[str, Any]]:
        listed = self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]
        return sorted(listed, key=lambda e: e["name"])

    def execution(self, name: str) -> dict[str, Any]:
        arn = f"{self.state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"
        return self.sfn.describe_execution(executionArn=arn)

    def finished(self, name: str) -> bool:
        try:
            return self.execution(name)["status"] != "RUNNING"
        except self.sfn.exceptions.ExecutionDoesNotExist:
            return False

    def run_until_finished(self, name: str) -> dict[str, Any]:
        self.clock.run_until(lambda: self.finished(name), self.router)
        return self.execution(name)

    def wave_item(self, rollout_id: str, index: int) -> dict[str, Any]:
        key = {"pk": f"ROLLOUT#{rollout_id}", "sk": wave_key(index)}
        return self.table.get_item(Key=key).get("Item", {})

    def group_state(self, account: str, rollout_id: str, group: str = "ecs") -> str | None:
        key = {"pk": f"ROLLOUT#{rollout_id}", "sk": f"GROUP#{account}#{REGION}#{group}"}
        return self.table.get_item(Key=key).get("Item", {}).get("state")

    def accounts_invoked(self, rollout_id: str = "1.0.0/3") -> list[str]:
        return sorted({a for a, r in self.invoked if r == rollout_id})

    def alarm_messages(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs", region_name=REGION)
        messages = []
        while True:
            batch = sqs.receive_message(QueueUrl=self.alarm_queue_url, MaxNumberOfMessages=10)
            if not batch.get("Messages"):
                return messages
            messages += [json.loads(m["Body"]) for m in batch["Messages"]]
            for m in batch["Messages"]:
                sqs.delete_message(QueueUrl=self.alarm_queue_url, ReceiptHandle=m["ReceiptHandle"])


def enroll(account: str) -> None:
    """The workload stack's invoke role, as IAM holds it (the router evaluates its policy).

    Written to moto's IAM backend directly: a thousand accounts through the API would cost a
    session per account, and the role is set-up, not what the tests exercise.
    """
    iam = iam_backends[account]["global"]
    iam.create_role(INVOKE_ROLE, json.dumps(lambda_trust_policy()), "/", None, "", [], None)
    iam.put_role_policy(
        INVOKE_ROLE, "invoke", json.dumps(invoke_role_policy(account, REFRESH_FUNCTION))
    )


@contextmanager
def rollout_world(
    waves: Sequence[dict[str, Any]],
    accounts: Sequence[str],
    behaviour: dict[str, str] | None = None,
    unenrolled: Sequence[str] = (),
    origin: datetime = CLOCK_ORIGIN,
) -> Iterator[RolloutWorld]:
    """`unenrolled`: accounts without the workload stack's invoke role (IAM denies the invoke);
    `origin`: when emulated second 0 is (the times the stand-ins report)."""
    # moto logs every failed state at ERROR with the whole state tree: keep the output readable.
    logging.getLogger("moto.stepfunctions").setLevel(logging.CRITICAL)
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with ExitStack() as stack:
        stack.enter_context(mock_aws(config=config))
        router = stack.enter_context(LambdaRouter().installed())
        # The interpreter's threads call boto3.client(): a default session made before the
        # router's hooks were installed would not route their Lambda calls.
        saved_session, boto3.DEFAULT_SESSION = boto3.DEFAULT_SESSION, None
        stack.callback(setattr, boto3, "DEFAULT_SESSION", saved_session)

        dynamodb = boto3.resource("dynamodb", region_name=REGION)
        table = dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        topic_arn = sns.create_topic(Name="golden-ami-alarms")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="alarm-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "false"},
        )

        iam = boto3.client("iam", region_name=REGION)
        trust = json.dumps({"Version": "2012-10-17", "Statement": []})
        role_arn = {
            name: iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
            for name in ("waves", "fanout", "states", "refresh")
        }
        functions = {
            name: f"arn:aws:lambda:{REGION}:{INFRA}:function:{name}"
            for name in (WAVES_FUNCTION, FANOUT_FUNCTION)
        }
        sfn = boto3.client("stepfunctions", region_name=REGION)
        state_machine_arn = sfn.create_state_machine(
            name=STATE_MACHINE,
            type="STANDARD",
            roleArn=role_arn["states"],
            definition=json.dumps(
                state_machine_definition(functions[WAVES_FUNCTION], functions[FANOUT_FUNCTION])
            ),
        )["stateMachineArn"]
        clock = stack.enter_context(EmulatedClock(sfn))
        world = RolloutWorld(
            router=router,
            clock=clock,
            sfn=sfn,
            table=table,
            alarm_queue_url=queue_url,
            state_machine_arn=state_machine_arn,
            behaviour=dict(behaviour or {}),
            origin=origin,
        )
        router.register(
            LambdaFunction(
                INFRA,
                REGION,
                WAVES_FUNCTION,
                world.timed(WAVES_FUNCTION, waves_app.lambda_handler),
                role_arn["waves"],
                environment={
                    "WAVES_JSON": json.dumps(list(waves)),
                    "POLL_SECONDS": str(POLL_SECONDS),
                    "TABLE_NAME": TABLE,
                    "STATE_MACHINE_ARN": state_machine_arn,
                    "ALARM_TOPIC_ARN": topic_arn,
                },
            )
        )
        router.register(
            LambdaFunction(
                INFRA,
                REGION,
                FANOUT_FUNCTION,
                world.timed(FANOUT_FUNCTION, fanout_app.lambda_handler),
                role_arn["fanout"],
                environment={
                    "INVOKE_ROLE_NAME": INVOKE_ROLE,
                    "TARGET_FUNCTION_NAME": REFRESH_FUNCTION,
                    "ACCOUNT_SOURCE": "static",
                    "STATIC_ACCOUNT_IDS": ",".join(accounts),
                    "EXPECTED_ACCOUNT_IDS": ",".join(accounts),
                    "MAX_CONCURRENCY": "32",
                },
                timeout_seconds=900,
            )
        )
        for account in accounts:
            if account not in unenrolled:
                enroll(account)
            router.register(
                LambdaFunction(
                    account,
                    REGION,
                    REFRESH_FUNCTION,
                    world.timed(REFRESH_FUNCTION, world.workload_handler(account)),
                    f"arn:aws:iam::{account}:role/refresh",
                )
            )
        yield world
        # No execution may outlive its moto world: stop what a failing test left running.
        for execution in world.executions():
            if execution["status"] == "RUNNING":
                sfn.stop_execution(executionArn=execution["executionArn"])
