"""In-process Lambda: `lambda:Invoke` of a registered function runs its handler, as Lambda would.

moto can only run Lambda code in Docker. The sandbox registers each deployed function (account,
region, name, handler, environment, execution role) with a `LambdaRouter`; while the router is
installed, every botocore client — including those a handler builds from assumed-role
credentials — answers `Invoke` from it, so the fan-out handler's real boto3 call is what starts
the workload handler:

- the request is validated against the botocore model (enums, ranges, patterns);
- `FunctionName` may be a name, a partial or a full ARN, each optionally with `:<version or
  alias>`; a bare name resolves in the caller's account and the client's region. The `Qualifier`
  parameter names the version or alias too; naming a different one than `FunctionName` does is
  HTTP 400 `InvalidParameterValueException` ("The derived qualifier from the function name does
  not match the specified qualifier.");
- as in AWS, the caller's identity policies are evaluated against the function's ARN (qualified
  when the request names a version or alias, by either means: a policy naming only the
  unqualified ARN does not allow it, `function:<name>:*` does) before the function is looked up
  (`sandbox/identity_policy.py`): a caller whose policies do not allow `lambda:InvokeFunction`
  there gets HTTP 403 `AccessDeniedException` ("User: <caller> is not authorized to perform:
  lambda:InvokeFunction on resource: <arn> because no identity-based policy allows the
  lambda:InvokeFunction action"), whether or not the function exists. Only then does an unknown
  function answer `ResourceNotFoundException`, and a caller from another account
  `AccessDeniedException` (no resource-based policy is emulated, so none allows it). The
  request context carries `aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:RequestedRegion` and,
  in an Organization, `aws:PrincipalOrgID`;
- `InvocationType="Event"` is queued and answered 202, like Lambda's async queue; `drain()` runs
  the queue on the caller's thread. Concurrent callers (the fan-out's thread pool) therefore
  only enqueue and never run handlers at once, which matters because a handler's environment is
  the process environment; a synchronous invoke from another thread waits for the running one;
- a handler runs with the environment Lambda gives it: the function's variables, `AWS_REGION`,
  and credentials of its execution role (assumed through STS, so they select the function's
  account in moto). The previous environment is restored afterwards.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from moto.organizations.exceptions import AWSOrganizationsNotInUseException
from moto.organizations.models import organizations_backends

from sandbox.identity_policy import (
    Decision,
    Request,
    access_denied_message,
    evaluate,
    identity_policies,
)
from sandbox.model_validation import ValidationError, validate_request
from sandbox.service_models import builtin_hooks

Handler = Callable[[dict[str, Any], Any], Any]

_FUNCTION_ARN = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:)?"
    r"(?P<name>[a-zA-Z0-9_.-]+)(?::(?P<qualifier>[a-zA-Z0-9$_.-]+))?$"
)
_PARTIAL_ARN = re.compile(
    r"^(?P<account>\d{12}):function:(?P<name>[a-zA-Z0-9_.-]+)(?::(?P<qualifier>[a-zA-Z0-9$_.-]+))?$"
)
_ASSUMED_ROLE = re.compile(
    r"^arn:(?P<partition>[\w-]+):sts::\d{12}:assumed-role/(?P<role>[^/]+)/.+$"
)
INVOKE_ACTION = "lambda:InvokeFunction"
_REQUEST_NAMESPACE = uuid.UUID("6f1c3a52-31b5-4ac4-9d0f-0e5a1f7d3c21")


@dataclass(frozen=True)
class LambdaFunction:
    account: str
    region: str
    name: str
    handler: Handler
    role_arn: str
    environment: dict[str, str] = field(default_factory=dict)
    timeout_seconds: int = 300
    memory_mb: int = 256

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"


@dataclass(frozen=True)
class Invocation:
    """One handler run: what it was given and what came of it (`error` set when it raised)."""

    function_arn: str
    invocation_type: str
    event: Any
    request_id: str
    result: Any = None
    error: str | None = None
    error_type: str | None = None  # the exception's class name, Lambda's `errorType`


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of Lambda's context object that handlers read."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str
    memory_limit_in_mb: int
    timeout_seconds: int
    function_version: str = "$LATEST"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        # Simulated time does not pass while a handler runs: it always has its full timeout.
        return self.timeout_seconds * 1000


class LambdaRouter:
    def __init__(self, base_session: boto3.Session | None = None):
        """`base_session` assumes the execution roles (any credentials moto accepts)."""
        self._base_session = base_session or boto3.Session(region_name="us-east-1")
        self._functions: dict[str, LambdaFunction] = {}
        self._queue: list[tuple[LambdaFunction, Any]] = []
        self._queue_lock = threading.Lock()
        # Held while a handler runs: its environment is the process environment.
        self._run_lock = threading.RLock()
        self._request_count = 0
        self.invocations: list[Invocation] = []
        # Creating a botocore client costs ~30 ms: one STS client per region assumes the roles.
        self._sts_clients: dict[str, Any] = {}

    def register(self, function: LambdaFunction) -> None:
        self._functions[function.arn] = function

    @contextmanager
    def installed(self) -> Iterator[LambdaRouter]:
        """Route `lambda:Invoke` of every botocore session created inside the block."""
        hooks = [
            ("before-parameter-build.lambda.Invoke", self._stash_params),
            ("before-call.lambda.Invoke", self._answer_invoke),
        ]
        with builtin_hooks(hooks):
            yield self

    def drain(self) -> list[Invocation]:
        """Run queued async invocations, then those they queued, until the queue is empty.

        Lambda does not order asynchronous invocations, and callers such as the fan-out queue
        them from a thread pool; each round runs in a canonical order (function, payload) so a
        run does not depend on thread timing.
        """
        ran = []
        while self._queue:
            with self._queue_lock:
                batch, self._queue = self._queue, []
            batch.sort(key=lambda queued: (queued[0].arn, json.dumps(queued[1], sort_keys=True)))
            ran.extend(self._run(function, event, "Event") for function, event in batch)
        return ran

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- botocore hooks -------------------------------------------------------------------------

    @staticmethod
    def _stash_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # before-call only sees the serialized request; the API parameters are read here.
        context["sandbox_invoke_params"] = dict(params)

    def _answer_invoke(
        self, model: Any, context: dict[str, Any], request_signer: Any, **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]]:
        params = context["sandbox_invoke_params"]
        try:
            validate_request(model.service_model, "Invoke", params)
        except ValidationError as error:
            return _error(400, "ValidationException", str(error))
        region = request_signer._region_name
        caller = self._caller_of(request_signer)
        try:
            function_arn = _function_arn(
                params["FunctionName"], params.get("Qualifier"), caller.account, region
            )
        except QualifierConflictError as conflict:
            return _error(400, "InvalidParameterValueException", str(conflict))
        if function_arn is not None:
            request = Request(INVOKE_ACTION, function_arn, caller.context(region))
            policies = identity_policies(caller.arn)
            decision = Decision.ALLOWED if policies is None else evaluate(policies, request)
            if decision is not Decision.ALLOWED:
                message = access_denied_message(caller.arn, request, decision)
                return _error(403, "AccessDeniedException", message)
        function = self._functions.get(_unqualified(function_arn)) if function_arn else None
        if function is None:
            return _error(
                404,
                "ResourceNotFoundException",
                f"Function not found: {function_arn or params['FunctionName']}",
            )
        if caller.account != function.account:
            return _error(
                403,
                "AccessDeniedException",
                f"User: {caller.arn} is not authorized to perform: {INVOKE_ACTION} on resource: "
                f"{function_arn} because no resource-based policy allows the {INVOKE_ACTION} "
                "action",
            )
        try:
            event = _decode_payload(params.get("Payload"))
        except ValueError:
            return _error(
                400, "InvalidRequestContentException", "Could not parse request body into json"
            )
        invocation_type = params.get("InvocationType", "RequestResponse")
        if invocation_type == "DryRun":
            return _ok(204, {"StatusCode": 204})
        if invocation_type == "Event":
            with self._queue_lock:
                self._queue.append((function, event))
            return _ok(202, {"StatusCode": 202, "Payload": _body(b"")})
        invocation = self._run(function, event, invocation_type)
        if invocation.error is not None:
            payload = json.dumps(
                {"errorMessage": invocation.error, "errorType": invocation.error_type}
            )
            return _ok(
                200,
                {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _body(payload)},
            )
        return _ok(200, {"StatusCode": 200, "Payload": _body(json.dumps(invocation.result))})

    # --- resolution and execution ---------------------------------------------------------------

    def _sts(self, region: str) -> Any:
        with self._queue_lock:
            if region not in self._sts_clients:
                self._sts_clients[region] = self._base_session.client("sts", region_name=region)
            return self._sts_clients[region]

    def _caller_of(self, request_signer: Any) -> Caller:
        credentials = request_signer._credentials.get_frozen_credentials()
        sts = self._base_session.client(
            "sts",
            region_name=request_signer._region_name,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            aws_session_token=credentials.token,
        )
        identity = sts.get_caller_identity()
        return Caller(identity["Arn"], identity["Account"], _organization_of(identity["Account"]))

    def _run(self, function: LambdaFunction, event: Any, invocation_type: str) -> Invocation:
        with self._run_lock:
            self._request_count += 1
            request_id = str(uuid.uuid5(_REQUEST_NAMESPACE, str(self._request_count)))
            return self._run_handler(function, event, invocation_type, request_id)

    def _run_handler(
        self, function: LambdaFunction, event: Any, invocation_type: str, request_id: str
    ) -> Invocation:
        context = LambdaContext(
            function_name=function.name,
            invoked_function_arn=function.arn,
            aws_request_id=request_id,
            memory_limit_in_mb=function.memory_mb,
            timeout_seconds=function.timeout_seconds,
        )
        with self._lambda_environment(function):
            try:
                result, error, error_type = function.handler(event, context), None, None
            except Exception as failure:  # a handler error is the invocation's result, as in Lambda
                result = None
                error = "".join(traceback.format_exception_only(failure)).strip()
                error_type = type(failure).__name__
        invocation = Invocation(
            function.arn, invocation_type, event, request_id, result, error, error_type
        )
        self.invocations.append(invocation)
        return invocation

    @contextmanager
    def _lambda_environment(self, function: LambdaFunction) -> Iterator[None]:
        credentials = self._sts(function.region).assume_role(
            RoleArn=function.role_arn, RoleSessionName=function.name[:64]
        )["Credentials"]
        saved = dict(os.environ)
        for key in [key for key in os.environ if key.startswith("AWS_")]:
            del os.environ[key]
        os.environ.update(
            {
                **function.environment,
                "AWS_REGION": function.region,
                "AWS_DEFAULT_REGION": function.region,
                "AWS_LAMBDA_FUNCTION_NAME": function.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
                "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
                "AWS_SESSION_TOKEN": credentials["SessionToken"],
            }
        )
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


@dataclass(frozen=True)
class Caller:
    arn: str  # as GetCallerIdentity names it
    account: str
    organization_id: str | None

    def context(self, region: str) -> dict[str, str]:
        """The global condition keys of the caller's request (IAM User Guide)."""
        assumed_role = _ASSUMED_ROLE.match(self.arn)
        principal_arn = (
            f"arn:{assumed_role['partition']}:iam::{self.account}:role/{assumed_role['role']}"
            if assumed_role
            else self.arn
        )
        context = {
            "aws:PrincipalArn": principal_arn,
            "aws:PrincipalAccount": self.account,
            "aws:RequestedRegion": region,
        }
        if self.organization_id:
            context["aws:PrincipalOrgID"] = self.organization_id
        return context


def _organization_of(account: str, partition: str = "aws") -> str | None:
    try:
        organization = organizations_backends[account][partition].describe_organization()
    except AWSOrganizationsNotInUseException:
        return None
    return organization["Organization"]["Id"]


class QualifierConflictError(ValueError):
    """`FunctionName` names one version or alias and `Qualifier` another."""


def _function_arn(name: str, qualifier: str | None, caller_account: str, region: str) -> str | None:
    """The ARN `FunctionName` and `Qualifier` designate: qualified when either names a version or
    alias, as Lambda authorises it (a policy naming the unqualified ARN does not cover them)."""
    partial = _PARTIAL_ARN.match(name)
    if partial:
        name = f"arn:aws:lambda:{region}:{partial['account']}:function:{partial['name']}"
        if partial["qualifier"]:
            name = f"{name}:{partial['qualifier']}"
    parsed = _FUNCTION_ARN.match(name)
    if parsed is None:
        return None
    if qualifier and parsed["qualifier"] and qualifier != parsed["qualifier"]:
        raise QualifierConflictError(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    qualifier = parsed["qualifier"] or qualifier
    region = parsed["region"] or region
    account = parsed["account"] or caller_account
    arn = f"arn:aws:lambda:{region}:{account}:function:{parsed['name']}"
    return f"{arn}:{qualifier}" if qualifier else arn


def _unqualified(function_arn: str) -> str:
    return ":".join(function_arn.split(":")[:7])


def _decode_payload(payload: bytes | str | None) -> Any:
    if not payload:
        return {}
    return json.loads(payload)


def _body(data: bytes | str) -> StreamingBody:
    raw = data.encode() if isinstance(data, str) else data
    return StreamingBody(io.BytesIO(raw), len(raw))


def _ok(status: int, parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    parsed["ResponseMetadata"] = {"HTTPStatusCode": status}
    return AWSResponse("https://lambda.sandbox", status, {}, None), parsed


def _error(status: int, code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return AWSResponse("https://lambda.sandbox", status, {}, None), parsed
