"""Thin boto3 adapter of the fan-out: every AWS call the handler makes, and nothing else.

IAM actions used (the OrgFanout role must grant exactly these):
  organizations:ListAccounts, organizations:ListAccountsForParent,
  organizations:ListOrganizationalUnitsForParent   (with the infra role, or LIST_ACCOUNTS_ROLE_ARN)
  sts:AssumeRole                                   on <account>:role/<INVOKE_ROLE_NAME> (and the
                                                   listing role when configured)
  cloudwatch:PutMetricData                         (no resource-level permissions; condition on
                                                   cloudwatch:namespace)
  dynamodb:BatchWriteItem, dynamodb:PutItem       on the rollout status table (invoked accounts)
  sts:GetCallerIdentity needs no permission. lambda:InvokeFunction is called with the assumed
  credentials, so the workload account's role grants it, not the fan-out role.

Clients are created from one boto3 Session under a lock: creating clients is not thread-safe,
the clients themselves are. A Session per worker would load every service model again
(measured: ~60 ms CPU and ~10 MB per Session against ~2.2 ms and ~0.25 MB per client), which a
128 MB Lambda with a fraction of a vCPU cannot afford across a thousand accounts. For the same
reason every account's Invoke goes through one Lambda client per region, signed per request with
that account's credentials (`AccountCredentials`), not through a client per account and region.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import boto3
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials

# Retries after the first attempt (botocore's `max_attempts` counts retries only), with
# exponential backoff and jitter on throttling and transient errors.
RETRIES = 3
CONNECT_TIMEOUT_SECONDS = 3
# An asynchronous Invoke only queues the event: it answers in milliseconds when healthy.
READ_TIMEOUT_SECONDS = 10
# ListAccounts / ListAccountsForParent accept at most 20 results per page.
ORGANIZATIONS_PAGE_SIZE = 20
# BatchWriteItem takes at most 25 requests; unprocessed ones are retried with backoff.
BATCH_WRITE_MAX = 25
BATCH_WRITE_ATTEMPTS = 8
ASSUMED_ROLE_DURATION_SECONDS = 900  # the minimum: the credentials serve two or three calls


def _config(mode: Literal["standard", "adaptive"], max_pool_connections: int = 10) -> Config:
    return Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": mode, "max_attempts": RETRIES},
        max_pool_connections=max_pool_connections,
    )


# Organizations and CloudWatch are called by one thread at a time: the default pool is plenty.
CLIENT_CONFIG = _config("standard")


class NoAccountBoundError(RuntimeError):
    """A shared Lambda client was called outside `bound_to`: nothing was signed or sent."""


class AccountCredentials(Credentials):
    """The credentials of the account the calling thread is working for, read per request.

    botocore signs every request, each retry included, in the thread that makes the call, and
    asks the client's credentials for `get_frozen_credentials()` every time it signs
    (botocore/signers.py: `RequestSigner.sign` -> `get_auth_instance`; retries build and sign a
    new request, botocore/endpoint.py `_send_request`). So one client per region serves every
    worker, each request signed with the credentials its own thread has bound. Fails closed: a
    thread with nothing bound raises before anything is signed or sent, never falling back to
    the fan-out role's own credentials.
    """

    method = "fanout-account"
    account_id = None  # only read by endpoint rules that use it; Lambda's do not

    def __init__(self) -> None:
        self._bound = threading.local()

    @contextmanager
    def bound_to(self, credentials: ReadOnlyCredentials) -> Iterator[None]:
        """Sign the calling thread's requests with `credentials` inside the block only."""
        self._bound.credentials = credentials
        try:
            yield
        finally:
            self._bound.credentials = None

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        credentials = getattr(self._bound, "credentials", None)
        if credentials is None:
            raise NoAccountBoundError("no account credentials bound to this thread")
        return credentials

    # Read-only properties where botocore's Credentials has attributes: read per request.
    @property
    def access_key(self) -> str | None:  # type: ignore[override]
        return self.get_frozen_credentials().access_key

    @property
    def secret_key(self) -> str | None:  # type: ignore[override]
        return self.get_frozen_credentials().secret_key

    @property
    def token(self) -> str | None:  # type: ignore[override]
        return self.get_frozen_credentials().token


class FanoutAws:
    def __init__(self, session: boto3.Session | None = None, max_concurrency: int = 10) -> None:
        self._session = session or boto3.Session()
        self._client_lock = threading.Lock()
        # Shared by every worker: the adaptive mode's client-side rate limiter then slows all
        # of them together when STS starts throttling the infra account.
        self._sts = self._client("sts", _config("adaptive", max_pool_connections=max_concurrency))
        # One per region, shared by every worker: its connections are reused across accounts.
        self._lambda_config = _config("standard", max_pool_connections=max_concurrency)
        self._lambda_clients: dict[str, Any] = {}
        self._account_credentials = AccountCredentials()

    def _client(
        self,
        service: Literal["sts", "organizations", "cloudwatch", "dynamodb"],
        config: Config,
        **kwargs: Any,
    ) -> Any:
        with self._client_lock:
            return self._session.client(service, config=config, **kwargs)

    def caller_account_id(self) -> str:
        return self._sts.get_caller_identity()["Account"]

    def assume_role(self, role_arn: str, session_name: str) -> ReadOnlyCredentials:
        credentials = self._sts.assume_role(
            RoleArn=role_arn,
            RoleSessionName=session_name,
            DurationSeconds=ASSUMED_ROLE_DURATION_SECONDS,
        )["Credentials"]
        return ReadOnlyCredentials(
            credentials["AccessKeyId"], credentials["SecretAccessKey"], credentials["SessionToken"]
        )

    def invoke_async(
        self, credentials: ReadOnlyCredentials, region: str, function_arn: str, payload: bytes
    ) -> None:
        """Queue one asynchronous invocation (Lambda answers 202 once the event is stored)."""
        client = self._lambda_client(region)
        with self._account_credentials.bound_to(credentials):
            client.invoke(FunctionName=function_arn, InvocationType="Event", Payload=payload)

    def _lambda_client(self, region: str) -> Any:
        with self._client_lock:
            if region not in self._lambda_clients:
                client = self._session.client(
                    "lambda", region_name=region, config=self._lambda_config
                )
                # boto3 cannot hand a client a Credentials object; its signer holds the one it
                # asks per request. Refuse a botocore that moved it rather than sign as the
                # fan-out role.
                signer = client._request_signer  # type: ignore[attr-defined]
                if not isinstance(getattr(signer, "_credentials", None), Credentials):
                    raise RuntimeError("botocore's RequestSigner no longer holds _credentials")
                signer._credentials = self._account_credentials
                self._lambda_clients[region] = client
            return self._lambda_clients[region]

    def organization_accounts(
        self, parent_ids: tuple[str, ...], credentials: ReadOnlyCredentials | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every account of the Organization, or of the given roots/OUs and the OUs under them.

        Yields page by page so the caller can start fanning out before the listing ends.
        """
        client = self._client("organizations", CLIENT_CONFIG, **_client_keys(credentials))
        page_size = {"PageSize": ORGANIZATIONS_PAGE_SIZE}
        if not parent_ids:
            for page in client.get_paginator("list_accounts").paginate(PaginationConfig=page_size):
                yield from page["Accounts"]
            return
        pending = list(parent_ids)
        while pending:
            parent_id = pending.pop()
            accounts = client.get_paginator("list_accounts_for_parent")
            for page in accounts.paginate(ParentId=parent_id, PaginationConfig=page_size):
                yield from page["Accounts"]
            children = client.get_paginator("list_organizational_units_for_parent")
            for page in children.paginate(ParentId=parent_id, PaginationConfig=page_size):
                pending.extend(unit["Id"] for unit in page["OrganizationalUnits"])

    def put_outcome_metrics(self, namespace: str, counts: Mapping[str, int]) -> None:
        cloudwatch = self._client("cloudwatch", CLIENT_CONFIG)
        cloudwatch.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": name, "Value": float(value), "Unit": "Count"}
                for name, value in counts.items()
            ],
        )

    def record_items(self, table_name: str, items: list[dict[str, Any]]) -> None:
        """Write `items` (plain values), 25 per BatchWriteItem, retrying what was not processed."""
        dynamodb = self._client("dynamodb", CLIENT_CONFIG)
        serialize = TypeSerializer().serialize
        requests = [
            {"PutRequest": {"Item": {key: serialize(value) for key, value in item.items()}}}
            for item in items
        ]
        for start in range(0, len(requests), BATCH_WRITE_MAX):
            pending = {table_name: requests[start : start + BATCH_WRITE_MAX]}
            for attempt in range(BATCH_WRITE_ATTEMPTS):
                pending = dynamodb.batch_write_item(RequestItems=pending)["UnprocessedItems"]
                if not pending:
                    break
                time.sleep(min(2**attempt * 0.05, 1.0))
            else:
                raise UnprocessedItemsError(f"{len(pending[table_name])} items left unprocessed")

    def put_item_if_absent(self, table_name: str, item: dict[str, Any]) -> bool:
        dynamodb = self._client("dynamodb", CLIENT_CONFIG)
        serialize = TypeSerializer().serialize
        try:
            dynamodb.put_item(
                TableName=table_name,
                Item={key: serialize(value) for key, value in item.items()},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True


class UnprocessedItemsError(RuntimeError):
    """DynamoDB kept throttling part of a batch write."""


def _client_keys(credentials: ReadOnlyCredentials | None) -> dict[str, str | None]:
    """`Session.client` arguments for the given credentials; none: the fan-out role's own."""
    if credentials is None:
        return {}
    return {
        "aws_access_key_id": credentials.access_key,
        "aws_secret_access_key": credentials.secret_key,
        "aws_session_token": credentials.token,
    }
