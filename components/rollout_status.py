"""RolloutStatus: where every workload account's rollout results land in the infra account.

The `<env>-rollout` event bus admits the Organization's accounts only; a rule hands every event
to the recorder Lambda, which validates it and writes the status table (one item per rollout
and group, conditionally so replays never regress it) and keeps the `golden-ami:in-use` tag on
the AMIs some group runs or may roll back to (DESIGN §10). Events the rule cannot deliver and
invocations that fail after Lambda's retries go to a dead-letter queue with an alarm. A
dashboard shows the accepted state changes per rollout and outcome.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.alarms import any_occurrence_alarm, dead_letter_queue
from components.config import InfraConfig
from components.lambda_code import LAMBDA_RUNTIME, handler_archive, handler_entrypoint
from components.policies import (
    dead_letter_queue_policy,
    lambda_log_group_arn,
    lambda_trust_policy,
    recorder_policy,
    rollout_bus_policy,
)
from handlers.common.status import AUTOSCALING_SOURCE, RESULT_SOURCE
from handlers.recorder.app import (
    METRIC_NAMESPACE,
    REFUSED_METRIC,
    REPORTS_METRIC,
    STALE_METRIC,
    UNPLACED_METRIC,
)

RECORDER_MEMORY_MB = 256
RECORDER_TIMEOUT_SECONDS = 60
# EventBridge retries delivery for a day before the event goes to the dead-letter queue.
DELIVERY_MAX_AGE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class RolloutStatusArgs:
    environment_name: str
    region: str
    infra_account_id: str
    organization_id: str
    regions: Sequence[str]
    pipeline_name: str
    table_name: str
    log_retention_days: int
    alarm_topic_arn: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: InfraConfig, pipeline_name: str) -> RolloutStatusArgs:
        return cls(
            environment_name=cfg.environment_name,
            region=cfg.home_region,
            infra_account_id=cfg.infra_account_id,
            organization_id=cfg.organization_id,
            regions=cfg.regions,
            pipeline_name=pipeline_name,
            table_name=cfg.rollout_table_name,
            log_retention_days=cfg.log_retention_days,
            alarm_topic_arn=cfg.alarm_topic_arn_in(cfg.home_region),
            tags={"golden-ami:environment": cfg.environment_name},
        )

    @property
    def bus_name(self) -> str:
        return f"{self.environment_name}-rollout"

    @property
    def function_name(self) -> str:
        return f"{self.environment_name}-rollout-recorder"


class RolloutStatus(pulumi.ComponentResource):
    bus_arn: pulumi.Output[str]
    bus_name: pulumi.Output[str]
    table_name: pulumi.Output[str]
    table_arn: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    dashboard_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: RolloutStatusArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("golden-ami:rollout_status:RolloutStatus", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)

        bus = aws.cloudwatch.EventBus(f"{name}-bus", name=args.bus_name, tags=tags, opts=child)
        aws.cloudwatch.EventBusPolicy(
            f"{name}-bus-policy",
            event_bus_name=bus.name,
            policy=bus.arn.apply(
                lambda arn: json.dumps(rollout_bus_policy(arn, args.organization_id))
            ),
            opts=child,
        )
        table = aws.dynamodb.Table(
            f"{name}-table",
            name=args.table_name,
            billing_mode="PAY_PER_REQUEST",
            hash_key="pk",
            range_key="sk",
            attributes=[
                aws.dynamodb.TableAttributeArgs(name="pk", type="S"),
                aws.dynamodb.TableAttributeArgs(name="sk", type="S"),
            ],
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
            # A customer-visible KMS key (aws/dynamodb) rather than the default AWS-owned one.
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            deletion_protection_enabled=True,
            tags=tags,
            opts=child,
        )
        dead_letters = dead_letter_queue(
            f"{name}-recorder-dlq",
            alarm_name=f"{args.function_name}-dead-letters",
            description="Golden AMI: rollout events the recorder could not record",
            alarm_topic_arn=args.alarm_topic_arn,
            tags=tags,
            opts=child,
        )
        any_occurrence_alarm(
            f"{name}-refused-events",
            alarm_name=f"{args.function_name}-refused-events",
            description="Golden AMI: the rollout bus received events the recorder refused",
            namespace=METRIC_NAMESPACE,
            metric_name=REFUSED_METRIC,
            statistic="Sum",
            alarm_topic_arn=args.alarm_topic_arn,
            tags=tags,
            opts=child,
        )

        function = self._recorder(name, args, table, dead_letters, tags)
        rule = aws.cloudwatch.EventRule(
            f"{name}-rule",
            name=f"{args.environment_name}-rollout-recorder",
            description="Every refresh result and refresh end the workload accounts forward",
            event_bus_name=bus.name,
            event_pattern=json.dumps({"source": [RESULT_SOURCE, AUTOSCALING_SOURCE]}),
            tags=tags,
            opts=child,
        )
        permission = aws.lambda_.Permission(
            f"{name}-rule-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=child,
        )
        queue_policy = aws.sqs.QueuePolicy(
            f"{name}-recorder-dlq",
            queue_url=dead_letters.url,
            policy=pulumi.Output.all(dead_letters.arn, rule.arn).apply(
                lambda arns: json.dumps(dead_letter_queue_policy(*arns))
            ),
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-rule-target",
            rule=rule.name,
            event_bus_name=bus.name,
            arn=function.arn,
            retry_policy=aws.cloudwatch.EventTargetRetryPolicyArgs(
                maximum_event_age_in_seconds=DELIVERY_MAX_AGE_SECONDS,
                maximum_retry_attempts=185,
            ),
            dead_letter_config=aws.cloudwatch.EventTargetDeadLetterConfigArgs(arn=dead_letters.arn),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[permission, queue_policy])
            ),
        )
        dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=f"{args.environment_name}-rollouts",
            dashboard_body=pulumi.Output.all(function.name, dead_letters.name).apply(
                lambda names: json.dumps(dashboard_body(args.region, *names))
            ),
            opts=child,
        )

        self.bus_arn = bus.arn
        self.bus_name = bus.name
        self.table_name = table.name
        self.table_arn = table.arn
        self.function_arn = function.arn
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs(
            {
                "bus_arn": self.bus_arn,
                "bus_name": self.bus_name,
                "table_name": self.table_name,
                "table_arn": self.table_arn,
                "function_arn": self.function_arn,
                "dashboard_name": self.dashboard_name,
            }
        )

    def _recorder(
        self,
        name: str,
        args: RolloutStatusArgs,
        table: aws.dynamodb.Table,
        dead_letters: aws.sqs.Queue,
        tags: dict[str, str],
    ) -> aws.lambda_.Function:
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-recorder-role",
            description="Golden AMI rollout recorder: status table and in-use AMI tags",
            assume_role_policy=json.dumps(lambda_trust_policy()),
            tags=tags,
            opts=child,
        )
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-recorder-logs",
            name=f"/aws/lambda/{args.function_name}",
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-recorder-policy",
            role=role.name,
            policy=pulumi.Output.all(table.arn, dead_letters.arn).apply(
                lambda arns: json.dumps(
                    recorder_policy(
                        table_arn=arns[0],
                        log_group_arn=lambda_log_group_arn(
                            args.region, args.infra_account_id, args.function_name
                        ),
                        dead_letter_queue_arn=arns[1],
                        partition="aws",
                        regions=args.regions,
                        pipeline_name=args.pipeline_name,
                    )
                )
            ),
            opts=child,
        )
        return aws.lambda_.Function(
            f"{name}-recorder",
            name=args.function_name,
            description="Golden AMI: records every workload group's rollout status",
            role=role.arn,
            runtime=LAMBDA_RUNTIME,
            handler=handler_entrypoint("recorder"),
            code=handler_archive("recorder"),
            memory_size=RECORDER_MEMORY_MB,
            timeout=RECORDER_TIMEOUT_SECONDS,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={"TABLE_NAME": table.name}),
            dead_letter_config=aws.lambda_.FunctionDeadLetterConfigArgs(
                target_arn=dead_letters.arn
            ),
            tags=tags,
            # The log group first, or Lambda creates it without retention on the first run.
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[log_group, policy])
            ),
        )


def dashboard_body(region: str, function_name: str, dead_letter_queue_name: str) -> dict:
    """Accepted state changes per rollout and outcome, and the recorder's own health."""
    by_rollout = (
        f"SEARCH('{{{METRIC_NAMESPACE},Rollout,State}} MetricName=\"{REPORTS_METRIC}\"', "
        "'Sum', 86400)"
    )

    def widget(title: str, y: int, metrics: list, view: str = "timeSeries", **extra) -> dict:
        return {
            "type": "metric",
            "x": 0,
            "y": y,
            "width": 24,
            "height": 6,
            "properties": {
                "title": title,
                "region": region,
                "view": view,
                "stat": "Sum",
                "period": 86400,
                "metrics": metrics,
                **extra,
            },
        }

    return {
        "widgets": [
            widget(
                "Groups by outcome per rollout (accepted state changes, last 24 h)",
                0,
                [[{"expression": by_rollout, "id": "byRollout", "label": ""}]],
                view="bar",
            ),
            widget(
                "Events refused, unplaced, stale",
                6,
                [
                    [METRIC_NAMESPACE, metric, {"label": metric}]
                    for metric in (REFUSED_METRIC, UNPLACED_METRIC, STALE_METRIC)
                ],
            ),
            widget(
                "Recorder errors and dead letters",
                12,
                [
                    ["AWS/Lambda", "Errors", "FunctionName", function_name],
                    [
                        "AWS/SQS",
                        "ApproximateNumberOfMessagesVisible",
                        "QueueName",
                        dead_letter_queue_name,
                        {"stat": "Maximum"},
                    ],
                ],
                period=300,
            ),
        ]
    }
