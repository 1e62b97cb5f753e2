"""Which ECS events count towards a cluster's rollback alarm (DESIGN §6), as an EventBridge pattern.

One rule per cluster delivers the matching events to a log group; a metric filter counts them and
the alarm named in the instance refresh's `AlarmSpecification` fires on the count. Everything the
classification decides lives in the pattern, so the metric filter behind it can stay trivial.
"""

from __future__ import annotations

import re
from typing import Any

# ECS cluster names: up to 255 letters, numbers, underscores and hyphens. Rejecting anything else
# also guarantees the name holds no `*`, which the wildcard filters below would treat as a glob.
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")

# Service events that mean tasks cannot be placed or started. SERVICE_TASK_START_IMPAIRED is a WARN
# event, so the list names events instead of filtering on eventType (which would also let the
# ERROR-typed throttling events ECS_OPERATION_THROTTLED / SERVICE_DISCOVERY_OPERATION_THROTTLED in).
SERVICE_ERROR_EVENT_NAMES = (
    "SERVICE_TASK_PLACEMENT_FAILURE",
    "SERVICE_TASK_CONFIGURATION_FAILURE",
    "SERVICE_TASK_START_IMPAIRED",
)

# Stop codes that mean the task or its host is broken whatever the exit code. The other stop codes
# (ServiceSchedulerInitiated, UserInitiated, SpotInterruption, TerminationNotice) are what
# deployments and the instance refresh itself cause, so counting them would roll back every refresh.
FAILED_STOP_CODES = ("TaskFailedToStart", "InfrastructureHealth")

# Every event the rule delivers to the log group is already an error of this cluster; the filter
# only guards the count against anything else written to the group (one JSON equality selector,
# simple enough for the sandbox and the tests to evaluate exactly as CloudWatch Logs does).
METRIC_FILTER_PATTERN = '{ $.source = "aws.ecs" }'


def ecs_error_event_pattern(cluster_name: str) -> dict[str, Any]:
    """The EventBridge pattern matching the ECS events DESIGN §6 counts, for `cluster_name` only.

    The cluster is matched on the full ARN with wildcards for partition, region and account (the
    rule lives on the account's regional default bus, which only receives that account's and
    region's ECS events), so a sibling cluster whose name merely starts with `cluster_name` is
    never counted. Deployment events carry no clusterArn: their `resources` hold the service ARN
    `…:service/<cluster>/<service>` (the long ARN format, the only one ECS issues today).

    A stopped task's exit codes sit in `detail.containers[].exitCode`; EventBridge matches a path
    through an array of objects against every element's value and counts the event when any
    element matches. Event patterns cannot tie an exit code to the container that was essential,
    so "EssentialContainerExited with a non-zero exit code" is read as "some container exited
    non-zero". The filter is numeric (> 0) rather than anything-but 0, which would also count a
    null exit code.
    """
    if not isinstance(cluster_name, str) or not _CLUSTER_NAME.fullmatch(cluster_name):
        raise ValueError(
            f"ECS cluster name {cluster_name!r} is invalid: expected 1-255 letters, numbers, "
            "hyphens or underscores"
        )
    cluster_arn = [{"wildcard": f"arn:*:ecs:*:*:cluster/{cluster_name}"}]
    return {
        "source": ["aws.ecs"],
        "$or": [
            {
                "detail-type": ["ECS Service Action"],
                "detail": {
                    "eventName": list(SERVICE_ERROR_EVENT_NAMES),
                    "clusterArn": cluster_arn,
                },
            },
            {
                "detail-type": ["ECS Deployment State Change"],
                "resources": [{"wildcard": f"arn:*:ecs:*:*:service/{cluster_name}/*"}],
                "detail": {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]},
            },
            {
                "detail-type": ["ECS Task State Change"],
                "detail": {
                    "clusterArn": cluster_arn,
                    "lastStatus": ["STOPPED"],
                    # Service tasks only: standalone/batch tasks (group "family:…") end by design.
                    "group": [{"prefix": "service:"}],
                    "$or": [
                        {"stopCode": list(FAILED_STOP_CODES)},
                        {
                            "stopCode": ["EssentialContainerExited"],
                            "containers": {"exitCode": [{"numeric": [">", 0]}]},
                        },
                    ],
                },
            },
        ],
    }
