"""Release has a function of its own that the fan-out's invoke role cannot invoke (issue 11.13).

The invoke role is assumed from the infra account's fan-out role: were `release` accepted by the
refresh function it may invoke, a compromised fan-out role could lift every quarantine in the
Organization. Here, through the sandbox's Lambda router (which evaluates the caller's identity
policy as IAM does): the invoke role, with the policy the workload stack gives it, may invoke the
refresh function, which refuses `release`, and is denied the release function; an operator whose
own policy allows the release function releases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from components.policies import invoke_role_policy
from components.refresh_rollback import release_function_name
from handlers.refresh.parse import InvalidInputError
from handlers.release import app as release_app
from sandbox.lambda_invoke import LambdaFunction, LambdaRouter

REGION, ACCOUNT = "eu-west-1", "123456789012"  # moto's default account: the workload account
REFRESH = "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
RELEASE = release_function_name("golden-ami")
ENVIRONMENT = {
    "INFRA_ACCOUNT_ID": "111122223333",
    "IMAGE_PREFIX": "golden-ecs-al2023",
    "TARGETS_JSON": json.dumps(
        [{"autoScalingGroupName": "ecs-a", "launchTemplateId": "lt-0a", "clusterName": "main"}]
    ),
    "REFRESH_PREFERENCES_JSON": json.dumps({"MinHealthyPercentage": 90}),
}
WRITE_LOGS = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}],
}
RELEASE_EVENT = {"action": "release", "autoScalingGroupName": "ecs-a", "amiId": "ami-0abcdef12"}


def role_session(name: str, policy: dict[str, Any]) -> boto3.Session:
    iam = boto3.client("iam", region_name=REGION)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    iam.put_role_policy(RoleName=name, PolicyName="policy", PolicyDocument=json.dumps(policy))
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}", RoleSessionName=name
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )


@pytest.fixture
def router() -> Iterator[LambdaRouter]:
    with mock_aws():
        router = LambdaRouter()
        for name, handler_package in ((REFRESH, "refresh"), (RELEASE, "release")):
            role = f"{handler_package}-role"
            role_session(role, WRITE_LOGS)  # the execution role (its grants are not under test)
            module = __import__(f"handlers.{handler_package}.app", fromlist=["lambda_handler"])
            router.register(
                LambdaFunction(
                    ACCOUNT,
                    REGION,
                    name,
                    module.lambda_handler,
                    role_arn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
                    environment=ENVIRONMENT,
                )
            )
        with router.installed():
            yield router


def test_the_invoke_role_is_denied_the_release_function(router: LambdaRouter) -> None:
    fanout = role_session("InvokeInstanceRefreshHandlerRole", invoke_role_policy(ACCOUNT, REFRESH))
    lambda_client = fanout.client("lambda")

    with pytest.raises(ClientError) as denied:
        lambda_client.invoke(FunctionName=RELEASE, Payload=json.dumps(RELEASE_EVENT))

    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"
    assert router.invocations == []


def test_the_refresh_function_refuses_release_before_any_change(router: LambdaRouter) -> None:
    fanout = role_session("InvokeInstanceRefreshHandlerRole", invoke_role_policy(ACCOUNT, REFRESH))

    response = fanout.client("lambda").invoke(
        FunctionName=REFRESH, Payload=json.dumps(RELEASE_EVENT)
    )

    assert response["FunctionError"] == "Unhandled"
    [invocation] = router.invocations
    assert invocation.error == (
        "handlers.refresh.parse.InvalidInputError: release is not accepted by the refresh "
        "function: invoke the release "
        "function (workload stack output releaseFunctionArns) with your own credentials"
    )


def test_an_operator_allowed_the_release_function_releases(router: LambdaRouter) -> None:
    operator = role_session(
        "PlatformOperator",
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "lambda:InvokeFunction",
                    "Resource": f"arn:aws:lambda:*:{ACCOUNT}:function:{RELEASE}",
                }
            ],
        },
    )

    response = operator.client("lambda").invoke(
        FunctionName=RELEASE, Payload=json.dumps(RELEASE_EVENT)
    )

    # The release ran (the group does not exist in this empty account: the handler says so).
    assert "FunctionError" not in response
    [result] = json.loads(response["Payload"].read())["results"]
    assert (result["autoScalingGroupName"], result["outcome"]) == ("ecs-a", "failed")
    assert "does not exist" in result["reason"]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, "the release function only takes"),
        ({"action": "converge"}, "the release function only takes"),
        ({"action": "release", "autoScalingGroupName": "ecs-a"}, "amiId"),
        (
            {"action": "release", "autoScalingGroupName": "ecs-z", "amiId": "ami-0abcdef12"},
            "release names 'ecs-z', which is not a target of this function",
        ),
    ],
)
def test_the_release_function_takes_a_release_and_nothing_else(
    event: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    with mock_aws(), pytest.raises(InvalidInputError, match=message):
        release_app.lambda_handler(event, None)
