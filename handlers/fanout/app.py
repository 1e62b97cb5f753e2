"""Lambda entry point of the Organization fan-out (DESIGN §4).

Image Builder publishes every image state change to SNS; this function receives it and, for an
AVAILABLE image, invokes the refresh function of every enrolled workload account in every
region of the image. Other states are logged and acknowledged.

Failing the invocation (raising) is how the OrgFanout failure alarm and the asynchronous
retries of SNS→Lambda are triggered, so the handler raises in exactly two situations:
- an account that is or may be enrolled was not reached (`failed`): a retry may succeed, and it
  is safe because the workload handler is idempotent (the same AMI yields `current`, an active
  refresh `deferred`);
- the event is malformed (`MalformedMessageError`): no retry can fix it, but silently acknowledging
  it would hide a broken pipeline, so we prefer two wasted retries and an alarm. Nothing has
  been invoked at that point.
Accounts without the workload stack (`not-enrolled`) never fail the invocation.

A slow account cannot hold the others: accounts are reached by a bounded thread pool, each call
has connect/read timeouts and bounded retries, and whatever has not finished when the
invocation's own deadline approaches is reported `failed` with reason "timed out".
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import BotoCoreError, ClientError

from handlers.common import status
from handlers.common.log import get_logger, log
from handlers.fanout import logic
from handlers.fanout.aws import FanoutAws, UnprocessedItemsError
from handlers.fanout.logic import FAILED, INVOKED, ImageNotice, Outcome

LOGGER = get_logger("golden-ami.fanout")

METRIC_NAMES = {INVOKED: "Invoked", logic.NOT_ENROLLED: "NotEnrolled", FAILED: "Failed"}
# Kept back from the Lambda timeout for the summary line and PutMetricData.
DEADLINE_MARGIN_SECONDS = 10.0
TIMED_OUT = "timed out: not finished before the invocation's deadline"


class FanoutFailedError(RuntimeError):
    """At least one account that is (or may be) enrolled was not reached; retrying is safe."""


def lambda_handler(
    event: dict[str, Any], context: Any, session: boto3.Session | None = None
) -> dict[str, Any]:
    """An SNS delivery fans out to every account; a RolloutWaves request to one wave's accounts."""
    settings = logic.parse_settings(os.environ)
    account_filter = None
    try:
        if isinstance(event, dict) and "imageMessage" in event:
            notice, account_filter = logic.parse_wave_event(event)
        else:
            notice = logic.parse_sns_event(event)
    except logic.MalformedMessageError as error:
        log(LOGGER, "rejected image message", logging.ERROR, error=str(error))
        raise
    if not notice.is_available:
        log(
            LOGGER,
            "image not available: acknowledged without fan-out",
            correlationId=notice.correlation_id,
            imageArn=notice.image_arn,
            status=notice.status,
            statusReason=notice.status_reason,
        )
        return {"status": notice.status, "fannedOut": False}

    aws = FanoutAws(session, max_concurrency=settings.max_concurrency)
    budget = context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_SECONDS
    result = fan_out(notice, settings, aws, budget_seconds=budget, account_filter=account_filter)

    summary: dict[str, Any] = {
        "correlationId": notice.correlation_id,
        "imageArn": notice.image_arn,
    }
    if account_filter is not None:
        summary["accountFilter"] = {
            "include" if account_filter.include is not None else "exclude": sorted(
                account_filter.members
            )
        }
    summary |= logic.summarize(result.outcomes)
    summary["skippedAccounts"] = result.skipped
    if result.listing_error:
        summary["listingError"] = result.listing_error
    if settings.rollout_table_name:
        summary["statusRecorded"] = _record_invocations(aws, settings, notice, result.outcomes)
    log(LOGGER, "fan-out summary", **summary)
    _publish_metrics(aws, settings.metric_namespace, summary["counts"])

    if result.listing_error or logic.should_fail(result.outcomes):
        counts = summary["counts"]
        raise FanoutFailedError(
            f"{counts[FAILED]} (account, region) pairs failed"
            + (f"; account listing failed: {result.listing_error}" if result.listing_error else "")
            + f" (correlationId {notice.correlation_id}); re-running is safe"
        )
    return summary


def _record_invocations(
    aws: FanoutAws, settings: logic.FanoutSettings, notice: ImageNotice, outcomes: list[Outcome]
) -> bool:
    """Tell the rollout status which (account, region) pairs were invoked and when.

    The invocations already happened: a status table outage is logged, never a reason to
    re-run them; the rollout status then shows those accounts' results without their invocation.
    """
    invoked_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    table = settings.rollout_table_name
    try:
        aws.put_item_if_absent(table, status.rollout_index_item(notice.image_version, invoked_at))
        aws.record_items(table, logic.invocation_records(notice, outcomes, invoked_at))
    except (BotoCoreError, ClientError, UnprocessedItemsError) as error:
        log(LOGGER, "could not record the invocations", logging.ERROR, error=str(error))
        return False
    return True


def _publish_metrics(aws: FanoutAws, namespace: str, counts: dict[str, int]) -> None:
    # The invocations already happened: a metrics outage must not trigger a whole re-run.
    try:
        aws.put_outcome_metrics(namespace, {METRIC_NAMES[k]: v for k, v in counts.items()})
    except (BotoCoreError, ClientError) as error:
        log(LOGGER, "could not publish fan-out metrics", logging.ERROR, error=str(error))


@dataclass
class FanoutResult:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    listing_error: str = ""


class _OutcomeBoard:
    """Where workers post outcomes; closed at the deadline so late finishers change nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[tuple[str, str], Outcome] = {}
        self._closed = False

    def post(self, outcome: Outcome) -> None:
        with self._lock:
            if not self._closed:
                self._outcomes.setdefault((outcome.account_id, outcome.region), outcome)

    def close(self) -> dict[tuple[str, str], Outcome]:
        with self._lock:
            self._closed = True
            return dict(self._outcomes)


def fan_out(
    notice: ImageNotice,
    settings: logic.FanoutSettings,
    aws: FanoutAws,
    budget_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    account_filter: logic.AccountFilter | None = None,
) -> FanoutResult:
    """Invoke the workload function of every target account in every region of the image.

    With `account_filter` (one wave of a progressive rollout) only the wave's accounts are
    reached, and only the wave's expected accounts can be missing.
    """
    deadline = clock() + budget_seconds
    result = FanoutResult()
    regions = sorted(notice.amis or {})
    session_name = logic.role_session_name(notice.correlation_id)
    infra_account_id = aws.caller_account_id()

    pool = ThreadPoolExecutor(max_workers=settings.max_concurrency, thread_name_prefix="fanout")
    futures: dict[Future[None], str] = {}
    listing_complete = False
    reach = None
    try:
        admits = _wave_admits(settings, aws, session_name, account_filter)
        settings = replace(
            settings,
            expected_account_ids=frozenset(filter(admits, settings.expected_account_ids)),
        )
        reach = _AccountReacher(notice, settings, aws, regions, session_name)
        # Accounts are submitted while the listing pages in, so paging overlaps the fan-out.
        for account_id in _target_accounts(settings, aws, infra_account_id, session_name, result):
            if admits(account_id):
                futures[pool.submit(reach, account_id)] = account_id
        listing_complete = True
    except (BotoCoreError, ClientError) as error:
        result.listing_error = str(error)
        log(LOGGER, "account listing failed", logging.ERROR, error=str(error))
    wait(futures, timeout=max(0.0, deadline - clock()))
    # Threads stuck in a call cannot be interrupted; their late outcomes are simply ignored.
    pool.shutdown(wait=False, cancel_futures=True)
    posted = reach.board.close() if reach is not None else {}

    for future, account_id in futures.items():
        crashed = future.done() and not future.cancelled() and future.exception()
        for region in regions:
            if (account_id, region) in posted:
                result.outcomes.append(posted[(account_id, region)])
            elif crashed:
                result.outcomes.append(Outcome(account_id, region, FAILED, f"error: {crashed!r}"))
            else:
                result.outcomes.append(Outcome(account_id, region, FAILED, TIMED_OUT))
    if listing_complete:
        missing = logic.missing_expected_accounts(settings, futures.values(), infra_account_id)
        reason = f"expected account not returned as ACTIVE by the {settings.account_source} source"
        result.outcomes += [Outcome(a, r, FAILED, reason) for a in missing for r in regions]
    result.outcomes = logic.unreached_expected_accounts(
        result.outcomes, settings.expected_account_ids
    )
    return result


def _wave_admits(
    settings: logic.FanoutSettings,
    aws: FanoutAws,
    session_name: str,
    account_filter: logic.AccountFilter | None,
) -> Callable[[str], bool]:
    """Whether the wave reaches an account; its OUs are listed (with their child OUs) once."""
    if account_filter is None:
        return lambda _account_id: True
    unit_accounts: frozenset[str] = frozenset()
    if account_filter.organizational_unit_ids:
        credentials = _listing_credentials(settings, aws, session_name)
        listed = aws.organization_accounts(account_filter.organizational_unit_ids, credentials)
        unit_accounts = frozenset(account["Id"] for account in listed)
    return lambda account_id: account_filter.admits(account_id, unit_accounts)


def _listing_credentials(
    settings: logic.FanoutSettings, aws: FanoutAws, session_name: str
) -> ReadOnlyCredentials | None:
    """The listing role's credentials when one is configured, else the fan-out role's own."""
    if not settings.list_accounts_role_arn:
        return None
    return aws.assume_role(settings.list_accounts_role_arn, session_name)


def _target_accounts(
    settings: logic.FanoutSettings,
    aws: FanoutAws,
    infra_account_id: str,
    session_name: str,
    result: FanoutResult,
) -> Iterator[str]:
    """Active account ids to fan out to, once each, without the infra account unless asked."""
    if settings.account_source == "static":
        accounts: Any = ({"Id": a, "State": "ACTIVE"} for a in settings.static_account_ids)
    else:
        credentials = _listing_credentials(settings, aws, session_name)
        accounts = aws.organization_accounts(settings.organizational_unit_ids, credentials)
    seen: set[str] = set()
    for account in accounts:
        account_id = account["Id"]
        if account_id in seen:
            continue
        seen.add(account_id)
        if not logic.account_is_active(account):
            state = account.get("State") or account.get("Status")
            result.skipped.append({"accountId": account_id, "reason": f"account is {state}"})
        elif account_id == infra_account_id and not settings.include_infra_account:
            result.skipped.append({"accountId": account_id, "reason": "infra account"})
        else:
            yield account_id


class _AccountReacher:
    """One worker task: assume the account's role once, then invoke each region in turn."""

    def __init__(
        self,
        notice: ImageNotice,
        settings: logic.FanoutSettings,
        aws: FanoutAws,
        regions: list[str],
        session_name: str,
    ) -> None:
        self._settings = settings
        self._aws = aws
        self._regions = regions
        self._session_name = session_name
        self._partition = notice.partition
        self._payload = json.dumps(logic.build_payload(notice)).encode()
        self.board = _OutcomeBoard()

    def __call__(self, account_id: str) -> None:
        expected = account_id in self._settings.expected_account_ids
        role_arn = f"arn:{self._partition}:iam::{account_id}:role/{self._settings.invoke_role_name}"
        try:
            credentials = self._aws.assume_role(role_arn, self._session_name)
        except (BotoCoreError, ClientError) as error:
            outcome, reason = logic.classify_error("assume", _error_code(error), expected)
            for region in self._regions:
                self.board.post(Outcome(account_id, region, outcome, reason))
            return
        for region in self._regions:
            function_arn = (
                f"arn:{self._partition}:lambda:{region}:{account_id}"
                f":function:{self._settings.target_function_name}"
            )
            try:
                self._aws.invoke_async(credentials, region, function_arn, self._payload)
            except (BotoCoreError, ClientError) as error:
                outcome, reason = logic.classify_error("invoke", _error_code(error), expected)
                self.board.post(Outcome(account_id, region, outcome, reason))
            else:
                self.board.post(Outcome(account_id, region, INVOKED))


def _error_code(error: BotoCoreError | ClientError) -> str:
    """The API error code, or the botocore failure (timeout, connection) by class name."""
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code", "Unknown")
    return type(error).__name__
