"""ECS events → EventBridge rule → CloudWatch Logs → metric filter → alarm, on top of moto.

moto 5.2 stores rules, log events, metric filters and alarms but never connects them: it
delivers `PutEvents` with the wall clock, evaluates no metric filter and no alarm. This module
is that missing plumbing for one account and region, driven by an explicit simulated time so a
run is deterministic. Everything it acts on is read back from moto through the public APIs, so
it exercises exactly what a stack created there (rule patterns, targets, filters, alarms):

1. `EventBridgeEmulator.put_event` matches an event against every enabled rule of the default bus
   with moto's real pattern matcher and delivers it to the rule's targets: log groups
   (PutLogEvents, event JSON as the message, as EventBridge does), Lambda functions (an async
   `Invoke`, routed in-process by `sandbox.lambda_invoke`) and SQS queues.
2. Log events written to a group are run through the group's metric filters (the subset of the
   filter-pattern syntax below) and published with PutMetricData at the log event's time.
3. `EventBridgeEmulator.evaluate_alarms` evaluates every metric alarm over its evaluation range
   from the datapoints in moto's CloudWatch and moves it with SetAlarmState when it changes.

`ecs_service_event` / `ecs_task_stopped_event` build ECS events in the shape of the real samples
(`tests/fixtures/aws-events/`) so the sandbox can emit them without reading files outside the repo.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import boto3
from moto.events.models import EventPattern

# ---------------------------------------------------------------------------------------------
# Event-pattern matching
# ---------------------------------------------------------------------------------------------


def flatten_object_arrays(value: Any) -> Any:
    """Turn every array of objects into an object of value lists, recursively.

    EventBridge follows a pattern path through arrays of objects (`detail.containers.exitCode`
    matches `{"containers": [{"exitCode": 1}]}`); moto's matcher stops at arrays. After this
    rewrite `detail.containers.exitCode` is the list `[1]`, which moto matches element-wise the way
    EventBridge treats arrays. Arrays of scalars are left alone.
    """
    if isinstance(value, dict):
        return {key: flatten_object_arrays(item) for key, item in value.items()}
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        merged: dict[str, Any] = {}
        for item in value:
            _merge_values(merged, flatten_object_arrays(item))
        return merged
    return value


def _merge_values(into: dict[str, Any], item: dict[str, Any]) -> None:
    """Add every leaf of `item` to the value list at the same path in `into`."""
    for key, field in item.items():
        if isinstance(field, dict):
            nested = into.setdefault(key, {})
            if isinstance(nested, dict):
                _merge_values(nested, field)
        else:
            values = into.setdefault(key, [])
            if isinstance(values, list):
                values.extend(field if isinstance(field, list) else [field])


def event_matches(pattern: dict[str, Any] | str, event: dict[str, Any]) -> bool:
    """True when EventBridge would deliver `event` to a rule with `pattern`."""
    raw = pattern if isinstance(pattern, str) else json.dumps(pattern)
    return EventPattern.load(raw).matches_event(flatten_object_arrays(event))


# ---------------------------------------------------------------------------------------------
# Metric-filter patterns
# ---------------------------------------------------------------------------------------------


class UnsupportedFilterPatternError(ValueError):
    """A filter pattern outside the emulated subset: failing loudly beats counting wrongly."""


LogPredicate = Callable[[str], bool]

_JSON_TOKEN = re.compile(
    r"""\s*(?:
        (?P<selector>\$(?:\.[A-Za-z0-9_-]+|\[\d+\])+)
      | (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op>&&|\|\||!=|<=|>=|=|<|>|\(|\))
    )""",
    re.VERBOSE,
)
_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_MISSING = object()


def compile_filter_pattern(pattern: str) -> LogPredicate:
    """Compile the CloudWatch Logs filter-pattern subset the project uses into a predicate.

    Supported: the empty pattern (every event); JSON patterns `{ <expr> }` where `<expr>` combines
    comparisons `$.a.b[0] = "value"` (`*` is a wildcard, also with `!=`) or `$.n >= 3` (numbers,
    any of = != < <= > >=) with `&&`, `||` and parentheses; and plain term patterns (every
    whitespace-separated term, or "quoted phrase", must occur in the message, case-sensitively).
    Anything else (`?term`, `-term`, space-delimited `[...]`, regex `%...%`, `IS NULL`, `EXISTS`,
    unquoted JSON strings) raises `UnsupportedFilterPatternError` naming the pattern.
    """
    text = pattern.strip()
    if not text:
        return lambda message: True
    if text.startswith("{"):
        if not text.endswith("}"):
            raise UnsupportedFilterPatternError(
                f"JSON filter pattern {pattern!r} is not closed by '}}'"
            )
        condition = _JsonPatternParser(text[1:-1], pattern).parse()
        return lambda message: _evaluate_json(condition, message)
    return _term_predicate(text, pattern)


def _term_predicate(text: str, pattern: str) -> LogPredicate:
    terms = []
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', text):
        quoted, bare = match.groups()
        if bare is not None and (bare[0] in "?-[%" or not re.fullmatch(r"[A-Za-z0-9_.:/]+", bare)):
            raise UnsupportedFilterPatternError(
                f"filter pattern {pattern!r}: term {bare!r} uses syntax the sandbox does not "
                'emulate (supported: plain terms, "quoted phrases", JSON { $.field = "value" })'
            )
        terms.append(quoted if quoted is not None else bare)
    return lambda message: all(term in message for term in terms)


@dataclass(frozen=True)
class _Comparison:
    path: tuple[str | int, ...]
    op: str
    value: str | float


@dataclass(frozen=True)
class _Junction:
    op: str  # "&&" or "||"
    operands: tuple[_Comparison | _Junction, ...]


class _JsonPatternParser:
    """Recursive descent over `expr := and ('||' and)*; and := term ('&&' term)*`."""

    def __init__(self, body: str, pattern: str):
        self._pattern = pattern
        self._tokens = self._tokenize(body)
        self._position = 0

    def _tokenize(self, body: str) -> list[tuple[str, str]]:
        tokens, position = [], 0
        while body[position:].strip():
            match = _JSON_TOKEN.match(body, position)
            if not match:
                self._fail(f"cannot read {body[position:].strip()!r}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            position = match.end()
        return tokens

    def _fail(self, problem: str) -> NoReturn:
        raise UnsupportedFilterPatternError(
            f"JSON filter pattern {self._pattern!r}: {problem} (supported: $.selector "
            'compared with "string" or number, combined with &&, || and parentheses)'
        )

    def _peek(self) -> tuple[str, str] | None:
        return self._tokens[self._position] if self._position < len(self._tokens) else None

    def _take(self, kind: str) -> str:
        token = self._peek()
        if token is None or token[0] != kind:
            self._fail(f"expected {kind} at {token[1] if token else 'end of pattern'!r}")
        self._position += 1
        return token[1]

    def parse(self) -> _Comparison | _Junction:
        if not self._tokens:
            self._fail("empty JSON condition")
        condition = self._junction("||", lambda: self._junction("&&", self._term))
        if self._peek() is not None:
            self._fail(f"unexpected {self._tokens[self._position][1]!r}")
        return condition

    def _junction(
        self, op: str, operand: Callable[[], _Comparison | _Junction]
    ) -> _Comparison | _Junction:
        operands = [operand()]
        while self._peek() == ("op", op):
            self._position += 1
            operands.append(operand())
        return operands[0] if len(operands) == 1 else _Junction(op, tuple(operands))

    def _term(self) -> _Comparison | _Junction:
        if self._peek() == ("op", "("):
            self._position += 1
            inner = self._junction("||", lambda: self._junction("&&", self._term))
            if self._take("op") != ")":
                self._fail("expected ')'")
            return inner
        path = _parse_selector(self._take("selector"))
        op = self._take("op")
        if op not in _COMPARATORS:
            self._fail(f"{op!r} is not a comparison")
        kind, literal = self._peek() or ("", "")
        if kind == "string":
            if op not in ("=", "!="):
                self._fail(f"strings compare only with = or !=, not {op!r}")
            value: str | float = json.loads(literal)
        elif kind == "number":
            value = float(literal)
        else:
            self._fail(f'expected a "quoted string" or a number after {op!r}')
        self._position += 1
        return _Comparison(path, op, value)


def _parse_selector(selector: str) -> tuple[str | int, ...]:
    return tuple(
        int(index) if index else name
        for name, index in re.findall(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", selector)
    )


def _evaluate_json(condition: _Comparison | _Junction, message: str) -> bool:
    try:
        document = json.loads(message)
    except ValueError:
        return False  # a JSON pattern never matches a non-JSON log event
    return _holds(condition, document)


def _holds(condition: _Comparison | _Junction, document: Any) -> bool:
    if isinstance(condition, _Junction):
        combine = all if condition.op == "&&" else any
        return combine(_holds(operand, document) for operand in condition.operands)
    field = _select(document, condition.path)
    if isinstance(condition.value, str):
        if not isinstance(field, str):
            return False  # also a missing field: no comparison holds on it
        pattern = ".*".join(re.escape(part) for part in condition.value.split("*"))
        found = re.fullmatch(pattern, field, re.DOTALL) is not None
        return found if condition.op == "=" else not found
    if isinstance(field, bool) or not isinstance(field, int | float):
        return False
    return _COMPARATORS[condition.op](field, condition.value)


def _select(document: Any, path: Iterable[str | int]) -> Any:
    for step in path:
        in_list = isinstance(step, int) and isinstance(document, list) and step < len(document)
        in_object = isinstance(step, str) and isinstance(document, dict) and step in document
        if not (in_list or in_object):
            return _MISSING
        document = document[step]
    return document


def metric_value(transformation: dict[str, Any], message: str) -> float | None:
    """The value a matching log event contributes: a constant, or a numeric `$.field`."""
    spec = str(transformation["metricValue"])
    if not spec.startswith("$"):
        return float(spec)
    try:
        field = _select(json.loads(message), _parse_selector(spec))
    except ValueError:
        return None
    if isinstance(field, bool) or not isinstance(field, int | float):
        return None  # CloudWatch Logs publishes nothing for a non-numeric field
    return float(field)


# ---------------------------------------------------------------------------------------------
# Alarm evaluation
# ---------------------------------------------------------------------------------------------

_THRESHOLD_COMPARISONS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanOrEqualToThreshold": (operator.ge, "greater than or equal to"),
    "GreaterThanThreshold": (operator.gt, "greater than"),
    "LessThanThreshold": (operator.lt, "less than"),
    "LessThanOrEqualToThreshold": (operator.le, "less than or equal to"),
}


@dataclass(frozen=True)
class AlarmVerdict:
    state: str  # OK | ALARM | INSUFFICIENT_DATA
    reason: str


def judge_alarm(
    datapoints: list[float | None],
    *,
    threshold: float,
    comparison: str,
    datapoints_to_alarm: int,
    treat_missing_data: str,
    current_state: str,
) -> AlarmVerdict:
    """The state CloudWatch gives a metric alarm for the datapoints of its evaluation range.

    `datapoints` holds one aggregated value per period, oldest first, `None` for a period with no
    data. Missing periods count as within the threshold (`notBreaching`), as breaching
    (`breaching`), or are left out (`missing`, `ignore`); when every period is missing, `missing`
    gives INSUFFICIENT_DATA and `ignore` keeps the current state. The alarm goes to ALARM when at
    least `datapoints_to_alarm` periods breach ("M out of N"), otherwise OK.
    """
    if comparison not in _THRESHOLD_COMPARISONS:
        raise ValueError(f"comparison operator {comparison!r} is not emulated (anomaly detection)")
    breaches, wording = _THRESHOLD_COMPARISONS[comparison]
    if treat_missing_data not in ("missing", "ignore", "breaching", "notBreaching"):
        raise ValueError(f"TreatMissingData {treat_missing_data!r} is not a CloudWatch value")
    present = [value for value in datapoints if value is not None]
    if not present and treat_missing_data in ("missing", "ignore"):
        if treat_missing_data == "ignore":
            return AlarmVerdict(current_state, "No datapoints: current state kept (ignore)")
        return AlarmVerdict(
            "INSUFFICIENT_DATA",
            f"Insufficient Data: {len(datapoints)} datapoints were unknown.",
        )
    missing = len(datapoints) - len(present)
    breaching = sum(1 for value in present if breaches(value, threshold))
    if treat_missing_data == "breaching":
        breaching += missing
    state = "ALARM" if breaching >= datapoints_to_alarm else "OK"
    shown = ", ".join("missing" if value is None else f"{value:g}" for value in datapoints)
    verb = "Threshold Crossed" if state == "ALARM" else "Threshold not crossed"
    return AlarmVerdict(
        state,
        f"{verb}: {breaching} out of the last {len(datapoints)} datapoints [{shown}] "
        f"{'were' if breaching != 1 else 'was'} {wording} the threshold ({threshold:g}) "
        f"(minimum {datapoints_to_alarm} for ALARM, missing data {treat_missing_data}).",
    )


def evaluation_range(at: datetime, period: int, evaluation_periods: int) -> list[datetime]:
    """Start of each period an alarm evaluated at `at` looks at, oldest first.

    Periods are aligned to multiples of `period` since the epoch, as CloudWatch aggregates them;
    the newest is the one containing `at` (alarms are evaluated every minute over the data
    received so far, so a burst of errors trips the alarm before its period closes).
    """
    newest = int(at.timestamp()) // period * period
    return [
        datetime.fromtimestamp(newest - offset * period, tz=UTC)
        for offset in reversed(range(evaluation_periods))
    ]


# ---------------------------------------------------------------------------------------------
# The plumbing on moto, for one account and region
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    rule: str
    target_arn: str


@dataclass(frozen=True)
class AlarmTransition:
    alarm: str
    old_state: str
    new_state: str
    reason: str


class EventBridgeEmulator:
    """Delivers events to the rules, log groups, metric filters and alarms of one account/region.

    `session` carries that account's credentials (in moto they select the account's backends).
    """

    def __init__(self, session: boto3.Session, region: str, buses: Any = None):
        """`buses` (`sandbox.event_buses.EventBuses`) delivers to other accounts' buses."""
        self.region = region
        self._buses = buses
        self._events = session.client("events", region_name=region)
        self._logs = session.client("logs", region_name=region)
        self._cloudwatch = session.client("cloudwatch", region_name=region)
        self._lambda = session.client("lambda", region_name=region)
        self._sqs = session.client("sqs", region_name=region)

    def put_event(
        self, event: dict[str, Any], at: datetime, bus: str = "default"
    ) -> list[Delivery]:
        """Deliver `event` to every enabled rule on `bus` whose pattern matches it."""
        deliveries = []
        for rule in self._enabled_rules(bus):
            if "EventPattern" not in rule or not event_matches(rule["EventPattern"], event):
                continue
            targets = self._events.list_targets_by_rule(Rule=rule["Name"], EventBusName=bus)[
                "Targets"
            ]
            for target in targets:
                self._deliver(target, event, at)
                deliveries.append(Delivery(rule["Name"], target["Arn"]))
        return deliveries

    def bus_policy(self, bus: str) -> dict[str, Any] | None:
        """The bus's resource policy ({} without one), or None when there is no such bus."""
        try:
            described = self._events.describe_event_bus(Name=bus)
        except self._events.exceptions.ResourceNotFoundException:
            return None
        return json.loads(described["Policy"]) if described.get("Policy") else {}

    def _enabled_rules(self, bus: str) -> list[dict[str, Any]]:
        rules, kwargs = [], {"EventBusName": bus}
        while True:
            page = self._events.list_rules(**kwargs)
            rules.extend(rule for rule in page["Rules"] if rule.get("State") == "ENABLED")
            if not page.get("NextToken"):
                return rules
            kwargs["NextToken"] = page["NextToken"]

    def _deliver(self, target: dict[str, Any], event: dict[str, Any], at: datetime) -> None:
        arn = target["Arn"]
        service, resource = arn.split(":")[2], arn.split(":", 5)[5]
        if service == "logs" and resource.startswith("log-group:"):
            group = resource.removeprefix("log-group:").removesuffix(":*")
            self.ingest_log_events(group, stream=event["id"], messages=[json.dumps(event)], at=at)
        elif service == "lambda":
            self._lambda.invoke(
                FunctionName=arn, InvocationType="Event", Payload=json.dumps(event).encode()
            )
        elif service == "events" and resource.startswith("event-bus/") and self._buses:
            self._buses.forward(target, event)
        elif service == "sqs":
            queue_url = self._sqs.get_queue_url(
                QueueName=resource, QueueOwnerAWSAccountId=arn.split(":")[4]
            )["QueueUrl"]
            self._sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
        else:
            raise ValueError(f"EventBridge target {arn} is of a kind the sandbox does not emulate")

    def ingest_log_events(self, group: str, stream: str, messages: list[str], at: datetime) -> int:
        """PutLogEvents into `group` at time `at`, then apply the group's metric filters.

        Returns the number of metric datapoints published.
        """
        timestamp = int(at.timestamp() * 1000)
        existing = self._logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=stream)
        if not any(s["logStreamName"] == stream for s in existing["logStreams"]):
            self._logs.create_log_stream(logGroupName=group, logStreamName=stream)
        self._logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": timestamp, "message": message} for message in messages],
        )
        return self._apply_metric_filters(group, messages, at)

    def _apply_metric_filters(self, group: str, messages: list[str], at: datetime) -> int:
        published = 0
        for metric_filter in self._logs.describe_metric_filters(logGroupName=group)[
            "metricFilters"
        ]:
            matches = compile_filter_pattern(metric_filter.get("filterPattern", ""))
            for transformation in metric_filter["metricTransformations"]:
                if transformation.get("dimensions"):
                    raise ValueError(
                        f"metric filter {metric_filter['filterName']!r} has dimensions, which the "
                        "sandbox does not emulate"
                    )
                values = [
                    value
                    for message in messages
                    if matches(message)
                    and (value := metric_value(transformation, message)) is not None
                ]
                # CloudWatch Logs reports the default value for an ingestion with no match.
                if not values and "defaultValue" in transformation:
                    values = [float(transformation["defaultValue"])]
                if values:
                    self._publish(transformation, values, at)
                    published += len(values)
        return published

    def _publish(self, transformation: dict[str, Any], values: list[float], at: datetime) -> None:
        datum: dict[str, Any] = {
            "MetricName": transformation["metricName"],
            "Timestamp": at,
            "Values": values,
        }
        if transformation.get("unit"):
            datum["Unit"] = transformation["unit"]
        self._cloudwatch.put_metric_data(
            Namespace=transformation["metricNamespace"], MetricData=[datum]
        )

    def evaluate_alarms(self, at: datetime) -> list[AlarmTransition]:
        """Evaluate every metric alarm at `at`; SetAlarmState the ones whose state changes."""
        transitions = []
        paginator = self._cloudwatch.get_paginator("describe_alarms")
        for page in paginator.paginate(AlarmTypes=["MetricAlarm"]):
            for alarm in page["MetricAlarms"]:
                verdict = self._judge(alarm, at)
                if verdict.state == alarm["StateValue"]:
                    continue
                self._cloudwatch.set_alarm_state(
                    AlarmName=alarm["AlarmName"],
                    StateValue=verdict.state,
                    StateReason=verdict.reason,
                    StateReasonData=json.dumps(
                        {"version": "1.0", "queryDate": at.isoformat(), "emulated": True}
                    ),
                )
                transitions.append(
                    AlarmTransition(
                        alarm["AlarmName"], alarm["StateValue"], verdict.state, verdict.reason
                    )
                )
        return transitions

    def _judge(self, alarm: dict[str, Any], at: datetime) -> AlarmVerdict:
        name = alarm["AlarmName"]
        if alarm.get("Metrics") or alarm.get("ExtendedStatistic") or not alarm.get("Statistic"):
            raise ValueError(
                f"alarm {name!r}: only single-metric alarms with a standard statistic are emulated"
            )
        period, evaluation_periods = alarm["Period"], alarm["EvaluationPeriods"]
        datapoints = [
            self._statistic(alarm, start, start + timedelta(seconds=period))
            for start in evaluation_range(at, period, evaluation_periods)
        ]
        return judge_alarm(
            datapoints,
            threshold=alarm["Threshold"],
            comparison=alarm["ComparisonOperator"],
            datapoints_to_alarm=alarm.get("DatapointsToAlarm") or evaluation_periods,
            treat_missing_data=alarm.get("TreatMissingData") or "missing",
            current_state=alarm["StateValue"],
        )

    def _statistic(self, alarm: dict[str, Any], start: datetime, end: datetime) -> float | None:
        request: dict[str, Any] = {
            "Namespace": alarm["Namespace"],
            "MetricName": alarm["MetricName"],
            "Dimensions": alarm.get("Dimensions", []),
            "StartTime": start,
            "EndTime": end,
            "Period": int((end - start).total_seconds()),
            "Statistics": [alarm["Statistic"]],
        }
        if alarm.get("Unit"):
            request["Unit"] = alarm["Unit"]
        datapoints = self._cloudwatch.get_metric_statistics(**request)["Datapoints"]
        return datapoints[0][alarm["Statistic"]] if datapoints else None


# ---------------------------------------------------------------------------------------------
# ECS events in the shape of the real samples
# ---------------------------------------------------------------------------------------------


def _ecs_envelope(
    detail_type: str, *, account: str, region: str, resource: str, at: datetime, event_id: str
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id,
        "detail-type": detail_type,
        "source": "aws.ecs",
        "account": account,
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [resource],
    }


def ecs_service_event(
    *,
    account: str,
    region: str,
    cluster: str,
    service: str,
    event_name: str,
    event_type: str,
    at: datetime,
    event_id: str,
    reason: str = "",
) -> dict[str, Any]:
    """An `ECS Service Action` event (sample: ecs_service_action_task_placement_failure_error)."""
    event = _ecs_envelope(
        "ECS Service Action",
        account=account,
        region=region,
        resource=f"arn:aws:ecs:{region}:{account}:service/{cluster}/{service}",
        at=at,
        event_id=event_id,
    )
    event["detail"] = {
        "eventType": event_type,
        "eventName": event_name,
        "clusterArn": f"arn:aws:ecs:{region}:{account}:cluster/{cluster}",
        "createdAt": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    if reason:
        event["detail"]["reason"] = reason
    return event


def ecs_task_stopped_event(
    *,
    account: str,
    region: str,
    cluster: str,
    group: str,
    stop_code: str,
    stopped_reason: str,
    exit_code: int | None,
    at: datetime,
    event_id: str,
) -> dict[str, Any]:
    """An `ECS Task State Change` to STOPPED (sample: ecs_task_state_change_running_fargate).

    `group` is `service:<name>` for a service's task, `family:<name>` for a standalone one.
    """
    task_id = event_id.replace("-", "")[:32]
    task_arn = f"arn:aws:ecs:{region}:{account}:task/{cluster}/{task_id}"
    container: dict[str, Any] = {
        "containerArn": f"arn:aws:ecs:{region}:{account}:container/{event_id}",
        "lastStatus": "STOPPED",
        "name": "app",
        "taskArn": task_arn,
    }
    if exit_code is not None:
        container["exitCode"] = exit_code
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    event = _ecs_envelope(
        "ECS Task State Change",
        account=account,
        region=region,
        resource=task_arn,
        at=at,
        event_id=event_id,
    )
    event["detail"] = {
        "clusterArn": f"arn:aws:ecs:{region}:{account}:cluster/{cluster}",
        "containers": [container],
        "createdAt": stamp,
        "launchType": "EC2",
        "desiredStatus": "STOPPED",
        "group": group,
        "lastStatus": "STOPPED",
        "stopCode": stop_code,
        "stoppedReason": stopped_reason,
        "stoppedAt": stamp,
        "taskArn": task_arn,
        "taskDefinitionArn": f"arn:aws:ecs:{region}:{account}:task-definition/app:1",
        "updatedAt": stamp,
        "version": 3,
    }
    return event
