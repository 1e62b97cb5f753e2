"""Bad input: one test per row of docs/bad-input.md (rendered from BAD_INPUTS by tests/doc_tables).

Each test asserts the outcome, that the message names the problem, and that nothing was left
half-done: launch-template versions, the groups' launch-template versions, refreshes, Image
Builder images and Lambda invocations are the same before and after, and no write call was made.
That is also what makes sharing one moto world per module safe: a passing row changes nothing.

Related rows elsewhere: tests/test_refresh_handler.py (untrusted images, malformed refresh events,
bad environment), tests/test_fanout_handler.py (malformed SNS input), tests/test_config.py
(BAD_VALUES: every bad configuration value, of which `config_rows` takes one per key).
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pulumi
import pytest
from moto import mock_aws

from components.config import CONFIG_KEYS
from handlers.build_trigger import logic as trigger_logic
from handlers.build_trigger.app import handle_batch
from handlers.build_trigger.aws import BuildTriggerAws
from handlers.fanout import app as fanout_app
from handlers.fanout.logic import MalformedMessageError
from handlers.refresh import app as refresh_app
from handlers.refresh.parse import InvalidInputError
from handlers.refresh.rules import HELD_TAG, QUARANTINE_TAG
from sandbox.image_builder import ImageBuilderEmulator
from sandbox.instance_refresh import InstanceRefreshEmulator
from sandbox.lambda_invoke import LambdaFunction, LambdaRouter
from tests import doc_tables
from tests import refresh_fixtures as fx
from tests.pulumi_harness import FIXTURES, run_stack
from tests.test_config import BAD_VALUES


@dataclass(frozen=True)
class BadInput:
    name: str
    handler: str
    outcome: str
    message: str  # what the error or the group's reason must contain
    untouched: str


FANOUT, REFRESH, TRIGGER = "fanout", "refresh", "build_trigger"
NO_CALL = "no AWS call, no invocation"
NO_WRITE = "no launch-template version, group unchanged, no refresh"
BAD_INPUTS = [
    BadInput("SNS envelope without exactly one record", FANOUT,
             "raises MalformedMessageError (invocation fails: retries, then the failure alarm)",
             "exactly one entry in Records", NO_CALL),
    BadInput("SNS record that is not from SNS", FANOUT, "raises MalformedMessageError",
             "EventSource is not 'aws:sns'", NO_CALL),
    BadInput("non-JSON image message", FANOUT, "raises MalformedMessageError",
             "Message is not JSON", NO_CALL),
    BadInput("FAILED build", FANOUT, "acknowledged, not fanned out", "FAILED", NO_CALL),
    BadInput("CANCELLED build", FANOUT, "acknowledged, not fanned out", "CANCELLED", NO_CALL),
    BadInput("AVAILABLE image without AMIs", FANOUT, "raises MalformedMessageError",
             "lists no outputResources.amis", NO_CALL),
    BadInput("non-JSON queue record", TRIGGER, "record ignored, batch acknowledged",
             "body is not JSON", "no AWS call, no build started"),
    BadInput("payload without AMIs", REFRESH, "raises InvalidInputError",
             "amis must be a non-empty object", "no AWS call"),
    BadInput("schemaVersion that is a JSON boolean", REFRESH, "raises InvalidInputError",
             "schemaVersion must be the number 1, got True (bool)", "no AWS call"),
    BadInput("release sent to the refresh function (the fan-out's invoke role may invoke it)",
             REFRESH, "raises InvalidInputError",
             "release is not accepted by the refresh function: invoke the release function",
             "no AWS call"),
    BadInput("AMI for another region only", REFRESH, "rejected",
             f"the image has no AMI in {fx.REGION}", NO_WRITE),
    BadInput("AMI not owned by the infra account", REFRESH, "rejected",
             f"not the infra account {fx.INFRA_ACCOUNT}", NO_WRITE),
    BadInput("deregistered AMI", REFRESH, "rejected", "does not exist in this region", NO_WRITE),
    BadInput("AMI older than the group's current one", REFRESH, "rejected",
             "is older than the group's current image", NO_WRITE),
    BadInput("launch template whose image is an SSM alias", REFRESH, "rejected",
             "takes its image from the SSM alias", NO_WRITE),
    BadInput("missing group", REFRESH, "failed", "Auto Scaling group ecs-gone does not exist",
             NO_WRITE),
    BadInput("group without a launch template", REFRESH, "rejected", "no launch template",
             NO_WRITE),
    BadInput("refresh already running", REFRESH, "deferred", "is Pending", NO_WRITE),
    BadInput("quarantined AMI", REFRESH, "quarantined", "was rolled back on this group", NO_WRITE),
    BadInput("AMI held after an operator cancelled its refresh", REFRESH, "held",
             "an operator cancelled the refresh", NO_WRITE),
    BadInput("mixed instances override with its own launch template", REFRESH, "rejected",
             "carry their own launch template or ImageId", NO_WRITE),
    BadInput("launch template shared with another team's group on $Latest", REFRESH, "rejected",
             "which follow $Latest and are not targets of this function", NO_WRITE),
]  # fmt: skip
ROWS = {row.name: row for row in BAD_INPUTS}
# Keys tests/test_config.py has no bad value for: (stack, overrides, key, what is allowed).
EXTRA_CONFIG_ROWS = [
    ("infra", {"fanoutFunctionName": "fan out"}, "fanoutFunctionName", "Lambda function name"),
    ("infra", {"fanoutRoleName": "fan/out"}, "fanoutRoleName", "IAM name"),
    # The stack's aws: provider settings, forwarded to the regional providers.
    ("workload-dev", {"aws:assumeRole": {"roleArn": "arn:aws:iam::222233334444:role/deploy"}},
     "aws:assumeRole", "use aws:assumeRoles"),
    ("workload-dev", {"aws:assumeRoles": {"roleArn": "arn:aws:iam::222233334444:role/deploy"}},
     "aws:assumeRoles", "expected a list"),
]  # fmt: skip


def config_rows() -> list[tuple[str, str, dict[str, Any], str]]:
    """(key, stack, overrides, allowed): the first BAD_VALUES row naming each key, plus extras."""
    rows: dict[str, tuple[str, str, dict[str, Any], str]] = {}
    for stack, overrides, key, _shown, allowed in BAD_VALUES:
        rows.setdefault(key.split("[")[0].split(".")[0], (key, stack, overrides, allowed))
    for stack, overrides, key, allowed in EXTRA_CONFIG_ROWS:
        rows.setdefault(key, (key, stack, overrides, allowed))
    return [rows[key] for key in sorted(rows)]


def test_the_docs_table_is_current():
    rendered = doc_tables.bad_input_markdown(BAD_INPUTS, config_rows())
    assert doc_tables.BAD_INPUT_DOC.read_text() == rendered, (
        "docs/bad-input.md is stale: python -m tests.doc_tables"
    )


# --- fan-out ------------------------------------------------------------------------------------

AVAILABLE = json.loads((FIXTURES / "imagebuilder_sns_image_available.json").read_text())
FAILED = json.loads((FIXTURES / "imagebuilder_sns_image_failed.json").read_text())
WORKLOAD_ACCOUNT = "222233334444"


def sns_event(message: Any, source: str = "aws:sns") -> dict:
    body = message if isinstance(message, str) else json.dumps(message)
    return {"Records": [{"EventSource": source, "Sns": {"MessageId": "m-1", "Message": body}}]}


@pytest.fixture(scope="module")
def fanout_world() -> Iterator[LambdaRouter]:
    """An enrolled workload account whose function records every invocation."""
    with mock_aws(), LambdaRouter().installed() as router:
        router.register(
            LambdaFunction(
                WORKLOAD_ACCOUNT,
                "us-west-1",
                "LambdaForUpdateLaunchTemplate-And-InstanceRefresh",
                lambda event, context: {"results": []},
                role_arn=f"arn:aws:iam::{WORKLOAD_ACCOUNT}:role/refresh",
            )
        )
        yield router


@pytest.mark.parametrize(
    ("row", "event"),
    [
        ("SNS envelope without exactly one record", {"Records": []}),
        ("SNS record that is not from SNS", sns_event(AVAILABLE, source="aws:sqs")),
        ("non-JSON image message", sns_event("{not json")),
        ("AVAILABLE image without AMIs", sns_event({**AVAILABLE, "outputResources": {"amis": []}})),
        ("FAILED build", sns_event(FAILED)),
        ("CANCELLED build", sns_event({**FAILED, "state": {"status": "CANCELLED"}})),
    ],
)
def test_fanout_bad_input(row, event, fanout_world, api_calls, monkeypatch):
    for name, value in {
        "INVOKE_ROLE_NAME": "InvokeInstanceRefreshHandlerRole",
        "TARGET_FUNCTION_NAME": "LambdaForUpdateLaunchTemplate-And-InstanceRefresh",
        "ACCOUNT_SOURCE": "static",
        "STATIC_ACCOUNT_IDS": WORKLOAD_ACCOUNT,
    }.items():
        monkeypatch.setenv(name, value)
    expected = ROWS[row]
    calls_before = api_calls.calls.copy()
    context = types.SimpleNamespace(get_remaining_time_in_millis=lambda: 60_000)
    session = boto3.Session(region_name="us-west-1")

    if expected.outcome.startswith("raises"):
        with pytest.raises(MalformedMessageError, match=expected.message):
            fanout_app.lambda_handler(event, context, session)
    else:
        result = fanout_app.lambda_handler(event, context, session)
        assert result == {"status": expected.message, "fannedOut": False}

    assert api_calls.calls == calls_before
    assert fanout_world.pending == 0 and fanout_world.invocations == []


# --- build trigger --------------------------------------------------------------------------------


def test_build_trigger_bad_record_starts_no_build(api_calls):
    expected = ROWS["non-JSON queue record"]
    pipeline_arn = f"arn:aws:imagebuilder:{fx.REGION}:123456789012:image-pipeline/golden-ami"
    settings = trigger_logic.Settings(pipeline_arn, "golden-ami-payloads", "payloads/")
    with mock_aws(), ImageBuilderEmulator() as image_builder:
        image_builder.register_pipeline(
            pipeline_arn, regions=[fx.REGION], ami_name="golden-{{ imagebuilder:buildDate }}"
        )
        calls_before = api_calls.calls.copy()
        summary = handle_batch(
            {"Records": [{"messageId": "m-1", "body": "{not json"}]},
            settings,
            BuildTriggerAws(boto3.Session(), fx.REGION),
        )
        assert summary["decision"]["action"] == "none"
        assert expected.message in summary["ignored"][0]["reason"]
        assert api_calls.calls == calls_before
        assert image_builder.requests == []


# --- refresh --------------------------------------------------------------------------------------

IMAGE_ARN = f"arn:aws:imagebuilder:{fx.REGION}:{fx.INFRA_ACCOUNT}:image/golden/1.0.0/3"


@dataclass
class RefreshWorld:
    session: boto3.Session
    emulator: InstanceRefreshEmulator
    new_ami: str
    targets: dict[str, dict[str, Any]]  # group name -> TARGETS_JSON entry
    templates: list[str]
    amis: dict[str, str]

    def run(self, event: Any, group: str) -> list[dict]:
        env = {
            "INFRA_ACCOUNT_ID": fx.INFRA_ACCOUNT,
            "IMAGE_PREFIX": fx.PREFIX,
            "TARGETS_JSON": json.dumps([self.targets[group]]),
            "REFRESH_PREFERENCES_JSON": json.dumps({"MinHealthyPercentage": 90}),
        }
        return refresh_app.handle(event, env, self.session)["results"]

    def snapshot(self) -> dict[str, Any]:
        ec2 = self.session.client("ec2")
        autoscaling = self.session.client("autoscaling")
        groups = autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
        return {
            "versions": {
                t: len(
                    ec2.describe_launch_template_versions(LaunchTemplateId=t)[
                        "LaunchTemplateVersions"
                    ]
                )
                for t in self.templates
            },
            "groups": {
                g["AutoScalingGroupName"]: (g.get("LaunchTemplate"), g.get("Tags")) for g in groups
            },
            "refreshes": len(self.emulator.calls_to("StartInstanceRefresh")),
            "writes": [
                c.operation
                for c in self.emulator.calls
                if c.operation.startswith(("Create", "Update", "Start", "Modify", "Delete"))
            ],
        }


def rollout(amis: dict[str, str]) -> dict[str, Any]:
    return {"schemaVersion": 1, "imageArn": IMAGE_ARN, "amis": amis, "correlationId": "c-1"}


@pytest.fixture(scope="module")
def refresh_world() -> Iterator[RefreshWorld]:
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        mock_aws(),
        InstanceRefreshEmulator() as emulator,
    ):
        monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        session = boto3.Session(region_name=fx.REGION)
        amis = {
            "current": fx.register_image(2),
            "new": fx.register_image(4),
            "newest": fx.register_image(6),
            "foreign": fx.register_image(5, owner=fx.OTHER_ACCOUNT),
            "deregistered": fx.register_image(5),
        }
        fx.deregister_image(amis["deregistered"])
        world = RefreshWorld(session, emulator, amis["new"], {}, [], amis)

        def group(name: str, image: str, *, create: bool = True) -> str:
            template_id = fx.launch_template(session, [image])
            world.templates.append(template_id)
            if create:
                fx.auto_scaling_group(session, name, template_id, "1", capacity=2)
            world.targets[name] = {
                "autoScalingGroupName": name,
                "launchTemplateId": template_id,
                "clusterName": f"cluster-{name}",
            }
            return template_id

        group("ecs-main", amis["current"])
        group("ecs-newer", amis["newest"])
        group("ecs-ssm", "resolve:ssm:/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended")
        group("ecs-gone", amis["current"], create=False)
        group("ecs-busy", amis["current"])
        group("ecs-quarantined", amis["current"])
        group("ecs-held", amis["current"])
        shared_template = group("ecs-shared", amis["current"])
        fx.auto_scaling_group(session, "other-team", shared_template, "$Latest", capacity=0)
        own_template = group("ecs-override", amis["current"], create=False)
        fx.auto_scaling_group(session, "ecs-override", own_template, "1", capacity=2, mixed=True,
                              extra_overrides=[{"InstanceType": "m7g.large",
                                                "LaunchTemplateSpecification": {
                                                    "LaunchTemplateId": own_template,
                                                    "Version": "1"}}])  # fmt: skip
        autoscaling = session.client("autoscaling")
        autoscaling.start_instance_refresh(AutoScalingGroupName="ecs-busy")
        autoscaling.create_or_update_tags(
            Tags=[{"ResourceId": "ecs-quarantined", "ResourceType": "auto-scaling-group",
                   "Key": QUARANTINE_TAG, "Value": amis["new"], "PropagateAtLaunch": False}]
        )  # fmt: skip
        autoscaling.create_or_update_tags(
            Tags=[{"ResourceId": "ecs-held", "ResourceType": "auto-scaling-group",
                   "Key": HELD_TAG, "Value": amis["new"], "PropagateAtLaunch": False}]
        )  # fmt: skip
        autoscaling.create_launch_configuration(
            LaunchConfigurationName="legacy", ImageId=amis["current"], InstanceType="m7i.large"
        )
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName="ecs-legacy",
            LaunchConfigurationName="legacy",
            MinSize=0,
            MaxSize=2,
            AvailabilityZones=[f"{fx.REGION}a"],
        )
        world.targets["ecs-legacy"] = {
            **world.targets["ecs-main"],
            "autoScalingGroupName": "ecs-legacy",
        }
        yield world


@pytest.mark.parametrize(
    ("row", "group", "amis"),
    [
        ("AMI for another region only", "ecs-main", {"us-east-1": "ami-0123456789abcdef0"}),
        ("AMI not owned by the infra account", "ecs-main", "foreign"),
        ("deregistered AMI", "ecs-main", "deregistered"),
        ("AMI older than the group's current one", "ecs-newer", "new"),
        ("launch template whose image is an SSM alias", "ecs-ssm", "new"),
        ("missing group", "ecs-gone", "new"),
        ("group without a launch template", "ecs-legacy", "new"),
        ("refresh already running", "ecs-busy", "new"),
        ("quarantined AMI", "ecs-quarantined", "new"),
        ("AMI held after an operator cancelled its refresh", "ecs-held", "new"),
        ("mixed instances override with its own launch template", "ecs-override", "new"),
        ("launch template shared with another team's group on $Latest", "ecs-shared", "new"),
    ],
)
def test_refresh_bad_input(row, group, amis, refresh_world):
    expected = ROWS[row]
    payload_amis = amis if isinstance(amis, dict) else {fx.REGION: refresh_world.amis[amis]}
    before = refresh_world.snapshot()

    [result] = refresh_world.run(rollout(payload_amis), group)

    assert result["outcome"] == expected.outcome, result
    assert expected.message in result["reason"], result["reason"]
    assert refresh_world.snapshot() == before


@pytest.mark.parametrize(
    ("row", "event"),
    [
        ("payload without AMIs", rollout({})),
        (
            "schemaVersion that is a JSON boolean",
            {**rollout({fx.REGION: "ami-0123456789abcdef0"}), "schemaVersion": True},
        ),
        (
            "release sent to the refresh function (the fan-out's invoke role may invoke it)",
            {
                "action": "release",
                "autoScalingGroupName": "ecs-main",
                "amiId": "ami-0123456789abcdef0",
            },
        ),
    ],
)
def test_refresh_malformed_payload_fails_before_any_call(row, event, refresh_world, api_calls):
    expected = ROWS[row]
    calls_before = api_calls.calls.copy()
    with pytest.raises(InvalidInputError, match=re.escape(expected.message)):
        refresh_world.run(event, "ecs-main")
    assert api_calls.calls == calls_before


# --- stack configuration --------------------------------------------------------------------------


def test_every_config_key_has_a_bad_value_row():
    assert {row[0].split("[")[0].split(".")[0] for row in config_rows()} >= set(CONFIG_KEYS)


@pytest.mark.parametrize(
    ("key", "stack", "overrides", "allowed"), config_rows(), ids=[row[0] for row in config_rows()]
)
def test_bad_config_value_fails_the_program_before_any_resource(key, stack, overrides, allowed):
    run = run_stack(stack, overrides, allow_failure=True)
    assert type(run.error) is pulumi.RunError, run.error  # the CLI prints it without a trace
    full_key = key if ":" in key else f"golden-ami:{key}"
    assert full_key in str(run.error) and allowed in str(run.error)
    assert run.resources == []
