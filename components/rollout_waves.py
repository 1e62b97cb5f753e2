"""RolloutWaves: the progressive rollout of DESIGN §10 — canary first, halt on failure.

A Standard Step Functions state machine (components/rollout_definition.py) runs once per
AVAILABLE image: the waves Lambda, subscribed to the image topic, starts it (execution named
after the image build version), and the state machine invokes the fan-out wave by wave. With
waves on, the fan-out is not subscribed to the image topic: one path to the workload accounts.

The waves Lambda keeps each wave's progress in the rollout status table (RolloutStatus), where
`python -m rollout` reads it; operators get the `<env>-rollout-operator` managed policy for
`approve`, `abort` and `resume`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.config import InfraConfig, RolloutWave
from components.lambda_code import (
    LAMBDA_RUNTIME,
    handler_archive,
    handler_entrypoint,
    subscribe_to_topic,
)
from components.policies import (
    lambda_log_group_arn,
    lambda_trust_policy,
    rollout_operator_policy,
    rollout_state_machine_policy,
    rollout_waves_function_policy,
    state_machine_arn,
    state_machine_executions_arn,
    states_trust_policy,
)
from components.rollout_definition import state_machine_definition

# How often a wave's statuses are re-read while it settles: a rollout takes minutes to hours,
# and every poll is one state transition and one short Lambda run.
POLL_SECONDS = 60
WAVES_TIMEOUT_SECONDS = 60  # a step is a few DynamoDB calls


@dataclass(frozen=True)
class RolloutWavesArgs:
    environment_name: str
    region: str
    infra_account_id: str
    waves: Sequence[RolloutWave]
    table_name: pulumi.Input[str]
    table_arn: pulumi.Input[str]
    fanout_function_arn: pulumi.Input[str]
    image_topic_arn: pulumi.Input[str]
    log_retention_days: int
    alarm_topic_arn: str = ""
    poll_seconds: int = POLL_SECONDS

    @classmethod
    def from_config(
        cls,
        cfg: InfraConfig,
        *,
        table_name: pulumi.Input[str],
        table_arn: pulumi.Input[str],
        fanout_function_arn: pulumi.Input[str],
        image_topic_arn: pulumi.Input[str],
    ) -> RolloutWavesArgs:
        return cls(
            environment_name=cfg.environment_name,
            region=cfg.home_region,
            infra_account_id=cfg.infra_account_id,
            waves=cfg.effective_waves,
            table_name=table_name,
            table_arn=table_arn,
            fanout_function_arn=fanout_function_arn,
            image_topic_arn=image_topic_arn,
            log_retention_days=cfg.log_retention_days,
            alarm_topic_arn=cfg.alarm_topic_arn_in(cfg.home_region),
        )

    @property
    def name(self) -> str:
        return f"{self.environment_name}-rollout-waves"

    @property
    def state_machine_arn(self) -> str:
        # Known before the state machine exists: the waves Lambda (which the definition names)
        # starts it, so neither can wait for the other's output.
        return state_machine_arn(self.region, self.infra_account_id, self.name)

    def waves_json(self) -> str:
        """`WAVES_JSON`: the waves in order, times in seconds (handlers/waves/logic.py)."""
        return json.dumps(
            [
                {
                    "name": wave.name,
                    "accounts": list(wave.accounts),
                    "soakSeconds": wave.soak_minutes * 60,
                    "maxFailedGroups": wave.max_failed_groups,
                    "approval": wave.approval,
                    "timeoutSeconds": wave.timeout_minutes * 60,
                }
                for wave in self.waves
            ]
        )


class RolloutWaves(pulumi.ComponentResource):
    state_machine_arn: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    operator_policy_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: RolloutWavesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("golden-ami:rollout_waves:RolloutWaves", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{args.name}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        function_role = aws.iam.Role(
            f"{name}-function-role",
            name=f"{args.name}-function",
            description="Golden AMI rollout waves: starts and steps the per-image rollout",
            assume_role_policy=json.dumps(lambda_trust_policy()),
            opts=child,
        )
        function_policy = aws.iam.RolePolicy(
            f"{name}-function-policy",
            role=function_role.name,
            policy=pulumi.Output.from_input(args.table_arn).apply(
                lambda table_arn: json.dumps(
                    rollout_waves_function_policy(
                        table_arn=table_arn,
                        state_machine_arn=args.state_machine_arn,
                        alarm_topic_arn=args.alarm_topic_arn,
                        log_group_arn=lambda_log_group_arn(
                            args.region, args.infra_account_id, args.name
                        ),
                    )
                )
            ),
            opts=child,
        )
        function = aws.lambda_.Function(
            f"{name}-function",
            name=args.name,
            description="Golden AMI: starts one rollout per image and runs its wave steps",
            role=function_role.arn,
            runtime=LAMBDA_RUNTIME,
            handler=handler_entrypoint("waves"),
            code=handler_archive("waves"),
            timeout=WAVES_TIMEOUT_SECONDS,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables={
                    "WAVES_JSON": args.waves_json(),
                    "POLL_SECONDS": str(args.poll_seconds),
                    "TABLE_NAME": args.table_name,
                    "STATE_MACHINE_ARN": args.state_machine_arn,
                    "ALARM_TOPIC_ARN": args.alarm_topic_arn,
                }
            ),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[log_group, function_policy])
            ),
        )
        subscribe_to_topic(name, function=function, topic_arn=args.image_topic_arn, opts=child)

        machine_role = aws.iam.Role(
            f"{name}-machine-role",
            name=f"{args.name}-machine",
            description="Golden AMI rollout waves state machine: invokes the wave steps",
            assume_role_policy=json.dumps(states_trust_policy(args.infra_account_id)),
            opts=child,
        )
        machine_policy = aws.iam.RolePolicy(
            f"{name}-machine-policy",
            role=machine_role.name,
            policy=pulumi.Output.all(function.arn, args.fanout_function_arn).apply(
                lambda arns: json.dumps(rollout_state_machine_policy(arns))
            ),
            opts=child,
        )
        machine = aws.sfn.StateMachine(
            f"{name}-machine",
            name=args.name,
            type="STANDARD",
            role_arn=machine_role.arn,
            definition=pulumi.Output.all(function.arn, args.fanout_function_arn).apply(
                lambda arns: json.dumps(state_machine_definition(arns[0], arns[1]))
            ),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[machine_policy])
            ),
        )
        operator_policy = aws.iam.Policy(
            f"{name}-operator",
            name=f"{args.name}-operator",
            description="python -m rollout approve|abort|resume: answer and stop rollouts",
            policy=pulumi.Output.from_input(args.table_arn).apply(
                lambda table_arn: json.dumps(
                    rollout_operator_policy(
                        table_arn=table_arn,
                        state_machine_arn=args.state_machine_arn,
                        executions_arn=state_machine_executions_arn(
                            args.region, args.infra_account_id, args.name
                        ),
                    )
                )
            ),
            opts=child,
        )

        self.state_machine_arn = machine.arn
        self.function_arn = function.arn
        self.operator_policy_arn = operator_policy.arn
        self.register_outputs(
            {
                "state_machine_arn": self.state_machine_arn,
                "function_arn": self.function_arn,
                "operator_policy_arn": self.operator_policy_arn,
            }
        )
