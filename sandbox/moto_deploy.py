"""`pulumi up` into moto: create what a stack declared (recorded under Pulumi mocks) in moto.

The demo runs the real program (`__main__.py` with a stack's config, through
`tests.pulumi_harness.run_stack`) and applies the recorded resources to the account's moto
backends, so the rules, patterns, log groups, metric filters, alarms, roles and Lambda
environments the sandbox exercises are exactly the ones the stacks declare — nothing is
re-typed for the demo.

Each resource type maps to the API calls a provider would make. Lambda functions are
registered with the `LambdaRouter` (their code runs in-process); the few things moto cannot
act on (SNS subscriptions, SQS event source mappings, the Image Builder pipeline) are collected
for the demo to drive. Types that change nothing the sandbox runs (providers, permissions,
resource policies, KMS grants, lifecycle policies) are listed in `DeployedStack.not_applied`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

from sandbox.lambda_invoke import LambdaFunction, LambdaRouter
from tests.pulumi_harness import RecordedResource, StackRun

SessionFor = Callable[[str], boto3.Session]  # region -> a session of the stack's account


@dataclass(frozen=True)
class Subscription:
    topic_arn: str
    protocol: str
    endpoint: str
    raw_message_delivery: bool


@dataclass(frozen=True)
class QueueTrigger:
    """An SQS event source mapping: the queue's messages invoke the function in batches."""

    queue_arn: str
    function_name: str
    batch_size: int
    batching_window_seconds: int


@dataclass
class DeployedStack:
    account: str
    run: StackRun
    functions: dict[str, LambdaFunction] = field(default_factory=dict)  # by ARN
    subscriptions: list[Subscription] = field(default_factory=list)
    queue_triggers: list[QueueTrigger] = field(default_factory=list)
    not_applied: set[str] = field(default_factory=set)

    def function_named(self, name: str, region: str) -> LambdaFunction:
        return next(f for f in self.functions.values() if f.name == name and f.region == region)


def deploy(
    run: StackRun, account: str, session_for: SessionFor, router: LambdaRouter
) -> DeployedStack:
    """Create `run`'s resources in moto as `account`; returns what the demo has to drive."""
    deployed = DeployedStack(account, run)
    regions = _provider_regions(run)
    home_region = run.config.get("aws:region", "us-east-1")
    for resource in _dependency_order(run.resources):
        if not resource.custom or resource.type.startswith("pulumi:providers:"):
            continue
        region = resource.inputs.get("region") or regions.get(_provider_urn(resource), home_region)
        apply = _APPLIERS.get(resource.type)
        if apply is None:
            deployed.not_applied.add(resource.type)
            continue
        apply(resource, session_for(region), region, deployed, router)
    return deployed


def _dependency_order(resources: list[RecordedResource]) -> list[RecordedResource]:
    """Dependencies first, otherwise by URN.

    The mocks record registrations in the order the program's asyncio tasks happen to run,
    which varies between runs; a fixed order keeps the ids moto hands out the same for a seed.
    """
    by_urn = {resource.urn: resource for resource in resources}
    depths: dict[str, int] = {}

    def depth(urn: str) -> int:
        if urn not in depths:
            dependencies = [d for d in by_urn[urn].dependencies if d in by_urn and d != urn]
            depths[urn] = 1 + max((depth(d) for d in dependencies), default=0)
        return depths[urn]

    return sorted(resources, key=lambda resource: (depth(resource.urn), resource.urn))


def _provider_urn(resource: RecordedResource) -> str:
    # A provider reference is "<provider urn>::<provider id>".
    return resource.provider.rsplit("::", 1)[0] if resource.provider else ""


def _provider_regions(run: StackRun) -> dict[str, str]:
    return {
        r.urn: r.inputs["region"]
        for r in run.resources
        if r.type == "pulumi:providers:aws" and r.inputs.get("region")
    }


def _name(resource: RecordedResource, prop: str = "name") -> str:
    return resource.outputs.get(prop) or resource.inputs[prop]


# --- one function per resource type ------------------------------------------------------------


def _iam_role(resource: RecordedResource, session: boto3.Session, *_: Any) -> None:
    session.client("iam").create_role(
        RoleName=_name(resource),
        AssumeRolePolicyDocument=resource.inputs["assumeRolePolicy"],
        Description=resource.inputs.get("description", ""),
    )


def _iam_role_policy(resource: RecordedResource, session: boto3.Session, *_: Any) -> None:
    session.client("iam").put_role_policy(
        RoleName=resource.inputs["role"],
        PolicyName=_name(resource),
        PolicyDocument=resource.inputs["policy"],
    )


def _s3_bucket(resource: RecordedResource, session: boto3.Session, region: str, *_: Any) -> None:
    s3 = session.client("s3", region_name=region)
    bucket = _name(resource, "bucket")
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})


def _s3_versioning(resource: RecordedResource, session: boto3.Session, *_: Any) -> None:
    status = resource.inputs["versioningConfiguration"]["status"]
    session.client("s3").put_bucket_versioning(
        Bucket=resource.inputs["bucket"], VersioningConfiguration={"Status": status}
    )


def _sqs_queue(resource: RecordedResource, session: boto3.Session, region: str, *_: Any) -> None:
    session.client("sqs", region_name=region).create_queue(QueueName=_name(resource))


def _sns_topic(resource: RecordedResource, session: boto3.Session, region: str, *_: Any) -> None:
    session.client("sns", region_name=region).create_topic(Name=_name(resource))


def _sns_subscription(
    resource: RecordedResource, _session: Any, _region: str, deployed: DeployedStack, *_: Any
) -> None:
    # Delivered by the demo: moto would try to run a Lambda endpoint in Docker.
    deployed.subscriptions.append(
        Subscription(
            topic_arn=resource.inputs["topic"],
            protocol=resource.inputs["protocol"],
            endpoint=resource.inputs["endpoint"],
            raw_message_delivery=bool(resource.inputs.get("rawMessageDelivery")),
        )
    )


def _event_rule(resource: RecordedResource, session: boto3.Session, region: str, *_: Any) -> None:
    arguments = {"Name": _name(resource), "State": resource.inputs.get("state", "ENABLED")}
    if resource.inputs.get("eventBusName"):
        arguments["EventBusName"] = resource.inputs["eventBusName"]
    for prop, member in (
        ("eventPattern", "EventPattern"),
        ("scheduleExpression", "ScheduleExpression"),
        ("description", "Description"),
    ):
        if resource.inputs.get(prop):
            arguments[member] = resource.inputs[prop]
    session.client("events", region_name=region).put_rule(**arguments)


def _event_target(resource: RecordedResource, session: boto3.Session, region: str, *_: Any) -> None:
    target = {
        # The provider generates an id when none is given; a logical name is as unique per rule.
        "Id": (resource.inputs.get("targetId") or resource.name)[-64:],
        "Arn": resource.inputs["arn"],
    }
    if resource.inputs.get("input"):
        target["Input"] = resource.inputs["input"]
    if resource.inputs.get("roleArn"):
        target["RoleArn"] = resource.inputs["roleArn"]
    if (resource.inputs.get("deadLetterConfig") or {}).get("arn"):
        target["DeadLetterConfig"] = {"Arn": resource.inputs["deadLetterConfig"]["arn"]}
    session.client("events", region_name=region).put_targets(
        Rule=resource.inputs["rule"],
        EventBusName=resource.inputs.get("eventBusName") or "default",
        Targets=[target],
    )


def _event_bus(resource: RecordedResource, session: boto3.Session, region: str, *_: Any) -> None:
    session.client("events", region_name=region).create_event_bus(Name=_name(resource))


def _event_bus_policy(
    resource: RecordedResource, session: boto3.Session, region: str, *_: Any
) -> None:
    session.client("events", region_name=region).put_permission(
        EventBusName=resource.inputs["eventBusName"], Policy=resource.inputs["policy"]
    )


def _dynamodb_table(
    resource: RecordedResource, session: boto3.Session, region: str, *_: Any
) -> None:
    keys = [(resource.inputs["hashKey"], "HASH")]
    if resource.inputs.get("rangeKey"):
        keys.append((resource.inputs["rangeKey"], "RANGE"))
    session.client("dynamodb", region_name=region).create_table(
        TableName=_name(resource),
        BillingMode=resource.inputs.get("billingMode", "PROVISIONED"),
        AttributeDefinitions=[
            {"AttributeName": a["name"], "AttributeType": a["type"]}
            for a in resource.inputs["attributes"]
        ],
        KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
    )


def _log_group(resource: RecordedResource, session: boto3.Session, region: str, *_: Any) -> None:
    logs = session.client("logs", region_name=region)
    logs.create_log_group(logGroupName=_name(resource))
    if resource.inputs.get("retentionInDays"):
        logs.put_retention_policy(
            logGroupName=_name(resource), retentionInDays=int(resource.inputs["retentionInDays"])
        )


def _metric_filter(
    resource: RecordedResource, session: boto3.Session, region: str, *_: Any
) -> None:
    transformation = resource.inputs["metricTransformation"]
    metric = {
        "metricName": transformation["name"],
        "metricNamespace": transformation["namespace"],
        "metricValue": transformation["value"],
    }
    for prop, member in (("defaultValue", "defaultValue"), ("unit", "unit")):
        if transformation.get(prop) not in (None, ""):
            metric[member] = transformation[prop]
    if transformation.get("dimensions"):
        metric["dimensions"] = transformation["dimensions"]
    if "defaultValue" in metric:
        metric["defaultValue"] = float(metric["defaultValue"])
    session.client("logs", region_name=region).put_metric_filter(
        logGroupName=resource.inputs["logGroupName"],
        filterName=_name(resource),
        filterPattern=resource.inputs["pattern"],
        metricTransformations=[metric],
    )


_ALARM_MEMBERS = {
    "alarmDescription": "AlarmDescription",
    "namespace": "Namespace",
    "metricName": "MetricName",
    "statistic": "Statistic",
    "extendedStatistic": "ExtendedStatistic",
    "period": "Period",
    "evaluationPeriods": "EvaluationPeriods",
    "datapointsToAlarm": "DatapointsToAlarm",
    "threshold": "Threshold",
    "comparisonOperator": "ComparisonOperator",
    "treatMissingData": "TreatMissingData",
    "unit": "Unit",
    "alarmActions": "AlarmActions",
    "okActions": "OKActions",
    "insufficientDataActions": "InsufficientDataActions",
}


# Numbers cross the Pulumi wire as floats; the API wants these as integers.
_INTEGER_ALARM_MEMBERS = {"Period", "EvaluationPeriods", "DatapointsToAlarm"}


def _metric_alarm(resource: RecordedResource, session: boto3.Session, region: str, *_: Any) -> None:
    arguments: dict[str, Any] = {"AlarmName": _name(resource)}
    for prop, member in _ALARM_MEMBERS.items():
        if resource.inputs.get(prop) not in (None, "", []):
            value = resource.inputs[prop]
            arguments[member] = int(value) if member in _INTEGER_ALARM_MEMBERS else value
    if resource.inputs.get("dimensions"):
        arguments["Dimensions"] = [
            {"Name": key, "Value": value} for key, value in resource.inputs["dimensions"].items()
        ]
    if resource.inputs.get("metricQueries"):
        arguments["Metrics"] = [_metric_query(query) for query in resource.inputs["metricQueries"]]
    _refuse_actions_in_other_regions(arguments, region)
    session.client("cloudwatch", region_name=region).put_metric_alarm(**arguments)


def _refuse_actions_in_other_regions(arguments: dict[str, Any], region: str) -> None:
    """CloudWatch's answer (moto accepts it): an alarm only notifies topics in its own region."""
    for member in ("AlarmActions", "OKActions", "InsufficientDataActions"):
        for arn in arguments.get(member, []):
            action_region = arn.split(":")[3] if arn.startswith("arn:") else region
            if action_region != region:
                raise ClientError(
                    {
                        "Error": {
                            "Code": "ValidationError",
                            "Message": (
                                f"Invalid region {action_region} specified. "
                                f"Only {region} is supported."
                            ),
                        },
                        "ResponseMetadata": {"HTTPStatusCode": 400},
                    },
                    "PutMetricAlarm",
                )


def _metric_query(query: dict[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {"Id": query["id"], "ReturnData": bool(query.get("returnData"))}
    if query.get("expression"):
        converted["Expression"] = query["expression"]
    if query.get("label"):
        converted["Label"] = query["label"]
    if query.get("metric"):
        metric = query["metric"]
        converted["MetricStat"] = {
            "Metric": {
                "Namespace": metric["namespace"],
                "MetricName": metric["metricName"],
                "Dimensions": [
                    {"Name": key, "Value": value}
                    for key, value in (metric.get("dimensions") or {}).items()
                ],
            },
            "Period": int(metric["period"]),
            "Stat": metric["stat"],
        }
    return converted


def _lambda_function(
    resource: RecordedResource,
    _session: Any,
    region: str,
    deployed: DeployedStack,
    router: LambdaRouter,
) -> None:
    module_name, _, attribute = resource.inputs["handler"].rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    function = LambdaFunction(
        account=deployed.account,
        region=region,
        name=_name(resource),
        handler=handler,
        role_arn=resource.inputs["role"],
        environment=dict((resource.inputs.get("environment") or {}).get("variables") or {}),
        timeout_seconds=int(resource.inputs.get("timeout", 3)),
        memory_mb=int(resource.inputs.get("memorySize", 128)),
    )
    router.register(function)
    deployed.functions[function.arn] = function


def _event_source_mapping(
    resource: RecordedResource, _session: Any, _region: str, deployed: DeployedStack, *_: Any
) -> None:
    deployed.queue_triggers.append(
        QueueTrigger(
            queue_arn=resource.inputs["eventSourceArn"],
            function_name=resource.inputs["functionName"],
            batch_size=int(resource.inputs.get("batchSize", 10)),
            batching_window_seconds=int(resource.inputs.get("maximumBatchingWindowInSeconds", 0)),
        )
    )


_APPLIERS: dict[str, Callable[..., None]] = {
    "aws:iam/role:Role": _iam_role,
    "aws:iam/rolePolicy:RolePolicy": _iam_role_policy,
    "aws:s3/bucket:Bucket": _s3_bucket,
    "aws:s3/bucketV2:BucketV2": _s3_bucket,
    "aws:s3/bucketVersioning:BucketVersioning": _s3_versioning,
    "aws:s3/bucketVersioningV2:BucketVersioningV2": _s3_versioning,
    "aws:sqs/queue:Queue": _sqs_queue,
    "aws:sns/topic:Topic": _sns_topic,
    "aws:sns/topicSubscription:TopicSubscription": _sns_subscription,
    "aws:cloudwatch/eventRule:EventRule": _event_rule,
    "aws:cloudwatch/eventTarget:EventTarget": _event_target,
    "aws:cloudwatch/eventBus:EventBus": _event_bus,
    "aws:cloudwatch/eventBusPolicy:EventBusPolicy": _event_bus_policy,
    "aws:dynamodb/table:Table": _dynamodb_table,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": _metric_filter,
    "aws:cloudwatch/metricAlarm:MetricAlarm": _metric_alarm,
    "aws:lambda/function:Function": _lambda_function,
    "aws:lambda/eventSourceMapping:EventSourceMapping": _event_source_mapping,
}
