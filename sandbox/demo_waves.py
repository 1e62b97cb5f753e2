"""The demo's last part: a progressive rollout in two waves (DESIGN §10 "Waves", `make demo`).

It runs in the story's own world, after the story: the same accounts, stacks, emulators and
clock. The infra stack's `rolloutWaves` state machine (components/rollout_definition.py) runs on
moto's ASL interpreter; its Lambda tasks are the real waves handler and the infra stack's
deployed fan-out, which invokes the real refresh function in each workload account. The
refreshes run on the instance refresh emulator with AutoRollback on the ECS error alarm (ECS
events → rule → log group → metric filter → alarm); their ends go over the event buses to the
real recorder, which writes the rollout table the wave checker reads. The state machine's waits
and the story's minute ticks are one clock: each tick moves both a minute on.

Waves: canary = the account whose services fail on new AMIs, rest = every other account.

  image A: the canary's services fail, its alarm rolls the refresh back → the rollout halts,
           no account of the rest wave is invoked;
  image B: the canary's services run on it, the canary succeeds, soaks, and the rest wave
           completes the rollout.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from moto.moto_api._internal import mock_random

from components.policies import (
    lambda_log_group_arn,
    lambda_trust_policy,
    rollout_waves_function_policy,
)
from components.rollout_definition import state_machine_definition
from handlers.common.status import ROLLOUT_PREFIX
from handlers.waves import app as waves_app
from handlers.waves import logic as waves_logic
from rollout import status as rollout_status
from sandbox.lambda_invoke import LambdaFunction
from sandbox.step_functions import EmulatedClock
from sandbox.waves_world import wave

if TYPE_CHECKING:
    from sandbox.demo import Account, Story

SOAK_MINUTES = 30
POLL_SECONDS = 60
STATE_MACHINE = "golden-ami-rollout-waves"
WAVES_FUNCTION = "golden-ami-rollout-waves"
# Two more payload releases: image A, then image B.
IMAGE_A_PAYLOADS = (("payloads/30-ecs-agent.sh", "#!/bin/bash\ndnf -y install ecs-init\n"),)
IMAGE_B_PAYLOADS = (("payloads/30-ecs-agent.sh", "#!/bin/bash\ndnf -y install ecs-init-1.89.0\n"),)
WAVE_STARTED = {waves_logic.INVOKING, waves_logic.WATCHING}
# The wave item's state (handlers/waves), told as what happened.
WAVE_MEANING = {
    waves_logic.INVOKING: "started, fan-out to its accounts",
    waves_logic.WATCHING: "started, watching its groups",
    waves_logic.SOAKING: f"settled, soaking {SOAK_MINUTES} min",
    waves_logic.PASSED: "passed",
    waves_logic.HALTED: "HALTED, no further wave",
}


@dataclass
class WaveRollouts:
    """The state machine and waves function beside the story's stacks, and what they did."""

    story: Story
    clock: EmulatedClock
    sfn: Any
    table: Any
    state_machine_arn: str
    alarm_queue_url: str
    fanout_arn: str
    _seen: dict[tuple[str, str], str] = field(default_factory=dict)
    _invocations: int = 0

    def note(self, account: str, step: str, result: str) -> None:
        self.story.note(account, step, result)

    def refresh_invocations(self, rollout_id: str) -> list[str]:
        """The workload accounts whose refresh function was invoked for the image."""
        return [
            self.story._name_of(i.function_arn.split(":")[4])
            for i in self.story.router.invocations
            if isinstance(i.event, dict)
            and "amis" in i.event
            and i.event.get("imageVersion") == rollout_id
        ]

    def observe(self) -> None:
        # The state machine's fan-out calls (synchronous, so no drained invocation tells them).
        invocations = self.story.router.invocations
        for invocation in invocations[self._invocations :]:
            if invocation.function_arn == self.fanout_arn:
                for account, step, result in self.story._describe(invocation):
                    self.note(account, f"{step} (wave)", result)
        self._invocations = len(invocations)
        items = sorted(_scan(self.table), key=lambda i: (i["pk"], i["sk"]))
        waves = [i for i in items if i["sk"].startswith(waves_logic.WAVE_PREFIX) and "name" in i]
        last = {i["pk"]: i["index"] for i in waves}  # sorted: the rollout's newest wave
        self._waves([i for i in waves if i["state"] in WAVE_STARTED or i["index"] < last[i["pk"]]])
        self._waves(waves)

    def _changed(self, item: dict[str, Any]) -> bool:
        key = (item["pk"], item["sk"])
        changed = self._seen.get(key) != item["state"]
        self._seen[key] = item["state"]
        return changed

    def _waves(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            if self._changed(item):
                rollout_id = item["pk"].removeprefix(ROLLOUT_PREFIX)
                meaning = WAVE_MEANING.get(item["state"], item["state"])
                reason = f" — {item['reason']}" if item.get("reason") else ""
                self.note(
                    "infra",
                    "rollout wave",
                    f"{rollout_id} wave {item['index']} '{item['name']}': {meaning}{reason}",
                )

    def execution(self, name: str) -> dict[str, Any] | None:
        arn = f"{self.state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"
        try:
            return self.sfn.describe_execution(executionArn=arn)
        except self.sfn.exceptions.ExecutionDoesNotExist:
            return None

    def run(self, image: dict[str, Any]) -> dict[str, Any]:
        """SNS delivers the image notification to the waves function; play it to its end."""
        message = image["message"]
        version, build = message["version"], message["buildVersion"]
        name = f"rollout-{version}-{build}"
        self.story.deliver_to_waves(message, WAVES_FUNCTION)
        deadline = self.story.now + timedelta(hours=6)
        while True:
            self.clock.settle()
            self.story.run_invocations()
            if self.story.router.pending:
                continue
            self.observe()
            execution = self.execution(name)
            if execution is not None and execution["status"] != "RUNNING":
                # Its thread ends before the story goes on: it draws on moto's seeded ids too.
                self.clock.settle()
                break
            if self.story.now >= deadline:
                raise RuntimeError(f"execution {name} did not finish within 6 hours")
            self.story.tick()
            self.clock.step(60)
        result = execution["status"]
        if execution.get("error"):
            result += f" ({execution['error']}: {execution.get('cause', '')})"
        self.note("infra", "state machine", f"execution {name}: {result}")
        for notice in self.alarm_messages():
            self.note("infra", "alarm topic", notice["Subject"])
        # What the refreshes leave under way (a rollback's alarm returning to OK) plays out.
        self.story.settle()
        return execution

    def alarm_messages(self) -> list[dict[str, Any]]:
        sqs = self.story.infra.client("sqs")
        messages = []
        while True:
            batch = sqs.receive_message(QueueUrl=self.alarm_queue_url, MaxNumberOfMessages=10)
            if not batch.get("Messages"):
                return messages
            messages += [json.loads(m["Body"]) for m in batch["Messages"]]
            for m in batch["Messages"]:
                sqs.delete_message(QueueUrl=self.alarm_queue_url, ReceiptHandle=m["ReceiptHandle"])


def tell(story: Story, out: TextIO | None) -> dict[str, Any]:
    """Run both rollouts in the story's world; print their status tables to `out`.

    Returns the report's `waves` section: the wave list and, per rollout, the CLI's JSON.
    """
    story.timeline.heading("Progressive rollout: canary wave, then the rest")
    canary = next(a for a in story.workloads if a.fails_on_new_image)
    rest = [a for a in story.workloads if a is not canary]
    waves = [
        wave("canary", [canary.account_id], soak=SOAK_MINUTES * 60),
        wave("rest", ["rest"], soak=0),
    ]
    logging.getLogger("moto.stepfunctions").setLevel(logging.CRITICAL)
    infra = story.infra
    sfn = infra.client("stepfunctions")
    with EmulatedClock(sfn) as clock:
        rollouts = _install(story, waves, clock, sfn)
        story.note(
            "infra",
            "note",
            f"rolloutWaves: canary = {canary.name} (soak {SOAK_MINUTES} min), rest = "
            f"{', '.join(a.name for a in rest)}; {canary.name}'s services fail on image A "
            "and run on image B",
        )
        image_a = _build(story, IMAGE_A_PAYLOADS, 1)
        rollouts.run(image_a)
        rollout_a = _rollout_id(image_a)
        reached = [n for n in rollouts.refresh_invocations(rollout_a) if n != canary.name]
        story.note(
            "infra",
            "rollout wave",
            f"{rollout_a} wave 1 'rest': never started — {len(reached)} of its "
            f"{len(rest)} accounts invoked",
        )
        _services_run_on_current_images(canary)
        image_b = _build(story, IMAGE_B_PAYLOADS, 2)
        rollouts.run(image_b)
        tables, reports = [], []
        for image in (image_a, image_b):
            rollout_id = _rollout_id(image)
            args = rollout_status.parse(["--table", story._rollout_table(), rollout_id])
            printed = io.StringIO()
            rollout_status.run(args, printed, session=infra.session, now=story.now)
            tables.append((rollout_id, printed.getvalue()))
            table = rollout_status.StatusTable(infra.session, story._rollout_table())
            reports.append(rollout_status.build_report(table, rollout_id, story.now).as_json())
        for execution in sfn.list_executions(stateMachineArn=rollouts.state_machine_arn)[
            "executions"
        ]:
            if execution["status"] == "RUNNING":  # none may outlive the moto world
                sfn.stop_execution(executionArn=execution["executionArn"])
    if out is not None:
        for rollout_id, printed in tables:
            out.write(f"\n== Rollout status (python -m rollout status {rollout_id})\n{printed}")
    return {
        "waves": [{"name": w["name"], "accounts": w["accounts"]} for w in waves],
        "rollouts": reports,
        "invoked": {
            _rollout_id(image): rollouts.refresh_invocations(_rollout_id(image))
            for image in (image_a, image_b)
        },
    }


def _build(story: Story, payloads: tuple[tuple[str, str], ...], release: int) -> dict[str, Any]:
    """Build the release's image with moto's ids seeded again: an execution's thread and the
    story's own calls may draw on them in either order while a StartExecution answers, and the
    timeline names the image's AMIs."""
    mock_random.seed(story.options.seed + release)
    return story.build_released(payloads)


def _services_run_on_current_images(account: Account) -> None:
    """Image B fixes what broke the canary's services: from now they run on any image."""
    account.fails_on_new_image = False


def _rollout_id(image: dict[str, Any]) -> str:
    return f"{image['message']['version']}/{image['message']['buildVersion']}"


def _install(
    story: Story, waves: list[dict[str, Any]], clock: EmulatedClock, sfn: Any
) -> WaveRollouts:
    """What the infra stack's RolloutWaves component creates: the waves function and its role,
    the state machine and its role; and an inbox on the alarm topic the halts notify."""
    infra, region = story.infra, story.infra.client("sts").meta.region_name
    account_id = infra.account_id
    table_name = story._rollout_table()
    table = infra.session.resource("dynamodb").Table(table_name)
    sns, sqs, iam = infra.client("sns"), infra.client("sqs"), infra.client("iam")
    topic_arn = sns.create_topic(Name="golden-ami-rollout-alarms")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="rollout-alarm-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    # The fan-out the image-state topic invokes without waves; with waves, the state machine.
    fanout_arn = next(
        s.endpoint
        for s in story.infra_stack.subscriptions
        if s.topic_arn == story.topic_arn and s.protocol == "lambda"
    )
    waves_arn = f"arn:aws:lambda:{region}:{account_id}:function:{WAVES_FUNCTION}"
    machine_role = iam.create_role(
        RoleName="golden-ami-rollout-machine",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "states.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    state_machine_arn = sfn.create_state_machine(
        name=STATE_MACHINE,
        type="STANDARD",
        roleArn=machine_role,
        definition=json.dumps(state_machine_definition(waves_arn, fanout_arn)),
    )["stateMachineArn"]
    role_arn = iam.create_role(
        RoleName="golden-ami-rollout-waves",
        AssumeRolePolicyDocument=json.dumps(lambda_trust_policy()),
    )["Role"]["Arn"]
    table_arn = table.table_arn
    iam.put_role_policy(
        RoleName="golden-ami-rollout-waves",
        PolicyName="waves",
        PolicyDocument=json.dumps(
            rollout_waves_function_policy(
                table_arn=table_arn,
                state_machine_arn=state_machine_arn,
                alarm_topic_arn=topic_arn,
                log_group_arn=lambda_log_group_arn(region, account_id, WAVES_FUNCTION),
            )
        ),
    )
    story.router.register(
        LambdaFunction(
            account_id,
            region,
            WAVES_FUNCTION,
            waves_app.lambda_handler,
            role_arn,
            environment={
                "WAVES_JSON": json.dumps(waves),
                "POLL_SECONDS": str(POLL_SECONDS),
                "TABLE_NAME": table_name,
                "STATE_MACHINE_ARN": state_machine_arn,
                "ALARM_TOPIC_ARN": topic_arn,
            },
        )
    )
    rollouts = WaveRollouts(story, clock, sfn, table, state_machine_arn, queue_url, fanout_arn)
    rollouts._invocations = len(story.router.invocations)  # the story's fan-outs are told
    return rollouts


def _scan(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {}
    while True:
        page = table.scan(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
