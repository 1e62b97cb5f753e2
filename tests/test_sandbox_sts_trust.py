"""sandbox/sts_trust.py: AssumeRole needs an existing role whose trust policy allows the caller.

The Organization is built in moto while its STS still grants anything (which is how the caller
outside the Organization gets credentials); the calls under test are made from sessions created
once the emulator is installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.iam.models import iam_backends

from components.policies import invoke_role_trust_policy, lambda_trust_policy
from sandbox.sts_trust import (
    Caller,
    StsTrustEmulator,
    UnsupportedPolicyError,
    parse_trust_policy,
    trust_allows,
)

REGION = "eu-west-1"
OUTSIDER = "999999999999"  # an account in no Organization
FANOUT_ROLE, INVOKE_ROLE = "GoldenAmiFanoutRole", "InvokeInstanceRefreshHandlerRole"
LAMBDA = "lambda.amazonaws.com"


@dataclass
class Organization:
    trust: StsTrustEmulator
    id: str
    infra: str  # the management account, holding the fan-out role
    workload: str  # a member account
    outsider_credentials: dict[str, str]  # a session of OUTSIDER's fan-out role

    def role_arn(self, account: str, name: str) -> str:
        return f"arn:aws:iam::{account}:role/{name}"

    def create_role(self, account: str, name: str, trust_policy: dict[str, Any]) -> str:
        # Straight into moto's IAM backend: how the role got there is not under test.
        iam_backends[account]["global"].create_role(
            role_name=name,
            assume_role_policy_document=json.dumps(trust_policy),
            path="/",
            permissions_boundary=None,
            description="",
            tags=[],
            max_session_duration="3600",
        )
        return self.role_arn(account, name)

    def fanout_session(self) -> boto3.Session:
        """The fan-out Lambda's credentials, as Lambda gets them for its execution role."""
        sts = self.trust.service_session(LAMBDA).client("sts", region_name=REGION)
        credentials = sts.assume_role(
            RoleArn=self.role_arn(self.infra, FANOUT_ROLE), RoleSessionName="fanout"
        )["Credentials"]
        return _session(credentials)


@pytest.fixture
def org() -> Iterator[Organization]:
    with mock_aws():
        organizations = boto3.client("organizations", region_name=REGION)
        organization = organizations.create_organization(FeatureSet="ALL")["Organization"]
        workload = organizations.create_account(AccountName="workload", Email="w@example.com")[
            "CreateAccountStatus"
        ]["AccountId"]
        outsider = boto3.client("sts", region_name=REGION).assume_role(
            RoleArn=f"arn:aws:iam::{OUTSIDER}:role/{FANOUT_ROLE}", RoleSessionName="fanout"
        )["Credentials"]  # granted: the emulator is not installed yet
        with StsTrustEmulator() as trust:
            org = Organization(
                trust, organization["Id"], organization["MasterAccountId"], workload, outsider
            )
            org.create_role(org.infra, FANOUT_ROLE, lambda_trust_policy())
            yield org


def _session(credentials: dict[str, str]) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )


def assume(session: boto3.Session, role_arn: str) -> dict[str, Any]:
    return session.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="fanout")


def access_denied(session: boto3.Session, role_arn: str) -> ClientError:
    with pytest.raises(ClientError) as denied:
        assume(session, role_arn)
    return denied.value


# --- through botocore and moto --------------------------------------------------------------


def test_fanout_role_assumes_the_invoke_role_of_an_organization_account(org: Organization) -> None:
    role = org.create_role(
        org.workload,
        INVOKE_ROLE,
        invoke_role_trust_policy(org.role_arn(org.infra, FANOUT_ROLE), org.id),
    )

    credentials = assume(org.fanout_session(), role)["Credentials"]

    identity = _session(credentials).client("sts").get_caller_identity()
    assert identity["Account"] == org.workload
    assert identity["Arn"] == f"arn:aws:sts::{org.workload}:assumed-role/{INVOKE_ROLE}/fanout"


def test_missing_role_is_access_denied_as_aws_words_it(org: Organization) -> None:
    role = org.role_arn(org.workload, INVOKE_ROLE)

    error = access_denied(org.fanout_session(), role)

    assert error.operation_name == "AssumeRole"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error.response["Error"]["Code"] == "AccessDenied"
    assert error.response["Error"]["Message"] == (
        f"User: arn:aws:sts::{org.infra}:assumed-role/{FANOUT_ROLE}/fanout"
        f" is not authorized to perform: sts:AssumeRole on resource: {role}"
    )


def test_trust_naming_another_role_is_denied(org: Organization) -> None:
    other = org.role_arn(org.infra, "SomeOtherRole")
    role = org.create_role(org.workload, INVOKE_ROLE, invoke_role_trust_policy(other, org.id))

    assert access_denied(org.fanout_session(), role).response["Error"]["Code"] == "AccessDenied"


def test_principal_org_id_of_another_organization_is_denied(org: Organization) -> None:
    fanout = org.role_arn(org.infra, FANOUT_ROLE)
    role = org.create_role(
        org.workload, INVOKE_ROLE, invoke_role_trust_policy(fanout, "o-0th3r0rg1")
    )

    assert access_denied(org.fanout_session(), role).response["Error"]["Code"] == "AccessDenied"


def test_caller_outside_the_organization_is_denied_by_the_condition_alone(
    org: Organization,
) -> None:
    outsider_fanout = org.role_arn(OUTSIDER, FANOUT_ROLE)
    guarded = org.create_role(
        org.workload, INVOKE_ROLE, invoke_role_trust_policy(outsider_fanout, org.id)
    )
    unguarded_policy = invoke_role_trust_policy(outsider_fanout, org.id)
    del unguarded_policy["Statement"][0]["Condition"]
    unguarded = org.create_role(org.workload, "Unguarded", unguarded_policy)
    outsider = _session(org.outsider_credentials)

    error = access_denied(outsider, guarded)

    assert error.response["Error"]["Message"].startswith(
        f"User: arn:aws:sts::{OUTSIDER}:assumed-role/{FANOUT_ROLE}/fanout is not authorized"
    )
    assert assume(outsider, unguarded)["AssumedRoleUser"]["Arn"].startswith(
        f"arn:aws:sts::{org.workload}:assumed-role/Unguarded/"
    )


def test_unsupported_condition_operator_fails_loudly(org: Organization) -> None:
    policy = invoke_role_trust_policy(org.role_arn(org.infra, FANOUT_ROLE), org.id)
    policy["Statement"][0]["Condition"] = {"StringLike": {"aws:PrincipalOrgID": "o-*"}}
    role = org.create_role(org.workload, INVOKE_ROLE, policy)

    with pytest.raises(UnsupportedPolicyError, match=r"condition operators \['StringLike'\]"):
        assume(org.fanout_session(), role)


def test_lambda_assumes_execution_roles_and_nothing_it_is_not_trusted_for(
    org: Organization,
) -> None:
    lambda_sts = org.trust.service_session(LAMBDA).client("sts", region_name=REGION)
    invoke_role = org.create_role(
        org.workload,
        INVOKE_ROLE,
        invoke_role_trust_policy(org.role_arn(org.infra, FANOUT_ROLE), org.id),
    )

    with pytest.raises(ClientError, match=f"User: {LAMBDA} is not authorized"):
        lambda_sts.assume_role(RoleArn=invoke_role, RoleSessionName="lambda")
    # And an account's caller cannot pass for Lambda.
    denied = access_denied(org.fanout_session(), org.role_arn(org.infra, FANOUT_ROLE))
    assert denied.response["Error"]["Code"] == "AccessDenied"


def test_organizations_access_role_trusts_the_management_account_only(org: Organization) -> None:
    access_role = org.role_arn(org.workload, "OrganizationAccountAccessRole")  # moto creates it

    assume(boto3.Session(region_name=REGION), access_role)  # moto's default: the management account

    assert (
        access_denied(_session(org.outsider_credentials), access_role).response["Error"]["Code"]
        == "AccessDenied"
    )


def test_uninstalled_emulator_leaves_moto_granting_anything() -> None:
    with mock_aws():
        with StsTrustEmulator():
            pass
        missing = "arn:aws:iam::222222222222:role/DoesNotExist"
        credentials = assume(boto3.Session(region_name=REGION), missing)["Credentials"]
        assert _session(credentials).client("sts").get_caller_identity()["Account"] == (
            "222222222222"
        )


# --- the trust-policy evaluation alone ------------------------------------------------------

WORKLOAD_ACCOUNT, INFRA_ACCOUNT, ORG_ID = "222222222222", "111111111111", "o-a1b2c3d4e5"
FANOUT_ROLE_ARN = f"arn:aws:iam::{INFRA_ACCOUNT}:role/{FANOUT_ROLE}"
FANOUT_CALLER = Caller(
    principal=f"arn:aws:sts::{INFRA_ACCOUNT}:assumed-role/{FANOUT_ROLE}/s",
    account_id=INFRA_ACCOUNT,
    role_arn=FANOUT_ROLE_ARN,
    organization_id=ORG_ID,
)
OTHER_CALLER_OF_INFRA = Caller(
    principal=f"arn:aws:sts::{INFRA_ACCOUNT}:assumed-role/Deployer/s",
    account_id=INFRA_ACCOUNT,
    role_arn=f"arn:aws:iam::{INFRA_ACCOUNT}:role/Deployer",
    organization_id=ORG_ID,
)
LAMBDA_CALLER = Caller(principal=LAMBDA, service=LAMBDA)


def statement(**elements: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **elements}]}


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        ({"AWS": FANOUT_ROLE_ARN}, {FANOUT_CALLER}),
        ({"AWS": [f"arn:aws:iam::{INFRA_ACCOUNT}:root"]}, {FANOUT_CALLER, OTHER_CALLER_OF_INFRA}),
        ({"AWS": INFRA_ACCOUNT}, {FANOUT_CALLER, OTHER_CALLER_OF_INFRA}),
        ({"AWS": f"arn:aws:iam::{WORKLOAD_ACCOUNT}:root"}, set()),
        ({"Service": [LAMBDA, "ec2.amazonaws.com"]}, {LAMBDA_CALLER}),
        ({"Service": "ec2.amazonaws.com"}, set()),
    ],
)
def test_principal_forms_match_exactly_their_callers(
    principal: dict[str, Any], allowed: set[Caller]
) -> None:
    policy = statement(Principal=principal, Action="sts:AssumeRole")
    callers = {FANOUT_CALLER, OTHER_CALLER_OF_INFRA, LAMBDA_CALLER}
    assert {caller for caller in callers if trust_allows(policy, caller)} == allowed


def test_principal_org_id_condition_needs_the_callers_organization() -> None:
    policy = invoke_role_trust_policy(FANOUT_ROLE_ARN, ORG_ID)
    assert trust_allows(policy, FANOUT_CALLER)
    for organization_id in ("o-0th3r0rg1", None):
        caller = replace(FANOUT_CALLER, organization_id=organization_id)
        assert not trust_allows(policy, caller)


def test_statements_for_other_actions_grant_no_assume_role() -> None:
    tag_only = statement(Principal={"AWS": FANOUT_ROLE_ARN}, Action=["sts:TagSession"])
    both = statement(
        Principal={"AWS": FANOUT_ROLE_ARN}, Action=["sts:TagSession", "sts:assumerole"]
    )
    assert not trust_allows(tag_only, FANOUT_CALLER)
    assert trust_allows(both, FANOUT_CALLER)  # action names are case-insensitive


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (statement(Principal={"AWS": FANOUT_ROLE_ARN}, Action="sts:*"), "wildcard actions"),
        (statement(Principal="*", Action="sts:AssumeRole"), "Principal '*'"),
        (statement(Principal={"AWS": "*"}, Action="sts:AssumeRole"), "AWS principal '*'"),
        (
            statement(
                Principal={"Federated": "cognito-identity.amazonaws.com"}, Action="sts:AssumeRole"
            ),
            "principal types ['Federated']",
        ),
        (
            statement(NotPrincipal={"AWS": FANOUT_ROLE_ARN}, Action="sts:AssumeRole"),
            "statement elements ['NotPrincipal']",
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": {"AWS": FANOUT_ROLE_ARN},
                        "Action": "sts:AssumeRole",
                    }
                ]
            },
            "Effect 'Deny'",
        ),
        (
            statement(
                Principal={"AWS": FANOUT_ROLE_ARN},
                Action="sts:AssumeRole",
                Condition={"StringEquals": {"sts:ExternalId": "x"}},
            ),
            "condition keys ['sts:ExternalId']",
        ),
    ],
)
def test_anything_outside_the_supported_subset_is_named(
    document: dict[str, Any], named: str
) -> None:
    with pytest.raises(UnsupportedPolicyError) as error:
        parse_trust_policy(document)
    assert named in str(error.value)
