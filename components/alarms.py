"""The alarm the infra stack uses for "this should never happen": any occurrence in 5 minutes."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

PERIOD_SECONDS = 300


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
