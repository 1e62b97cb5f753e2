"""The alarm the infra stack uses for "this should never happen": any occurrence in 5 minutes,
and the dead-letter queue that raises it."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

PERIOD_SECONDS = 300
# The longest SQS keeps a message: two weeks to look at what was given up on.
DLQ_RETENTION_SECONDS = 14 * 24 * 3600


def any_occurrence_alarm(
    resource_name: str,
    *,
    alarm_name: str,
    description: str,
    namespace: str,
    metric_name: str,
    statistic: str,
    dimensions: Mapping[str, pulumi.Input[str]] | None = None,
    alarm_topic_arn: str = "",
    tags: Mapping[str, str] | None = None,
    opts: pulumi.ResourceOptions,
) -> aws.cloudwatch.MetricAlarm:
    """ALARM when the metric is above zero in any five-minute period.

    A quiet period publishes no datapoint at all, so missing data is not breaching.
    """
    return aws.cloudwatch.MetricAlarm(
        resource_name,
        name=alarm_name,
        alarm_description=description,
        namespace=namespace,
        metric_name=metric_name,
        dimensions=dimensions,
        statistic=statistic,
        period=PERIOD_SECONDS,
        evaluation_periods=1,
        comparison_operator="GreaterThanThreshold",
        threshold=0,
        treat_missing_data="notBreaching",
        alarm_actions=[alarm_topic_arn] if alarm_topic_arn else [],
        tags=tags,
        opts=opts,
    )


def dead_letter_queue(
    resource_name: str,
    *,
    alarm_name: str,
    description: str,
    alarm_topic_arn: str = "",
    tags: Mapping[str, str] | None = None,
    opts: pulumi.ResourceOptions,
) -> aws.sqs.Queue:
    """An encrypted queue kept two weeks, with an alarm on any message in it."""
    queue = aws.sqs.Queue(
        resource_name,
        sqs_managed_sse_enabled=True,
        message_retention_seconds=DLQ_RETENTION_SECONDS,
        tags=tags,
        opts=opts,
    )
    any_occurrence_alarm(
        resource_name,
        alarm_name=alarm_name,
        description=description,
        namespace="AWS/SQS",
        metric_name="ApproximateNumberOfMessagesVisible",
        dimensions={"QueueName": queue.name},
        statistic="Maximum",
        alarm_topic_arn=alarm_topic_arn,
        tags=tags,
        opts=opts,
    )
    return queue
