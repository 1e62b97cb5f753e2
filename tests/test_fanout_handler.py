"""The fan-out Lambda on moto: a real multi-account Organization, STS and the SNS envelope.

What moto does not do, and how these tests make up for it at the botocore layer:
- moto's STS AssumeRole never denies (its docstring: "the role does not need to exist") and
  ignores trust policies. `AwsEdge` answers AccessDenied exactly when IAM would: the role does not
  exist in the target account, or its trust policy does not name the infra account.
- moto's Lambda (without Docker) answers 202 to an Invoke of a function that does not exist, and
  would try to run the code of one that does. `AwsEdge` answers the Invoke on the wire
  (`before-send`: signed, below botocore's retry handler): it records which credentials signed
  it, then answers 202 when the function exists in that account and region (moto's Lambda
  backend), ResourceNotFoundException (404) when it does not, as Lambda does, or the fault the
  test injected. Throttling therefore really runs the standard-mode retries; their backoff
  sleeps are recorded instead of slept.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import types
import zipfile
from typing import Any

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.awslambda.utils import get_backend as lambda_backend
from moto.iam.models import iam_backends

from handlers.common.log import JsonFormatter
from handlers.fanout import app
from handlers.fanout.aws import RETRIES, FanoutAws, NoAccountBoundError
from handlers.fanout.logic import MalformedMessageError
from tests.pulumi_harness import FIXTURES
from tests.sns_events import HOME_REGION, INFRA_ACCOUNT, MESSAGE_ID, sns_event

AVAILABLE_MESSAGE = json.loads((FIXTURES / "imagebuilder_sns_image_available.json").read_text())
FAILED_MESSAGE = json.loads((FIXTURES / "imagebuilder_sns_image_failed.json").read_text())

REGIONS = ("eu-west-1", "us-west-1")
ROLE = "InvokeInstanceRefreshHandlerRole"
FUNCTION = "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
IMAGE_ARN = AVAILABLE_MESSAGE["arn"]
AMIS = {"us-west-1": "ami-01a23bc4def5a6789", "eu-west-1": "ami-0fedcba9876543210"}
EXPECTED_PAYLOAD = {
    "schemaVersion": 1,
    "imageArn": IMAGE_ARN,
    "imageName": "example-linux-image",
    "imageVersion": "1.0.0/3",
    "amis": AMIS,
    "correlationId": MESSAGE_ID,
}

# The access key id in a SigV4 Authorization header: "AWS4-HMAC-SHA256 Credential=<key>/..."
SIGNING_ACCESS_KEY = re.compile(r"Credential=([^/]+)/")


def available_event() -> dict:
    message = json.loads(json.dumps(AVAILABLE_MESSAGE))
    message["outputResources"]["amis"] = [
        {"region": region, "image": ami, "name": "golden", "accountId": INFRA_ACCOUNT}
        for region, ami in AMIS.items()
    ]
    return sns_event(message)


def lambda_context(remaining_seconds: float = 300.0) -> Any:
    return types.SimpleNamespace(get_remaining_time_in_millis=lambda: int(remaining_seconds * 1000))


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any):
        yield self._body


def _answer(status: int, parsed: dict) -> tuple[AWSResponse, dict]:
    return AWSResponse("https://edge.invalid", status, {}, _Body(b"")), parsed


class AwsEdge:
    """botocore hooks on the handler's Session: IAM trust on AssumeRole, Invoke capture, faults."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.assume_calls: list[dict] = []
        # access key id -> (account, session token) of the credentials each AssumeRole issued
        self.issued_credentials: dict[str, tuple[str, str]] = {}
        self.invocations: list[dict] = []
        # (target account, access key id, session token) of every Invoke attempt on the wire
        self.invoke_signatures: list[tuple[str, str, str | None]] = []
        self.calls: list[str] = []
        self.invoke_attempts: dict[str, int] = {}
        self.throttle_invoke: set[str] = set()
        self.deny_invoke: set[str] = set()
        self.hang_assume: set[str] = set()
        self.release = threading.Event()

    def install(self, session: boto3.Session) -> boto3.Session:
        events = session.events
        events.register("before-parameter-build", self._stash_params)
        events.register("before-call", self._record_call)
        events.register("before-call.sts.AssumeRole", self._assume_role)
        events.register("after-call.sts.AssumeRole", self._remember_issued_credentials)
        # First, so that the edge answers rather than moto.
        events.register_first("before-send.lambda.Invoke", self._invoke_on_the_wire)
        return session

    @staticmethod
    def _stash_params(params: dict, context: dict, **_: Any) -> None:
        context["edge_params"] = dict(params)

    def _record_call(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".")
        with self.lock:
            self.calls.append(f"{service}:{operation}")

    def _assume_role(self, context: dict, **_: Any):
        params = context["edge_params"]
        role_arn = params["RoleArn"]
        account_id = role_arn.split(":")[4]
        with self.lock:
            self.assume_calls.append(params)
        if account_id in self.hang_assume:
            self.release.wait(timeout=10)
        if not self._trusts_infra(account_id, role_arn):
            message = f"not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            return _answer(403, {"Error": {"Code": "AccessDenied", "Message": message}})
        return None  # moto issues credentials for the target account

    def _remember_issued_credentials(self, parsed: dict, context: dict, **_: Any) -> None:
        if "Credentials" in parsed:
            account_id = context["edge_params"]["RoleArn"].split(":")[4]
            credentials = parsed["Credentials"]
            with self.lock:
                self.issued_credentials[credentials["AccessKeyId"]] = (
                    account_id,
                    credentials["SessionToken"],
                )

    @staticmethod
    def _trusts_infra(account_id: str, role_arn: str) -> bool:
        try:
            role = iam_backends[account_id]["global"].get_role_by_arn(role_arn)
        except Exception:  # moto's IAMNotFoundException: no such role
            return False
        trusted = f"arn:aws:iam::{INFRA_ACCOUNT}:root"
        for statement in json.loads(role.assume_role_policy_document)["Statement"]:
            principals = statement.get("Principal", {}).get("AWS", [])
            principals = [principals] if isinstance(principals, str) else principals
            if statement["Effect"] == "Allow" and trusted in principals:
                return True
        return False

    def _invoke_on_the_wire(self, request: Any, **_: Any) -> AWSResponse:
        params = request.context["edge_params"]
        _, _, _, region, account_id, _, name = params["FunctionName"].split(":")
        access_key = SIGNING_ACCESS_KEY.search(_header(request, "Authorization")).group(1)
        token = _header(request, "X-Amz-Security-Token")
        with self.lock:
            self.invoke_signatures.append((account_id, access_key, token))
        if account_id in self.throttle_invoke:
            with self.lock:
                self.invoke_attempts[account_id] = self.invoke_attempts.get(account_id, 0) + 1
            return _wire_error(request, 429, "TooManyRequestsException", "Rate exceeded")
        if account_id in self.deny_invoke:
            return _wire_error(request, 403, "AccessDeniedException", "not authorized")
        try:
            lambda_backend(account_id, region).get_function(name)
        except Exception:  # moto's UnknownFunctionException
            return _wire_error(request, 404, "ResourceNotFoundException", "Function not found")
        with self.lock:
            self.invocations.append(
                {
                    "accountId": account_id,
                    "region": region,
                    "functionArn": params["FunctionName"],
                    "invocationType": params["InvocationType"],
                    "payload": json.loads(params["Payload"]),
                }
            )
        return AWSResponse(request.url, 202, {}, _Body(b""))

    def assumed_accounts(self) -> list[str]:
        return sorted(c["RoleArn"].split(":")[4] for c in self.assume_calls)

    def invoked_pairs(self) -> set[tuple[str, str]]:
        return {(i["accountId"], i["region"]) for i in self.invocations}


def _header(request: Any, name: str) -> str | None:
    value = request.headers.get(name)  # botocore encodes some header values to bytes, not all
    return value.decode() if isinstance(value, bytes) else value


def _wire_error(request: Any, status: int, code: str, message: str) -> AWSResponse:
    """A Lambda (REST-JSON) error response: botocore reads the code from x-amzn-errortype."""
    body = json.dumps({"message": message}).encode()
    return AWSResponse(request.url, status, {"x-amzn-errortype": code}, _Body(body))


class Organization:
    """A moto Organization seen from its management account, which is also the infra account."""

    def __init__(self) -> None:
        self.session = boto3.Session(region_name=HOME_REGION)
        self.client = self.session.client("organizations")
        self.client.create_organization(FeatureSet="ALL")
        self.root_id = self.client.list_roots()["Roots"][0]["Id"]

    def add_account(self, name: str, parent_id: str | None = None) -> str:
        status = self.client.create_account(AccountName=name, Email=f"{name}@example.com")
        account_id = status["CreateAccountStatus"]["AccountId"]
        if parent_id:
            self.client.move_account(
                AccountId=account_id, SourceParentId=self.root_id, DestinationParentId=parent_id
            )
        return account_id

    def add_unit(self, name: str, parent_id: str) -> str:
        unit = self.client.create_organizational_unit(ParentId=parent_id, Name=name)
        return unit["OrganizationalUnit"]["Id"]

    def enroll(self, account_id: str, regions: tuple[str, ...] = REGIONS) -> None:
        """What the workload stack creates: the invoke role trusting infra, and the function."""
        credentials = self._admin_credentials(account_id)
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{INFRA_ACCOUNT}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = self.session.client("iam", **credentials).create_role(
            RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust)
        )
        for region in regions:
            self.session.client("lambda", region_name=region, **credentials).create_function(
                FunctionName=FUNCTION,
                Runtime="python3.12",
                Role=role["Role"]["Arn"],
                Handler="handlers.refresh.app.lambda_handler",
                Code={"ZipFile": _zip()},
            )

    def _admin_credentials(self, account_id: str) -> dict[str, str]:
        if account_id == INFRA_ACCOUNT:
            return {}
        credentials = self.session.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole",
            RoleSessionName="test-setup",
        )["Credentials"]
        return {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handlers/refresh/app.py", "def lambda_handler(event, context): ...\n")
    return buffer.getvalue()


@pytest.fixture
def backoff_sleeps(monkeypatch) -> list[float]:
    """botocore's retry backoff, recorded instead of slept."""
    sleeps: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


@pytest.fixture
def env(monkeypatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("AWS_DEFAULT_REGION", HOME_REGION)
    monkeypatch.setenv("INVOKE_ROLE_NAME", ROLE)
    monkeypatch.setenv("TARGET_FUNCTION_NAME", FUNCTION)
    monkeypatch.setenv("ACCOUNT_SOURCE", "organizations")
    monkeypatch.setenv("MAX_CONCURRENCY", "4")
    monkeypatch.setenv("METRIC_NAMESPACE", "GoldenAmi")
    for name in (
        "STATIC_ACCOUNT_IDS",
        "ORGANIZATIONAL_UNIT_IDS",
        "LIST_ACCOUNTS_ROLE_ARN",
        "INCLUDE_INFRA_ACCOUNT",
        "EXPECTED_ACCOUNT_IDS",
        "ROLLOUT_TABLE_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def org(env, backoff_sleeps):
    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield Organization()


@pytest.fixture
def edge() -> AwsEdge:
    return AwsEdge()


@pytest.fixture
def log_lines():
    """The handler's JSON log lines, formatted exactly as Lambda would print them."""
    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))

    collector = Collect()
    logger = logging.getLogger("golden-ami.fanout")
    logger.addHandler(collector)
    yield lines
    logger.removeHandler(collector)


def run(edge: AwsEdge, event: dict | None = None, remaining_seconds: float = 300.0) -> dict:
    session = edge.install(boto3.Session(region_name=HOME_REGION))
    return app.lambda_handler(
        event or available_event(), lambda_context(remaining_seconds), session
    )


def summary_line(log_lines: list[dict]) -> dict:
    (line,) = [entry for entry in log_lines if entry["message"] == "fan-out summary"]
    return line


def published_metrics() -> dict[str, float]:
    cloudwatch = boto3.client("cloudwatch", region_name=HOME_REGION)
    values = {}
    for name in ("Invoked", "NotEnrolled", "Failed"):
        points = cloudwatch.get_metric_statistics(
            Namespace="GoldenAmi",
            MetricName=name,
            StartTime="2000-01-01",
            EndTime="2100-01-01",
            Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
        values[name] = sum(p["Sum"] for p in points)
    return values


# --- the three kinds of member account ------------------------------------------------------------


def test_enrolled_not_enrolled_and_failing_accounts(org, edge, log_lines, backoff_sleeps):
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    not_enrolled = org.add_account("not-enrolled")
    throttled = org.add_account("throttled")
    org.enroll(throttled)
    edge.throttle_invoke.add(throttled)

    with pytest.raises(app.FanoutFailedError, match="2 \\(account, region\\) pairs failed"):
        run(edge)

    # Every enrolled region got the DESIGN §4 payload, asynchronously, at the exact ARN.
    assert sorted(edge.invocations, key=lambda i: i["region"]) == [
        {
            "accountId": enrolled,
            "region": region,
            "functionArn": f"arn:aws:lambda:{region}:{enrolled}:function:{FUNCTION}",
            "invocationType": "Event",
            "payload": EXPECTED_PAYLOAD,
        }
        for region in REGIONS
    ]
    # One AssumeRole per account (credentials reused across regions), short and traceable.
    assert edge.assumed_accounts() == sorted([enrolled, not_enrolled, throttled])
    assert {c["RoleSessionName"] for c in edge.assume_calls} == {f"golden-ami-fanout-{MESSAGE_ID}"}
    assert {c["DurationSeconds"] for c in edge.assume_calls} == {900}
    # Throttling was retried with backoff, then reported.
    assert edge.invoke_attempts[throttled] == (1 + RETRIES) * len(REGIONS)
    assert len(backoff_sleeps) == RETRIES * len(REGIONS)
    assert all(delay > 0 for delay in backoff_sleeps)

    summary = summary_line(log_lines)
    assert summary["correlationId"] == MESSAGE_ID
    assert summary["counts"] == {"invoked": 2, "not-enrolled": 2, "failed": 2}
    assert {a["accountId"]: a["regions"] for a in summary["accounts"]} == {
        enrolled: {"eu-west-1": "invoked", "us-west-1": "invoked"},
        not_enrolled: {"eu-west-1": "not-enrolled", "us-west-1": "not-enrolled"},
        throttled: {"eu-west-1": "failed", "us-west-1": "failed"},
    }
    reasons = {(p["accountId"], p["region"]): p["reason"] for p in summary["problems"]}
    assert reasons[(throttled, "eu-west-1")] == "TooManyRequestsException on Invoke"
    assert reasons[(not_enrolled, "eu-west-1")].startswith("AccessDenied on AssumeRole")
    assert summary["skippedAccounts"] == [{"accountId": INFRA_ACCOUNT, "reason": "infra account"}]
    assert published_metrics() == {"Invoked": 2.0, "NotEnrolled": 2.0, "Failed": 2.0}


def test_not_enrolled_accounts_do_not_fail_the_invocation(org, edge, log_lines):
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    org.add_account("no-stack")
    eu_only = org.add_account("eu-only")
    org.enroll(eu_only, regions=("eu-west-1",))

    result = run(edge)

    assert result["counts"] == {"invoked": 3, "not-enrolled": 3, "failed": 0}
    assert edge.invoked_pairs() == {
        (enrolled, "eu-west-1"),
        (enrolled, "us-west-1"),
        (eu_only, "eu-west-1"),
    }
    problems = {(p["accountId"], p["region"]): p["reason"] for p in result["problems"]}
    assert problems[(eu_only, "us-west-1")].startswith("function not found")
    assert summary_line(log_lines)["counts"] == result["counts"]
    assert published_metrics() == {"Invoked": 3.0, "NotEnrolled": 3.0, "Failed": 0.0}


def test_invoke_error_other_than_not_found_is_failed(org, edge):
    broken = org.add_account("broken")
    org.enroll(broken)
    edge.deny_invoke.add(broken)

    with pytest.raises(app.FanoutFailedError):
        run(edge)

    assert edge.invocations == []


def test_expected_account_that_denies_assume_role_is_failed_not_not_enrolled(org, edge, env):
    broken = org.add_account("broken-enrolment")
    env.setenv("EXPECTED_ACCOUNT_IDS", broken)

    with pytest.raises(app.FanoutFailedError) as raised:
        run(edge)

    assert "2 (account, region) pairs failed" in str(raised.value)
    assert published_metrics()["Failed"] == 2.0
    assert published_metrics()["NotEnrolled"] == 0.0


def test_expected_account_covering_no_region_of_the_image_is_failed(org, edge, env, log_lines):
    """The role is there but no refresh function in any region: enrolment is broken."""
    partial = org.add_account("partial")
    org.enroll(partial, regions=REGIONS[:1])
    without_functions = org.add_account("no-functions")
    org.enroll(without_functions, regions=())
    env.setenv("EXPECTED_ACCOUNT_IDS", f"{partial},{without_functions}")

    with pytest.raises(app.FanoutFailedError):
        run(edge)

    outcomes = {
        (a["accountId"], region): outcome
        for a in summary_line(log_lines)["accounts"]
        for region, outcome in a["regions"].items()
    }
    assert outcomes == {
        (partial, REGIONS[0]): "invoked",
        (partial, REGIONS[1]): "not-enrolled",
        (without_functions, REGIONS[0]): "failed",
        (without_functions, REGIONS[1]): "failed",
    }


def test_expected_account_missing_from_the_organization_is_failed(org, edge, env, log_lines):
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    suspended = org.add_account("suspended")
    org.enroll(suspended)
    org.client.close_account(AccountId=suspended)
    env.setenv("EXPECTED_ACCOUNT_IDS", f"{enrolled},{suspended}")

    with pytest.raises(app.FanoutFailedError):
        run(edge)

    summary = summary_line(log_lines)
    assert summary["counts"] == {"invoked": 2, "not-enrolled": 0, "failed": 2}
    assert {p["reason"] for p in summary["problems"]} == {
        "expected account not returned as ACTIVE by the organizations source"
    }
    assert suspended not in edge.assumed_accounts()


def test_suspended_accounts_are_skipped(org, edge, log_lines):
    active = org.add_account("active")
    org.enroll(active)
    closed = org.add_account("closed")
    org.enroll(closed)
    org.client.close_account(AccountId=closed)

    run(edge)

    assert edge.assumed_accounts() == [active]
    assert {"accountId": closed, "reason": "account is SUSPENDED"} in summary_line(log_lines)[
        "skippedAccounts"
    ]


# --- signing: every account's Invoke with its own credentials, through shared clients -----------


def test_every_invoke_is_signed_with_the_credentials_assumed_in_its_target_account(org, edge, env):
    """The Lambda clients are shared by the workers; a barrier holds every worker between
    binding its account's credentials and signing, so a binding visible to other threads would
    sign their requests with the wrong account's keys."""
    workers = 4
    env.setenv("MAX_CONCURRENCY", str(workers))
    members = [org.add_account(f"member-{n}") for n in range(workers)]
    for account_id in members:
        org.enroll(account_id)
    session = edge.install(boto3.Session(region_name=HOME_REGION))
    all_bound = threading.Barrier(workers, timeout=10)

    def wait_for_every_worker(**_: Any) -> None:  # a hook's return value would answer the call
        all_bound.wait()

    session.events.register("before-call.lambda.Invoke", wait_for_every_worker)

    result = app.lambda_handler(available_event(), lambda_context(), session)

    assert result["counts"]["invoked"] == workers * len(REGIONS)
    # moto issues distinct keys per AssumeRole, so a key used for the wrong account would show.
    assert sorted(account for account, _ in edge.issued_credentials.values()) == sorted(members)
    assert len(edge.invoke_signatures) == workers * len(REGIONS)
    for target_account, access_key, session_token in edge.invoke_signatures:
        assert edge.issued_credentials.get(access_key) == (target_account, session_token)


def test_throttled_retries_are_signed_with_the_target_accounts_credentials(org, edge):
    throttled = org.add_account("throttled")
    org.enroll(throttled)
    edge.throttle_invoke.add(throttled)

    with pytest.raises(app.FanoutFailedError):
        run(edge)

    ((access_key, (account_id, session_token)),) = edge.issued_credentials.items()
    assert account_id == throttled
    assert edge.invoke_signatures == [(throttled, access_key, session_token)] * (
        (1 + RETRIES) * len(REGIONS)
    )


def test_a_shared_lambda_client_refuses_to_sign_with_no_account_bound(org, edge):
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    edge.deny_invoke.add(enrolled)
    aws = FanoutAws(edge.install(boto3.Session(region_name=HOME_REGION)))
    function_arn = f"arn:aws:lambda:{HOME_REGION}:{enrolled}:function:{FUNCTION}"
    shared_client = aws._lambda_client(HOME_REGION)  # the client every worker's Invoke uses

    def invoke_unbound() -> None:
        shared_client.invoke(FunctionName=function_arn, InvocationType="Event", Payload=b"{}")

    with pytest.raises(NoAccountBoundError):
        invoke_unbound()
    # A failed Invoke leaves nothing bound behind it.
    credentials = aws.assume_role(f"arn:aws:iam::{enrolled}:role/{ROLE}", "test")
    with pytest.raises(ClientError, match="AccessDeniedException"):
        aws.invoke_async(credentials, HOME_REGION, function_arn, b"{}")
    with pytest.raises(NoAccountBoundError):
        invoke_unbound()
    # Another thread's binding is not this thread's.
    other_thread_failure: list[BaseException] = []

    def invoke_from_another_thread() -> None:
        try:
            invoke_unbound()
        except NoAccountBoundError as error:
            other_thread_failure.append(error)

    with aws._account_credentials.bound_to(credentials):
        thread = threading.Thread(target=invoke_from_another_thread)
        thread.start()
        thread.join()
    assert len(other_thread_failure) == 1

    # Only the one bound Invoke reached the wire, signed with the enrolled account's key.
    assert edge.invoke_signatures == [(enrolled, credentials.access_key, credentials.token)]


# --- account sources ------------------------------------------------------------------------------


def test_listing_pages_through_more_than_twenty_accounts(org, edge):
    members = [org.add_account(f"member-{n}") for n in range(24)]
    org.enroll(members[-1])

    result = run(edge)

    # moto's own ListAccounts page is 100: only the handler's PageSize=20 makes it page.
    assert edge.calls.count("organizations:ListAccounts") == 2
    assert edge.assumed_accounts() == sorted(members)
    assert result["counts"] == {"invoked": 2, "not-enrolled": 46, "failed": 0}


def test_ou_filter_covers_nested_units_only(org, edge, env):
    workloads = org.add_unit("workloads", org.root_id)
    prod = org.add_unit("prod", workloads)
    sandbox = org.add_unit("sandbox", org.root_id)
    in_workloads = org.add_account("in-workloads", workloads)
    in_prod = org.add_account("in-prod", prod)
    org.add_account("in-sandbox", sandbox)
    org.add_account("at-root")
    for account_id in (in_workloads, in_prod):
        org.enroll(account_id)
    env.setenv("ORGANIZATIONAL_UNIT_IDS", workloads)

    run(edge)

    assert edge.assumed_accounts() == sorted([in_workloads, in_prod])
    assert len(edge.invocations) == 4
    assert "organizations:ListAccounts" not in edge.calls


def test_static_source_never_calls_organizations(org, edge, env):
    listed = org.add_account("listed")
    org.enroll(listed)
    org.add_account("not-listed")
    env.setenv("ACCOUNT_SOURCE", "static")
    env.setenv("STATIC_ACCOUNT_IDS", f"{listed},{INFRA_ACCOUNT}")

    result = run(edge)

    assert not [call for call in edge.calls if call.startswith("organizations:")]
    assert edge.assumed_accounts() == [listed]  # the infra account is still skipped
    assert result["counts"]["invoked"] == 2


def test_infra_account_is_included_only_when_configured(org, edge, env):
    org.enroll(INFRA_ACCOUNT)
    assert run(edge)["counts"]["invoked"] == 0
    assert edge.assumed_accounts() == []

    env.setenv("INCLUDE_INFRA_ACCOUNT", "true")
    result = run(edge)

    assert edge.assumed_accounts() == [INFRA_ACCOUNT]
    assert result["counts"]["invoked"] == 2
    assert result["skippedAccounts"] == []


def test_listing_role_is_assumed_and_its_denial_fails_without_invoking(org, edge, env):
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    list_role = f"arn:aws:iam::{INFRA_ACCOUNT}:role/GoldenAmiListAccounts"
    env.setenv("LIST_ACCOUNTS_ROLE_ARN", list_role)

    with pytest.raises(app.FanoutFailedError, match=r"account listing failed.*AccessDenied"):
        run(edge)

    assert [c["RoleArn"] for c in edge.assume_calls] == [list_role]
    assert "organizations:ListAccounts" not in edge.calls
    assert edge.invocations == []


# --- what is not fanned out -----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["FAILED", "CANCELLED", "DEPRECATED"])
def test_non_available_image_is_acknowledged_without_any_aws_call(org, edge, log_lines, status):
    message = json.loads(json.dumps(FAILED_MESSAGE))
    message["state"]["status"] = status

    assert run(edge, sns_event(message)) == {"status": status, "fannedOut": False}

    assert edge.calls == []
    assert log_lines[-1]["status"] == status
    assert log_lines[-1]["imageArn"] == FAILED_MESSAGE["arn"]


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"Records": []}, "exactly one entry in Records"),
        (sns_event("not json"), "Message is not JSON"),
        (
            sns_event(dict(AVAILABLE_MESSAGE, outputResources={"amis": []})),
            "lists no outputResources.amis",
        ),
        (sns_event({"state": {"status": "AVAILABLE"}}), "has no 'arn'"),
    ],
    ids=["empty envelope", "non-JSON message", "AVAILABLE without amis", "missing arn"],
)
def test_malformed_input_raises_and_invokes_nothing(org, edge, log_lines, event, problem):
    with pytest.raises(MalformedMessageError, match=problem):
        run(edge, event)

    assert edge.calls == []
    assert log_lines[-1]["level"] == "ERROR"
    assert problem in log_lines[-1]["error"]


# --- faults ---------------------------------------------------------------------------------------


def test_hanging_account_is_cut_off_at_the_deadline_while_the_others_complete(org, edge, log_lines):
    """The hang blocks in the AssumeRole hook until released; the deadline is the Lambda
    context's remaining time minus the handler's margin. The 1.5 s of real waiting is what the
    healthy accounts get on moto, with room for a loaded 2-core CI machine."""
    healthy = [org.add_account(f"healthy-{n}") for n in range(3)]
    for account_id in healthy:
        org.enroll(account_id)
    hanging = org.add_account("hanging")
    org.enroll(hanging)
    edge.hang_assume.add(hanging)

    try:
        with pytest.raises(app.FanoutFailedError, match="2 \\(account, region\\) pairs failed"):
            run(edge, remaining_seconds=app.DEADLINE_MARGIN_SECONDS + 1.5)
    finally:
        edge.release.set()

    assert edge.invoked_pairs() == {(a, r) for a in healthy for r in REGIONS}
    summary = summary_line(log_lines)
    assert summary["counts"] == {"invoked": 6, "not-enrolled": 0, "failed": 2}
    assert {(p["accountId"], p["reason"]) for p in summary["problems"]} == {
        (hanging, app.TIMED_OUT)
    }


def test_rerun_after_a_partial_failure_sends_identical_payloads(org, edge):
    """Re-running is safe because the workload handler is idempotent for a given image; the
    fan-out's part is to send the very same payload (same correlation id) again."""
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    flaky = org.add_account("flaky")
    org.enroll(flaky)
    edge.throttle_invoke.add(flaky)

    with pytest.raises(app.FanoutFailedError):
        run(edge)
    first = list(edge.invocations)
    edge.throttle_invoke.clear()
    run(edge)

    second = edge.invocations[len(first) :]
    assert {json.dumps(i["payload"]) for i in first + second} == {json.dumps(EXPECTED_PAYLOAD)}
    assert {(i["accountId"], i["region"]) for i in second} == {
        (a, r) for a in (enrolled, flaky) for r in REGIONS
    }


def test_bad_configuration_fails_before_any_aws_call(org, edge, env):
    env.setenv("MAX_CONCURRENCY", "zero")

    with pytest.raises(app.logic.ConfigurationError, match="MAX_CONCURRENCY='zero'"):
        run(edge)

    assert edge.calls == []


def test_metrics_outage_is_logged_without_failing_a_successful_fan_out(org, edge, log_lines):
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    session = edge.install(boto3.Session(region_name=HOME_REGION))
    outage = {"Code": "InternalServiceError", "Message": "try later"}
    session.events.register(
        "before-call.cloudwatch.PutMetricData", lambda **_: _answer(500, {"Error": outage})
    )

    result = app.lambda_handler(available_event(), lambda_context(), session)

    assert result["counts"]["invoked"] == 2
    assert log_lines[-1]["message"] == "could not publish fan-out metrics"
    assert "InternalServiceError" in log_lines[-1]["error"]


# --- the rollout status: which (account, region) pairs were invoked (DESIGN §10) ---------------


def test_invoked_pairs_and_the_rollout_are_recorded_in_the_status_table(org, edge, env, log_lines):
    from handlers.common import status
    from tests.rollout_fixtures import create_table

    create_table(boto3.Session(region_name=HOME_REGION), "rollout-status")
    env.setenv("ROLLOUT_TABLE_NAME", "rollout-status")
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    org.add_account("not-enrolled")
    run(edge)

    items = boto3.resource("dynamodb", region_name=HOME_REGION).Table("rollout-status").scan()
    records = [status.parse_item(item) for item in items["Items"]]
    rollout = EXPECTED_PAYLOAD["imageVersion"]
    assert sorted((r.account, r.region) for r in records if r is not None) == [
        (enrolled, region) for region in sorted(REGIONS)
    ]
    index = [item for item in items["Items"] if item["pk"] == status.ROLLOUT_INDEX_KEY]
    assert status.newest_rollout(index) == rollout
    assert {item["pk"] for item in items["Items"] if item["pk"] != "ROLLOUTS"} == {
        status.rollout_key(rollout)
    }
    assert summary_line(log_lines)["statusRecorded"] is True


def test_a_status_table_outage_is_logged_and_never_fails_the_fan_out(org, edge, env, log_lines):
    env.setenv("ROLLOUT_TABLE_NAME", "no-such-table")
    enrolled = org.add_account("enrolled")
    org.enroll(enrolled)
    assert run(edge)["counts"]["invoked"] == len(REGIONS)
    assert summary_line(log_lines)["statusRecorded"] is False
    [error] = [line for line in log_lines if line["message"] == "could not record the invocations"]
    assert "ResourceNotFoundException" in error["error"]


# --- one wave of a progressive rollout (RolloutWaves state machine) ------------------------------


def wave_event(account_filter: dict) -> dict:
    """What the RolloutWaves state machine sends: the image message and one wave's accounts."""
    record = available_event()["Records"][0]["Sns"]
    return {
        "rolloutId": "1.0.0/1",
        "imageMessage": record["Message"],
        "correlationId": record["MessageId"],
        "accountFilter": account_filter,
    }


def test_a_wave_reaches_its_accounts_and_the_units_under_its_ous_only(org, edge, env):
    canary_unit = org.add_unit("canary", org.root_id)
    nested = org.add_unit("canary-eu", canary_unit)
    in_unit, in_nested = org.add_account("in-unit", canary_unit), org.add_account("nested", nested)
    named, outside = org.add_account("named"), org.add_account("outside")
    for account_id in (in_unit, in_nested, named, outside):
        org.enroll(account_id)
    env.setenv("EXPECTED_ACCOUNT_IDS", f"{in_unit},{named},{outside}")

    result = run(edge, wave_event({"include": [canary_unit, named]}))

    assert edge.assumed_accounts() == sorted([in_unit, in_nested, named])
    assert result["accountFilter"] == {"include": sorted([canary_unit, named])}
    # An expected account of another wave is neither reached nor reported missing.
    assert result["counts"] == {"invoked": 6, "not-enrolled": 0, "failed": 0}


def test_the_rest_wave_reaches_every_account_not_in_an_earlier_wave(org, edge, env):
    canary_unit = org.add_unit("canary", org.root_id)
    in_unit, named = org.add_account("in-unit", canary_unit), org.add_account("named")
    rest = [org.add_account(f"rest-{n}") for n in range(3)]
    for account_id in (in_unit, named, *rest):
        org.enroll(account_id)

    result = run(edge, wave_event({"exclude": [canary_unit, named]}))

    assert edge.assumed_accounts() == sorted(rest)
    assert result["counts"]["invoked"] == 6


def test_a_wave_on_the_static_source_filters_the_static_list(org, edge, env):
    listed = [org.add_account(f"listed-{n}") for n in range(3)]
    for account_id in listed:
        org.enroll(account_id)
    env.setenv("ACCOUNT_SOURCE", "static")
    env.setenv("STATIC_ACCOUNT_IDS", ",".join(listed))

    run(edge, wave_event({"include": [listed[1]]}))

    assert edge.assumed_accounts() == [listed[1]]
    assert not [call for call in edge.calls if call.startswith("organizations:")]


@pytest.mark.parametrize(
    ("account_filter", "problem"),
    [
        ({"include": ["12345"]}, "accountFilter.include is not a list of account ids and OU ids"),
        ({"include": [], "exclude": []}, "accountFilter is not {'include'"),
        ({"only": []}, "accountFilter is not {'include'"),
        ("rest", "accountFilter is not {'include'"),
    ],
)
def test_a_malformed_wave_request_raises_and_invokes_nothing(org, edge, account_filter, problem):
    with pytest.raises(MalformedMessageError, match=re.escape(problem)):
        run(edge, wave_event(account_filter))
    assert edge.invocations == []
    assert edge.calls == []


def test_a_wave_request_with_a_broken_image_message_raises(org, edge):
    event = wave_event({"include": []}) | {"imageMessage": "{not json"}
    with pytest.raises(MalformedMessageError, match="imageMessage is not JSON"):
        run(edge, event)
    assert edge.calls == []


def test_batch_writes_retry_what_dynamodb_left_unprocessed_and_give_up_loudly(monkeypatch):
    from handlers.fanout import aws as fanout_aws

    class Throttling:
        def __init__(self, unprocessed_rounds: int) -> None:
            self.rounds, self.calls = unprocessed_rounds, []

        def batch_write_item(self, RequestItems):  # noqa: N803 - the API's member name
            self.calls.append(sum(len(requests) for requests in RequestItems.values()))
            if self.rounds:
                self.rounds -= 1
                return {"UnprocessedItems": {"t": RequestItems["t"][:1]}}
            return {"UnprocessedItems": {}}

    monkeypatch.setattr(fanout_aws.time, "sleep", lambda seconds: None)
    items = [{"pk": "ROLLOUT#1", "sk": f"INVOKED#{n:012d}#eu-west-1"} for n in range(30)]
    for rounds, raises in ((2, False), (fanout_aws.BATCH_WRITE_ATTEMPTS + 1, True)):
        client = Throttling(rounds)
        aws = fanout_aws.FanoutAws(boto3.Session(region_name=HOME_REGION, aws_access_key_id="k",
                                                 aws_secret_access_key="s"))  # fmt: skip
        monkeypatch.setattr(aws, "_client", lambda *args, client=client, **kwargs: client)
        if raises:
            with pytest.raises(fanout_aws.UnprocessedItemsError, match="1 items left unprocessed"):
                aws.record_items("t", items)
        else:
            aws.record_items("t", items)
            assert client.calls == [25, 1, 1, 5]  # two retries of the one left, then the rest
