"""A simulated AWS for the benchmark: every call waits a fixed latency, then answers.

The answers are produced at botocore's `before-send` event, i.e. below serialization, signing,
retries and response parsing: the handler's boto3 code runs exactly as it does against AWS,
only the network round trip is replaced by a sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import boto3
from botocore.awsrequest import AWSResponse

INFRA_ACCOUNT = "999999999999"
PAGE_SIZE_LIMIT = 20  # ListAccounts' own maximum
STS_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"


def member_account_ids(count: int) -> list[str]:
    return [f"{100000000000 + n:012d}" for n in range(count)]


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any):
        yield self._body


class SimulatedAws:
    """Answers STS, Organizations, Lambda Invoke and PutMetricData for an Organization of
    `accounts` members plus the infra (management) account, after `latency_seconds` each."""

    def __init__(self, accounts: int, latency_seconds: float) -> None:
        self.latency_seconds = latency_seconds
        self._accounts = [INFRA_ACCOUNT, *member_account_ids(accounts)]
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def session(self) -> boto3.Session:
        session = boto3.Session(
            aws_access_key_id="AKIABENCHMARK",
            aws_secret_access_key="benchmark",
            region_name="us-east-1",
        )
        session.events.register("before-send", self._answer)
        return session

    def _answer(self, request: Any, event_name: str, **_: Any) -> AWSResponse:
        operation = event_name.rsplit(".", 1)[1]
        with self._lock:
            self.calls[operation] += 1
        time.sleep(self.latency_seconds)
        status, body = getattr(self, f"_{operation}")(request)
        return AWSResponse(request.url, status, {}, _Body(body))

    @staticmethod
    def _GetCallerIdentity(_: Any) -> tuple[int, bytes]:  # noqa: N802 - named after the API
        return 200, _sts_xml(
            "GetCallerIdentity",
            f"<Account>{INFRA_ACCOUNT}</Account>"
            f"<Arn>arn:aws:sts::{INFRA_ACCOUNT}:assumed-role/GoldenAmiFanoutRole/fanout</Arn>"
            "<UserId>AROABENCHMARK:fanout</UserId>",
        )

    @staticmethod
    def _AssumeRole(request: Any) -> tuple[int, bytes]:  # noqa: N802
        role_arn = parse_qs(_text(request))["RoleArn"][0]
        return 200, _sts_xml(
            "AssumeRole",
            "<Credentials><AccessKeyId>ASIABENCHMARK</AccessKeyId>"
            "<SecretAccessKey>benchmark</SecretAccessKey><SessionToken>benchmark</SessionToken>"
            "<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>"
            f"<AssumedRoleUser><AssumedRoleId>AROABENCHMARK:fanout</AssumedRoleId>"
            f"<Arn>{role_arn}</Arn></AssumedRoleUser>",
        )

    def _ListAccounts(self, request: Any) -> tuple[int, bytes]:  # noqa: N802
        params = json.loads(_text(request) or "{}")
        start = int(params.get("NextToken", "0"))
        end = start + min(params.get("MaxResults", PAGE_SIZE_LIMIT), PAGE_SIZE_LIMIT)
        page: dict[str, Any] = {
            "Accounts": [
                {
                    "Id": account_id,
                    "Arn": f"arn:aws:organizations::{INFRA_ACCOUNT}:account/o-bench/{account_id}",
                    "Email": f"{account_id}@example.com",
                    "Name": account_id,
                    "Status": "ACTIVE",
                    "State": "ACTIVE",
                    "JoinedMethod": "CREATED",
                    "JoinedTimestamp": 1_700_000_000,
                }
                for account_id in self._accounts[start:end]
            ]
        }
        if end < len(self._accounts):
            page["NextToken"] = str(end)
        return 200, json.dumps(page).encode()

    @staticmethod
    def _Invoke(_: Any) -> tuple[int, bytes]:  # noqa: N802
        return 202, b""

    @staticmethod
    def _PutMetricData(_: Any) -> tuple[int, bytes]:  # noqa: N802
        return 200, b""


def _text(request: Any) -> str:
    body = request.body or b""
    return body.decode() if isinstance(body, bytes) else body


def _sts_xml(operation: str, result: str) -> bytes:
    return (
        f'<{operation}Response xmlns="{STS_NAMESPACE}"><{operation}Result>{result}'
        f"</{operation}Result><ResponseMetadata><RequestId>bench</RequestId>"
        f"</ResponseMetadata></{operation}Response>"
    ).encode()
