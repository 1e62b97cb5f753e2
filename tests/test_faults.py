"""Faults not already proven elsewhere.

Already covered, and not repeated here:
- throttled Invoke retried with backoff then reported `failed`, AccessDenied on AssumeRole ->
  `not-enrolled`, other invoke errors `failed`, a hanging account cut off at the deadline while
  the others complete, a re-run sending identical payloads: tests/test_fanout_handler.py
  (test_enrolled_not_enrolled_and_failing_accounts,
  test_invoke_error_other_than_not_found_is_failed,
  test_hanging_account_is_cut_off_at_the_deadline_while_the_others_complete,
  test_rerun_after_a_partial_failure_sends_identical_payloads);
- throttled S3 listing / StartImagePipelineExecution: tests/test_build_trigger.py;
- a refresh that lost the race to another one, AccessDenied on one group: test_refresh_handler.py.

Here: the refresh handler under throttling, a fan-out that crashes half-way and is delivered
again end to end (fan-out -> Lambda routing -> refresh handler in two workload accounts), and
instance refreshes that end badly for reasons other than the rollback alarm.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import botocore.endpoint
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.ec2.models import ec2_backends

from components.policies import invoke_role_policy
from handlers.fanout import app as fanout_app
from handlers.refresh import app as refresh_app
from handlers.refresh.aws import CLIENT_CONFIG
from handlers.refresh.rules import QUARANTINE_TAG
from sandbox.instance_refresh import InstanceRefreshEmulator
from sandbox.lambda_invoke import LambdaFunction, LambdaRouter
from tests import refresh_fixtures as fx

FUNCTION = "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
IMAGE_ARN = f"arn:aws:imagebuilder:{fx.REGION}:{fx.INFRA_ACCOUNT}:image/golden/1.0.0/3"
ACCOUNT_A, ACCOUNT_B = "222233334444", "555566667777"
PREFERENCES = {"MinHealthyPercentage": 50, "InstanceWarmup": 60, "BakeTime": 0}


@pytest.fixture
def backoff_sleeps(monkeypatch) -> list[float]:
    """botocore's retry backoff, recorded instead of slept."""
    sleeps: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


@dataclass
class Workload:
    """One workload account: a group on the current AMI and the refresh handler's environment."""

    account_id: str
    session: boto3.Session
    template_id: str
    environment: dict[str, str]

    def versions(self) -> int:
        response = self.session.client("ec2").describe_launch_template_versions(
            LaunchTemplateId=self.template_id
        )
        return len(response["LaunchTemplateVersions"])


def workload(account_id: str, current_ami: str, groups: tuple[str, ...] = ("ecs-a",)) -> Workload:
    session = _session_in(account_id)
    template_id = fx.launch_template(session, [current_ami])
    targets = []
    for name in groups:
        fx.auto_scaling_group(session, name, template_id, "1", capacity=2)
        targets.append(
            {"autoScalingGroupName": name, "launchTemplateId": template_id, "clusterName": name}
        )
    environment = {
        "INFRA_ACCOUNT_ID": fx.INFRA_ACCOUNT,
        "IMAGE_PREFIX": fx.PREFIX,
        "TARGETS_JSON": json.dumps(targets),
        "REFRESH_PREFERENCES_JSON": json.dumps(PREFERENCES),
    }
    return Workload(account_id, session, template_id, environment)


def _session_in(account_id: str) -> boto3.Session:
    if account_id == fx.WORKLOAD_ACCOUNT:
        return boto3.Session(region_name=fx.REGION)
    credentials = boto3.client("sts", region_name=fx.REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/setup", RoleSessionName="setup"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=fx.REGION,
    )


def share_image(ami_id: str, from_account: str, to_account: str) -> None:
    """The infra account's AMI as another workload account sees it (moto cannot share: §9)."""
    ec2_backends[to_account][fx.REGION].amis[ami_id] = ec2_backends[from_account][fx.REGION].amis[
        ami_id
    ]


def rollout(ami_id: str) -> dict:
    return {"schemaVersion": 1, "imageArn": IMAGE_ARN, "amis": {fx.REGION: ami_id}}


@pytest.fixture
def aws(monkeypatch) -> Iterator[InstanceRefreshEmulator]:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    with mock_aws(), InstanceRefreshEmulator() as emulator:
        yield emulator


# --- throttling -----------------------------------------------------------------------------------


def test_throttled_group_is_retried_with_backoff_then_failed_alone(aws, backoff_sleeps):
    current, new = fx.register_image(1), fx.register_image(3)
    account = workload(fx.WORKLOAD_ACCOUNT, current, groups=("ecs-throttled", "ecs-fine"))
    attempts: list[str] = []

    def throttle(request, **_):
        if "ecs-throttled" not in str(request.body):
            return None
        attempts.append(request.url)
        body = (
            b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
            b"<Message>Rate exceeded</Message></Error></ErrorResponse>"
        )
        return AWSResponse(request.url, 400, {}, types.SimpleNamespace(stream=lambda **_: [body]))

    session = account.session
    session.events.register_first("before-send.auto-scaling.DescribeAutoScalingGroups", throttle)

    results = refresh_app.handle(rollout(new), account.environment, session)["results"]

    throttled, fine = results
    # `max_attempts` counts retries; botocore rewrites it in place to `total_max_attempts`.
    retries = CLIENT_CONFIG.retries.get("total_max_attempts", 0) - 1
    retries = CLIENT_CONFIG.retries.get("max_attempts", retries)
    assert retries == 5 and len(attempts) == 1 + retries
    assert len(backoff_sleeps) == retries and all(delay > 0 for delay in backoff_sleeps)
    assert throttled["outcome"] == "failed" and "Throttling" in throttled["reason"]
    assert fine["outcome"] == "started"
    # Nothing half-done for the throttled group: it failed before its first write.
    assert [c.params["AutoScalingGroupName"] for c in aws.calls_to("StartInstanceRefresh")] == [
        "ecs-fine"
    ]
    unthrottled = boto3.Session(region_name=fx.REGION)
    assert fx.group_template_spec(unthrottled, "ecs-throttled")["Version"] == "1"
    assert account.versions() == 2  # the one ecs-fine's refresh uses


# --- a fan-out that crashes half-way, then is delivered again -------------------------------------


def sns_event(ami_id: str) -> dict:
    message = {
        "arn": IMAGE_ARN,
        "name": "golden",
        "version": "1.0.0",
        "buildVersion": 3,
        "state": {"status": "AVAILABLE"},
        "outputResources": {"amis": [{"region": fx.REGION, "image": ami_id}]},
    }
    record = {
        "EventSource": "aws:sns",
        "Sns": {"MessageId": "sns-1", "Message": json.dumps(message)},
    }
    return {"Records": [record]}


def test_fanout_crash_then_redelivery_is_idempotent_in_every_workload_account(aws, monkeypatch):
    for name, value in {
        "AWS_DEFAULT_REGION": fx.REGION,
        "INVOKE_ROLE_NAME": "InvokeInstanceRefreshHandlerRole",
        "TARGET_FUNCTION_NAME": FUNCTION,
        "ACCOUNT_SOURCE": "static",
        "STATIC_ACCOUNT_IDS": f"{ACCOUNT_A},{ACCOUNT_B}",
    }.items():
        monkeypatch.setenv(name, value)
    current = fx.register_image(1, account_id=ACCOUNT_A)
    new = fx.register_image(3, account_id=ACCOUNT_A)
    for ami_id in (current, new):
        share_image(ami_id, ACCOUNT_A, ACCOUNT_B)
    accounts = {a: workload(a, current) for a in (ACCOUNT_A, ACCOUNT_B)}
    router = LambdaRouter()
    for account in accounts.values():
        # The invoke role with the policy the workload stack gives it: the router evaluates it.
        iam = account.session.client("iam")
        iam.create_role(RoleName="InvokeInstanceRefreshHandlerRole", AssumeRolePolicyDocument="{}")
        iam.put_role_policy(
            RoleName="InvokeInstanceRefreshHandlerRole",
            PolicyName="invoke",
            PolicyDocument=json.dumps(invoke_role_policy(account.account_id, FUNCTION)),
        )
        router.register(
            LambdaFunction(
                account.account_id,
                fx.REGION,
                FUNCTION,
                refresh_app.lambda_handler,
                role_arn=f"arn:aws:iam::{account.account_id}:role/refresh",
                environment=account.environment,
            )
        )
    context = types.SimpleNamespace(get_remaining_time_in_millis=lambda: 60_000)

    def deliver(crash_in: str | None = None) -> dict[str, str]:
        """One SNS delivery to the fan-out; returns each account's refresh outcome."""
        session = boto3.Session(region_name=fx.REGION)

        def crash(context, **_):
            if crash_in and f":{crash_in}:" in context["sandbox_invoke_params"]["FunctionName"]:
                raise RuntimeError("execution environment lost")

        # First: the router, installed for every session, would answer before a later hook.
        session.events.register_first("before-call.lambda.Invoke", crash)
        try:
            fanout_app.lambda_handler(sns_event(new), context, session)
        except fanout_app.FanoutFailedError:
            assert crash_in, "only the crashed delivery may fail"
        invocations = router.drain()
        assert all(i.error is None for i in invocations), invocations
        return {
            i.function_arn.split(":")[4]: i.result["results"][0]["outcome"] for i in invocations
        }

    with router.installed():
        assert deliver(crash_in=ACCOUNT_B) == {ACCOUNT_A: "started"}
        # SNS delivers the same message again while A's refresh is still running.
        assert deliver() == {ACCOUNT_A: "deferred", ACCOUNT_B: "started"}
        aws.run_until_settled()
        assert deliver() == {ACCOUNT_A: "current", ACCOUNT_B: "current"}

    for account_id, account in accounts.items():
        assert account.versions() == 2, account_id  # one new version, reused by every delivery
        assert len(aws.calls_to("StartInstanceRefresh", account_id)) == 1
        assert fx.instance_images(account.session, "ecs-a") == [new, new]


# --- refreshes that end badly for reasons other than the alarm ------------------------------------


def test_refresh_failed_and_rolled_back_without_alarm_quarantines_the_ami(aws):
    """With AutoRollback, any failure (here instances failing health checks, no alarm involved)
    rolls back, and the rolled-back AMI is quarantined: rules.rolled_back_refreshes."""
    current, new = fx.register_image(1), fx.register_image(3)
    account = workload(fx.WORKLOAD_ACCOUNT, current)
    run = lambda: refresh_app.handle(rollout(new), account.environment, account.session)  # noqa: E731
    assert run()["results"][0]["outcome"] == "started"
    aws.advance(90)  # the first batch is replaced
    aws.fail(fx.WORKLOAD_ACCOUNT, fx.REGION, "ecs-a", "Instances failed ELB health checks")
    aws.run_until_settled()
    [refresh] = aws.refreshes(fx.WORKLOAD_ACCOUNT, fx.REGION, "ecs-a")
    assert refresh["Status"] == "RollbackSuccessful"

    [result] = run()["results"]

    assert result["outcome"] == "quarantined" and new in result["reason"]
    assert fx.group_tags(account.session, "ecs-a")[QUARANTINE_TAG] == new
    assert len(aws.calls_to("StartInstanceRefresh")) == 1
    assert account.versions() == 2
    assert fx.instance_images(account.session, "ecs-a") == [current, current]


def test_cancelled_refresh_is_held_not_retried_until_released(aws):
    """A refresh cancelled by an operator is not a rollback: the AMI is not quarantined, but it is
    held on the group (DESIGN §5.10) until release, which reuses the version the first created."""
    current, new = fx.register_image(1), fx.register_image(3)
    account = workload(fx.WORKLOAD_ACCOUNT, current)
    run = lambda event: refresh_app.handle(event, account.environment, account.session)  # noqa: E731
    assert run(rollout(new))["results"][0]["launchTemplateVersion"] == 2
    account.session.client("autoscaling").cancel_instance_refresh(AutoScalingGroupName="ecs-a")
    aws.run_until_settled()

    [result] = run(rollout(new))["results"]

    assert result["outcome"] == "held", result
    assert fx.group_tags(account.session, "ecs-a")[QUARANTINE_TAG] == ""
    assert len(aws.calls_to("StartInstanceRefresh")) == 1

    release = {"action": "release", "autoScalingGroupName": "ecs-a", "amiId": new}
    # As the release function runs it (handlers/release): the refresh function refuses it.
    [result] = refresh_app.handle(release, account.environment, account.session, release=True)[
        "results"
    ]

    assert result["outcome"] == "started" and result["launchTemplateVersion"] == 2
    assert account.versions() == 2
