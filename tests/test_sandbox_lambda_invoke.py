"""sandbox/lambda_invoke.py: a boto3 `lambda:Invoke` runs the registered handler in-process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any
from unittest import mock

import boto3
import botocore.loaders
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.iam.exceptions import NotFoundException
from moto.iam.models import iam_backends

from sandbox.lambda_invoke import LambdaFunction, LambdaRouter

REGION, INFRA, WORKLOAD = "eu-west-1", "111111111111", "222222222222"


def observed_environment(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A handler reporting what it sees, including who its default boto3 session is."""
    identity = boto3.Session().client("sts").get_caller_identity()
    return {
        "event": event,
        "account": identity["Account"],
        "arn": identity["Arn"],
        "region": os.environ["AWS_REGION"],
        "prefix": os.environ["IMAGE_PREFIX"],
        "function": context.function_name,
        "invokedArn": context.invoked_function_arn,
    }


def failing(event: dict[str, Any], context: Any) -> None:
    raise RuntimeError("AMI ami-123 is not owned by the infra account")


WORKLOAD_FUNCTION = LambdaFunction(
    account=WORKLOAD,
    region=REGION,
    name="refresh",
    handler=observed_environment,
    role_arn=f"arn:aws:iam::{WORKLOAD}:role/refresh-role",
    environment={"IMAGE_PREFIX": "golden-ecs-al2023"},
)


@pytest.fixture(autouse=True)
def shared_service_models() -> Iterator[None]:
    """One botocore loader for the module's many sessions: parsing models is the slow part."""
    with mock.patch("botocore.session.create_loader", cache(botocore.loaders.create_loader)):
        yield


@pytest.fixture
def router() -> Iterator[LambdaRouter]:
    with mock_aws():
        router = LambdaRouter()
        router.register(WORKLOAD_FUNCTION)
        router.register(
            LambdaFunction(
                account=WORKLOAD,
                region=REGION,
                name="broken",
                handler=failing,
                role_arn=f"arn:aws:iam::{WORKLOAD}:role/refresh-role",
            )
        )
        with router.installed():
            yield router


INVOKE_ROLE = "InvokeInstanceRefreshHandlerRole"
INVOKE_ANY_FUNCTION = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}],
}


def put_role(account: str, name: str, *policies: dict[str, Any]) -> None:
    """Role `name` in `account`'s IAM, with `policies` inline (replacing any it had)."""
    iam = iam_backends[account]["aws"]
    try:
        role = iam.get_role(name)
    except NotFoundException:
        role = iam.create_role(name, "{}", "/", None, "", [], "3600")
    role.policies.clear()
    for index, policy in enumerate(policies):
        iam.put_role_policy(name, f"policy-{index}", json.dumps(policy))


def client_in(account: str, role: str = INVOKE_ROLE) -> Any:
    """A Lambda client holding credentials of `account`, as the fan-out gets from AssumeRole.

    Without a role of that name yet, one allowed to invoke any function is created.
    """
    try:
        iam_backends[account]["aws"].get_role(role)
    except NotFoundException:
        put_role(account, role, INVOKE_ANY_FUNCTION)
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName="fanout"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    ).client("lambda")


def test_request_response_runs_the_handler_as_its_function(router: LambdaRouter) -> None:
    outer_key = os.environ.get("AWS_ACCESS_KEY_ID")

    response = client_in(WORKLOAD).invoke(
        FunctionName=WORKLOAD_FUNCTION.arn, Payload=json.dumps({"action": "converge"})
    )

    result = json.loads(response["Payload"].read())
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert result == {
        "event": {"action": "converge"},
        "account": WORKLOAD,
        "arn": f"arn:aws:sts::{WORKLOAD}:assumed-role/refresh-role/refresh",
        "region": REGION,
        "prefix": "golden-ecs-al2023",
        "function": "refresh",
        "invokedArn": WORKLOAD_FUNCTION.arn,
    }
    assert os.environ.get("AWS_ACCESS_KEY_ID") == outer_key
    assert "IMAGE_PREFIX" not in os.environ


def test_async_invocations_are_queued_until_drained(router: LambdaRouter) -> None:
    lambda_client = client_in(WORKLOAD)
    for n in range(2):
        response = lambda_client.invoke(
            FunctionName=WORKLOAD_FUNCTION.arn, InvocationType="Event", Payload=json.dumps({"n": n})
        )
        assert response["StatusCode"] == 202
    assert router.invocations == []
    assert router.pending == 2

    ran = router.drain()

    assert [invocation.result["event"] for invocation in ran] == [{"n": 0}, {"n": 1}]
    assert [invocation.result["account"] for invocation in ran] == [WORKLOAD, WORKLOAD]
    assert len({invocation.request_id for invocation in ran}) == 2
    assert router.pending == 0


def test_bare_name_resolves_in_the_callers_account(router: LambdaRouter) -> None:
    response = client_in(WORKLOAD).invoke(FunctionName="refresh", Payload=b"{}")
    assert json.loads(response["Payload"].read())["invokedArn"] == WORKLOAD_FUNCTION.arn
    with pytest.raises(ClientError) as error:
        client_in(INFRA).invoke(FunctionName="refresh", Payload=b"{}")
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_unknown_function_is_resource_not_found(router: LambdaRouter) -> None:
    lambda_client = client_in("333333333333")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException, match="Function not"):
        lambda_client.invoke(
            FunctionName="arn:aws:lambda:eu-west-1:333333333333:function:refresh",
            InvocationType="Event",
            Payload=b"{}",
        )
    assert router.pending == 0


def test_other_regions_function_is_not_this_one(router: LambdaRouter) -> None:
    lambda_client = client_in(WORKLOAD)
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName=WORKLOAD_FUNCTION.arn.replace(REGION, "us-east-1"))


def test_caller_from_another_account_is_denied(router: LambdaRouter) -> None:
    with pytest.raises(ClientError) as error:
        client_in(INFRA).invoke(FunctionName=WORKLOAD_FUNCTION.arn, InvocationType="Event")
    assert error.value.response["Error"]["Code"] == "AccessDeniedException"
    assert router.pending == 0


def test_handler_exception_is_a_function_error_not_a_client_error(router: LambdaRouter) -> None:
    response = client_in(WORKLOAD).invoke(FunctionName="broken")
    assert response["FunctionError"] == "Unhandled"
    assert (
        "not owned by the infra account" in json.loads(response["Payload"].read())["errorMessage"]
    )
    [invocation] = router.invocations
    assert invocation.error == "RuntimeError: AMI ami-123 is not owned by the infra account"


@pytest.mark.parametrize(
    ("request_kwargs", "code"),
    [
        ({"InvocationType": "Later"}, "ValidationException"),
        ({"Payload": b"not json"}, "InvalidRequestContentException"),
    ],
)
def test_bad_requests_are_rejected_before_anything_runs(
    router: LambdaRouter, request_kwargs: dict[str, Any], code: str
) -> None:
    with pytest.raises(ClientError) as error:
        client_in(WORKLOAD).invoke(FunctionName=WORKLOAD_FUNCTION.arn, **request_kwargs)
    assert error.value.response["Error"]["Code"] == code
    assert router.invocations == []


def test_hooks_are_removed_when_the_router_is_uninstalled() -> None:
    with mock_aws():
        router = LambdaRouter()
        router.register(WORKLOAD_FUNCTION)
        with router.installed():
            pass
        with pytest.raises(ClientError) as error:
            client_in(WORKLOAD).invoke(FunctionName=WORKLOAD_FUNCTION.arn)
        # moto itself answers now: it has no such function.
        assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert router.invocations == []


def test_drain_order_does_not_depend_on_which_thread_queued_first(router: LambdaRouter) -> None:
    lambda_client = client_in(WORKLOAD)

    def invoke(n: int) -> None:
        lambda_client.invoke(
            FunctionName=WORKLOAD_FUNCTION.arn, InvocationType="Event", Payload=json.dumps({"n": n})
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(invoke, [3, 1, 2, 0]))

    assert [invocation.event["n"] for invocation in router.drain()] == [0, 1, 2, 3]


def test_invocations_queued_by_a_handler_run_in_the_next_round() -> None:
    with mock_aws():
        router = LambdaRouter()

        def fan_out(event: dict[str, Any], context: Any) -> str:
            boto3.Session().client("lambda").invoke(
                FunctionName=WORKLOAD_FUNCTION.arn, InvocationType="Event", Payload=b"{}"
            )
            return "queued"

        router.register(WORKLOAD_FUNCTION)
        put_role(WORKLOAD, "fanout-role", INVOKE_ANY_FUNCTION)  # the execution role's policy
        router.register(
            LambdaFunction(
                account=WORKLOAD,
                region=REGION,
                name="fan-out",
                handler=fan_out,
                role_arn=f"arn:aws:iam::{WORKLOAD}:role/fanout-role",
            )
        )
        with router.installed():
            client_in(WORKLOAD).invoke(FunctionName="fan-out", InvocationType="Event")
            ran = router.drain()

    assert [invocation.function_arn.rsplit(":", 1)[1] for invocation in ran] == [
        "fan-out",
        "refresh",
    ]
    assert ran[1].result["account"] == WORKLOAD


# --- identity policies: evaluated against the function ARN before the function is looked up -----


def only_functions(*arns: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": list(arns)}
        ],
    }


def test_a_function_the_policy_does_not_name_is_denied_even_when_it_does_not_exist(
    router: LambdaRouter,
) -> None:
    put_role(WORKLOAD, INVOKE_ROLE, only_functions(WORKLOAD_FUNCTION.arn))
    missing = WORKLOAD_FUNCTION.arn.replace(REGION, "us-east-1")

    with pytest.raises(ClientError) as error:
        client_in(WORKLOAD).invoke(FunctionName=missing, InvocationType="Event", Payload=b"{}")

    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error.value.response["Error"] == {
        "Code": "AccessDeniedException",
        "Message": (
            f"User: arn:aws:sts::{WORKLOAD}:assumed-role/{INVOKE_ROLE}/fanout is not authorized "
            f"to perform: lambda:InvokeFunction on resource: {missing} because no identity-based "
            "policy allows the lambda:InvokeFunction action"
        ),
    }
    assert router.pending == 0


def test_a_policy_naming_the_function_in_every_region_lets_a_missing_one_be_not_found(
    router: LambdaRouter,
) -> None:
    put_role(WORKLOAD, INVOKE_ROLE, only_functions(f"arn:aws:lambda:*:{WORKLOAD}:function:refresh"))
    lambda_client = client_in(WORKLOAD)

    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName=WORKLOAD_FUNCTION.arn.replace(REGION, "us-east-1"))
    assert lambda_client.invoke(FunctionName="refresh")["StatusCode"] == 200
    with pytest.raises(ClientError, match="no identity-based policy allows"):
        lambda_client.invoke(FunctionName="broken")


QUALIFIED_INVOKES = [
    pytest.param({"FunctionName": "refresh", "Qualifier": "live"}, id="Qualifier"),
    pytest.param({"FunctionName": "refresh:live"}, id="name:alias"),
    pytest.param({"FunctionName": f"{WORKLOAD}:function:refresh:live"}, id="partial ARN:alias"),
    pytest.param({"FunctionName": f"{WORKLOAD_FUNCTION.arn}:live"}, id="ARN:alias"),
    pytest.param(
        {"FunctionName": f"{WORKLOAD_FUNCTION.arn}:live", "Qualifier": "live"}, id="both agree"
    ),
]


@pytest.mark.parametrize("request_params", QUALIFIED_INVOKES)
def test_a_policy_naming_the_unqualified_arn_does_not_allow_an_alias_or_version(
    router: LambdaRouter, request_params: dict[str, str]
) -> None:
    """Lambda authorises a qualified invoke against the qualified ARN, which the unqualified
    one in a policy does not match (Lambda: "Fine-tuning the Resources ... of policies")."""
    put_role(WORKLOAD, INVOKE_ROLE, only_functions(WORKLOAD_FUNCTION.arn))

    with pytest.raises(ClientError) as error:
        client_in(WORKLOAD).invoke(**request_params, Payload=b"{}")

    assert error.value.response["Error"]["Code"] == "AccessDeniedException"
    assert error.value.response["Error"]["Message"].endswith(
        f"on resource: {WORKLOAD_FUNCTION.arn}:live because no identity-based policy allows the "
        "lambda:InvokeFunction action"
    )
    assert router.invocations == []


@pytest.mark.parametrize("request_params", QUALIFIED_INVOKES)
def test_a_policy_naming_every_qualifier_allows_an_alias(
    router: LambdaRouter, request_params: dict[str, str]
) -> None:
    put_role(WORKLOAD, INVOKE_ROLE, only_functions(f"{WORKLOAD_FUNCTION.arn}:*"))
    lambda_client = client_in(WORKLOAD)

    assert lambda_client.invoke(**request_params, Payload=b"{}")["StatusCode"] == 200
    # `name:*` covers the qualifiers only, not the unqualified function.
    with pytest.raises(ClientError, match="no identity-based policy allows"):
        lambda_client.invoke(FunctionName="refresh", Payload=b"{}")


def test_a_qualifier_contradicting_the_function_names_is_invalid(router: LambdaRouter) -> None:
    lambda_client = client_in(WORKLOAD)
    with pytest.raises(ClientError) as error:
        lambda_client.invoke(FunctionName="refresh:live", Qualifier="1", Payload=b"{}")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error.value.response["Error"] == {
        "Code": "InvalidParameterValueException",
        "Message": "The derived qualifier from the function name does not match the specified "
        "qualifier.",
    }
    assert router.invocations == []


def test_an_explicit_deny_wins_over_an_allow(router: LambdaRouter) -> None:
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": "lambda:Invoke*",
                "Resource": f"arn:aws:lambda:{REGION}:{WORKLOAD}:function:ref*",
            }
        ],
    }
    put_role(WORKLOAD, INVOKE_ROLE, INVOKE_ANY_FUNCTION, deny)

    with pytest.raises(ClientError) as error:
        client_in(WORKLOAD).invoke(FunctionName="refresh")

    assert error.value.response["Error"]["Message"].endswith(
        "with an explicit deny in an identity-based policy"
    )
    assert router.invocations == []


def test_a_role_without_policies_may_invoke_nothing(router: LambdaRouter) -> None:
    put_role(WORKLOAD, INVOKE_ROLE)
    with pytest.raises(ClientError) as error:
        client_in(WORKLOAD).invoke(FunctionName="refresh")
    assert error.value.response["Error"]["Code"] == "AccessDeniedException"


def test_the_accounts_own_root_credentials_are_not_restricted(router: LambdaRouter) -> None:
    # moto's default credentials stand for the root user of the default account.
    with mock.patch.dict(os.environ, {"MOTO_ACCOUNT_ID": WORKLOAD}):
        response = boto3.client("lambda", region_name=REGION).invoke(FunctionName="refresh")
    assert response["StatusCode"] == 200


def test_another_accounts_caller_allowed_by_its_own_policy_still_needs_a_resource_policy(
    router: LambdaRouter,
) -> None:
    put_role(INFRA, INVOKE_ROLE, only_functions(WORKLOAD_FUNCTION.arn))
    with pytest.raises(ClientError) as error:
        client_in(INFRA).invoke(FunctionName=WORKLOAD_FUNCTION.arn)
    assert error.value.response["Error"]["Message"].endswith(
        "because no resource-based policy allows the lambda:InvokeFunction action"
    )
