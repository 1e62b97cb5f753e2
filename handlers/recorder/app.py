"""Lambda entry point of the rollout recorder (DESIGN §10): one event in, the status table updated.

An event that does not validate is refused: one WARNING line naming why and the metric
`RefusedEvents`, and the invocation succeeds, so a malformed or forged event is never retried
into a crash loop. An event that is valid but belongs to no rollout (a refresh an operator
started, a convergence that found no image) is `unplaced`: logged and counted, nothing written.
Only AWS errors fail the invocation; Lambda retries it, and then it lands in the dead-letter
queue. Every write is conditional, so a retried, replayed or late event never regresses a newer
state (`handlers.common.status.order_key`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import replace
from typing import Any

import boto3

from handlers.common import status
from handlers.common.log import get_logger, log
from handlers.recorder import logic
from handlers.recorder.aws import RecorderAws

LOGGER = get_logger("golden-ami.recorder")
METRIC_NAMESPACE = "GoldenAmi/Rollouts"
REPORTS_METRIC = "GroupReports"  # dimensions Rollout, State: every accepted state change
REFUSED_METRIC = "RefusedEvents"
UNPLACED_METRIC = "UnplacedEvents"
STALE_METRIC = "StaleEvents"


class ConfigurationError(ValueError):
    """An environment variable the component sets is missing."""


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    table_name = os.environ.get("TABLE_NAME", "").strip()
    if not table_name:
        raise ConfigurationError("environment variable TABLE_NAME is missing or empty")
    return recorder(table_name).record(event)


@functools.cache
def recorder(table_name: str) -> Recorder:
    """Clients live as long as the execution environment: warm invocations reuse them."""
    return Recorder(RecorderAws(boto3.Session(), table_name))


class Recorder:
    def __init__(self, aws: RecorderAws) -> None:
        self._aws = aws
        self._indexed: set[str] = set()  # rollouts already in the index (per environment)

    def record(self, event: Any) -> dict[str, Any]:
        try:
            report = logic.parse_event(event)
        except logic.RejectedEventError as error:
            return self._refused(event, str(error))
        report, unplaced = self._placed(report)
        if unplaced:
            log(LOGGER, "event unplaced", **_event_fields(event), reason=unplaced)
            _metric(UNPLACED_METRIC)
            return {"recorded": False, "unplaced": unplaced}
        rollout_id = str(report.rollout_id)
        self._index(rollout_id, report.time)
        if report.state == "started":
            self._aws.put_if_absent(_refresh_item(report))
        accepted = self._aws.put_if_newer(report.status().to_item(rollout_id))
        fields = {"rolloutId": rollout_id, **_report_fields(report)}
        if not accepted:
            log(LOGGER, "stale event: the table holds a newer state", **fields)
            _metric(STALE_METRIC)
            return {"recorded": False, "stale": True, "rolloutId": rollout_id}
        log(LOGGER, "group state recorded", **fields)
        _metric(REPORTS_METRIC, Rollout=rollout_id, State=report.state)
        in_use = self._update_in_use(report)
        return {"recorded": True, "rolloutId": rollout_id, "state": report.state, **in_use}

    def _refused(self, event: Any, reason: str) -> dict[str, Any]:
        log(LOGGER, "event refused", logging.WARNING, reason=reason, **_event_fields(event))
        _metric(REFUSED_METRIC)
        return {"recorded": False, "refused": reason}

    def _placed(self, report: logic.Report) -> tuple[logic.Report, str]:
        """The report with its rollout id (and a refresh end's AMIs), or why it has none."""
        if report.is_refresh_end:
            key = status.refresh_key(report.account, report.region, str(report.refresh_id))
            refresh = self._aws.get(key, status.REFRESH_SORT_KEY)
            if refresh is None or refresh["group"] != report.group:
                return report, f"instance refresh {report.refresh_id} was not started by a rollout"
            return replace(
                report,
                rollout_id=refresh["rolloutId"],
                ami_before=refresh.get("amiBefore"),
                ami_after=refresh.get("amiAfter"),
            ), ""
        if report.rollout_id is not None:
            return report, ""
        if report.ami_after is None:
            return report, "the result names no image, so no rollout"
        rollout_id = self._aws.rollout_of_image(report.region, report.ami_after)
        if rollout_id is None:
            return report, f"{report.ami_after} is not an image this account built"
        return replace(report, rollout_id=rollout_id), ""

    def _index(self, rollout_id: str, seen_at: str) -> None:
        if rollout_id not in self._indexed:
            self._aws.put_if_absent(status.rollout_index_item(rollout_id, seen_at))
            self._indexed.add(rollout_id)

    def _update_in_use(self, report: logic.Report) -> dict[str, Any]:
        """Keep the group's AMIs in the region's in-use set and the tag on the AMIs in step."""
        pk, sk = (
            status.in_use_key(report.region),
            status.group_key(report.account, report.region, report.group),
        )
        order = status.order_key(report.time, report.state)
        previous = self._aws.get(pk, sk)
        if previous is not None and previous["order"] >= order:
            return {}  # a newer report of another rollout already decided this group's AMIs
        before = tuple(previous["amis"]) if previous else ()
        amis = logic.amis_in_use(report, before)
        if amis == before:
            return {}
        item = {"pk": pk, "sk": sk, "amis": list(amis), "order": order, "updatedAt": report.time}
        if not self._aws.put_if_newer(item):
            return {}
        tagged, untagged = sorted(set(amis) - set(before)), sorted(set(before) - set(amis))
        if tagged:
            tagged = [i["ImageId"] for i in self._aws.own_images(report.region, tagged)]
        if untagged:
            still_used = {ami for i in self._aws.in_use_items(report.region) for ami in i["amis"]}
            owned = self._aws.own_images(report.region, set(untagged) - still_used)
            untagged = [image["ImageId"] for image in owned]
        if tagged:
            self._aws.tag_in_use(report.region, tagged)
        if untagged:
            self._aws.untag_in_use(report.region, untagged)
        if tagged or untagged:
            log(
                LOGGER, "in-use tag updated", region=report.region, tagged=tagged, untagged=untagged
            )
        return {"inUseTagged": tagged, "inUseUntagged": untagged}


def _refresh_item(report: logic.Report) -> dict[str, Any]:
    item = {
        "pk": status.refresh_key(report.account, report.region, str(report.refresh_id)),
        "sk": status.REFRESH_SORT_KEY,
        "rolloutId": report.rollout_id,
        "group": report.group,
        "amiBefore": report.ami_before,
        "amiAfter": report.ami_after,
    }
    return {key: value for key, value in item.items() if value is not None}


def _report_fields(report: logic.Report) -> dict[str, Any]:
    return {
        "account": report.account,
        "region": report.region,
        "group": report.group,
        "state": report.state,
        "time": report.time,
    }


def _event_fields(event: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        return {}
    return {key: event.get(key) for key in ("id", "source", "detail-type", "account", "region")}


def _metric(name: str, **dimensions: str) -> None:
    """One count in CloudWatch embedded metric format: CloudWatch Logs turns it into a metric."""
    fields: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": METRIC_NAMESPACE,
                    "Dimensions": [sorted(dimensions)],
                    "Metrics": [{"Name": name, "Unit": "Count"}],
                }
            ],
        },
        **dimensions,
        name: 1,
    }
    log(LOGGER, "metric", logging.INFO, **fields)
