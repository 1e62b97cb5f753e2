"""Every policy document of both stacks, and every builder in components/policies.py, linted
with parliament: no finding, except the ones in SUPPRESSED, each with its reason.

parliament reads every document as an identity policy. The suppressions are the places where
that reading is wrong for the kind of document (trust and key policies), or where DESIGN §7
requires exactly what it flags.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from parliament import analyze_policy_string

from components import policies

ACCOUNT, REGION, ORG = "111122223333", "eu-west-1", "o-a1b2c3d4e5"
WORKLOAD = "555566667777"
MRK = "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"
STACKS = (
    ("infra", {}),
    ("infra", {"organizationalUnitIds": ["ou-ab12-cd34ef56"]}),
    ("infra", {"listAccountsRoleArn": f"arn:aws:iam::{ACCOUNT}:role/GoldenAmiListAccounts"}),
    ("infra", {"amiKmsKeyArn": MRK, "buildTrigger": "cloudtrail"}),
    (
        "infra",
        {
            "rolloutWaves": [
                {"name": "canary", "accounts": ["ou-ab12-cd34ef56"], "approval": "manual"},
                {"name": "rest", "accounts": ["rest"]},
            ],
            "alarmTopicArn": f"arn:aws:sns:eu-west-1:{ACCOUNT}:platform-alerts",
        },
    ),
    ("workload-dev", {}),
    ("workload-prod", {}),
)


@dataclass(frozen=True)
class Suppression:
    issue: str
    kind: str  # "trust", "key" (KMS key policy) or "identity"
    detail: str  # the finding's detail, exactly
    reason: str


SUPPRESSED = (
    Suppression(
        "MALFORMED",
        "trust",
        "Statement contains neither Resource nor NotResource",
        "a trust policy has no Resource: the role it is attached to is the resource (IAM "
        "rejects a trust policy that names one)",
    ),
    Suppression(
        "RESOURCE_STAR",
        "key",
        "*",
        "in a key policy `Resource: *` means this key and nothing else; it is the only value "
        "KMS accepts",
    ),
    Suppression(
        "RESOURCE_STAR",
        "identity",
        "['ec2:RunInstances']",
        "RunInstances authorises the instance, volumes, network interfaces, subnet, security "
        "groups and the infra account's image; the ec2:LaunchTemplate condition bounds it to the "
        "configured templates (DESIGN §7)",
    ),
    Suppression(
        "RESOURCE_MISMATCH",
        "identity",
        "[{'action': 'states:DescribeExecution', 'required_format': "
        "'arn:*:states:*:*:express:*:*:*'}]",
        "the rollout state machine is STANDARD: its executions are `execution` resources; the "
        "`express` ARN format is for Express workflows only",
    ),
)


def unexplained_findings(document: dict, kind: str) -> list[str]:
    found = []
    for finding in analyze_policy_string(json.dumps(document)).findings:
        detail = str(finding.detail)
        if not any(
            s.issue == finding.issue and s.kind == kind and s.detail in ("*", detail)
            for s in SUPPRESSED
        ):
            found.append(f"{finding.issue}: {detail} at {finding.location}")
    return found


def kind_of(resource_type: str, prop: str) -> str:
    if prop == "assumeRolePolicy":
        return "trust"
    if resource_type == "aws:kms/key:Key":
        return "key"
    # Bucket, topic, queue and log resource policies lint like identity policies (Principal is
    # checked on its own); none needs a suppression.
    return "identity"


@pytest.fixture(scope="module")
def documents(stack_run) -> list[tuple[str, str, dict]]:
    """(where, kind, document) for every policy document the stacks declare."""
    documents = []
    for stack, overrides in STACKS:
        for resource in stack_run(stack, overrides).resources:
            for prop, value in resource.inputs.items():
                if isinstance(value, str) and '"Statement"' in value:
                    documents.append(
                        (
                            f"{stack}{'+' if overrides else ''}:{resource.name}.{prop}",
                            kind_of(resource.type, prop),
                            json.loads(value),
                        )
                    )
    return documents


def test_the_lint_sees_identity_trust_key_and_resource_policies(documents):
    names = " ".join(name for name, _, _ in documents)
    assert {kind for _, kind, _ in documents} == {"identity", "trust", "key"}
    for resource_policy in ("tls-only.policy", "image-state-policy.policy", "ecs-errors-delivery"):
        assert resource_policy in names


def test_every_stack_document_lints_clean(documents):
    problems = {
        name: found
        for name, kind, document in documents
        if (found := unexplained_findings(document, kind))
    }
    assert not problems, json.dumps(problems, indent=2)


TARGET = SimpleNamespace(
    region=REGION,
    auto_scaling_group_name="ecs-general",
    launch_template_id="lt-0123456789abcdef0",
    cluster_name="general",
)
LOG_GROUP = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/golden-ami"
BUCKET = "arn:aws:s3:::golden-ami-payloads"
QUEUE = f"arn:aws:sqs:{REGION}:{ACCOUNT}:golden-ami-build-trigger"
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:golden-ami-image-state"
ROLLOUT_TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/golden-ami-rollout-status"
STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:golden"
BUILDER_EXAMPLES = {
    "service_trust_policy": [("trust", {"service": "ec2.amazonaws.com"})],
    "lambda_trust_policy": [("trust", {})],
    "tls_only_bucket_policy": [("identity", {"bucket_arn": BUCKET})],
    "build_instance_payload_policy": [
        ("identity", {"bucket_arn": BUCKET, "payload_prefix": "payloads/"})
    ],
    "build_trigger_policy": [
        (
            "identity",
            {
                "bucket_arn": BUCKET,
                "payload_prefix": "payloads/",
                "pipeline_arn": f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:image-pipeline/golden",
                "image_arn_pattern": f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:image/golden/*",
                "queue_arn": QUEUE,
                "log_group_arn": LOG_GROUP,
                "partition": "aws",
                "regions": [REGION, "us-east-1"],
            },
        )
    ],
    "build_trigger_queue_policy": [
        (
            "identity",
            {
                "queue_arn": QUEUE,
                "rule_arn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/uploads",
                "topic_arn": TOPIC,
                "cancelled_rule_arn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/cancelled",
            },
        )
    ],
    "image_state_topic_policy": [
        ("identity", {"topic_arn": TOPIC, "partition": "aws", "account_id": ACCOUNT})
    ],
    "image_state_key_policy": [("key", {"partition": "aws", "account_id": ACCOUNT})],
    "fanout_policy": [
        (
            "identity",
            {
                "invoke_role_name": "InvokeInstanceRefreshHandlerRole",
                "organization_id": ORG,
                "log_group_arn": LOG_GROUP,
                "account_source": source,
                "organizational_unit_ids": units,
                "list_accounts_role_arn": role,
            },
        )
        for source, units, role in (
            ("organizations", (), ""),
            ("organizations", ("ou-ab12-cd34ef56",), ""),
            ("organizations", (), f"arn:aws:iam::{ACCOUNT}:role/GoldenAmiListAccounts"),
            ("static", (), ""),
        )
    ],
    "refresh_policy": [
        (
            "identity",
            {
                "account_id": WORKLOAD,
                "targets": [TARGET, SimpleNamespace(**{**vars(TARGET), "region": "us-east-1"})],
                "ecs_instance_role_arn": f"arn:aws:iam::{WORKLOAD}:role/ecsInstanceRole",
                "log_group_arns": [LOG_GROUP.replace(ACCOUNT, WORKLOAD)],
                "rollback_alarm_arns": [
                    f"arn:aws:cloudwatch:eu-west-1:{WORKLOAD}:alarm:golden-ami-main-ecs-errors"
                ],
            },
        )
    ],
    "invoke_role_trust_policy": [
        (
            "trust",
            {
                "fanout_role_arn": f"arn:aws:iam::{ACCOUNT}:role/GoldenAmiFanoutRole",
                "organization_id": ORG,
            },
        )
    ],
    "invoke_role_policy": [
        (
            "identity",
            {
                "account_id": WORKLOAD,
                "function_name": "LambdaForUpdateLaunchTemplate-And-InstanceRefresh",
            },
        )
    ],
    "ecs_errors_delivery_policy": [("identity", {"log_group_arns": [LOG_GROUP]})],
    "rollout_bus_policy": [
        (
            "identity",
            {
                "bus_arn": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/golden-ami-rollout",
                "organization_id": ORG,
            },
        )
    ],
    "recorder_policy": [
        (
            "identity",
            {
                "table_arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/golden-ami-rollout-status",
                "log_group_arn": LOG_GROUP,
                "dead_letter_queue_arn": QUEUE,
                "partition": "aws",
                "regions": [REGION, "us-east-1"],
                "pipeline_name": "golden-ami-golden-ecs",
            },
        )
    ],
    "rollout_forwarder_trust_policy": [("trust", {"account_id": WORKLOAD})],
    "rollout_forwarder_policy": [
        (
            "identity",
            {"rollout_bus_arn": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/golden-ami-rollout"},
        )
    ],
    "dead_letter_queue_policy": [
        (
            "identity",
            {"queue_arn": QUEUE, "rule_arn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/rollout"},
        )
    ],
    "states_trust_policy": [("trust", {"account_id": ACCOUNT})],
    "rollout_waves_function_policy": [
        (
            "identity",
            {
                "table_arn": ROLLOUT_TABLE,
                "state_machine_arn": STATE_MACHINE,
                "alarm_topic_arn": alarm_topic,
                "log_group_arn": LOG_GROUP,
            },
        )
        for alarm_topic in ("", TOPIC)
    ],
    "rollout_state_machine_policy": [
        ("identity", {"function_arns": [f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:golden"]})
    ],
    "rollout_operator_policy": [
        (
            "identity",
            {
                "table_arn": ROLLOUT_TABLE,
                "state_machine_arn": STATE_MACHINE,
                "executions_arn": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:golden:*",
            },
        )
    ],
}


def test_every_builder_has_an_example():
    builders = {
        name
        for name, function in inspect.getmembers(policies, inspect.isfunction)
        if function.__module__ == policies.__name__
        and not name.startswith("_")
        and inspect.signature(function).return_annotation == "Policy"
    }
    assert builders == set(BUILDER_EXAMPLES)


@pytest.mark.parametrize(
    ("builder", "kind", "arguments"),
    [(name, kind, args) for name, examples in BUILDER_EXAMPLES.items() for kind, args in examples],
    ids=[
        f"{name}-{n}" for name, examples in BUILDER_EXAMPLES.items() for n in range(len(examples))
    ],
)
def test_policy_builder_lints_clean(builder, kind, arguments):
    document = getattr(policies, builder)(**arguments)
    assert unexplained_findings(document, kind) == []


def test_every_suppression_is_still_needed(documents):
    """A suppression parliament no longer reports anywhere is deleted, not kept "just in case"."""
    reported = set()
    for _, kind, document in documents:
        for finding in analyze_policy_string(json.dumps(document)).findings:
            for suppression in SUPPRESSED:
                if suppression.issue == finding.issue and suppression.kind == kind:
                    reported.add(suppression)
    assert reported == set(SUPPRESSED)
