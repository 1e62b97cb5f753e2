"""OrgFanout: the infra account's Lambda that hands every AVAILABLE image to the workload accounts.

Subscribed to the image pipeline's SNS topic, it assumes the invoke role in each Organization
account and invokes the refresh Lambda there (DESIGN §4). Its role keeps a fixed name because every
workload stack's trust policy names it, and is protected: IAM trust policies store the role's
unique id, so a replaced role with the same name silently breaks every enrolled account.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.alarms import any_occurrence_alarm
from components.config import InfraConfig
from components.lambda_code import (
    LAMBDA_RUNTIME,
    handler_archive,
    handler_entrypoint,
    subscribe_to_topic,
)
from components.policies import (
    FANOUT_METRIC_NAMESPACE,
    fanout_policy,
    lambda_log_group_arn,
    lambda_trust_policy,
)
from handlers.fanout.app import METRIC_NAMES
from handlers.fanout.logic import FAILED

# The work is I/O-bound, but Lambda allocates CPU in proportion to memory (1 vCPU at 1,769 MB)
# and each account still costs ~1.5 ms of CPU (AssumeRole, signing, TLS; docs/fanout-scale.md).
# 512 MB keeps a thousand-account run at its latency floor with room to spare; one invocation
# per image build makes the larger size cost nothing that matters.
FANOUT_MEMORY_MB = 512


@dataclass(frozen=True)
class OrgFanoutArgs:
    function_name: str
    role_name: str
    region: str
    infra_account_id: str
    organization_id: str
    image_topic_arn: pulumi.Input[str]
    invoke_role_name: str
    target_function_name: str
    account_source: str
    timeout_seconds: int
    max_concurrency: int
    log_retention_days: int
    static_account_ids: Sequence[str] = ()
    organizational_unit_ids: Sequence[str] = ()
    list_accounts_role_arn: str = ""
    include_infra_account: bool = False
    expected_account_ids: Sequence[str] = ()
    alarm_topic_arn: str = ""
    rollout_table_name: str = ""  # the RolloutStatus table the invocations are recorded in

    @property
    def rollout_table_arn(self) -> str:
        if not self.rollout_table_name:
            return ""
        table = self.rollout_table_name
        return f"arn:aws:dynamodb:{self.region}:{self.infra_account_id}:table/{table}"

    # With rollout waves the RolloutWaves state machine invokes the fan-out, one wave at a time;
    # subscribing it to the image topic as well would reach every account at once.
    subscribe_to_images: bool = True
    # OUs the rollout waves name: the fan-out lists their accounts (ListAccountsForParent).
    wave_organizational_unit_ids: Sequence[str] = ()

    @classmethod
    def from_config(cls, cfg: InfraConfig, image_topic_arn: pulumi.Input[str]) -> OrgFanoutArgs:
        return cls(
            function_name=cfg.fanout_function_name,
            role_name=cfg.fanout_role_name,
            region=cfg.home_region,
            infra_account_id=cfg.infra_account_id,
            organization_id=cfg.organization_id,
            image_topic_arn=image_topic_arn,
            invoke_role_name=cfg.invoke_role_name,
            target_function_name=cfg.refresh_function_name,
            account_source=cfg.account_source,
            timeout_seconds=cfg.fanout_timeout_seconds,
            max_concurrency=cfg.fanout_max_concurrency,
            log_retention_days=cfg.log_retention_days,
            static_account_ids=cfg.static_account_ids,
            organizational_unit_ids=cfg.organizational_unit_ids,
            list_accounts_role_arn=cfg.list_accounts_role_arn,
            include_infra_account=cfg.include_infra_account,
            expected_account_ids=cfg.expected_account_ids,
            alarm_topic_arn=cfg.alarm_topic_arn_in(cfg.home_region),
            rollout_table_name=cfg.rollout_table_name,
            subscribe_to_images=not cfg.waves_enabled,
            wave_organizational_unit_ids=tuple(
                unit for wave in cfg.rollout_waves for unit in wave.organizational_unit_ids
            ),
        )

    def environment(self) -> dict[str, str]:
        """The fan-out handler's environment contract."""
        return {
            "INVOKE_ROLE_NAME": self.invoke_role_name,
            "TARGET_FUNCTION_NAME": self.target_function_name,
            "ACCOUNT_SOURCE": self.account_source,
            "STATIC_ACCOUNT_IDS": ",".join(self.static_account_ids),
            "ORGANIZATIONAL_UNIT_IDS": ",".join(self.organizational_unit_ids),
            "LIST_ACCOUNTS_ROLE_ARN": self.list_accounts_role_arn,
            "INCLUDE_INFRA_ACCOUNT": "true" if self.include_infra_account else "false",
            "EXPECTED_ACCOUNT_IDS": ",".join(self.expected_account_ids),
            "MAX_CONCURRENCY": str(self.max_concurrency),
            "METRIC_NAMESPACE": FANOUT_METRIC_NAMESPACE,
            "ROLLOUT_TABLE_NAME": self.rollout_table_name,
        }


class OrgFanout(pulumi.ComponentResource):
    function_arn: pulumi.Output[str]
    role_arn: pulumi.Output[str]
    role_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: OrgFanoutArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("golden-ami:org_fanout:OrgFanout", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        role = aws.iam.Role(
            f"{name}-role",
            name=args.role_name,
            description="Golden AMI fan-out: assumes the invoke role in each workload account",
            assume_role_policy=json.dumps(lambda_trust_policy()),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True)),
        )
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{args.function_name}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.name,
            policy=json.dumps(
                fanout_policy(
                    invoke_role_name=args.invoke_role_name,
                    organization_id=args.organization_id,
                    log_group_arn=lambda_log_group_arn(
                        args.region, args.infra_account_id, args.function_name
                    ),
                    account_source=args.account_source,
                    organizational_unit_ids=args.organizational_unit_ids,
                    list_accounts_role_arn=args.list_accounts_role_arn,
                    rollout_table_arn=args.rollout_table_arn,
                    wave_organizational_unit_ids=args.wave_organizational_unit_ids,
                )
            ),
            opts=child,
        )
        function = aws.lambda_.Function(
            f"{name}-function",
            name=args.function_name,
            description="Golden AMI: invokes the refresh Lambda of every enrolled account",
            role=role.arn,
            runtime=LAMBDA_RUNTIME,
            handler=handler_entrypoint("fanout"),
            code=handler_archive("fanout"),
            memory_size=FANOUT_MEMORY_MB,
            timeout=args.timeout_seconds,
            # No reserved concurrency: one invocation per image needs none, and reserving any
            # fails in accounts whose concurrency quota is still the new-account minimum.
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=args.environment()),
            # The log group first, or Lambda creates it without retention on the first run.
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[log_group, policy])
            ),
        )
        if args.subscribe_to_images:
            subscribe_to_topic(name, function=function, topic_arn=args.image_topic_arn, opts=child)

        # The handler fails its invocation when an enrolled account failed (Lambda then retries
        # the SNS event twice); the failed-accounts metric also catches a run that succeeded on
        # retry, so a flaky account is noticed before it becomes a broken one.
        any_occurrence_alarm(
            f"{name}-errors",
            alarm_name=f"{args.function_name}-errors",
            description="The golden AMI fan-out failed: some enrolled account got no image",
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": function.name},
            statistic="Sum",
            alarm_topic_arn=args.alarm_topic_arn,
            opts=child,
        )
        any_occurrence_alarm(
            f"{name}-failed-accounts",
            alarm_name=f"{args.function_name}-failed-accounts",
            description="The golden AMI fan-out could not hand an image to an account",
            namespace=FANOUT_METRIC_NAMESPACE,
            metric_name=METRIC_NAMES[FAILED],  # the name the handler publishes
            statistic="Sum",
            alarm_topic_arn=args.alarm_topic_arn,
            opts=child,
        )

        self.function_arn = function.arn
        self.role_arn = role.arn
        self.role_name = role.name
        self.log_group_name = log_group.name
        self.register_outputs(
            {
                "function_arn": self.function_arn,
                "role_arn": self.role_arn,
                "role_name": self.role_name,
                "log_group_name": self.log_group_name,
            }
        )
