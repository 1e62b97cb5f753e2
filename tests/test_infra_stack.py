"""The infra stack under Pulumi mocks: bucket hardening, build trigger wiring (pattern checked with
moto's EventBridge matcher on the real S3 sample), recipe, distribution, build role, lifecycle."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from moto.events.models import EventPattern

from components.image_pipeline import (
    cancelled_build_pattern,
    image_arn_prefix,
    upload_event_pattern,
)
from components.lambda_code import LAMBDA_RUNTIME
from tests.pulumi_harness import REPO_ROOT, RecordedResource, StackRun

BUCKET = "golden-ami-payloads-111122223333"
ORGANIZATION_ARN = "arn:aws:organizations::999988887777:organization/o-a1b2c3d4e5"
OU_ARN = "arn:aws:organizations::999988887777:ou/o-a1b2c3d4e5/ou-ab12-cd34ef56"
MRK = "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"

S3 = "aws:s3/"
IMAGEBUILDER = "aws:imagebuilder/"
RULE = "aws:cloudwatch/eventRule:EventRule"
QUEUE = "aws:sqs/queue:Queue"
TOPIC = "aws:sns/topic:Topic"
FUNCTION = "aws:lambda/function:Function"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"


@pytest.fixture(scope="module")
def infra(stack_run: Callable[..., StackRun]) -> StackRun:
    return stack_run("infra")


def arn_of(run: StackRun, type_token: str, name_contains: str = "") -> str:
    return run.one(type_token, name_contains).outputs["arn"]


def statements(resource: RecordedResource, prop: str = "policy") -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in resource.json(prop)["Statement"]}


# --- payload bucket ------------------------------------------------------------------------------


def test_bucket_takes_the_configured_name(infra: StackRun) -> None:
    assert infra.one(f"{S3}bucket:Bucket")["bucket"] == BUCKET


def test_bucket_name_is_generated_when_not_configured(stack_run: Callable[..., StackRun]) -> None:
    run = stack_run("infra", {"bucketName": ""})
    assert "bucket" not in run.one(f"{S3}bucket:Bucket").inputs


def test_bucket_children_configure_that_bucket_under_the_component(infra: StackRun) -> None:
    bucket = infra.one(f"{S3}bucket:Bucket")
    component = infra.by_urn(bucket.parent)
    assert component.type == "golden-ami:payload_bucket:PayloadBucket"
    children = infra.children_of(component)
    assert len(children) == 8
    assert all(c.inputs.get("bucket") == BUCKET for c in children)


def test_bucket_is_versioned_encrypted_and_owner_enforced(infra: StackRun) -> None:
    versioning = infra.one(f"{S3}bucketVersioning:BucketVersioning")
    assert versioning["versioningConfiguration"] == {"status": "Enabled"}
    encryption = infra.one(
        f"{S3}bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    assert [r["applyServerSideEncryptionByDefault"] for r in encryption["rules"]] == [
        {"sseAlgorithm": "AES256"}
    ]
    ownership = infra.one(f"{S3}bucketOwnershipControls:BucketOwnershipControls")
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_bucket_blocks_all_public_access(infra: StackRun) -> None:
    block = infra.one(f"{S3}bucketPublicAccessBlock:BucketPublicAccessBlock")
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    assert {flag: block.inputs.get(flag) for flag in flags} == dict.fromkeys(flags, True)


def test_bucket_policy_denies_every_request_without_tls(infra: StackRun) -> None:
    policy = infra.one(f"{S3}bucketPolicy:BucketPolicy").json("policy")
    assert policy["Statement"] == [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]


def test_bucket_sends_events_to_eventbridge(infra: StackRun) -> None:
    assert infra.one(f"{S3}bucketNotification:BucketNotification")["eventbridge"] is True


def test_old_payload_versions_expire_only_when_configured(
    infra: StackRun, stack_run: Callable[..., StackRun]
) -> None:
    [rule] = infra.one(f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]
    assert rule["status"] == "Enabled"
    assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": 90}
    keep_all = stack_run("infra", {"noncurrentVersionExpirationDays": 0})
    assert (
        keep_all.resources_of_type(f"{S3}bucketLifecycleConfiguration:BucketLifecycleConfiguration")
        == []
    )


# --- build trigger: event pattern ------------------------------------------------------------


def object_created(aws_event: Callable[[str], dict[str, Any]], bucket: str, key: str) -> dict:
    event = aws_event("s3_eventbridge_object_created")
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"]["key"] = key
    return event


def cloudtrail_call(bucket: str, key: str, event_name: str = "PutObject", **detail: Any) -> dict:
    """An S3 data event as CloudTrail delivers it to EventBridge (only the fields rules use)."""
    return {
        "version": "0",
        "id": "6f8a1a2b-0000-4c3e-9d1f-0123456789ab",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2024-05-02T10:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": {
            "eventVersion": "1.09",
            "eventSource": "s3.amazonaws.com",
            "eventName": event_name,
            "awsRegion": "eu-west-1",
            "requestParameters": {"bucketName": bucket, "key": key},
            **detail,
        },
    }


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    return EventPattern.load(json.dumps(pattern)).matches_event(event)


def test_rule_uses_the_pure_pattern_for_the_stack_bucket(infra: StackRun) -> None:
    assert infra.one(RULE, "payload-uploaded").json("eventPattern") == upload_event_pattern(
        "eventbridge", BUCKET, "payloads/"
    )


@pytest.mark.parametrize(
    ("bucket", "key", "expected"),
    [
        (BUCKET, "payloads/10-install-agent.sh", True),
        (BUCKET, "payloads/team-a/20-harden.sh", True),
        ("another-bucket", "payloads/10-install-agent.sh", False),
        (BUCKET, "scripts/10-install-agent.sh", False),
        (BUCKET, "archive/payloads/10-install-agent.sh", False),
        (BUCKET, "payloads/README.md", False),
        (BUCKET, "payloads/10-install-agent.sh.bak", False),
    ],
)
def test_object_created_pattern_on_the_real_s3_sample(
    infra: StackRun, aws_event: Callable[[str], dict], bucket: str, key: str, expected: bool
) -> None:
    pattern = infra.one(RULE, "payload-uploaded").json("eventPattern")
    assert matches(pattern, object_created(aws_event, bucket, key)) is expected


def test_object_deleted_does_not_trigger(infra: StackRun, aws_event: Callable[[str], dict]) -> None:
    deleted = object_created(aws_event, BUCKET, "payloads/10-install-agent.sh")
    deleted["detail-type"] = "Object Deleted"
    deleted["detail"]["reason"] = "DeleteObject"
    assert not matches(infra.one(RULE, "payload-uploaded").json("eventPattern"), deleted)


def test_eventbridge_mode_ignores_cloudtrail_events(infra: StackRun) -> None:
    assert not matches(
        infra.one(RULE, "payload-uploaded").json("eventPattern"),
        cloudtrail_call(BUCKET, "payloads/a.sh"),
    )


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (cloudtrail_call(BUCKET, "payloads/a.sh"), True),
        (cloudtrail_call(BUCKET, "payloads/a.sh", "CompleteMultipartUpload"), True),
        (cloudtrail_call(BUCKET, "payloads/a.sh", "CopyObject"), True),
        (cloudtrail_call(BUCKET, "payloads/a.sh", "DeleteObject"), False),
        (cloudtrail_call(BUCKET, "payloads/a.sh", errorCode="AccessDenied"), False),
        (cloudtrail_call("another-bucket", "payloads/a.sh"), False),
        (cloudtrail_call(BUCKET, "other/a.sh"), False),
        (cloudtrail_call(BUCKET, "payloads/a.txt"), False),
    ],
)
def test_cloudtrail_mode_pattern(
    stack_run: Callable[..., StackRun], event: dict[str, Any], expected: bool
) -> None:
    run = stack_run("infra", {"buildTrigger": "cloudtrail"})
    assert matches(run.one(RULE, "payload-uploaded").json("eventPattern"), event) is expected


def test_cloudtrail_mode_ignores_s3_eventbridge_events(
    stack_run: Callable[..., StackRun], aws_event: Callable[[str], dict]
) -> None:
    run = stack_run("infra", {"buildTrigger": "cloudtrail"})
    event = object_created(aws_event, BUCKET, "payloads/a.sh")
    assert not matches(run.one(RULE, "payload-uploaded").json("eventPattern"), event)


def test_pattern_follows_a_configured_prefix(
    stack_run: Callable[..., StackRun], aws_event: Callable[[str], dict]
) -> None:
    pattern = (
        stack_run("infra", {"payloadPrefix": "ami/payloads/"})
        .one(RULE, "payload-uploaded")
        .json("eventPattern")
    )
    assert matches(pattern, object_created(aws_event, BUCKET, "ami/payloads/a.sh"))
    assert not matches(pattern, object_created(aws_event, BUCKET, "payloads/a.sh"))


# --- build trigger: queue, Lambda, wiring ------------------------------------------------------


def test_upload_rule_and_image_topic_both_feed_the_trigger_queue(infra: StackRun) -> None:
    queue_arn = arn_of(infra, QUEUE, "queue")
    for name in ("payload-uploaded", "build-cancelled"):
        target = infra.one("aws:cloudwatch/eventTarget:EventTarget", name)
        assert (target["arn"], target["rule"]) == (queue_arn, infra.one(RULE, name).outputs["name"])
    subscription = infra.one("aws:sns/topicSubscription:TopicSubscription", "to-trigger")
    assert (subscription["topic"], subscription["protocol"], subscription["endpoint"]) == (
        arn_of(infra, TOPIC),
        "sqs",
        queue_arn,
    )
    # SNS envelopes, not raw messages: the handler tells image notifications apart by them.
    assert not subscription.inputs.get("rawMessageDelivery")


def test_cancelled_builds_reach_the_trigger_queue_through_their_state_change_event(
    infra: StackRun, aws_event: Callable[[str], dict]
) -> None:
    # Image Builder's SNS notification covers AVAILABLE and FAILED only (DESIGN §11).
    pattern = infra.one(RULE, "build-cancelled").json("eventPattern")
    recipe = infra.one(f"{IMAGEBUILDER}imageRecipe:ImageRecipe")["name"]
    assert pattern == cancelled_build_pattern(
        image_arn_prefix("aws", "eu-west-1", "111122223333", recipe)
    )
    documented = aws_event("imagebuilder_eventbridge_image_state_change")  # TESTING → AVAILABLE
    ours = copy.deepcopy(documented)
    ours["region"] = "eu-west-1"
    ours["resources"] = [
        "arn:aws:imagebuilder:eu-west-1:111122223333:image/golden-ami-golden-ecs/1.0.3/2"
    ]
    assert not matches(pattern, ours)
    for status, expected in (("CANCELLED", True), ("FAILED", False), ("BUILDING", False)):
        ours["detail"]["state"]["status"] = status
        assert matches(pattern, ours) is expected


def test_cancelled_builds_of_other_pipelines_do_not_wake_the_trigger(
    infra: StackRun, aws_event: Callable[[str], dict]
) -> None:
    pattern = infra.one(RULE, "build-cancelled").json("eventPattern")
    other = aws_event("imagebuilder_eventbridge_image_state_change")  # another recipe's image
    other["detail"]["state"]["status"] = "CANCELLED"
    assert not matches(pattern, other)
    # Same account and region, a recipe whose name merely starts like ours.
    other["region"] = "eu-west-1"
    for image in ("golden-ami-golden-ecs-gpu/1.0.0/1", "web-server/1.0.0/1"):
        other["resources"] = [f"arn:aws:imagebuilder:eu-west-1:111122223333:image/{image}"]
        assert not matches(pattern, other)


def test_queue_accepts_only_those_rules_and_that_topic(infra: StackRun) -> None:
    policy = statements(infra.one("aws:sqs/queuePolicy:QueuePolicy", "build-trigger"))
    queue_arn = arn_of(infra, QUEUE, "queue")
    assert {sid: s["Condition"]["ArnEquals"]["aws:SourceArn"] for sid, s in policy.items()} == {
        "UploadEvents": arn_of(infra, RULE, "payload-uploaded"),
        "ImageStateNotifications": arn_of(infra, TOPIC),
        "CancelledBuildEvents": arn_of(infra, RULE, "build-cancelled"),
    }
    assert {s["Resource"] for s in policy.values()} == {queue_arn}
    assert {s["Action"] for s in policy.values()} == {"sqs:SendMessage"}


def test_queue_is_encrypted_and_redrives_to_an_encrypted_dlq(infra: StackRun) -> None:
    queue = infra.one(QUEUE, "queue")
    dlq = infra.one(QUEUE, "build-trigger-dlq")
    assert queue["sqsManagedSseEnabled"] is True
    assert dlq["sqsManagedSseEnabled"] is True
    redrive = queue.json("redrivePolicy")
    assert redrive["deadLetterTargetArn"] == dlq.outputs["arn"]
    assert redrive["maxReceiveCount"] >= 5
    # Longer than a whole batch window plus the function timeout, so nothing is received twice.
    function = infra.one(FUNCTION, "build-trigger")
    assert queue["visibilityTimeoutSeconds"] >= function["timeout"] + 90


@pytest.mark.parametrize("topic", ["", "arn:aws:sns:eu-west-1:111122223333:platform-oncall"])
def test_dead_letters_raise_an_alarm(stack_run: Callable[..., StackRun], topic: str) -> None:
    run = stack_run("infra", {"alarmTopicArn": topic})
    alarm = run.one("aws:cloudwatch/metricAlarm:MetricAlarm", "build-trigger-dlq")
    assert (alarm["namespace"], alarm["metricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert alarm["dimensions"] == {"QueueName": run.one(QUEUE, "build-trigger-dlq").outputs["name"]}
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 0)
    assert alarm["treatMissingData"] == "notBreaching"
    assert alarm.inputs.get("alarmActions", []) == ([topic] if topic else [])


@pytest.mark.parametrize("settle_seconds", [90, 45])
def test_event_source_mapping_batches_for_the_settle_window(
    stack_run: Callable[..., StackRun], settle_seconds: int
) -> None:
    run = stack_run("infra", {"buildSettleSeconds": settle_seconds})
    mapping = run.one("aws:lambda/eventSourceMapping:EventSourceMapping")
    assert mapping["eventSourceArn"] == arn_of(run, QUEUE, "queue")
    assert mapping["functionName"] == arn_of(run, FUNCTION, "build-trigger")
    assert mapping["batchSize"] == 100
    assert mapping["maximumBatchingWindowInSeconds"] == settle_seconds
    env = run.one(FUNCTION, "build-trigger")["environment"]["variables"]
    assert "SETTLE_SECONDS" not in env, "the batching window settles bursts, not the handler"


def test_trigger_lambda_runs_the_build_trigger_handler_one_at_a_time(infra: StackRun) -> None:
    function = infra.one(FUNCTION, "build-trigger")
    assert function["handler"] == "handlers.build_trigger.app.lambda_handler"
    assert function["runtime"] == LAMBDA_RUNTIME
    assert function["reservedConcurrentExecutions"] == 1
    assert function["environment"]["variables"] == {
        "PIPELINE_ARN": arn_of(infra, f"{IMAGEBUILDER}imagePipeline:ImagePipeline"),
        "BUCKET_NAME": BUCKET,
        "PAYLOAD_PREFIX": "payloads/",
    }
    assert sorted(function["code"].assets) == [
        "handlers/__init__.py",
        "handlers/build_trigger/__init__.py",
        "handlers/build_trigger/app.py",
        "handlers/build_trigger/aws.py",
        "handlers/build_trigger/logic.py",
        "handlers/common/__init__.py",
        "handlers/common/log.py",
        "handlers/common/status.py",  # handlers/common is packaged into every handler's zip
    ]


def test_trigger_log_group_exists_before_the_function_with_retention(infra: StackRun) -> None:
    log_group = infra.one(LOG_GROUP, "build-trigger")
    function = infra.one(FUNCTION, "build-trigger")
    assert log_group["name"] == f"/aws/lambda/{function['name']}"
    assert log_group["retentionInDays"] == 30
    assert log_group.urn in function.dependencies


def test_trigger_role_grants_exactly_what_the_handler_calls(infra: StackRun) -> None:
    policy = statements(infra.one(ROLE_POLICY, "build-trigger"))
    granted = {a for s in policy.values() for a in _as_list(s["Action"])}
    documented = set(
        re.findall(r"^\s+([a-z0-9]+:[A-Za-z]+)\s", (REPO_ROOT / "handlers/build_trigger/aws.py")
                   .read_text(), flags=re.M)
    )  # fmt: skip
    assert granted - {"logs:CreateLogStream", "logs:PutLogEvents"} - _SQS_POLLING == documented
    assert all(
        s["Effect"] == "Allow" and "*" not in _as_list(s["Resource"]) for s in policy.values()
    )


_SQS_POLLING = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}


def test_trigger_role_is_scoped_to_stack_resources(infra: StackRun) -> None:
    policy = statements(infra.one(ROLE_POLICY, "build-trigger"))
    pipeline_arn = arn_of(infra, f"{IMAGEBUILDER}imagePipeline:ImagePipeline")
    assert policy["ListPayloadPrefix"]["Resource"] == f"arn:aws:s3:::{BUCKET}"
    assert policy["ListPayloadPrefix"]["Condition"] == {
        "StringLike": {"s3:prefix": ["payloads/", "payloads/*"]}
    }
    assert policy["RunPipeline"]["Resource"] == pipeline_arn
    assert policy["TagNewImage"]["Resource"] == (
        "arn:aws:imagebuilder:eu-west-1:111122223333:image/golden-ami-golden-ecs/*"
    )
    assert policy["TagOutputAmis"]["Resource"] == [
        "arn:aws:ec2:eu-west-1::image/*",
        "arn:aws:ec2:us-east-1::image/*",
    ]
    assert policy["ConsumeTriggerQueue"]["Resource"] == arn_of(infra, QUEUE, "queue")
    assert policy["WriteOwnLogs"]["Resource"] == (f"{arn_of(infra, LOG_GROUP, 'build-trigger')}:*")


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


# --- image state topic --------------------------------------------------------------------------


def test_image_state_topic_is_encrypted_with_a_key_image_builder_may_use(infra: StackRun) -> None:
    key = infra.one("aws:kms/key:Key")
    assert infra.one(TOPIC)["kmsMasterKeyId"] == key.outputs["arn"]
    assert key["enableKeyRotation"] is True
    service_role = (
        "arn:aws:iam::111122223333:role/aws-service-role/imagebuilder.amazonaws.com/"
        "AWSServiceRoleForImageBuilder"
    )
    key_policy = statements(key)
    assert key_policy["ImageBuilderEncryptsNotifications"]["Principal"] == {"AWS": service_role}
    topic_policy = statements(infra.one("aws:sns/topicPolicy:TopicPolicy"))
    assert topic_policy["ImageBuilderPublishes"]["Principal"] == {"AWS": service_role}
    assert topic_policy["ImageBuilderPublishes"]["Resource"] == arn_of(infra, TOPIC)


# --- recipe and build infrastructure ---------------------------------------------------------


def test_recipe_parent_defaults_to_the_ecs_optimized_ssm_parameter(infra: StackRun) -> None:
    recipe = infra.one(f"{IMAGEBUILDER}imageRecipe:ImageRecipe")
    assert recipe["parentImage"] == (
        "ssm:/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
    )
    [component] = recipe["components"]
    assert component["componentArn"] == arn_of(infra, f"{IMAGEBUILDER}component:Component")
    assert {p["name"]: p["value"] for p in component["parameters"]} == {
        "Bucket": BUCKET,
        "Prefix": "payloads/",
    }


def test_recipe_parent_accepts_an_ami_id(stack_run: Callable[..., StackRun]) -> None:
    run = stack_run("infra", {"parentImage": "ami-0123456789abcdef0"})
    assert run.one(f"{IMAGEBUILDER}imageRecipe:ImageRecipe")["parentImage"] == (
        "ami-0123456789abcdef0"
    )


def test_recipe_version_changes_with_its_parent(
    infra: StackRun, stack_run: Callable[..., StackRun]
) -> None:
    other = stack_run("infra", {"parentImage": "ami-0123456789abcdef0"})
    versions = {
        run.one(f"{IMAGEBUILDER}imageRecipe:ImageRecipe")["version"] for run in (infra, other)
    }
    assert len(versions) == 2


def test_component_document_runs_payloads_in_order_and_resets_ecs_last(infra: StackRun) -> None:
    document = infra.one(f"{IMAGEBUILDER}component:Component")["data"]
    build_steps = next(p for p in yaml.safe_load(document)["phases"] if p["name"] == "build")[
        "steps"
    ]
    run_payloads = build_steps[0]["inputs"]["commands"][0]
    assert run_payloads.startswith("set -euo pipefail")
    assert "bash -euo pipefail" in run_payloads
    assert "--version-id" in run_payloads
    assert "/etc/golden-ami/manifest.json" in run_payloads
    assert build_steps[-1]["inputs"]["commands"] == [
        "set -euo pipefail",
        "systemctl stop ecs",
        "rm -rf /var/lib/ecs/data/*",
    ]


def test_infrastructure_configuration(infra: StackRun) -> None:
    infrastructure = infra.one(
        f"{IMAGEBUILDER}infrastructureConfiguration:InfrastructureConfiguration"
    )
    assert infrastructure["snsTopicArn"] == arn_of(infra, TOPIC)
    assert infrastructure["terminateInstanceOnFailure"] is True
    assert infrastructure["instanceTypes"] == ["m7i.large", "m6i.large"]
    assert infrastructure["subnetId"] == "subnet-0a1b2c3d4e5f60718"
    assert infrastructure["securityGroupIds"] == ["sg-0a1b2c3d4e5f60718"]
    assert infrastructure["instanceMetadataOptions"]["httpTokens"] == "required"
    profile = infra.one("aws:iam/instanceProfile:InstanceProfile")
    assert infrastructure["instanceProfileName"] == profile.outputs["name"]


def test_build_instance_role_has_only_ssm_image_builder_and_payload_read(infra: StackRun) -> None:
    role = infra.one("aws:iam/role:Role", "build-instance")
    assert role.json("assumeRolePolicy")["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    managed = {a["policyArn"] for a in infra.resources_of_type(ATTACHMENT) if "build" in a.name}
    assert managed == {
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/EC2InstanceProfileForImageBuilder",
    }
    policy = statements(infra.one(ROLE_POLICY, "build-instance"))
    assert policy == {
        "ListPayloadPrefix": {
            "Sid": "ListPayloadPrefix",
            "Effect": "Allow",
            "Action": ["s3:ListBucketVersions"],
            "Resource": f"arn:aws:s3:::{BUCKET}",
            "Condition": {"StringLike": {"s3:prefix": ["payloads/", "payloads/*"]}},
        },
        "ReadPayloads": {
            "Sid": "ReadPayloads",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": f"arn:aws:s3:::{BUCKET}/payloads/*",
        },
    }


def test_build_role_follows_the_configured_prefix(stack_run: Callable[..., StackRun]) -> None:
    run = stack_run("infra", {"payloadPrefix": "ami/payloads/"})
    policy = statements(run.one(ROLE_POLICY, "build-instance"))
    assert policy["ReadPayloads"]["Resource"] == f"arn:aws:s3:::{BUCKET}/ami/payloads/*"


# --- distribution and pipeline ----------------------------------------------------------------


def ami_distributions(run: StackRun) -> dict[str, dict[str, Any]]:
    distribution = run.one(f"{IMAGEBUILDER}distributionConfiguration:DistributionConfiguration")
    return {d["region"]: d["amiDistributionConfiguration"] for d in distribution["distributions"]}


def test_distribution_shares_with_the_organization_in_every_region(infra: StackRun) -> None:
    distributions = ami_distributions(infra)
    assert list(distributions) == ["eu-west-1", "us-east-1"]
    for ami in distributions.values():
        assert ami["launchPermission"] == {"organizationArns": [ORGANIZATION_ARN]}
        assert ami["name"] == "golden-ecs-al2023-{{ imagebuilder:buildDate }}"
        assert ami["amiTags"] == {
            "golden-ami:pipeline": "golden-ami-golden-ecs",
            "golden-ami:environment": "golden-ami",
        }
        assert "kmsKeyId" not in ami


@pytest.mark.parametrize(
    ("overrides", "launch_permission"),
    [
        ({"shareWithOuArns": [OU_ARN]}, {"organizationalUnitArns": [OU_ARN]}),
        ({"shareWithAccountIds": ["222233334444"]}, {"userIds": ["222233334444"]}),
        (
            {"shareWithOuArns": [OU_ARN], "shareWithAccountIds": ["222233334444"]},
            {"organizationalUnitArns": [OU_ARN], "userIds": ["222233334444"]},
        ),
    ],
)
def test_distribution_shares_with_ous_or_accounts_instead(
    stack_run: Callable[..., StackRun], overrides: dict, launch_permission: dict
) -> None:
    for ami in ami_distributions(stack_run("infra", overrides)).values():
        assert ami["launchPermission"] == launch_permission


def test_distribution_encrypts_with_the_key_replica_of_each_region(
    stack_run: Callable[..., StackRun],
) -> None:
    distributions = ami_distributions(stack_run("infra", {"amiKmsKeyArn": MRK}))
    assert {region: ami["kmsKeyId"] for region, ami in distributions.items()} == {
        "eu-west-1": MRK,
        "us-east-1": MRK.replace("eu-west-1", "us-east-1"),
    }


def test_pipeline_wires_recipe_infrastructure_distribution_with_tests(infra: StackRun) -> None:
    pipeline = infra.one(f"{IMAGEBUILDER}imagePipeline:ImagePipeline")
    assert pipeline["imageRecipeArn"] == arn_of(infra, f"{IMAGEBUILDER}imageRecipe:ImageRecipe")
    assert pipeline["infrastructureConfigurationArn"] == arn_of(
        infra, f"{IMAGEBUILDER}infrastructureConfiguration:InfrastructureConfiguration"
    )
    assert pipeline["distributionConfigurationArn"] == arn_of(
        infra, f"{IMAGEBUILDER}distributionConfiguration:DistributionConfiguration"
    )
    assert pipeline["imageTestsConfiguration"]["imageTestsEnabled"] is True
    assert pipeline["schedule"]["scheduleExpression"] == "cron(0 3 ? * SUN *)"


def test_pipeline_without_schedule_builds_on_uploads_only(
    stack_run: Callable[..., StackRun],
) -> None:
    pipeline = stack_run("infra", {"buildSchedule": ""}).one(
        f"{IMAGEBUILDER}imagePipeline:ImagePipeline"
    )
    assert "schedule" not in pipeline.inputs


# --- lifecycle -----------------------------------------------------------------------------------


def test_lifecycle_keeps_the_newest_images_and_any_still_launched(infra: StackRun) -> None:
    policy = infra.one(f"{IMAGEBUILDER}lifecyclePolicy:LifecyclePolicy")
    [detail] = policy["policyDetails"]
    assert detail["filter"] == {"type": "AGE", "value": 180, "unit": "DAYS", "retainAtLeast": 5}
    assert detail["exclusionRules"]["amis"]["lastLaunched"] == {"value": 180, "unit": "DAYS"}
    assert detail["exclusionRules"]["amis"]["tagMap"] == {
        "golden-ami:keep": "true",
        "golden-ami:in-use": "true",  # maintained by the rollout status (DESIGN §3, §10)
    }
    assert detail["exclusionRules"]["tagMap"] == {"golden-ami:keep": "true"}
    recipe = infra.one(f"{IMAGEBUILDER}imageRecipe:ImageRecipe")
    # Every version of the recipe: images of a replaced recipe age out by the same rules.
    assert policy["resourceSelection"]["recipes"] == [
        {"name": recipe["name"], "semanticVersion": "x.x.x"}
    ]


def test_lifecycle_follows_config_and_caps_the_launch_window(
    stack_run: Callable[..., StackRun],
) -> None:
    run = stack_run("infra", {"keepNewestImages": 3, "imageRetentionDays": 400})
    [detail] = run.one(f"{IMAGEBUILDER}lifecyclePolicy:LifecyclePolicy")["policyDetails"]
    assert (detail["filter"]["retainAtLeast"], detail["filter"]["value"]) == (3, 400)
    assert detail["exclusionRules"]["amis"]["lastLaunched"]["value"] == 365


def test_lifecycle_runs_as_a_role_with_the_aws_managed_execution_policy(infra: StackRun) -> None:
    policy = infra.one(f"{IMAGEBUILDER}lifecyclePolicy:LifecyclePolicy")
    role = infra.one("aws:iam/role:Role", "lifecycle")
    assert policy["executionRole"] == role.outputs["arn"]
    assert role.json("assumeRolePolicy")["Statement"][0]["Principal"] == {
        "Service": "imagebuilder.amazonaws.com"
    }
    attachment = infra.one(ATTACHMENT, "lifecycle")
    assert attachment["policyArn"] == (
        "arn:aws:iam::aws:policy/service-role/EC2ImageBuilderLifecycleExecutionPolicy"
    )
    assert attachment.urn in policy.dependencies


# --- the stack as a whole ----------------------------------------------------------------------


def test_no_managed_full_access_policy_anywhere(infra: StackRun) -> None:
    assert not [a for a in infra.resources_of_type(ATTACHMENT) if "FullAccess" in a["policyArn"]]


def test_every_resource_belongs_to_a_component(infra: StackRun) -> None:
    components = {r.urn: r.type for r in infra.resources if not r.custom}
    assert {
        "golden-ami:image_pipeline:GoldenImagePipeline",
        "golden-ami:payload_bucket:PayloadBucket",
    } <= set(components.values())
    assert all(r.parent in components for r in infra.resources if r.custom)


def test_stack_outputs_what_a_user_needs(infra: StackRun) -> None:
    assert {
        "bucketName": BUCKET,
        "payloadPrefix": "payloads/",
        "pipelineArn": arn_of(infra, f"{IMAGEBUILDER}imagePipeline:ImagePipeline"),
        "imageTopicArn": arn_of(infra, TOPIC),
        "amiNamePrefix": "golden-ecs-al2023",
        "regions": ["eu-west-1", "us-east-1"],
    }.items() <= infra.outputs.items()


def test_workload_stacks_create_nothing_of_the_infra_account(
    stack_run: Callable[..., StackRun],
) -> None:
    for stack in ("workload-dev", "workload-prod"):
        run = stack_run(stack)
        assert not [r for r in run.resources if r.type.startswith((S3, IMAGEBUILDER))]
