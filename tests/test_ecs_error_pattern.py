"""DESIGN §6: the rollback alarm counts exactly the listed ECS errors of its own cluster.

Every case is a real sample from tests/fixtures/aws-events adapted to the cluster under test (or a
copy of one with the fields that decide the case edited), checked with moto's EventBridge matcher.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import botocore.session
import pytest

from components.ecs_errors import METRIC_FILTER_PATTERN, ecs_error_event_pattern
from sandbox.ecs_alarm import event_matches
from tests.pulumi_harness import FIXTURES

CLUSTER = "prod-web"
REGION, ACCOUNT = "eu-west-1", "210987654321"
CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"


def matches(event: dict[str, Any], cluster: str = CLUSTER) -> bool:
    """moto's matcher, after the flattening of arrays of objects that EventBridge does itself
    (DESIGN §9); the sandbox delivers ECS events through this same function."""
    return event_matches(ecs_error_event_pattern(cluster), event)


def sample(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def in_cluster(event: dict[str, Any], cluster: str = CLUSTER) -> dict[str, Any]:
    """The sample as if emitted by `cluster` in this test's account and region."""
    event = copy.deepcopy(event)
    event.update(account=ACCOUNT, region=REGION)
    cluster_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}"
    if "clusterArn" in event["detail"]:
        event["detail"]["clusterArn"] = cluster_arn
    event["resources"] = [
        re.sub(
            r"^arn:aws:ecs:[^:]+:\d+:(service|task)/[^/]+/",
            rf"arn:aws:ecs:{REGION}:{ACCOUNT}:\1/{cluster}/",
            arn,
        )
        for arn in event["resources"]
    ]
    return event


def service_action(event_name: str, event_type: str, cluster: str = CLUSTER) -> dict[str, Any]:
    event = in_cluster(sample("ecs_service_action_task_placement_failure_error"), cluster)
    event["detail"].update(eventName=event_name, eventType=event_type)
    return event


def deployment(event_name: str, cluster: str = CLUSTER) -> dict[str, Any]:
    event = in_cluster(sample("ecs_deployment_state_change_failed_error"), cluster)
    event["detail"]["eventName"] = event_name
    return event


def stopped_task(
    stop_code: str,
    exit_codes: tuple[int | None, ...] = (1,),
    group: str = "service:web",
    cluster: str = CLUSTER,
) -> dict[str, Any]:
    """The running-task sample, stopped: one container per exit code (None: never started)."""
    event = in_cluster(sample("ecs_task_state_change_running_fargate"), cluster)
    detail = event["detail"]
    container = detail["containers"][0]
    containers = []
    for index, exit_code in enumerate(exit_codes):
        stopped = copy.deepcopy(container) | {"name": f"app-{index}", "lastStatus": "STOPPED"}
        if exit_code is not None:
            stopped["exitCode"] = exit_code
        containers.append(stopped)
    detail.update(
        containers=containers,
        group=group,
        lastStatus="STOPPED",
        desiredStatus="STOPPED",
        stopCode=stop_code,
        stoppedReason="test",
    )
    return event


def running_task(group: str | None = None) -> dict[str, Any]:
    event = in_cluster(sample("ecs_task_state_change_running_fargate"))
    if group is not None:
        event["detail"]["group"] = group
    return event


COUNTED = {
    "placement failure (sample)": lambda: in_cluster(
        sample("ecs_service_action_task_placement_failure_error")
    ),
    "configuration failure": lambda: service_action("SERVICE_TASK_CONFIGURATION_FAILURE", "ERROR"),
    "task start impaired (WARN)": lambda: service_action("SERVICE_TASK_START_IMPAIRED", "WARN"),
    "deployment failed (sample)": lambda: in_cluster(
        sample("ecs_deployment_state_change_failed_error")
    ),
    "task failed to start": lambda: stopped_task("TaskFailedToStart", exit_codes=(None,)),
    "infrastructure health": lambda: stopped_task("InfrastructureHealth", exit_codes=(0,)),
    "essential container exited 1": lambda: stopped_task("EssentialContainerExited", (1,)),
    "essential container exited 137 beside a clean sidecar": lambda: stopped_task(
        "EssentialContainerExited", (0, 137)
    ),
}

NOT_COUNTED = {
    "steady state INFO (sample)": lambda: in_cluster(
        sample("ecs_service_action_steady_state_info")
    ),
    "ECS throttled": lambda: service_action("ECS_OPERATION_THROTTLED", "WARN"),
    "service discovery throttled": lambda: service_action(
        "SERVICE_DISCOVERY_OPERATION_THROTTLED", "ERROR"
    ),
    "placement failure, other cluster": lambda: service_action(
        "SERVICE_TASK_PLACEMENT_FAILURE", "ERROR", cluster="batch"
    ),
    "placement failure, name-prefix sibling": lambda: service_action(
        "SERVICE_TASK_PLACEMENT_FAILURE", "ERROR", cluster=f"{CLUSTER}-canary"
    ),
    "placement failure, name-suffix sibling": lambda: service_action(
        "SERVICE_TASK_PLACEMENT_FAILURE", "ERROR", cluster=f"old-{CLUSTER}"
    ),
    "deployment failed, name-prefix sibling": lambda: deployment(
        "SERVICE_DEPLOYMENT_FAILED", cluster=f"{CLUSTER}-canary"
    ),
    "deployment in progress": lambda: deployment("SERVICE_DEPLOYMENT_IN_PROGRESS"),
    "deployment completed": lambda: deployment("SERVICE_DEPLOYMENT_COMPLETED"),
    "running Fargate task (sample)": running_task,
    "running service task": lambda: running_task(group="service:web"),
    "stopped by a deployment": lambda: stopped_task("ServiceSchedulerInitiated", (143,)),
    "stopped by a user": lambda: stopped_task("UserInitiated", (137,)),
    "spot interruption": lambda: stopped_task("SpotInterruption", (143,)),
    "instance terminated by the refresh": lambda: stopped_task("TerminationNotice", (143,)),
    "essential container exited 0": lambda: stopped_task("EssentialContainerExited", (0, 0)),
    "essential container exited, no exit code": lambda: stopped_task(
        "EssentialContainerExited", (None,)
    ),
    "standalone task failed to start": lambda: stopped_task(
        "TaskFailedToStart", (None,), group="family:nightly-report"
    ),
    "standalone task exited 1": lambda: stopped_task(
        "EssentialContainerExited", (1,), group="family:nightly-report"
    ),
    "task failed to start, name-prefix sibling": lambda: stopped_task(
        "TaskFailedToStart", (None,), cluster=f"{CLUSTER}-canary"
    ),
    "agent disconnected": lambda: (
        in_cluster(sample("ecs_service_action_steady_state_info"))
        | {
            "detail-type": "ECS Container Instance State Change",
            "detail": {"clusterArn": CLUSTER_ARN, "agentConnected": False, "status": "ACTIVE"},
        }
    ),
    "same shape from another source": lambda: (
        in_cluster(sample("ecs_service_action_task_placement_failure_error"))
        | {"source": "custom.ecs"}
    ),
}


@pytest.mark.parametrize("case", COUNTED)
def test_counted(case: str) -> None:
    assert matches(COUNTED[case]())


@pytest.mark.parametrize("case", NOT_COUNTED)
def test_not_counted(case: str) -> None:
    assert not matches(NOT_COUNTED[case]())


def test_samples_are_adapted_to_the_cluster_under_test() -> None:
    # Guards the adapter itself: as recorded, the samples belong to the cluster "default".
    assert not matches(sample("ecs_service_action_task_placement_failure_error"))
    assert not matches(sample("ecs_deployment_state_change_failed_error"))
    assert matches(sample("ecs_service_action_task_placement_failure_error"), cluster="default")
    assert matches(sample("ecs_deployment_state_change_failed_error"), cluster="default")


@pytest.mark.parametrize("name", ["", "prod*", "prod/web", "prod web", "x" * 256, None])
def test_invalid_cluster_name_is_rejected_by_name(name: Any) -> None:
    with pytest.raises(ValueError, match=r"ECS cluster name .* is invalid"):
        ecs_error_event_pattern(name)


def test_pattern_fits_the_put_rule_limit_for_the_longest_cluster_name() -> None:
    limit = (
        botocore.session.get_session()
        .get_service_model("events")
        .operation_model("PutRule")
        .input_shape.members["EventPattern"]
        .metadata["max"]
    )
    assert len(json.dumps(ecs_error_event_pattern("c" * 255))) <= limit


# CloudWatch Logs JSON equality selector: { $.field = "value" }.
_EQUALITY_SELECTOR = re.compile(r'\{ \$\.([A-Za-z0-9_-]+) = "([^"*]*)" \}')


def metric_filter_matches(log_line: str) -> bool:
    field, value = _EQUALITY_SELECTOR.fullmatch(METRIC_FILTER_PATTERN).groups()
    try:
        record = json.loads(log_line)
    except ValueError:
        return False  # a JSON selector never matches a non-JSON line
    return isinstance(record, dict) and record.get(field) == value


def test_metric_filter_counts_every_event_the_rule_delivers() -> None:
    assert _EQUALITY_SELECTOR.fullmatch(METRIC_FILTER_PATTERN), "not a single equality selector"
    for case, build in COUNTED.items():
        assert metric_filter_matches(json.dumps(build())), case


@pytest.mark.parametrize(
    "line",
    [
        json.dumps(sample("s3_eventbridge_object_created")),
        json.dumps({"detail": {"source": "aws.ecs"}}),
        "aws.ecs SERVICE_TASK_PLACEMENT_FAILURE",
    ],
)
def test_metric_filter_ignores_anything_else_written_to_the_group(line: str) -> None:
    assert not metric_filter_matches(line)
