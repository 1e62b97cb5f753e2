"""Least privilege, both ways: what each Lambda handler calls, and what its stack grants it.

Recording. `ApiCallRecorder.install()` appends a `creating-client-class` hook to botocore's
`BUILTIN_HANDLERS` (the way moto and the sandbox emulators install themselves), so every client
class created afterwards, from any boto3.Session, gets a mixin that records each API call before
making it. A `before-call` hook would not do: botocore calls the hooks of more specific event
names first (`before-call.imagebuilder`, `before-call.lambda.Invoke`), and the first emulator
that answers ends the emission. tests/conftest.py installs one recorder for the whole session.
A call belongs to handler `<pkg>` when the first frame below botocore/boto3 on the calling
thread's stack is module `handlers.<pkg>.*`: calls made by tests, moto set-up code or the
sandbox emulators are not the handler's, even when they happen inside a handler run. Handler
code is not touched.

Each call is recorded with the role it was made as: the handler's own execution role, or a role
the handler assumed itself (the fan-out invokes workload functions as the workload account's
`InvokeInstanceRefreshHandlerRole`), recognised by the access key its AssumeRole call returned.

Grants. `stack_grants(run)` reads, from a Pulumi mock run (`tests.pulumi_harness`), every
handler function's execution role and the invoke role with their policy statements.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass
from types import FrameType
from typing import Any

import botocore.handlers

from tests.pulumi_harness import RecordedResource, StackRun
from tests.sdk_floor import used_member_paths

HANDLER_PACKAGES = ("build_trigger", "fanout", "recorder", "refresh", "waves")
EXECUTION_ROLE = "execution role"
INVOKE_ROLE = "InvokeInstanceRefreshHandlerRole"  # golden-ami:invokeRoleName, its default

# IAM service prefixes that differ from the API's signing name.
_SERVICE_PREFIXES = {"monitoring": "cloudwatch"}
# Operations authorised by an IAM action of another name (Service Authorization Reference).
_IRREGULAR_ACTIONS = {
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:HeadBucket": "s3:ListBucket",
    "lambda:Invoke": "lambda:InvokeFunction",
}
# Calls that IAM does not authorise at all.
UNAUTHORISED_ACTIONS = {
    "sts:GetCallerIdentity": "answers for any valid credentials, even when explicitly denied",
}


def iam_action(signing_name: str, operation: str) -> str:
    """The IAM action authorising `operation` of the service signing as `signing_name`."""
    api_action = f"{_SERVICE_PREFIXES.get(signing_name, signing_name)}:{operation}"
    return _IRREGULAR_ACTIONS.get(api_action, api_action)


@dataclass(frozen=True, order=True)
class RecordedCall:
    handler: str  # the package under handlers/
    role: str  # EXECUTION_ROLE, or the name of a role the handler assumed
    action: str  # IAM action
    operation: str  # API operation, e.g. ListObjectVersions


class ApiCallRecorder:
    def __init__(self) -> None:
        self.calls: Counter[RecordedCall] = Counter()
        # "<service>.<Operation>" -> request member paths the handlers used (tests/sdk_floor.py)
        self.request_members: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        # handler -> access key id -> ARN of the role the handler assumed to get that key
        self._assumed_keys: dict[str, dict[str, str]] = {}
        self._hook = ("creating-client-class", self._add_recording_mixin)

    def install(self) -> None:
        botocore.handlers.BUILTIN_HANDLERS.append(self._hook)

    def uninstall(self) -> None:
        botocore.handlers.BUILTIN_HANDLERS.remove(self._hook)

    def handlers_seen(self) -> set[str]:
        return {call.handler for call in self.calls}

    def to_json(self) -> dict[str, Any]:
        """The recording as JSON data, to carry it from pytest-xdist workers (tests/conftest.py)."""
        with self._lock:
            return {
                "calls": [[*astuple(call), count] for call, count in sorted(self.calls.items())],
                "request_members": {op: sorted(p) for op, p in self.request_members.items()},
            }

    def merge_json(self, recording: dict[str, Any]) -> None:
        """Adds a recording made by another process (`to_json`) to this one."""
        with self._lock:
            for *fields, count in recording["calls"]:
                self.calls[RecordedCall(*fields)] += count
            for operation, paths in recording["request_members"].items():
                self.request_members.setdefault(operation, set()).update(paths)

    def _add_recording_mixin(self, base_classes: list[type], **_: Any) -> None:
        recorder = self

        class RecordingClient:
            def _make_api_call(self, operation_name: str, api_params: dict[str, Any]) -> Any:
                # The frame above is botocore's generated client method; above it, the caller.
                handler = calling_handler(sys._getframe(1))
                if handler is None:
                    return super()._make_api_call(operation_name, api_params)
                recorder.record(handler, self, operation_name)
                recorder.record_members(self, operation_name, api_params)
                response = super()._make_api_call(operation_name, api_params)
                if operation_name == "AssumeRole":
                    recorder.remember_assumed(handler, api_params["RoleArn"], response)
                return response

        base_classes.insert(0, RecordingClient)

    def record(self, handler: str, client: Any, operation: str) -> None:
        action = iam_action(client.meta.service_model.signing_name, operation)
        access_key = client._request_signer._credentials.get_frozen_credentials().access_key
        with self._lock:
            role_arn = self._assumed_keys.get(handler, {}).get(access_key)
            role = role_arn.rpartition("/")[2] if role_arn else EXECUTION_ROLE
            self.calls[RecordedCall(handler, role, action, operation)] += 1

    def record_members(self, client: Any, operation: str, api_params: dict[str, Any]) -> None:
        service_model = client.meta.service_model
        input_shape = service_model.operation_model(operation).input_shape
        paths = used_member_paths(input_shape, api_params)
        with self._lock:
            key = f"{service_model.service_name}.{operation}"
            self.request_members.setdefault(key, set()).update(paths)

    def remember_assumed(self, handler: str, role_arn: str, response: dict[str, Any]) -> None:
        with self._lock:
            keys = self._assumed_keys.setdefault(handler, {})
            keys[response["Credentials"]["AccessKeyId"]] = role_arn


def calling_handler(frame: FrameType | None) -> str | None:
    """`<pkg>` when the nearest non-botocore caller on the stack is module `handlers.<pkg>.*`."""
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in {
        "botocore",
        "boto3",
    }:
        frame = frame.f_back
    if frame is None:
        return None
    parts = frame.f_globals.get("__name__", "").split(".")
    if len(parts) >= 3 and parts[0] == "handlers" and parts[1] in HANDLER_PACKAGES:
        return parts[1]
    return None


# --- grants ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One Allow statement of a role's policies, reduced to what the comparison reads."""

    role: str  # "<pkg> execution role" or INVOKE_ROLE
    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: dict[str, Any]


@dataclass(frozen=True)
class RolePolicies:
    role_resource: RecordedResource
    inline: tuple[dict[str, Any], ...]
    managed_policy_arns: tuple[str, ...]


def _listify(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def role_policies(run: StackRun) -> Iterator[RolePolicies]:
    """Every IAM role of the run with its inline documents and attached managed policy ARNs."""
    import json

    for role in run.resources_of_type("aws:iam/role:Role"):
        name = role.outputs["name"]
        inline = [
            json.loads(p["policy"])
            for p in run.resources_of_type("aws:iam/rolePolicy:RolePolicy")
            if p["role"] == name
        ] + [json.loads(p["policy"]) for p in role.inputs.get("inlinePolicies", [])]
        managed = [
            a["policyArn"]
            for a in run.resources_of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
            if a["role"] == name
        ] + list(role.inputs.get("managedPolicyArns", []))
        yield RolePolicies(role, tuple(inline), tuple(managed))


def handler_of_function(function: RecordedResource) -> str:
    return function["handler"].split(".")[1]  # handlers.<pkg>.app.lambda_handler


def stack_grants(run: StackRun) -> dict[str, list[Grant]]:
    """Allow statements by acting role: `<pkg>` execution roles, and the invoke role."""
    roles = {p.role_resource.outputs["arn"]: p for p in role_policies(run)}
    acting: dict[str, RolePolicies] = {}
    for function in run.resources_of_type("aws:lambda/function:Function"):
        acting[handler_of_function(function)] = roles[function["role"]]
    for policies in roles.values():
        if policies.role_resource.outputs["name"] == INVOKE_ROLE:
            acting[INVOKE_ROLE] = policies
    grants: dict[str, list[Grant]] = {}
    for role_key, policies in acting.items():
        if policies.managed_policy_arns:
            raise AssertionError(
                f"{role_key} role has managed policies {policies.managed_policy_arns}: handler "
                "roles take inline least-privilege policies only"
            )
        grants[role_key] = [
            Grant(
                role=role_key,
                sid=statement.get("Sid", ""),
                actions=_listify(statement["Action"]),
                resources=_listify(statement["Resource"]),
                condition=statement.get("Condition", {}),
            )
            for document in policies.inline
            for statement in document["Statement"]
            if statement["Effect"] == "Allow"
        ]
    return grants


def merge_grants(runs: Iterable[StackRun]) -> dict[str, list[Grant]]:
    merged: dict[str, list[Grant]] = {}
    for run in runs:
        for role_key, grants in stack_grants(run).items():
            merged.setdefault(role_key, [])
            merged[role_key] += [g for g in grants if g not in merged[role_key]]
    return merged


def granting(grants: Iterable[Grant], action: str) -> list[Grant]:
    """The statements whose Action names `action` (exactly: the stacks use no wildcards)."""
    return [grant for grant in grants if action in grant.actions]
