"""Identity-based policy evaluation, as IAM decides a request within one account.

moto 5.2.5 enforces no identity policy by default; with its IAM enforcement switched on it checks
actions, and AssumeRole trust, but authorises every service other than S3, SQS, IAM and STS
against `*`, never against the resource's ARN, and evaluates conditions only for trust policies.
The product depends on the resource: the fan-out's invoke role may call only the refresh functions
its policy names, and AWS evaluates that policy before it looks the function up. So the sandbox's
emulated APIs (today `lambda:Invoke`, in `sandbox/lambda_invoke.py`) authorise the caller here.

AWS behaviour emulated (IAM User Guide: "Policy evaluation logic", "The difference between
explicit and implicit denies", "IAM JSON policy elements": Action, NotAction, Resource,
NotResource, Condition, "Condition operators"; "Troubleshooting access denied error messages"):
* a request is allowed only if some statement allows it and none denies it: an explicit deny wins
  over every allow, and without an applicable allow the request is implicitly denied;
* a statement applies when its Action (or, for NotAction, anything but it) matches the action,
  case-insensitively, and its Resource (or anything but its NotResource) matches the resource,
  case-sensitively, and every condition holds. `*` matches any run of characters and `?` one
  character; an ARN pattern is matched field by field (partition, service, region, account, and
  the resource part, which may itself contain colons), so a wildcard never crosses into another
  field;
* conditions: every operator of a statement must hold, every key of an operator must hold, and a
  key holds when the request's value matches any of the listed values (the negated operators:
  matches none of them). A supported key absent from the request context makes a positive
  operator false and a negated one true.

Supported: Allow and Deny statements with Action or NotAction, Resource or NotResource, and
conditions with the operators StringEquals, StringNotEquals, StringLike, StringNotLike,
ArnEquals, ArnNotEquals, ArnLike and ArnNotLike on the single-valued keys in
`SUPPORTED_CONDITION_KEYS` (the callers put them in the request context). Anything else — other
operators, set operators (ForAnyValue:/ForAllValues:), ...IfExists, other keys, policy variables,
a Principal in an identity policy — raises `UnsupportedPolicyError` naming it, rather than being
ignored. Conditions are read when their statement's action and resource match the request (an
unsupported condition there could change the answer); the statement elements are checked in
every statement.

Not modelled: permissions boundaries (a principal that has one raises `UnsupportedPolicyError`),
session policies, service control policies and resource-based policies; the callers state where
those would matter.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from moto.iam.exceptions import NoSuchEntity, NotFoundException
from moto.iam.models import iam_backends

SUPPORTED_CONDITION_KEYS = frozenset(
    {"aws:principalarn", "aws:principalaccount", "aws:principalorgid", "aws:requestedregion"}
)
_STRING_OPERATORS = {"StringEquals", "StringNotEquals", "StringLike", "StringNotLike"}
_ARN_OPERATORS = {"ArnEquals", "ArnNotEquals", "ArnLike", "ArnNotLike"}
_STATEMENT_ELEMENTS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_ASSUMED_ROLE = re.compile(
    r"^arn:(?P<partition>[\w-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/.+$"
)
_USER = re.compile(
    r"^arn:(?P<partition>[\w-]+):(?:iam|sts)::(?P<account>\d{12}):user/(?P<path>.+)$"
)


class UnsupportedPolicyError(ValueError):
    """A policy uses an element or condition the emulation does not evaluate."""


class Decision(enum.Enum):
    ALLOWED = "allowed"
    IMPLICIT_DENY = "implicit deny"
    EXPLICIT_DENY = "explicit deny"


@dataclass(frozen=True)
class Request:
    """What IAM authorises: one action on one resource, with the request's condition keys."""

    action: str  # e.g. "lambda:InvokeFunction"
    resource: str  # the resource's ARN
    context: Mapping[str, str] = field(default_factory=dict)  # condition key -> value


def evaluate(documents: Iterable[Mapping[str, Any]], request: Request) -> Decision:
    """The decision of a principal's identity policies (all of them together) on `request`."""
    allowed = False
    for document in documents:
        for statement in _statements(document):
            if not _applies(statement, request):
                continue
            if statement["Effect"] == "Deny":
                return Decision.EXPLICIT_DENY
            allowed = True
    return Decision.ALLOWED if allowed else Decision.IMPLICIT_DENY


def access_denied_message(principal_arn: str, request: Request, decision: Decision) -> str:
    """The message AWS gives with an identity-policy denial (the service adds the error code)."""
    why = (
        "with an explicit deny in an identity-based policy"
        if decision is Decision.EXPLICIT_DENY
        else f"because no identity-based policy allows the {request.action} action"
    )
    return (
        f"User: {principal_arn} is not authorized to perform: {request.action} "
        f"on resource: {request.resource} {why}"
    )


# --- the policy language subset -----------------------------------------------------------------


def _statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    unknown = set(document) - {"Version", "Id", "Statement"}
    if unknown:
        raise UnsupportedPolicyError(f"policy elements {sorted(unknown)} are not supported")
    statements = document.get("Statement", [])
    if isinstance(statements, Mapping):
        statements = [statements]
    for statement in statements:
        _check_elements(statement)
    return statements


def _check_elements(statement: Mapping[str, Any]) -> None:
    unknown = set(statement) - _STATEMENT_ELEMENTS
    if unknown:
        raise UnsupportedPolicyError(
            f"statement elements {sorted(unknown)} are not supported in an identity policy"
        )
    if statement.get("Effect") not in ("Allow", "Deny"):
        raise UnsupportedPolicyError(f"Effect {statement.get('Effect')!r}: Allow or Deny")
    for either, other in (("Action", "NotAction"), ("Resource", "NotResource")):
        if (either in statement) == (other in statement):
            raise UnsupportedPolicyError(f"a statement needs exactly one of {either}, {other}")
    for element in ("Action", "NotAction", "Resource", "NotResource"):
        for value in _strings(statement.get(element, []), element):
            if "${" in value:
                raise UnsupportedPolicyError(f"policy variables ({value!r}) are not supported")


def _applies(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        action_matches = _any_action(statement["Action"], request.action)
    else:
        action_matches = not _any_action(statement["NotAction"], request.action)
    if not action_matches:
        return False
    if "Resource" in statement:
        resource_matches = _any_resource(statement["Resource"], request.resource)
    else:
        resource_matches = not _any_resource(statement["NotResource"], request.resource)
    return resource_matches and _conditions_hold(statement.get("Condition", {}), request.context)


def _any_action(patterns: Any, action: str) -> bool:
    return any(
        _glob(pattern, case_sensitive=False).fullmatch(action)
        for pattern in _strings(patterns, "Action")
    )


def _any_resource(patterns: Any, resource: str) -> bool:
    return any(arn_matches(pattern, resource) for pattern in _strings(patterns, "Resource"))


def arn_matches(pattern: str, arn: str) -> bool:
    """ARN matching: field by field, wildcards within a field; `*` alone matches anything."""
    if pattern == "*":
        return True
    pattern_fields, arn_fields = pattern.split(":", 5), arn.split(":", 5)
    if len(pattern_fields) != 6 or len(arn_fields) != 6:
        return _glob(pattern, case_sensitive=True).fullmatch(arn) is not None
    return all(
        _glob(p, case_sensitive=True).fullmatch(a) is not None
        for p, a in zip(pattern_fields, arn_fields, strict=True)
    )


@cache
def _glob(pattern: str, *, case_sensitive: bool) -> re.Pattern[str]:
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.compile(regex, 0 if case_sensitive else re.IGNORECASE | re.DOTALL)


def _conditions_hold(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    values_by_key = {key.lower(): value for key, value in context.items()}
    return all(
        _operator_holds(operator, tests, values_by_key) for operator, tests in condition.items()
    )


def _operator_holds(operator: str, tests: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    if operator not in _STRING_OPERATORS | _ARN_OPERATORS:
        raise UnsupportedPolicyError(
            f"condition operator {operator!r} is not supported; supported: "
            f"{sorted(_STRING_OPERATORS | _ARN_OPERATORS)}"
        )
    negated = "Not" in operator
    if not isinstance(tests, Mapping):
        raise UnsupportedPolicyError(f"condition {operator} {tests!r}: expected keys and values")
    for key, expected in tests.items():
        if key.lower() not in SUPPORTED_CONDITION_KEYS:
            raise UnsupportedPolicyError(
                f"condition key {key!r} is not supported; supported: "
                f"{sorted(SUPPORTED_CONDITION_KEYS)}"
            )
        values = _strings(expected, key)
        for value in values:
            # IAM substitutes policy variables in condition values too; compared literally, a
            # variable would silently decide the other way.
            if "${" in value:
                raise UnsupportedPolicyError(f"policy variables ({value!r}) are not supported")
        actual = context.get(key.lower())
        if actual is None:
            holds = negated  # a missing key matches nothing
        else:
            matched = any(_value_matches(operator, value, actual) for value in values)
            holds = matched != negated
        if not holds:
            return False
    return True


def _value_matches(operator: str, expected: str, actual: str) -> bool:
    if operator in ("StringEquals", "StringNotEquals"):
        return expected == actual
    if operator in ("StringLike", "StringNotLike"):
        return _glob(expected, case_sensitive=True).fullmatch(actual) is not None
    return arn_matches(expected, actual)  # ArnEquals and ArnLike compare ARNs alike


def _strings(value: Any, element: str) -> Sequence[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise UnsupportedPolicyError(f"{element} {value!r}: expected a string or a list of them")
    return values


# --- the principal's policies, from moto's IAM state --------------------------------------------


def identity_policies(principal_arn: str) -> list[dict[str, Any]] | None:
    """Every identity policy of the caller `principal_arn`; None for an unrestricted caller.

    An assumed-role session has its role's inline and attached policies; an IAM user its own and
    its groups'. The account's root user is not restricted by identity policies, and moto's
    default credentials (`arn:aws:sts::<account>:user/moto`, no IAM user behind them) stand for
    it. A session of a role that no longer exists has no policies.
    """
    role = _ASSUMED_ROLE.match(principal_arn)
    if role:
        backend = iam_backends[role["account"]][role["partition"]]
        try:
            entity = backend.get_role(role["role"])
        except NotFoundException:
            return []
        return _documents_of(entity, principal_arn)
    user = _USER.match(principal_arn)
    if user:
        backend = iam_backends[user["account"]][user["partition"]]
        name = user["path"].rsplit("/", 1)[-1]
        try:
            entity = backend.get_user(name)
        except NoSuchEntity:
            return None  # moto's default identity: the account's root user
        groups = backend.get_groups_for_user(name)
        return _documents_of(entity, principal_arn) + [
            document for group in groups for document in _documents_of(group, principal_arn)
        ]
    raise UnsupportedPolicyError(f"caller {principal_arn!r}: only role sessions and IAM users")


def _documents_of(entity: Any, principal_arn: str) -> list[dict[str, Any]]:
    if getattr(entity, "permissions_boundary_arn", None):
        raise UnsupportedPolicyError(
            f"{principal_arn} has a permissions boundary, which the sandbox does not evaluate"
        )
    inline = [_loaded(document) for document in entity.policies.values()]
    managed = [
        _loaded(next(v.document for v in policy.versions if v.is_default))
        for policy in entity.managed_policies.values()
    ]
    return inline + managed


def _loaded(document: str | Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(document) if isinstance(document, str) else dict(document)
