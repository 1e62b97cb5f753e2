"""AssumeRole as AWS decides it: the role must exist and its trust policy must allow the caller.

moto 5.2.5 grants any `sts:AssumeRole`, even of a role that does not exist or does not trust the
caller. The product depends on the denial: an account without the workload stack has no invoke
role, and the fan-out reports it `not-enrolled` because AssumeRole answers AccessDenied.
`StsTrustEmulator` is a context manager that adds botocore event handlers to
`botocore.handlers.BUILTIN_HANDLERS` (as moto installs itself), so every client created inside it
— from any boto3.Session, assumed-role sessions included — is covered:

* `before-parameter-build.sts.AssumeRole` stashes the request's parameters in its context;
* `before-call.sts.AssumeRole` reads moto's state (the role in its account's IAM backend; the
  caller's account, assumed role and Organization) and either answers HTTP 403 AccessDenied or
  returns None, so moto issues the credentials.

AWS behaviour emulated (IAM User Guide: "Cross-account policy evaluation logic", "IAM JSON
policy elements: Principal", "AWS global condition context keys"; STS API reference AssumeRole):
* a role's trust policy must allow the caller `sts:AssumeRole`; a missing role and a role that
  does not trust the caller answer alike, with HTTP 403 and the message
  "User: <caller arn> is not authorized to perform: sts:AssumeRole on resource: <role arn>";
* a role principal (`arn:aws:iam::<account>:role/<name>`) matches the sessions of that role; an
  account principal (`<account>` or `arn:aws:iam::<account>:root`) matches any caller of that
  account; a service principal (`lambda.amazonaws.com`) matches only that service;
* `aws:PrincipalOrgID` is the Organization of the caller's account; a caller outside any
  Organization, or an AWS service, has no such key, so `StringEquals` on it does not match.

Trust policies support exactly what the project's stacks (and moto's
OrganizationAccountAccessRole) use: Allow statements with AWS and Service principals, the action
`sts:AssumeRole`, and a `StringEquals` condition on `aws:PrincipalOrgID`. Anything else raises
`UnsupportedPolicyError` naming it, rather than guessing.

Simplifications: the caller's identity policy is not evaluated (moto does not enforce identity
policies either), so an account principal is taken as granting every caller of that account.
AWS services are callers through `service_session()`: Lambda assuming a function's execution
role is a request from `lambda.amazonaws.com`, not from any account.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.handlers
from botocore.awsrequest import AWSResponse
from moto.iam.exceptions import NotFoundException
from moto.iam.models import get_account_id_from, iam_backends
from moto.organizations.exceptions import AWSOrganizationsNotInUseException
from moto.organizations.models import organizations_backends
from moto.sts.models import sts_backends
from moto.utilities.utils import PARTITION_NAMES, get_partition

ASSUME_ROLE = "sts:AssumeRole"
_PARTITION = "|".join(re.escape(partition) for partition in sorted(set(PARTITION_NAMES)))
_ACCOUNT_ID = re.compile(r"^\d{12}$")
_ACCOUNT_ROOT = re.compile(rf"^arn:(?:{_PARTITION}):iam::(?P<account>\d{{12}}):root$")
_ROLE_ARN = re.compile(rf"^arn:(?P<partition>{_PARTITION}):iam::(?P<account>\d{{12}}):role/.+$")
_STATEMENT_ELEMENTS = frozenset({"Sid", "Effect", "Principal", "Action", "Condition"})


class UnsupportedPolicyError(ValueError):
    """A trust policy uses an element the emulation does not evaluate."""


@dataclass(frozen=True)
class Caller:
    """Who is calling AssumeRole, with what a trust policy is evaluated against."""

    principal: str  # the caller's ARN as GetCallerIdentity names it, or the service principal
    account_id: str | None = None  # None for an AWS service
    role_arn: str | None = None  # the role an assumed-role session was issued for
    service: str | None = None
    organization_id: str | None = None


@dataclass(frozen=True)
class TrustStatement:
    """One Allow statement granting `sts:AssumeRole`, in the supported subset."""

    accounts: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    organization_ids: frozenset[str] | None = None  # StringEquals aws:PrincipalOrgID

    def allows(self, caller: Caller) -> bool:
        if caller.service is not None:
            named = caller.service in self.services
        else:
            named = caller.account_id in self.accounts or caller.role_arn in self.roles
        if not named:
            return False
        return self.organization_ids is None or caller.organization_id in self.organization_ids


def parse_trust_policy(document: Mapping[str, Any]) -> list[TrustStatement]:
    """The statements that grant `sts:AssumeRole`; UnsupportedPolicyError names anything else.

    The whole document is checked, so a policy fails the same way whoever the caller is.
    """
    unknown = set(document) - {"Version", "Id", "Statement"}
    if unknown:
        raise UnsupportedPolicyError(f"policy elements {sorted(unknown)} are not supported")
    statements = document.get("Statement", [])
    if isinstance(statements, Mapping):
        statements = [statements]
    parsed = [_parse_statement(statement) for statement in statements]
    return [statement for statement in parsed if statement is not None]


def trust_allows(document: Mapping[str, Any], caller: Caller) -> bool:
    return any(statement.allows(caller) for statement in parse_trust_policy(document))


def _parse_statement(statement: Mapping[str, Any]) -> TrustStatement | None:
    unknown = set(statement) - _STATEMENT_ELEMENTS
    if unknown:
        raise UnsupportedPolicyError(f"statement elements {sorted(unknown)} are not supported")
    if statement.get("Effect") != "Allow":
        raise UnsupportedPolicyError(f"Effect {statement.get('Effect')!r}: only Allow is supported")
    actions = _strings(statement.get("Action"), "Action")
    wildcards = [action for action in actions if "*" in action or "?" in action]
    if wildcards:
        raise UnsupportedPolicyError(f"wildcard actions {wildcards} are not supported")
    principal = statement.get("Principal")
    if not isinstance(principal, Mapping):
        raise UnsupportedPolicyError(f"Principal {principal!r}: expected an AWS or Service map")
    unknown = set(principal) - {"AWS", "Service"}
    if unknown:
        raise UnsupportedPolicyError(f"principal types {sorted(unknown)} are not supported")
    accounts, roles = _aws_principals(_strings(principal.get("AWS", []), "Principal AWS"))
    organization_ids = _organization_condition(statement.get("Condition", {}))
    # Statements for other actions (sts:TagSession, ...) do not grant AssumeRole.
    if ASSUME_ROLE.lower() not in {action.lower() for action in actions}:
        return None
    return TrustStatement(
        accounts=accounts,
        roles=roles,
        services=frozenset(_strings(principal.get("Service", []), "Principal Service")),
        organization_ids=organization_ids,
    )


def _aws_principals(principals: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    accounts, roles = set(), set()
    for principal in principals:
        root = _ACCOUNT_ROOT.match(principal)
        if _ACCOUNT_ID.match(principal):
            accounts.add(principal)
        elif root:
            accounts.add(root["account"])
        elif _ROLE_ARN.match(principal):
            roles.add(principal)
        else:
            raise UnsupportedPolicyError(
                f"AWS principal {principal!r}: only account ids, account roots and role ARNs"
                " are supported"
            )
    return frozenset(accounts), frozenset(roles)


def _organization_condition(condition: Mapping[str, Any]) -> frozenset[str] | None:
    if not condition:
        return None
    unknown = set(condition) - {"StringEquals"}
    if unknown:
        raise UnsupportedPolicyError(f"condition operators {sorted(unknown)} are not supported")
    tests = condition["StringEquals"]
    keys = {key.lower(): key for key in tests}  # condition key names are case-insensitive
    unknown = set(keys) - {"aws:principalorgid"}
    if unknown:
        names = sorted(keys[key] for key in unknown)
        raise UnsupportedPolicyError(f"condition keys {names} are not supported")
    return frozenset(_strings(tests[keys["aws:principalorgid"]], "aws:PrincipalOrgID"))


def _strings(value: Any, element: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise UnsupportedPolicyError(f"{element} {value!r}: expected a string or a list of them")
    return values


# --- the botocore adapter over moto's state --------------------------------------------------


class StsTrustEmulator:
    """While entered, AssumeRole is denied unless the role exists and trusts the caller."""

    def __init__(self) -> None:
        self._services_by_key: dict[str, str] = {}
        self._handlers = [
            ("before-parameter-build.sts.AssumeRole", self._stash_params),
            ("before-call.sts.AssumeRole", self._answer_assume_role),
        ]

    def __enter__(self) -> StsTrustEmulator:
        botocore.handlers.BUILTIN_HANDLERS.extend(self._handlers)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handler in self._handlers:
            botocore.handlers.BUILTIN_HANDLERS.remove(handler)

    def service_session(self, service: str, region: str = "us-east-1") -> boto3.Session:
        """A session calling as the AWS service `service` (e.g. "lambda.amazonaws.com").

        Like every session, it takes the hooks installed when it is created: create it inside.
        """
        # Longer than moto's 20-character keys, so it can never name one of theirs.
        access_key = "ASIASERVICE" + hashlib.sha256(service.encode()).hexdigest()[:16].upper()
        self._services_by_key[access_key] = service
        return boto3.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=f"secret-of-{service}",
            region_name=region,
        )

    @staticmethod
    def _stash_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # before-call only sees the serialized request; the API parameters are read here.
        context["sandbox_assume_role_params"] = dict(params)

    def _answer_assume_role(
        self, context: dict[str, Any], request_signer: Any, **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        role_arn = context["sandbox_assume_role_params"]["RoleArn"]
        access_key = request_signer._credentials.get_frozen_credentials().access_key
        caller = self._caller(access_key, request_signer.region_name)
        trust_policy = _trust_policy_of(role_arn)
        if trust_policy is not None and trust_allows(trust_policy, caller):
            return None  # moto issues the credentials
        message = (
            f"User: {caller.principal} is not authorized to perform: {ASSUME_ROLE}"
            f" on resource: {role_arn}"
        )
        parsed = {
            "Error": {"Type": "Sender", "Code": "AccessDenied", "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }
        return AWSResponse("https://sts.sandbox", 403, {}, None), parsed

    def _caller(self, access_key: str, region: str) -> Caller:
        if access_key in self._services_by_key:
            service = self._services_by_key[access_key]
            return Caller(principal=service, service=service)
        account_id = get_account_id_from(access_key)
        partition = get_partition(region)
        sts = sts_backends[account_id][partition]
        assumed_role = sts.get_assumed_role_from_access_key(access_key)
        if assumed_role is not None:
            arn = assumed_role.arn
        else:  # an IAM user's key, or moto's default credentials
            _, arn, _ = sts.get_caller_identity(access_key, region)
        try:
            organization = organizations_backends[account_id][partition].describe_organization()
        except AWSOrganizationsNotInUseException:
            organization = None
        return Caller(
            principal=arn,
            account_id=account_id,
            role_arn=assumed_role.role_arn if assumed_role else None,
            organization_id=organization["Organization"]["Id"] if organization else None,
        )


def _trust_policy_of(role_arn: str) -> dict[str, Any] | None:
    """The role's trust policy from its account's moto IAM backend; None if there is no role."""
    parsed = _ROLE_ARN.match(role_arn)
    if parsed is None:
        return None
    try:
        role = iam_backends[parsed["account"]][parsed["partition"]].get_role_by_arn(role_arn)
    except NotFoundException:
        return None
    return json.loads(role.assume_role_policy_document)
