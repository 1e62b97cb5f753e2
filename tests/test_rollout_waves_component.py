"""RolloutWaves under Pulumi mocks: state machine and role, waves Lambda, operator policy.

The state machine's role is checked against its own definition: it may invoke exactly the
functions the Task states name (the interpreter's calls are not Python handler calls, so the
suite-wide IAM recorder cannot see them).
"""

from __future__ import annotations

import json
from functools import cache

import pulumi

from components.config import RolloutWave
from components.rollout_definition import LAMBDA_INVOKE
from components.rollout_waves import RolloutWaves, RolloutWavesArgs
from tests.pulumi_harness import StackRun, run_program

ACCOUNT = "111122223333"
NAME = "golden-ami-rollout-waves"
TABLE_ARN = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/golden-ami-rollout-status"
TOPIC = f"arn:aws:sns:eu-west-1:{ACCOUNT}:golden-ami-image-state"
ALARMS = f"arn:aws:sns:eu-west-1:{ACCOUNT}:platform-alerts"
FANOUT = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:golden-ami-fanout"
WAVES_FUNCTION = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{NAME}"
MACHINE = f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:{NAME}"
WAVES = (
    RolloutWave(name="canary", accounts=("222233334444",), soak_minutes=30, approval="manual"),
    RolloutWave(name="rest", accounts=("rest",), max_failed_groups=2, timeout_minutes=120),
)


@cache
def deploy() -> StackRun:
    def program() -> None:
        waves = RolloutWaves(
            NAME,
            RolloutWavesArgs(
                environment_name="golden-ami",
                region="eu-west-1",
                infra_account_id=ACCOUNT,
                waves=WAVES,
                table_name="golden-ami-rollout-status",
                table_arn=TABLE_ARN,
                fanout_function_arn=FANOUT,
                image_topic_arn=TOPIC,
                log_retention_days=30,
                alarm_topic_arn=ALARMS,
            ),
        )
        pulumi.export("stateMachineArn", waves.state_machine_arn)
        pulumi.export("operatorPolicyArn", waves.operator_policy_arn)

    return run_program(program, account_id=ACCOUNT, region="eu-west-1")


def _definition(run: StackRun) -> dict:
    return json.loads(run.one("aws:sfn/stateMachine:StateMachine")["definition"])


def test_a_standard_state_machine_named_as_the_waves_lambda_expects():
    run = deploy()
    machine = run.one("aws:sfn/stateMachine:StateMachine")
    assert (machine["name"], machine["type"]) == (NAME, "STANDARD")
    assert run.outputs["stateMachineArn"] == MACHINE
    function = run.one("aws:lambda/function:Function")
    assert function["environment"]["variables"]["STATE_MACHINE_ARN"] == MACHINE


def test_the_waves_lambda_gets_the_waves_in_seconds_and_starts_from_the_image_topic():
    run = deploy()
    variables = run.one("aws:lambda/function:Function")["environment"]["variables"]
    assert json.loads(variables["WAVES_JSON"]) == [
        {"name": "canary", "accounts": ["222233334444"], "soakSeconds": 1800,
         "maxFailedGroups": 0, "approval": "manual", "timeoutSeconds": 3600},
        {"name": "rest", "accounts": ["rest"], "soakSeconds": 0, "maxFailedGroups": 2,
         "approval": "auto", "timeoutSeconds": 7200},
    ]  # fmt: skip
    assert variables["TABLE_NAME"] == "golden-ami-rollout-status"
    assert variables["ALARM_TOPIC_ARN"] == ALARMS
    subscription = run.one("aws:sns/topicSubscription:TopicSubscription")
    assert (subscription["topic"], subscription["endpoint"]) == (TOPIC, WAVES_FUNCTION)
    permission = run.one("aws:lambda/permission:Permission")
    assert (permission["principal"], permission["sourceArn"]) == ("sns.amazonaws.com", TOPIC)


def test_the_state_machine_role_invokes_exactly_the_functions_its_tasks_name():
    run = deploy()
    invoked = {
        state["Parameters"]["FunctionName"]
        for state in _definition(run)["States"].values()
        if state.get("Resource", "").startswith(LAMBDA_INVOKE)
    }
    assert invoked == {WAVES_FUNCTION, FANOUT}
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "machine").json("policy")
    assert policy["Statement"] == [
        {"Sid": "InvokeRolloutSteps", "Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": sorted(invoked)},
    ]  # fmt: skip
    trust = run.one("aws:iam/role:Role", "machine").json("assumeRolePolicy")["Statement"]
    assert trust == [
        {"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"},
         "Action": "sts:AssumeRole",
         "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}},
    ]  # fmt: skip


def test_the_waves_lambda_role_is_scoped_to_the_table_the_machine_and_the_alarm_topic():
    statements = {
        s["Sid"]: s
        for s in deploy()
        .one("aws:iam/rolePolicy:RolePolicy", "function")
        .json("policy")["Statement"]
    }
    assert statements["KeepWaveRecords"]["Resource"] == TABLE_ARN
    assert statements["StartRolloutPerImage"]["Resource"] == MACHINE
    assert statements["NotifyHaltsAndGates"]["Resource"] == ALARMS


def test_the_operator_policy_covers_exactly_what_the_cli_calls():
    policy = deploy().one("aws:iam/policy:Policy").json("policy")
    granted = {
        (action, statement["Resource"])
        for statement in policy["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str)
                       else statement["Action"])
    }  # fmt: skip
    executions = f"arn:aws:states:eu-west-1:{ACCOUNT}:execution:{NAME}:*"
    assert granted == {
        ("dynamodb:Query", TABLE_ARN),
        ("dynamodb:UpdateItem", TABLE_ARN),
        ("states:SendTaskSuccess", "*"),  # no resource-level permission
        ("states:StartExecution", MACHINE),
        ("states:DescribeExecution", executions),
        ("states:StopExecution", executions),
    }


def test_every_child_belongs_to_the_component():
    run = deploy()
    component = run.one("golden-ami:rollout_waves:RolloutWaves")
    for resource in run.resources:
        if resource is not component:
            assert resource.parent == component.urn, resource.name
            assert resource.name.startswith(f"{NAME}-"), resource.name


WAVES_CONFIG = {
    "rolloutWaves": [
        {"name": "canary", "accounts": ["222233334444"], "soakMinutes": 30},
        {"name": "rest", "accounts": ["rest"]},
    ]
}


def _subscribed_functions(run: StackRun) -> set[str]:
    return {
        s["endpoint"].rsplit(":", 1)[-1]
        for s in run.resources_of_type("aws:sns/topicSubscription:TopicSubscription")
        if s["protocol"] == "lambda"
    }


def test_without_waves_the_fanout_follows_the_image_topic_and_no_state_machine_exists(stack_run):
    run = stack_run("infra")
    assert run.resources_of_type("golden-ami:rollout_waves:RolloutWaves") == []
    assert "Lambda-Invoke-Another-LambdaInMultiAccout-For-InstanceRefresh" in (
        _subscribed_functions(run)
    )


def test_with_waves_only_the_state_machine_invokes_the_fanout_on_the_status_table(stack_run):
    run = stack_run("infra", WAVES_CONFIG)
    subscribed = _subscribed_functions(run)
    assert "golden-ami-rollout-waves" in subscribed
    assert "Lambda-Invoke-Another-LambdaInMultiAccout-For-InstanceRefresh" not in subscribed
    assert not [p for p in run.resources_of_type("aws:lambda/permission:Permission")
                if p["function"].startswith("Lambda-Invoke")]  # fmt: skip
    table = run.one("aws:dynamodb/table:Table")
    variables = run.one("aws:lambda/function:Function", "waves")["environment"]["variables"]
    assert variables["TABLE_NAME"] == table["name"]
    assert run.outputs["rolloutStateMachineArn"].endswith(":stateMachine:golden-ami-rollout-waves")
    assert run.outputs["rolloutOperatorPolicyArn"].endswith(
        ":policy/golden-ami-rollout-waves-operator"
    )
