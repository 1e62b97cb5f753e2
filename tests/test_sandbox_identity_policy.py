"""sandbox/identity_policy.py against IAM's documented evaluation logic (IAM User Guide)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.identity_policy import (
    Decision,
    Request,
    UnsupportedPolicyError,
    arn_matches,
    evaluate,
)

FUNCTION = "arn:aws:lambda:eu-west-1:222222222222:function:refresh"
INVOKE = Request("lambda:InvokeFunction", FUNCTION, {"aws:RequestedRegion": "eu-west-1"})


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(**elements: Any) -> dict[str, Any]:
    return {"Effect": "Allow", **elements}


def deny(**elements: Any) -> dict[str, Any]:
    return {"Effect": "Deny", **elements}


@pytest.mark.parametrize(
    ("documents", "decision"),
    [
        # No statement applies: denied by default (implicit deny).
        ([], Decision.IMPLICIT_DENY),
        ([policy(allow(Action="lambda:GetFunction", Resource="*"))], Decision.IMPLICIT_DENY),
        ([policy(allow(Action="lambda:InvokeFunction", Resource="*"))], Decision.ALLOWED),
        # Action names are case-insensitive; wildcards match within them.
        ([policy(allow(Action="LAMBDA:invoke*", Resource=FUNCTION))], Decision.ALLOWED),
        ([policy(allow(Action="lambda:Invoke?unction", Resource=FUNCTION))], Decision.ALLOWED),
        ([policy(allow(Action="*", Resource="*"))], Decision.ALLOWED),
        # NotAction: every action but those listed.
        ([policy(allow(NotAction="lambda:InvokeFunction", Resource="*"))], Decision.IMPLICIT_DENY),
        ([policy(allow(NotAction=["iam:*", "sts:*"], Resource="*"))], Decision.ALLOWED),
        # Resources are matched case-sensitively.
        (
            [policy(allow(Action="lambda:InvokeFunction", Resource=FUNCTION.upper()))],
            Decision.IMPLICIT_DENY,
        ),
        (
            [policy(allow(Action="lambda:InvokeFunction", NotResource=FUNCTION))],
            Decision.IMPLICIT_DENY,
        ),
        (
            [policy(allow(Action="lambda:InvokeFunction", NotResource=f"{FUNCTION}-other"))],
            Decision.ALLOWED,
        ),
        # An explicit deny wins over any allow, in the same policy or another one.
        (
            [policy(allow(Action="*", Resource="*"), deny(Action="lambda:*", Resource=FUNCTION))],
            Decision.EXPLICIT_DENY,
        ),
        (
            [
                policy(allow(Action="lambda:InvokeFunction", Resource=FUNCTION)),
                policy(deny(NotAction="lambda:GetFunction", Resource="*")),
            ],
            Decision.EXPLICIT_DENY,
        ),
        # A deny that does not apply changes nothing.
        (
            [
                policy(
                    allow(Action="lambda:InvokeFunction", Resource="*"),
                    deny(Action="lambda:InvokeFunction", Resource=f"{FUNCTION}-prod"),
                )
            ],
            Decision.ALLOWED,
        ),
        # A single statement object instead of a list.
        (
            [{"Version": "2012-10-17", "Statement": allow(Action="lambda:*", Resource="*")}],
            Decision.ALLOWED,
        ),
    ],
)
def test_evaluation_logic(documents: list[dict[str, Any]], decision: Decision) -> None:
    assert evaluate(documents, INVOKE) is decision


@pytest.mark.parametrize(
    ("pattern", "arn", "matches"),
    [
        ("arn:aws:lambda:*:222222222222:function:refresh", FUNCTION, True),
        ("arn:aws:lambda:*:222222222222:function:refresh", FUNCTION.replace("eu-", "us-"), True),
        ("arn:aws:lambda:*:222222222222:function:refresh", f"{FUNCTION}-canary", False),
        ("arn:aws:lambda:*:222222222222:function:*", f"{FUNCTION}:live", True),
        ("arn:aws:lambda:eu-west-?:*:function:refresh", FUNCTION, True),
        # A wildcard stays within its field: the account cannot swallow the region.
        ("arn:aws:lambda:eu-west-1*:function:refresh", FUNCTION, False),
        ("arn:aws:lambda:eu-west-1:222222222222:function:refresh", f"{FUNCTION}:live", False),
        # A version or alias is covered by `<name>:*`, which does not cover the function itself.
        (f"{FUNCTION}:*", f"{FUNCTION}:live", True),
        (f"{FUNCTION}:*", FUNCTION, False),
        ("*", FUNCTION, True),
    ],
)
def test_arn_matching_goes_field_by_field(pattern: str, arn: str, matches: bool) -> None:
    assert arn_matches(pattern, arn) is matches


REGION_CONDITION = {"StringEquals": {"aws:RequestedRegion": ["eu-west-1", "eu-central-1"]}}


@pytest.mark.parametrize(
    ("condition", "context", "decision"),
    [
        (REGION_CONDITION, {"aws:RequestedRegion": "eu-west-1"}, Decision.ALLOWED),
        (REGION_CONDITION, {"aws:RequestedRegion": "us-east-1"}, Decision.IMPLICIT_DENY),
        # Condition key names are case-insensitive, values (StringEquals) are not.
        ({"StringEquals": {"AWS:requestedregion": "eu-west-1"}}, {}, Decision.IMPLICIT_DENY),
        (
            {"StringEquals": {"AWS:requestedregion": "eu-west-1"}},
            {"aws:RequestedRegion": "eu-west-1"},
            Decision.ALLOWED,
        ),
        (
            {"StringEquals": {"aws:RequestedRegion": "EU-WEST-1"}},
            {"aws:RequestedRegion": "eu-west-1"},
            Decision.IMPLICIT_DENY,
        ),
        # A missing key: a positive operator is false, a negated one true.
        ({"StringEquals": {"aws:PrincipalOrgID": "o-abc"}}, {}, Decision.IMPLICIT_DENY),
        ({"StringNotEquals": {"aws:PrincipalOrgID": "o-abc"}}, {}, Decision.ALLOWED),
        # Negated: none of the values may match.
        (
            {"StringNotLike": {"aws:RequestedRegion": ["us-*", "ap-*"]}},
            {"aws:RequestedRegion": "eu-west-1"},
            Decision.ALLOWED,
        ),
        (
            {"StringNotLike": {"aws:RequestedRegion": ["us-*", "eu-*"]}},
            {"aws:RequestedRegion": "eu-west-1"},
            Decision.IMPLICIT_DENY,
        ),
        # Every operator and every key must hold.
        (
            {
                "StringEquals": {"aws:RequestedRegion": "eu-west-1"},
                "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/Invoke*"},
            },
            {
                "aws:RequestedRegion": "eu-west-1",
                "aws:PrincipalArn": "arn:aws:iam::222222222222:role/Other",
            },
            Decision.IMPLICIT_DENY,
        ),
    ],
)
def test_conditions(condition: dict[str, Any], context: dict[str, str], decision: Decision) -> None:
    document = policy(allow(Action="lambda:InvokeFunction", Resource="*", Condition=condition))
    request = Request(INVOKE.action, INVOKE.resource, context)
    assert evaluate([document], request) is decision


def test_a_deny_whose_condition_does_not_hold_does_not_apply() -> None:
    documents = [
        policy(
            allow(Action="lambda:InvokeFunction", Resource="*"),
            deny(
                Action="*",
                Resource="*",
                Condition={"StringNotEquals": REGION_CONDITION["StringEquals"]},
            ),
        )
    ]
    assert evaluate(documents, INVOKE) is Decision.ALLOWED
    outside = Request(INVOKE.action, INVOKE.resource, {"aws:RequestedRegion": "us-east-1"})
    assert evaluate(documents, outside) is Decision.EXPLICIT_DENY


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        (
            allow(Action="*", Resource="*", Condition={"Bool": {"aws:SecureTransport": "true"}}),
            "Bool",
        ),
        (
            allow(
                Action="*", Resource="*", Condition={"StringEquals": {"lambda:FunctionArn": "x"}}
            ),
            "lambda:FunctionArn",
        ),
        (
            allow(
                Action="*",
                Resource="*",
                Condition={"ForAnyValue:StringEquals": {"aws:RequestedRegion": "x"}},
            ),
            "ForAnyValue:StringEquals",
        ),
        (
            allow(
                Action="*",
                Resource="*",
                Condition={"StringEqualsIfExists": {"aws:RequestedRegion": "x"}},
            ),
            "StringEqualsIfExists",
        ),
        (
            allow(Action="*", Resource="arn:aws:lambda:*:${aws:PrincipalAccount}:*"),
            "policy variables",
        ),
        (
            allow(
                Action="*",
                Resource="*",
                Condition={"StringEquals": {"aws:PrincipalAccount": "${aws:ResourceAccount}"}},
            ),
            "policy variables",
        ),
        (
            deny(
                Action="*",
                Resource="*",
                Condition={"StringNotLike": {"aws:PrincipalArn": "arn:aws:iam::${aws:Foo}:*"}},
            ),
            "policy variables",
        ),
        (
            allow(Action="*", Resource="*", Condition={"StringEquals": ["aws:RequestedRegion"]}),
            "expected keys and values",
        ),
        (allow(Principal="*", Action="*", Resource="*"), "Principal"),
        (allow(Action="*"), "Resource, NotResource"),
        ({"Effect": "Maybe", "Action": "*", "Resource": "*"}, "Maybe"),
    ],
)
def test_what_it_cannot_evaluate_is_refused_by_name(statement: dict[str, Any], named: str) -> None:
    with pytest.raises(UnsupportedPolicyError, match=named.replace("$", r"\$").replace("{", r"\{")):
        evaluate([policy(statement)], INVOKE)


def test_an_unsupported_condition_on_a_statement_for_other_actions_changes_nothing() -> None:
    documents = [
        policy(
            allow(Action="lambda:InvokeFunction", Resource=FUNCTION),
            allow(
                Action="ec2:CreateTags",
                Resource="*",
                Condition={"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            ),
        )
    ]
    assert evaluate(documents, INVOKE) is Decision.ALLOWED
