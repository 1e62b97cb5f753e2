"""The Image Builder emulation against the botocore model and the documented behaviour."""

from __future__ import annotations

import json

import boto3
import botocore.exceptions
import pytest
from moto import mock_aws

from sandbox.image_builder import SERVICE_MODEL, ImageBuilderEmulator
from sandbox.model_validation import ValidationError, validate_request, validate_response
from tests.pulumi_harness import FIXTURES

# One session for the whole module: botocore parses its service models once per session.
SESSION = boto3.Session()
ACCOUNT = "123456789012"
WORKLOAD_ACCOUNT = "222222222222"
PIPELINE_ARN = f"arn:aws:imagebuilder:eu-west-1:{ACCOUNT}:image-pipeline/golden-ami"
ORG_ARN = "arn:aws:organizations::111111111111:organization/o-abc1234567"


@pytest.fixture(autouse=True)
def _no_public_ami_catalogue(monkeypatch):
    # Loading moto's public AMI catalogue into every region's backend dominates the runtime.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture
def image_builder():
    with mock_aws(), ImageBuilderEmulator() as emulator:
        emulator.register_pipeline(
            PIPELINE_ARN,
            regions=["eu-west-1", "us-east-1"],
            ami_name="golden-ecs-al2023-{{ imagebuilder:buildDate }}",
            launch_permission={"organizationArns": [ORG_ARN]},
            ami_tags={"golden-ami:pipeline": "golden-ami"},
            visible_in_accounts=[WORKLOAD_ACCOUNT],
        )
        yield emulator


@pytest.fixture
def client(image_builder):
    return SESSION.client("imagebuilder", region_name="eu-west-1")


def start(client, token: str, **extra) -> str:
    response = client.start_image_pipeline_execution(
        imagePipelineArn=PIPELINE_ARN, clientToken=token, **extra
    )
    validate_response(SERVICE_MODEL, "StartImagePipelineExecution", response)
    return response["imageBuildVersionArn"]


# --- installation --------------------------------------------------------------------------


def test_hooks_answer_only_while_installed_and_follow_the_installed_emulator():
    with mock_aws():
        with ImageBuilderEmulator() as first:
            first.register_pipeline(PIPELINE_ARN, regions=["eu-west-1"], ami_name="x")
            client = SESSION.client("imagebuilder", region_name="eu-west-1")
            client.start_image_pipeline_execution(imagePipelineArn=PIPELINE_ARN, clientToken="t")
        # Not installed: the call falls through to moto, which has no Image Builder.
        with pytest.raises(botocore.exceptions.ClientError, match="Not yet implemented"):
            client.list_image_pipeline_images(imagePipelineArn=PIPELINE_ARN)
        # A client made earlier is answered by whichever emulator is installed now.
        with ImageBuilderEmulator() as second:
            second.register_pipeline(PIPELINE_ARN, regions=["eu-west-1"], ami_name="x")
            listed = client.list_image_pipeline_images(imagePipelineArn=PIPELINE_ARN)
            assert listed["imageSummaryList"] == []
            assert [op for op, _ in second.requests] == ["ListImagePipelineImages"]


def test_only_one_emulator_at_a_time(image_builder):
    with pytest.raises(RuntimeError, match="already installed"), ImageBuilderEmulator():
        pass


def test_unemulated_operation_fails_loudly(client):
    with pytest.raises(NotImplementedError, match="ListImages"):
        client.list_images()


# --- validation ----------------------------------------------------------------------------


def test_request_breaking_the_model_gets_the_modelled_error(client, image_builder):
    # 64 characters pass botocore's own checks, but the model allows tag keys of 128 only and
    # forbids the aws: prefix; botocore does not check patterns or maximum lengths itself.
    with pytest.raises(client.exceptions.InvalidRequestException, match=r"tags key 'aws:x'"):
        start(client, "t-1", tags={"aws:x": "v"})
    with pytest.raises(client.exceptions.InvalidRequestException, match="at most 64"):
        start(client, "x" * 65)
    assert [op for op, _ in image_builder.requests] == ["StartImagePipelineExecution"] * 2
    assert image_builder.notifications == []


def test_validator_checks_patterns_enums_and_ranges():
    validate_request(SERVICE_MODEL, "ListImagePipelineImages", {"imagePipelineArn": PIPELINE_ARN})
    with pytest.raises(ValidationError, match=r"imagePipelineArn: 'arn:aws:s3:::b' does not match"):
        validate_request(
            SERVICE_MODEL, "ListImagePipelineImages", {"imagePipelineArn": "arn:aws:s3:::b"}
        )
    with pytest.raises(ValidationError, match=r"maxResults: 0 is outside the range 1..100"):
        validate_request(
            SERVICE_MODEL,
            "ListImagePipelineImages",
            {"imagePipelineArn": PIPELINE_ARN, "maxResults": 0},
        )
    with pytest.raises(ValidationError, match=r"owner: 'Mine' is not one of Self"):
        validate_request(SERVICE_MODEL, "ListImages", {"owner": "Mine"})
    with pytest.raises(ValidationError, match="missing required member"):
        validate_request(SERVICE_MODEL, "GetImage", {})
    with pytest.raises(ValidationError, match="expected integer, got bool"):
        validate_request(
            SERVICE_MODEL,
            "ListImagePipelineImages",
            {"imagePipelineArn": PIPELINE_ARN, "maxResults": True},
        )


def test_validator_understands_surrogate_pair_patterns():
    autoscaling = SESSION.client("autoscaling", region_name="eu-west-1").meta.service_model
    validate_request(
        autoscaling,
        "StartInstanceRefresh",
        {"AutoScalingGroupName": "group-😀", "Strategy": "Rolling"},
    )
    with pytest.raises(ValidationError, match="Strategy: 'Blue' is not one of"):
        validate_request(
            autoscaling, "StartInstanceRefresh", {"AutoScalingGroupName": "g", "Strategy": "Blue"}
        )


# --- StartImagePipelineExecution -----------------------------------------------------------


def test_client_token_makes_start_idempotent(client, image_builder):
    first = start(client, "token-a", tags={"k": "v"})
    assert start(client, "token-a", tags={"k": "v"}) == first
    assert image_builder.image(first).status == "PENDING"

    with pytest.raises(client.exceptions.IdempotentParameterMismatchException):
        start(client, "token-a", tags={"k": "other"})
    second = start(client, "token-b")
    assert second.endswith("/golden-ami/1.0.0/2") and first.endswith("/golden-ami/1.0.0/1")


def test_unknown_pipeline_or_other_region_is_not_found(image_builder):
    other_region = SESSION.client("imagebuilder", region_name="us-east-1")
    with pytest.raises(other_region.exceptions.ResourceNotFoundException):
        other_region.start_image_pipeline_execution(imagePipelineArn=PIPELINE_ARN, clientToken="t")
    client = SESSION.client("imagebuilder", region_name="eu-west-1")
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="missing"):
        client.list_image_pipeline_images(
            imagePipelineArn=PIPELINE_ARN.replace("golden-ami", "missing")
        )
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_image(
            imageBuildVersionArn=f"arn:aws:imagebuilder:eu-west-1:{ACCOUNT}:image/x/1.0.0/9"
        )


# --- ListImagePipelineImages ---------------------------------------------------------------


def test_pagination_returns_every_image_once(client):
    started = [start(client, f"token-{n}") for n in range(5)]
    paginator = client.get_paginator("list_image_pipeline_images")
    pages = list(
        paginator.paginate(imagePipelineArn=PIPELINE_ARN, PaginationConfig={"PageSize": 2})
    )
    assert [len(page["imageSummaryList"]) for page in pages] == [2, 2, 1]
    for page in pages:
        validate_response(SERVICE_MODEL, "ListImagePipelineImages", page)
    assert [s["arn"] for page in pages for s in page["imageSummaryList"]] == started


def test_forged_page_token_is_rejected(client):
    with pytest.raises(client.exceptions.InvalidPaginationTokenException):
        client.list_image_pipeline_images(
            imagePipelineArn=PIPELINE_ARN, nextToken="bm90LWEtdG9rZW4="
        )


def test_filters_by_version_and_rejects_unknown_filters(client):
    start(client, "token-1")
    summaries = client.list_image_pipeline_images(
        imagePipelineArn=PIPELINE_ARN, filters=[{"name": "version", "values": ["2.0.0"]}]
    )["imageSummaryList"]
    assert summaries == []
    summaries = client.list_image_pipeline_images(
        imagePipelineArn=PIPELINE_ARN, filters=[{"name": "version", "values": ["1.0.0"]}]
    )["imageSummaryList"]
    assert len(summaries) == 1
    with pytest.raises(client.exceptions.InvalidRequestException, match="status"):
        client.list_image_pipeline_images(
            imagePipelineArn=PIPELINE_ARN, filters=[{"name": "status", "values": ["AVAILABLE"]}]
        )


# --- build progression ---------------------------------------------------------------------


def test_build_moves_through_documented_states_and_distributes(client, image_builder):
    image_arn = start(client, "token-1", tags={"golden-ami:payload-digest": "d1"})
    seen = []
    while (message := image_builder.advance(image_arn)) is None:
        seen.append(client.get_image(imageBuildVersionArn=image_arn)["image"]["state"]["status"])
    assert seen == ["BUILDING", "TESTING", "DISTRIBUTING"]

    image = client.get_image(imageBuildVersionArn=image_arn)
    validate_response(SERVICE_MODEL, "GetImage", image)
    amis = image["image"]["outputResources"]["amis"]
    assert [ami["region"] for ami in amis] == ["eu-west-1", "us-east-1"]
    assert message["outputResources"]["amis"] == amis
    for ami in amis:
        described = SESSION.client("ec2", region_name=ami["region"]).describe_images(
            ImageIds=[ami["image"]]
        )["Images"][0]
        assert described["Name"] == "golden-ecs-al2023-2025-01-01T00-00-00.000Z" == ami["name"]
        assert described["OwnerId"] == ACCOUNT
        tags = {t["Key"]: t["Value"] for t in described["Tags"]}
        assert tags == {
            "golden-ami:pipeline": "golden-ami",
            "CreatedBy": "EC2 Image Builder",
            "Ec2ImageBuilderArn": image_arn,
        }
        permissions = SESSION.client("ec2", region_name=ami["region"]).describe_image_attribute(
            ImageId=ami["image"], Attribute="launchPermission"
        )
        assert permissions["LaunchPermissions"] == [{"OrganizationArn": ORG_ARN}]

    with pytest.raises(ValueError, match="finished"):
        image_builder.advance(image_arn)


def test_ami_is_visible_to_workload_accounts_moto_cannot_share_with():
    """Shared, not copied: the owner sees the AMI's tags, an account it is shared with none
    (EC2 keeps tags per account), so no workload handler can come to rely on them."""
    from moto.ec2.models import ec2_backends

    with mock_aws(), ImageBuilderEmulator() as emulator:
        emulator.register_pipeline(
            PIPELINE_ARN,
            regions=["eu-west-1"],
            ami_name="n",
            visible_in_accounts=[WORKLOAD_ACCOUNT],
        )
        client = SESSION.client("imagebuilder", region_name="eu-west-1")
        arn = client.start_image_pipeline_execution(imagePipelineArn=PIPELINE_ARN, clientToken="t")[
            "imageBuildVersionArn"
        ]
        ami_id = emulator.run_build(arn)["outputResources"]["amis"][0]["image"]
        workload_copy = ec2_backends[WORKLOAD_ACCOUNT]["eu-west-1"].amis[ami_id]
        assert workload_copy.owner_id == ACCOUNT
        owner_copy = ec2_backends[ACCOUNT]["eu-west-1"].amis[ami_id]
        assert owner_copy.get_tags() != []
        assert {t["key"] for t in owner_copy.get_tags()} >= {"Ec2ImageBuilderArn", "CreatedBy"}
        assert workload_copy.get_tags() == []


def test_failed_build_registers_nothing_and_reports_reason(client, image_builder):
    image_arn = start(client, "token-1")
    message = image_builder.run_build(
        image_arn, fail_in="TESTING", fail_reason="payload 10-x.sh exit 1"
    )
    assert message["state"] == {"status": "FAILED", "reason": "payload 10-x.sh exit 1"}
    assert message["outputResources"] == {"amis": []}
    assert (
        SESSION.client("ec2", region_name="eu-west-1").describe_images(Owners=["self"])["Images"]
        == []
    )
    with pytest.raises(ValueError, match="fail_in"):
        image_builder.run_build(start(client, "token-2"), fail_in="AVAILABLE")


def test_cancelled_build_notifies_no_one_and_emits_its_state_change_event(client, image_builder):
    image_arn = start(client, "token-1")
    image_builder.advance(image_arn)

    assert image_builder.cancel(image_arn) is None

    # Image Builder's SNS notification covers AVAILABLE and FAILED images only.
    assert image_builder.notifications == []
    image = client.get_image(imageBuildVersionArn=image_arn)["image"]
    assert image["state"]["status"] == "CANCELLED" and image["outputResources"] == {"amis": []}
    *_, event = image_builder.state_change_events
    documented = json.loads(
        (FIXTURES / "imagebuilder_eventbridge_image_state_change.json").read_text()
    )
    assert event.keys() == documented.keys()
    assert event["detail"].keys() == documented["detail"].keys()
    assert (event["source"], event["detail-type"]) == (
        documented["source"],
        documented["detail-type"],
    )
    assert event["resources"] == [image_arn]
    assert event["detail"]["previous-state"] == {"status": "BUILDING"}
    assert event["detail"]["state"]["status"] == "CANCELLED"
    with pytest.raises(ValueError, match="finished"):
        image_builder.cancel(image_arn)


def test_every_status_change_emits_an_event(client, image_builder):
    image_builder.run_build(start(client, "token-1"))
    assert [
        (e["detail"]["previous-state"]["status"], e["detail"]["state"]["status"])
        for e in image_builder.state_change_events
    ] == [
        ("PENDING", "BUILDING"),
        ("BUILDING", "TESTING"),
        ("TESTING", "DISTRIBUTING"),
        ("DISTRIBUTING", "AVAILABLE"),
    ]


def test_scheduled_build_carries_no_request_tags(client, image_builder):
    start(client, "token-1", tags={"golden-ami:payload-digest": "d1"})
    scheduled = image_builder.start_scheduled_build(PIPELINE_ARN)
    message = image_builder.run_build(scheduled)

    summaries = client.list_image_pipeline_images(imagePipelineArn=PIPELINE_ARN)
    validate_response(SERVICE_MODEL, "ListImagePipelineImages", summaries)
    by_arn = {summary["arn"]: summary for summary in summaries["imageSummaryList"]}
    assert by_arn[scheduled]["buildType"] == "SCHEDULED" and "tags" not in by_arn[scheduled]
    assert message["buildType"] == "SCHEDULED"
    assert message["tags"] == {"resourceArn": scheduled}


def test_tag_resource_tags_images_and_refuses_unknown_ones(client, image_builder):
    image_arn = start(client, "token-1", tags={"a": "1"})
    client.tag_resource(resourceArn=image_arn, tags={"b": "2"})
    assert image_builder.image(image_arn).tags == {"a": "1", "b": "2"}
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.tag_resource(resourceArn=image_arn.replace("/1", "/9"), tags={"b": "2"})
    with pytest.raises(client.exceptions.InvalidParameterException):
        client.tag_resource(resourceArn=image_arn, tags={f"k{n}": "v" for n in range(49)})


# --- SNS message shape ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "fail_in"),
    [
        ("imagebuilder_sns_image_available.json", None),
        ("imagebuilder_sns_image_failed.json", "BUILDING"),
    ],
)
def test_sns_message_has_the_documented_shape(client, image_builder, fixture, fail_in):
    documented = json.loads((FIXTURES / fixture).read_text())
    message = image_builder.run_build(start(client, "token-1"), fail_in=fail_in)
    assert message.keys() == documented.keys()
    assert message["state"].keys() == documented["state"].keys()
    for ami, documented_ami in zip(
        message["outputResources"]["amis"], documented["outputResources"]["amis"], strict=False
    ):
        assert ami.keys() == documented_ami.keys()
    # semver packs major/minor/patch/build in 30-bit fields and exceeds 64 bits, as documented.
    assert documented["semver"] == (1 << 90) | documented["buildVersion"]
    assert message["semver"] == (1 << 90) | 1 > 2**64
    assert json.loads(json.dumps(message))["semver"] == message["semver"]
    assert message["sourcePipelineArn"] == PIPELINE_ARN
