"""sandbox/ecs_alarm.py: ECS events → rule → log group → metric filter → alarm, emulated on moto.

The pure parts are checked against CloudWatch's documented behaviour (filter-pattern syntax, alarm
evaluation with TreatMissingData); the plumbing is checked on moto with the project's own rule
pattern and metric filter from components/ecs_errors.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from components.ecs_errors import METRIC_FILTER_PATTERN, ecs_error_event_pattern
from sandbox.ecs_alarm import (
    EventBridgeEmulator,
    UnsupportedFilterPatternError,
    compile_filter_pattern,
    ecs_service_event,
    ecs_task_stopped_event,
    evaluation_range,
    event_matches,
    flatten_object_arrays,
    judge_alarm,
    metric_value,
)
from sandbox.lambda_invoke import LambdaRouter
from sandbox.moto_deploy import deploy
from tests.pulumi_harness import FIXTURES, run_stack

ACCOUNT, REGION, CLUSTER = "123456789012", "eu-west-1", "web"
LOG_GROUP = f"/golden-ami/ecs-errors/{CLUSTER}"
ALARM = f"golden-ami-{CLUSTER}-ecs-errors"
# moto only accepts log events from the last 14 days, so the simulated clock starts near the real
# one, on a period boundary so every test sees the same period layout.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def sample(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def placement_failure(at: datetime, n: int = 0, cluster: str = CLUSTER) -> dict[str, Any]:
    return ecs_service_event(
        account=ACCOUNT,
        region=REGION,
        cluster=cluster,
        service="api",
        event_name="SERVICE_TASK_PLACEMENT_FAILURE",
        event_type="ERROR",
        reason="RESOURCE:MEMORY",
        at=at,
        event_id=f"00000000-0000-0000-0000-{n:012d}",
    )


def stopped_task(stop_code: str, exit_code: int | None, group: str = "service:api") -> dict:
    return ecs_task_stopped_event(
        account=ACCOUNT,
        region=REGION,
        cluster=CLUSTER,
        group=group,
        stop_code=stop_code,
        stopped_reason="test",
        exit_code=exit_code,
        at=T0,
        event_id="11111111-2222-3333-4444-555555555555",
    )


# --- event shapes and pattern matching --------------------------------------------------------


def test_service_event_has_the_shape_of_the_real_sample() -> None:
    real = sample("ecs_service_action_task_placement_failure_error")
    built = placement_failure(T0)
    assert built.keys() == real.keys()
    assert set(built["detail"]) <= set(real["detail"])
    assert built["resources"] == [f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{CLUSTER}/api"]
    assert built["detail"]["clusterArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"


def test_stopped_task_event_has_the_shape_of_the_real_sample() -> None:
    real = sample("ecs_task_state_change_running_fargate")
    built = stopped_task("EssentialContainerExited", 1)
    stop_fields = {"stopCode", "stoppedReason", "stoppedAt"}
    assert built.keys() == real.keys()
    assert set(built["detail"]) - stop_fields <= set(real["detail"])
    assert set(built["detail"]["containers"][0]) - {"exitCode"} <= set(
        real["detail"]["containers"][0]
    )


def test_arrays_of_objects_become_value_lists_at_every_depth() -> None:
    event = {
        "detail": {
            "containers": [
                {"exitCode": 0, "networkInterfaces": [{"ip": "10.0.0.1"}]},
                {"exitCode": 137, "networkInterfaces": [{"ip": "10.0.0.2"}]},
            ],
            "resources": ["a", "b"],
        }
    }
    assert flatten_object_arrays(event) == {
        "detail": {
            "containers": {
                "exitCode": [0, 137],
                "networkInterfaces": {"ip": ["10.0.0.1", "10.0.0.2"]},
            },
            "resources": ["a", "b"],
        }
    }


@pytest.mark.parametrize(
    ("stop_code", "exit_code", "group", "counted"),
    [
        ("TaskFailedToStart", None, "service:api", True),
        ("EssentialContainerExited", 137, "service:api", True),
        ("EssentialContainerExited", 0, "service:api", False),
        ("TaskFailedToStart", None, "family:report", False),
        ("ServiceSchedulerInitiated", 143, "service:api", False),
    ],
)
def test_stopped_tasks_meet_the_project_pattern_through_the_container_array(
    stop_code: str, exit_code: int | None, group: str, counted: bool
) -> None:
    event = stopped_task(stop_code, exit_code, group)
    assert event_matches(ecs_error_event_pattern(CLUSTER), event) is counted


def test_exit_code_rule_needs_the_array_flattening() -> None:
    # Without flattening moto would never see detail.containers.exitCode: the rule would be dead.
    pattern = {"detail": {"containers": {"exitCode": [{"numeric": [">", 0]}]}}}
    assert event_matches(pattern, stopped_task("EssentialContainerExited", 1))
    assert not event_matches(pattern, stopped_task("EssentialContainerExited", 0))


# --- metric-filter patterns (CloudWatch Logs filter pattern syntax) ---------------------------

ECS_LINE = json.dumps(
    {"source": "aws.ecs", "detail-type": "ECS Service Action", "detail": {"count": 4, "n": [7]}}
)


@pytest.mark.parametrize(
    ("pattern", "line", "expected"),
    [
        ("", "anything at all", True),
        (METRIC_FILTER_PATTERN, ECS_LINE, True),
        (METRIC_FILTER_PATTERN, json.dumps({"source": "aws.s3"}), False),
        (METRIC_FILTER_PATTERN, json.dumps({"detail": {"source": "aws.ecs"}}), False),
        (METRIC_FILTER_PATTERN, "source aws.ecs", False),
        ('{ $.source = "aws.s3" || $.detail-type = "ECS Service Action" }', ECS_LINE, True),
        ('{ $.source = "aws.s3" || $.detail-type = "Other" }', ECS_LINE, False),
        ('{ $.source = "aws.ecs" && ($.detail.count > 5 || $.detail.n[0] = 7) }', ECS_LINE, True),
        ('{ $.source = "aws.ecs" && $.detail.count > 5 }', ECS_LINE, False),
        ('{ $.detail-type = "ECS *" }', ECS_LINE, True),
        ('{ $.detail-type = "ECS" }', ECS_LINE, False),
        ('{ $.source != "aws.s3" }', ECS_LINE, True),
        ('{ $.missing != "x" }', ECS_LINE, False),
        ('{ $.detail.count = "4" }', ECS_LINE, False),
        ("{ $.detail.count >= 4 }", ECS_LINE, True),
        ('ERROR "task failed"', "ERROR: task failed to start", True),
        ('ERROR "task failed"', "error: task failed to start", False),
    ],
)
def test_filter_pattern_semantics(pattern: str, line: str, expected: bool) -> None:
    assert compile_filter_pattern(pattern)(line) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        "?ERROR ?WARN",
        "ERROR -DEBUG",
        "[ip, user, status=5*]",
        "%ERR[0-9]+%",
        "{ $.source = aws.ecs }",
        "{ $.source IS NULL }",
        '{ $.source = "aws.ecs"',
        '{ $.count > "3" }',
        '{ ($.source = "aws.ecs" }',
        "{ }",
    ],
)
def test_filter_patterns_outside_the_subset_are_rejected_by_name(pattern: str) -> None:
    with pytest.raises(UnsupportedFilterPatternError) as error:
        compile_filter_pattern(pattern)
    assert repr(pattern.strip())[1:-1][:10] in str(error.value)


def test_metric_value_is_a_constant_or_a_numeric_field() -> None:
    assert metric_value({"metricValue": "1"}, "not json") == 1.0
    assert metric_value({"metricValue": "$.detail.count"}, ECS_LINE) == 4.0
    assert metric_value({"metricValue": "$.source"}, ECS_LINE) is None
    assert metric_value({"metricValue": "$.absent"}, ECS_LINE) is None


# --- alarm evaluation ---------------------------------------------------------------------------


def judge(datapoints: list[float | None], **overrides: Any) -> str:
    settings = {
        "threshold": 3.0,
        "comparison": "GreaterThanOrEqualToThreshold",
        "datapoints_to_alarm": 1,
        "treat_missing_data": "notBreaching",
        "current_state": "OK",
    } | overrides
    return judge_alarm(datapoints, **settings).state


def test_threshold_comparison_is_inclusive_only_for_or_equal_operators() -> None:
    assert judge([3.0]) == "ALARM"
    assert judge([2.0]) == "OK"
    assert judge([3.0], comparison="GreaterThanThreshold") == "OK"
    assert judge([2.0], comparison="LessThanThreshold") == "ALARM"
    assert judge([3.0], comparison="LessThanOrEqualToThreshold") == "ALARM"


def test_m_out_of_n_needs_m_breaching_periods() -> None:
    assert judge([5.0, 1.0, 5.0], datapoints_to_alarm=2) == "ALARM"
    assert judge([5.0, 1.0, 1.0], datapoints_to_alarm=2) == "OK"


@pytest.mark.parametrize(
    ("treat", "current", "expected"),
    [
        ("notBreaching", "ALARM", "OK"),
        ("breaching", "OK", "ALARM"),
        ("missing", "OK", "INSUFFICIENT_DATA"),
        ("ignore", "ALARM", "ALARM"),
        ("ignore", "OK", "OK"),
    ],
)
def test_all_missing_follows_treat_missing_data(treat: str, current: str, expected: str) -> None:
    assert judge([None, None], treat_missing_data=treat, current_state=current) == expected


def test_partly_missing_periods() -> None:
    # One error burst among empty periods: notBreaching keeps it at one breach, breaching adds two.
    assert judge([None, 4.0, None], datapoints_to_alarm=2) == "OK"
    assert judge([None, 4.0, None], datapoints_to_alarm=2, treat_missing_data="breaching") == (
        "ALARM"
    )
    assert judge([None, 1.0, None], treat_missing_data="missing") == "OK"


def test_unknown_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="anomaly detection"):
        judge([1.0], comparison="LessThanLowerOrGreaterThanUpperThreshold")
    with pytest.raises(ValueError, match="TreatMissingData 'NotBreaching'"):
        judge([1.0], treat_missing_data="NotBreaching")


def test_evaluation_range_is_aligned_to_the_period_and_ends_with_the_current_one() -> None:
    at = T0 + timedelta(minutes=12, seconds=30)
    assert evaluation_range(at, 300, 3) == [
        T0 + timedelta(minutes=0),
        T0 + timedelta(minutes=5),
        T0 + timedelta(minutes=10),
    ]


# --- the chain on moto ----------------------------------------------------------------------------


@pytest.fixture
def chain() -> Iterator[tuple[EventBridgeEmulator, boto3.Session]]:
    """The workload stack's alarm chain for one cluster, created in moto as the component does."""
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        logs, events = session.client("logs"), session.client("events")
        logs.create_log_group(logGroupName=LOG_GROUP)
        logs.put_metric_filter(
            logGroupName=LOG_GROUP,
            filterName="ecs-errors",
            filterPattern=METRIC_FILTER_PATTERN,
            metricTransformations=[
                {
                    "metricName": "EcsErrors",
                    "metricNamespace": "GoldenAmi",
                    "metricValue": "1",
                    "defaultValue": 0,
                }
            ],
        )
        events.put_rule(
            Name="ecs-errors", EventPattern=json.dumps(ecs_error_event_pattern(CLUSTER))
        )
        events.put_targets(
            Rule="ecs-errors",
            Targets=[
                {"Id": "log", "Arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{LOG_GROUP}"}
            ],
        )
        session.client("cloudwatch").put_metric_alarm(
            AlarmName=ALARM,
            Namespace="GoldenAmi",
            MetricName="EcsErrors",
            Statistic="Sum",
            Period=300,
            EvaluationPeriods=1,
            Threshold=3,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="notBreaching",
        )
        yield EventBridgeEmulator(session, REGION), session


def alarm_state(session: boto3.Session) -> str:
    return session.client("cloudwatch").describe_alarms(AlarmNames=[ALARM])["MetricAlarms"][0][
        "StateValue"
    ]


def test_matching_event_lands_in_the_log_group_as_eventbridge_writes_it(chain) -> None:
    emulator, session = chain
    event = placement_failure(T0 + timedelta(seconds=42))

    deliveries = emulator.put_event(event, at=T0 + timedelta(seconds=42))

    assert [d.rule for d in deliveries] == ["ecs-errors"]
    logged = session.client("logs").filter_log_events(logGroupName=LOG_GROUP)["events"]
    assert [json.loads(e["message"]) for e in logged] == [event]
    assert logged[0]["timestamp"] == int((T0 + timedelta(seconds=42)).timestamp() * 1000)


def test_events_the_pattern_rejects_never_reach_the_log_group(chain) -> None:
    emulator, session = chain
    other_cluster = placement_failure(T0, cluster="batch")
    deployment_stop = stopped_task("ServiceSchedulerInitiated", 143)

    assert emulator.put_event(other_cluster, at=T0) == []
    assert emulator.put_event(deployment_stop, at=T0) == []
    assert session.client("logs").filter_log_events(logGroupName=LOG_GROUP)["events"] == []


def test_errors_reaching_the_threshold_trip_the_alarm_and_quiet_periods_clear_it(chain) -> None:
    emulator, session = chain
    for n in range(2):
        emulator.put_event(placement_failure(T0 + timedelta(seconds=10 * n), n), T0)
    assert emulator.evaluate_alarms(T0 + timedelta(minutes=1)) == []
    assert alarm_state(session) == "OK"

    emulator.put_event(placement_failure(T0 + timedelta(minutes=2), 2), T0 + timedelta(minutes=2))
    [transition] = emulator.evaluate_alarms(T0 + timedelta(minutes=3))
    assert (transition.alarm, transition.old_state, transition.new_state) == (ALARM, "OK", "ALARM")
    assert transition.reason.startswith("Threshold Crossed: 1 out of the last 1 datapoints [3]")
    assert alarm_state(session) == "ALARM"

    # The next period holds no data at all: missing data is not breaching, so the alarm clears.
    [cleared] = emulator.evaluate_alarms(T0 + timedelta(minutes=6))
    assert (cleared.old_state, cleared.new_state) == ("ALARM", "OK")
    assert alarm_state(session) == "OK"


def test_errors_in_different_periods_do_not_add_up(chain) -> None:
    emulator, session = chain
    emulator.put_event(placement_failure(T0, 0), T0 + timedelta(minutes=4))
    emulator.put_event(placement_failure(T0, 1), T0 + timedelta(minutes=4, seconds=30))
    emulator.put_event(placement_failure(T0, 2), T0 + timedelta(minutes=5))
    assert emulator.evaluate_alarms(T0 + timedelta(minutes=5, seconds=30)) == []
    assert alarm_state(session) == "OK"


def test_unmatched_log_lines_publish_the_default_value(chain) -> None:
    emulator, session = chain
    published = emulator.ingest_log_events(
        LOG_GROUP, stream="noise", messages=['{"source": "aws.s3"}', "plain text"], at=T0
    )
    assert published == 1
    stats = session.client("cloudwatch").get_metric_statistics(
        Namespace="GoldenAmi",
        MetricName="EcsErrors",
        StartTime=T0,
        EndTime=T0 + timedelta(minutes=5),
        Period=300,
        Statistics=["Sum", "SampleCount"],
    )["Datapoints"]
    assert [(d["Sum"], d["SampleCount"]) for d in stats] == [(0.0, 1.0)]


def test_sqs_targets_receive_the_event(chain) -> None:
    emulator, session = chain
    sqs, events = session.client("sqs"), session.client("events")
    queue = sqs.create_queue(QueueName="uploads")["QueueUrl"]
    events.put_rule(Name="uploads", EventPattern=json.dumps({"source": ["aws.s3"]}))
    events.put_targets(
        Rule="uploads", Targets=[{"Id": "q", "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:uploads"}]
    )
    upload = sample("s3_eventbridge_object_created")

    assert [d.rule for d in emulator.put_event(upload, T0)] == ["uploads"]

    [message] = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert json.loads(message["Body"]) == upload


def test_disabled_rules_deliver_nothing(chain) -> None:
    emulator, session = chain
    session.client("events").disable_rule(Name="ecs-errors")
    assert emulator.put_event(placement_failure(T0), T0) == []


def test_unemulated_target_kinds_and_filter_dimensions_fail_loudly(chain) -> None:
    emulator, session = chain
    events, logs = session.client("events"), session.client("logs")
    events.put_rule(Name="to-sns", EventPattern=json.dumps({"source": ["aws.ecs"]}))
    events.put_targets(
        Rule="to-sns", Targets=[{"Id": "t", "Arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:humans"}]
    )
    with pytest.raises(ValueError, match=r"sns:.*does not emulate"):
        emulator.put_event(placement_failure(T0), T0)

    logs.put_metric_filter(
        logGroupName=LOG_GROUP,
        filterName="by-cluster",
        filterPattern="",
        metricTransformations=[
            {
                "metricName": "ByCluster",
                "metricNamespace": "GoldenAmi",
                "metricValue": "1",
                "dimensions": {"Cluster": "$.detail.clusterArn"},
            }
        ],
    )
    with pytest.raises(ValueError, match="'by-cluster' has dimensions"):
        emulator.ingest_log_events(LOG_GROUP, stream="s", messages=["x"], at=T0)


def test_metric_math_alarms_are_rejected_by_name(chain) -> None:
    emulator, session = chain
    session.client("cloudwatch").put_metric_alarm(
        AlarmName="p99",
        Namespace="GoldenAmi",
        MetricName="Latency",
        ExtendedStatistic="p99",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanThreshold",
    )
    with pytest.raises(ValueError, match="alarm 'p99'"):
        emulator.evaluate_alarms(T0)


# --- the refresh Lambda's outcome alarms, as the workload stack deploys them --------------------


def test_a_failed_group_puts_the_deployed_failed_groups_alarm_in_alarm(monkeypatch) -> None:
    """The fan-out only sees the 202 of its asynchronous invoke: the workload account's own
    alarm must fire. The dev example's groups do not exist here, so both end `failed`."""
    run = run_stack("workload-dev")
    [workload_account] = json.loads(run.config["aws:allowedAccountIds"])
    monkeypatch.setenv("MOTO_ACCOUNT_ID", workload_account)  # moto's default credentials
    with mock_aws(), LambdaRouter().installed() as router:
        session = boto3.Session(region_name=REGION)
        stack = deploy(
            run, workload_account, lambda region: boto3.Session(region_name=region), router
        )
        function = stack.function_named(run.config["golden-ami:refreshFunctionName"], REGION)
        session.client("lambda").invoke(
            FunctionName=function.arn, InvocationType="Event", Payload=b'{"action": "converge"}'
        )
        [invocation] = router.drain()
        assert [r["outcome"] for r in invocation.result["results"]] == ["failed", "failed"]

        transitions = EventBridgeEmulator(session, REGION).evaluate_alarms(datetime.now(UTC))

        states = {t.alarm: t.new_state for t in transitions}
        assert states[f"{function.name}-failed-groups"] == "ALARM"
        assert f"{function.name}-rejected-groups" not in states  # stays OK
