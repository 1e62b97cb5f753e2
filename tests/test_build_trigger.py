"""Build trigger: pure decisions, then the handler on moto S3 + the Image Builder emulation."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import boto3
import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse
from botocore.retries.standard import ExponentialBackoff
from moto import mock_aws
from moto.events.models import EventPattern

from components.image_pipeline import cancelled_build_pattern, image_arn_prefix
from handlers.build_trigger import app, logic
from handlers.build_trigger.aws import CLIENT_CONFIG, MAX_ATTEMPTS, BuildTriggerAws
from sandbox.image_builder import ImageBuilderEmulator, sns_envelope
from tests.pulumi_harness import FIXTURES

# One session for the whole module: botocore parses its service models once per session.
SESSION = boto3.Session()
ACCOUNT = "123456789012"
REGION = "eu-west-1"
PIPELINE_ARN = f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:image-pipeline/golden-ami"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:golden-ami-image-state"
BUCKET = "golden-ami-payloads"
PREFIX = "payloads/"
SETTINGS = logic.Settings(PIPELINE_ARN, BUCKET, PREFIX)
ENVIRONMENT = {
    "PIPELINE_ARN": PIPELINE_ARN,
    "BUCKET_NAME": BUCKET,
    "PAYLOAD_PREFIX": PREFIX,
}


# --- event builders (from the real samples) ------------------------------------------------


def sqs_record(body: str, message_id: str = "m-1") -> dict:
    return {"messageId": message_id, "eventSource": "aws:sqs", "body": body}


def upload_event(key: str, bucket: str = BUCKET) -> dict:
    event = json.loads((FIXTURES / "s3_eventbridge_object_created.json").read_text())
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"]["key"] = key
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    return sqs_record(json.dumps(event), message_id=f"s3-{key}")


def cloudtrail_event(key: str, event_name: str = "PutObject", error_code: str | None = None):
    detail = {
        "eventSource": "s3.amazonaws.com",
        "eventName": event_name,
        "requestParameters": {"bucketName": BUCKET, "key": key},
    }
    if error_code:
        detail["errorCode"] = error_code
    event = {"source": "aws.s3", "detail-type": "AWS API Call via CloudTrail", "detail": detail}
    return sqs_record(json.dumps(event), message_id=f"ct-{key}")


def notification(message: dict) -> dict:
    envelope = sns_envelope(message, TOPIC_ARN, message_id="sns-1")
    return sqs_record(json.dumps(envelope), message_id="sns-1")


def batch(*records: dict) -> dict:
    return {"Records": list(records)}


# --- pure logic ----------------------------------------------------------------------------


def image(arn_suffix: str, status: str, minutes: int, digest: str | None) -> logic.PipelineImage:
    return logic.PipelineImage(
        arn=f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:image/golden-ami/1.0.0/{arn_suffix}",
        status=status,
        date_created=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
        payload_digest=digest,
    )


PAYLOADS = [("payloads/10-a.sh", "v1"), ("payloads/20-b.sh", "v7")]
DIGEST = logic.payload_digest(PAYLOADS)


def test_digest_depends_on_state_not_listing_order():
    assert logic.payload_digest(reversed(PAYLOADS)) == DIGEST
    assert logic.payload_digest([("payloads/10-a.sh", "v2"), PAYLOADS[1]]) != DIGEST
    assert logic.payload_digest(PAYLOADS[:1]) != DIGEST
    # A key containing the separator of a naive encoding cannot collide with two keys.
    assert logic.payload_digest([("a\nb", "v")]) != logic.payload_digest([("a", "v"), ("b", "v")])


def test_client_token_is_a_deterministic_36_character_uuid5():
    token = logic.client_token(PIPELINE_ARN, DIGEST)
    assert len(token) == 36 and token[14] == "5"
    assert token == logic.client_token(PIPELINE_ARN, DIGEST)
    assert token != logic.client_token(PIPELINE_ARN.replace("golden-ami", "other"), DIGEST)


def test_decide_without_payloads_skips():
    decision = logic.decide(PIPELINE_ARN, [], [])
    assert not decision.start_build and decision.reason == "no payloads under prefix"


def test_decide_first_build_starts_with_token_and_digest():
    decision = logic.decide(PIPELINE_ARN, PAYLOADS, [])
    assert decision.start_build and decision.digest == DIGEST
    assert decision.client_token == logic.client_token(PIPELINE_ARN, DIGEST)


@pytest.mark.parametrize("status", sorted(logic.IN_FLIGHT_STATUSES))
def test_decide_never_starts_beside_a_build_in_flight(status):
    images = [image("1", "AVAILABLE", 0, "old"), image("2", status, 5, "other")]
    decision = logic.decide(PIPELINE_ARN, PAYLOADS, images)
    assert not decision.start_build
    assert decision.reason.startswith("build in flight") and decision.image_arn.endswith("/2")


def test_decide_uses_the_newest_image_by_creation_date_not_list_order():
    newest_has_digest = [image("3", "AVAILABLE", 10, DIGEST), image("2", "AVAILABLE", 5, "old")]
    assert not logic.decide(PIPELINE_ARN, PAYLOADS, newest_has_digest).start_build
    # Reverting to an older payload state is a change relative to the newest image.
    older_has_digest = [image("2", "AVAILABLE", 5, DIGEST), image("3", "AVAILABLE", 10, "new")]
    assert logic.decide(PIPELINE_ARN, PAYLOADS, older_has_digest).start_build


def test_decide_compares_with_the_newest_image_that_carries_a_digest():
    # A scheduled build (new parent image) carries no digest: it is no payload change.
    scheduled_after = [image("1", "AVAILABLE", 0, DIGEST), image("2", "AVAILABLE", 5, None)]
    decision = logic.decide(PIPELINE_ARN, PAYLOADS, scheduled_after)
    assert not decision.start_build and decision.image_arn.endswith("/1")
    assert logic.decide(PIPELINE_ARN, PAYLOADS, [image("2", "AVAILABLE", 5, None)]).start_build


def test_decide_does_not_retry_a_failed_build_of_the_same_payloads():
    decision = logic.decide(PIPELINE_ARN, PAYLOADS, [image("1", "FAILED", 0, DIGEST)])
    assert not decision.start_build
    assert "FAILED" in decision.reason and "upload a changed payload" in decision.reason


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "PIPELINE_ARN, BUCKET_NAME, PAYLOAD_PREFIX"),
        (ENVIRONMENT | {"BUCKET_NAME": ""}, "BUCKET_NAME"),
        (ENVIRONMENT | {"PIPELINE_ARN": "arn:aws:s3:::x"}, "is not an Image Builder"),
    ],
)
def test_bad_environment_fails_naming_the_variable(environ, message):
    with pytest.raises(logic.SettingsError, match=message):
        logic.Settings.from_environ(environ)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "body is not JSON"),
        ("[1, 2]", "JSON list"),
        (json.dumps({"source": "aws.ec2", "detail": {}}), "neither an S3"),
        (json.dumps({"source": "aws.imagebuilder", "detail-type": "x", "detail": {}}), "'x'"),
        (
            json.dumps(
                {
                    "source": "aws.imagebuilder",
                    "detail-type": logic.IMAGE_STATE_CHANGE,
                    "detail": {"state": {"status": "CANCELLED"}},
                }
            ),
            "without resources[0]",
        ),
        (upload_event("payloads/x.sh", bucket="other")["body"], "bucket 'other'"),
        (upload_event("payloads/readme.md")["body"], "is not a .sh payload"),
        (upload_event("elsewhere/x.sh")["body"], "is not a .sh payload"),
        (cloudtrail_event("payloads/x.sh", "GetObject")["body"], "does not create objects"),
        (cloudtrail_event("payloads/x.sh", error_code="AccessDenied")["body"], "AccessDenied"),
        (json.dumps({"Type": "Notification", "TopicArn": TOPIC_ARN, "Message": "{"}), "not JSON"),
        (json.dumps({"Type": "Notification", "TopicArn": TOPIC_ARN, "Message": "{}"}), "not an"),
    ],
)
def test_irrelevant_or_malformed_records_are_ignored_with_a_reason(body, reason):
    classified = logic.classify_record(body, SETTINGS)
    assert isinstance(classified, logic.Ignored) and reason in classified.reason


def test_documented_image_state_change_event_is_an_image_change():
    event = json.loads((FIXTURES / "imagebuilder_eventbridge_image_state_change.json").read_text())
    event["detail"]["state"]["status"] = "CANCELLED"  # what the cancelled-build rule routes
    assert logic.classify_record(json.dumps(event), SETTINGS) == logic.ImageStateChanged(
        image_arn=event["resources"][0], status="CANCELLED"
    )


def test_documented_image_notification_of_another_pipeline_is_ignored():
    message = json.loads((FIXTURES / "imagebuilder_sns_image_available.json").read_text())
    body = notification(message)["body"]
    classified = logic.classify_record(body, SETTINGS)
    assert isinstance(classified, logic.Ignored) and "example-linux-pipeline" in classified.reason

    message["sourcePipelineArn"] = PIPELINE_ARN
    assert logic.classify_record(notification(message)["body"], SETTINGS) == (
        logic.ImageStateChanged(image_arn=message["arn"], status="AVAILABLE")
    )


def test_cloudtrail_uploads_are_relevant():
    for event_name in sorted(logic.CLOUDTRAIL_WRITE_EVENTS):
        classified = logic.classify_record(
            cloudtrail_event("payloads/a.sh", event_name)["body"], SETTINGS
        )
        assert classified == logic.PayloadChanged("payloads/a.sh", f"cloudtrail:{event_name}")


# --- handler on moto + emulator ------------------------------------------------------------


@pytest.fixture
def world(monkeypatch):
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # Loading moto's public AMI catalogue into every region's backend dominates the runtime.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    # Standard-mode backoff would really sleep between retries.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
    with mock_aws(), ImageBuilderEmulator() as image_builder:
        image_builder.register_pipeline(
            PIPELINE_ARN,
            regions=[REGION, "us-east-1"],
            ami_name="golden-ecs-al2023-{{ imagebuilder:buildDate }}",
        )
        s3 = SESSION.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield s3, image_builder


def upload(s3, *keys: str) -> list[dict]:
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=f"echo {key}\n".encode())
    return [upload_event(key) for key in keys]


def started_builds(image_builder) -> list[dict]:
    return [params for op, params in image_builder.requests if op == "StartImagePipelineExecution"]


def digests_of_started_builds(image_builder) -> list[str]:
    """The digest each started build's image was tagged with, in start order."""
    return [
        params["tags"][logic.PAYLOAD_DIGEST_TAG]
        for op, params in image_builder.requests
        if op == "TagResource"
    ]


def current_digest(s3) -> str:
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    return logic.payload_digest(
        (v["Key"], v["VersionId"]) for v in versions if v["IsLatest"] and v["Key"].endswith(".sh")
    )


FIVE = [f"payloads/{n:02d}-step.sh" for n in range(5)]


def test_burst_of_five_uploads_in_one_batch_starts_one_build(world):
    s3, image_builder = world
    records = upload(s3, *FIVE)
    s3.put_object(Bucket=BUCKET, Key="payloads/notes.txt", Body=b"not a payload")

    summary = app.lambda_handler(batch(*records), None)

    assert summary["decision"]["action"] == "start-build"
    assert summary["decision"]["payloadCount"] == 5
    (started,) = started_builds(image_builder)
    assert started.keys() == {"imagePipelineArn", "clientToken"}  # no `tags`: see sdk_floor
    assert started["clientToken"] == logic.client_token(PIPELINE_ARN, current_digest(s3))
    image = image_builder.image(summary["decision"]["imageArn"])
    assert image.tags == {logic.PAYLOAD_DIGEST_TAG: current_digest(s3)}
    assert summary["decision"]["imageArn"].endswith("/golden-ami/1.0.0/1")


def test_burst_split_over_two_batches_starts_one_build(world):
    s3, image_builder = world
    records = upload(s3, *FIVE)
    first = app.lambda_handler(batch(*records[:3]), None)
    second = app.lambda_handler(batch(*records[3:]), None)

    assert first["decision"]["action"] == "start-build"
    assert second["decision"]["action"] == "skip"
    assert second["decision"]["reason"].startswith("build in flight")
    assert second["decision"]["imageArn"] == first["decision"]["imageArn"]
    assert len(started_builds(image_builder)) == 1


def test_redelivered_event_after_the_build_finished_starts_nothing(world):
    s3, image_builder = world
    records = upload(s3, *FIVE)
    image_arn = app.lambda_handler(batch(*records), None)["decision"]["imageArn"]
    finished = app.lambda_handler(batch(notification(image_builder.run_build(image_arn))), None)
    redelivered = app.lambda_handler(batch(records[0]), None)

    for summary in (finished, redelivered):
        assert summary["decision"]["action"] == "skip"
        assert summary["decision"]["reason"] == (
            "newest image already built from these payloads (AVAILABLE)"
        )
    assert len(started_builds(image_builder)) == 1


def test_upload_during_a_build_is_built_after_the_finish_notification(world):
    s3, image_builder = world
    first_arn = app.lambda_handler(batch(*upload(s3, *FIVE[:2])), None)["decision"]["imageArn"]
    during = app.lambda_handler(batch(*upload(s3, "payloads/30-late.sh")), None)
    assert during["decision"]["action"] == "skip"
    assert len(started_builds(image_builder)) == 1

    after = app.lambda_handler(batch(notification(image_builder.run_build(first_arn))), None)

    assert after["decision"]["action"] == "start-build"
    assert after["decision"]["payloadCount"] == 3
    first, second = digests_of_started_builds(image_builder)
    assert second == current_digest(s3) != first


def test_failed_build_of_unchanged_payloads_is_not_retried(world):
    s3, image_builder = world
    records = upload(s3, *FIVE)
    image_arn = app.lambda_handler(batch(*records), None)["decision"]["imageArn"]
    failed = image_builder.run_build(image_arn, fail_in="BUILDING", fail_reason="exit 1")

    after_failure = app.lambda_handler(batch(notification(failed)), None)
    redelivered = app.lambda_handler(batch(*records), None)

    for summary in (after_failure, redelivered):
        assert summary["decision"]["action"] == "skip"
        assert "FAILED" in summary["decision"]["reason"]
        assert summary["taggedAmis"] == []
    assert len(started_builds(image_builder)) == 1

    fixed = app.lambda_handler(batch(*upload(s3, FIVE[0])), None)
    assert fixed["decision"]["action"] == "start-build"


def test_deleted_payload_changes_the_digest_and_builds_again(world):
    s3, image_builder = world
    records = upload(s3, *FIVE)
    image_arn = app.lambda_handler(batch(*records), None)["decision"]["imageArn"]
    app.lambda_handler(batch(notification(image_builder.run_build(image_arn))), None)

    # Deletion is not a trigger (the rule matches Object Created); the next evaluation sees it.
    s3.delete_object(Bucket=BUCKET, Key=FIVE[4])
    summary = app.lambda_handler(batch(records[0]), None)

    assert summary["decision"]["action"] == "start-build"
    assert summary["decision"]["payloadCount"] == 4
    assert digests_of_started_builds(image_builder)[1] == current_digest(s3)


def test_irrelevant_batch_makes_no_aws_call(world):
    _, image_builder = world
    summary = app.lambda_handler(
        batch(
            sqs_record("{broken", "bad-1"),
            upload_event("payloads/x.sh", bucket="someone-elses"),
            upload_event("payloads/readme.md"),
        ),
        None,
    )
    assert summary["decision"] == {"action": "none", "reason": "no relevant record in batch"}
    assert [entry["messageId"] for entry in summary["ignored"]] == [
        "bad-1",
        "s3-payloads/x.sh",
        "s3-payloads/readme.md",
    ]
    assert image_builder.requests == []


def test_bad_record_does_not_spoil_the_batch(world):
    s3, image_builder = world
    records = upload(s3, FIVE[0])
    summary = app.lambda_handler(batch(sqs_record("{broken", "bad-1"), *records), None)
    assert summary["decision"]["action"] == "start-build"
    assert summary["ignored"][0]["messageId"] == "bad-1"
    assert len(started_builds(image_builder)) == 1


def test_available_notification_tags_every_output_ami_with_the_digest(world):
    s3, image_builder = world
    image_arn = app.lambda_handler(batch(*upload(s3, *FIVE)), None)["decision"]["imageArn"]
    message = image_builder.run_build(image_arn)

    summary = app.lambda_handler(batch(notification(message)), None)

    digest = current_digest(s3)
    amis = {(ami["region"], ami["image"]) for ami in message["outputResources"]["amis"]}
    assert {(t["region"], t["amiId"]) for t in summary["taggedAmis"]} == amis
    for region, ami_id in amis:
        tags = SESSION.client("ec2", region_name=region).describe_tags(
            Filters=[{"Name": "resource-id", "Values": [ami_id]}]
        )["Tags"]
        assert {t["Key"]: t["Value"] for t in tags}[logic.PAYLOAD_DIGEST_TAG] == digest


def test_scheduled_build_finishing_starts_no_duplicate_build(world):
    s3, image_builder = world
    first = app.lambda_handler(batch(*upload(s3, *FIVE)), None)["decision"]["imageArn"]
    app.lambda_handler(batch(notification(image_builder.run_build(first))), None)
    scheduled = image_builder.start_scheduled_build(PIPELINE_ARN)  # the parent image changed

    message = image_builder.run_build(scheduled)
    summary = app.lambda_handler(batch(notification(message)), None)

    assert message["buildType"] == "SCHEDULED" and logic.PAYLOAD_DIGEST_TAG not in message["tags"]
    assert summary["decision"]["action"] == "skip"
    assert summary["decision"]["imageArn"] == first  # the newest image with these payloads
    assert summary["taggedAmis"] == []  # nothing says which payloads the scheduled build ran
    assert len(started_builds(image_builder)) == 1


def test_upload_during_a_scheduled_build_is_built_when_it_finishes(world):
    s3, image_builder = world
    first = app.lambda_handler(batch(*upload(s3, *FIVE)), None)["decision"]["imageArn"]
    app.lambda_handler(batch(notification(image_builder.run_build(first))), None)
    scheduled = image_builder.start_scheduled_build(PIPELINE_ARN)

    during = app.lambda_handler(batch(*upload(s3, "payloads/30-late.sh")), None)
    after = app.lambda_handler(batch(notification(image_builder.run_build(scheduled))), None)

    assert during["decision"]["action"] == "skip"
    assert during["decision"]["reason"].startswith("build in flight")
    assert after["decision"]["action"] == "start-build"
    assert digests_of_started_builds(image_builder)[1] == current_digest(s3)


def cancelled_event_records(image_builder) -> list[dict]:
    """What the cancelled-build rule delivers to the queue: its matching state change events."""
    # The sandbox names the images of PIPELINE_ARN after the pipeline: golden-ami.
    prefix = image_arn_prefix("aws", REGION, ACCOUNT, "golden-ami")
    pattern = EventPattern.load(json.dumps(cancelled_build_pattern(prefix)))
    return [
        sqs_record(json.dumps(event), message_id=event["id"])
        for event in image_builder.state_change_events
        if pattern.matches_event(event)
    ]


def test_upload_during_a_cancelled_build_is_built_after_the_cancellation(world):
    s3, image_builder = world
    first = app.lambda_handler(batch(*upload(s3, *FIVE)), None)["decision"]["imageArn"]
    image_builder.advance(first)
    during = app.lambda_handler(batch(*upload(s3, "payloads/30-late.sh")), None)
    assert during["decision"]["action"] == "skip"
    notifications_before = list(image_builder.notifications)

    image_builder.cancel(first)  # an operator stops the build

    assert image_builder.notifications == notifications_before  # SNS hears nothing
    [record] = cancelled_event_records(image_builder)
    after = app.lambda_handler(batch(record), None)
    assert after["decision"]["action"] == "start-build"
    assert after["decision"]["payloadCount"] == 6
    assert digests_of_started_builds(image_builder)[1] == current_digest(s3)


def test_cancelled_build_of_unchanged_payloads_is_not_restarted(world):
    s3, image_builder = world
    first = app.lambda_handler(batch(*upload(s3, *FIVE)), None)["decision"]["imageArn"]
    image_builder.cancel(first)

    [record] = cancelled_event_records(image_builder)
    summary = app.lambda_handler(batch(record), None)

    assert summary["imageEvents"] == 1
    assert summary["decision"]["action"] == "skip"
    assert "CANCELLED" in summary["decision"]["reason"]  # the operator's word stands
    assert len(started_builds(image_builder)) == 1


def test_no_payloads_under_prefix_starts_nothing(world):
    s3, image_builder = world
    s3.put_object(Bucket=BUCKET, Key="payloads/10-only.sh", Body=b"true")
    s3.delete_object(Bucket=BUCKET, Key="payloads/10-only.sh")
    summary = app.lambda_handler(batch(upload_event("payloads/10-only.sh")), None)
    assert summary["decision"]["reason"] == "no payloads under prefix"
    assert started_builds(image_builder) == []


# --- failures surface so SQS delivers the batch again --------------------------------------


class _Body:
    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_):
        yield self._content


def test_throttled_listing_is_retried_then_surfaces_and_the_retry_builds(world):
    s3, image_builder = world
    records = upload(s3, *FIVE)
    session = boto3.Session(region_name=REGION)
    attempts = []

    def slow_down(request, **_):
        attempts.append(request.url)
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
        return AWSResponse(request.url, 503, {}, _Body(body))

    session.events.register_first("before-send.s3.ListObjectVersions", slow_down)
    with pytest.raises(botocore.exceptions.ClientError, match="SlowDown"):
        app.handle_batch(batch(*records), SETTINGS, BuildTriggerAws(session, REGION))
    assert len(attempts) == MAX_ATTEMPTS
    assert started_builds(image_builder) == []

    redelivered = app.lambda_handler(batch(*records), None)
    assert redelivered["decision"]["action"] == "start-build"


def test_throttled_start_surfaces_and_the_redelivered_batch_starts_one_build(world):
    s3, image_builder = world
    records = upload(s3, *FIVE)
    session = boto3.Session(region_name=REGION)

    def rate_limited(**_):
        error = {"Code": "CallRateLimitExceededException", "Message": "Rate exceeded"}
        return AWSResponse("https://imagebuilder", 429, {}, None), {"Error": error}

    session.events.register_first(
        "before-call.imagebuilder.StartImagePipelineExecution", rate_limited
    )
    aws = BuildTriggerAws(session, REGION)
    client = session.client("imagebuilder")
    with pytest.raises(client.exceptions.CallRateLimitExceededException):
        app.handle_batch(batch(*records), SETTINGS, aws)
    assert started_builds(image_builder) == []

    assert app.lambda_handler(batch(*records), None)["decision"]["action"] == "start-build"
    assert app.lambda_handler(batch(*records), None)["decision"]["action"] == "skip"
    assert len(started_builds(image_builder)) == 1


def test_tagging_failure_after_the_start_surfaces_and_the_build_runs_on(world):
    s3, image_builder = world
    records = upload(s3, *FIVE)
    session = boto3.Session(region_name=REGION)

    def unavailable(**_):
        error = {"Code": "ServiceException", "Message": "internal error"}
        return AWSResponse("https://imagebuilder", 500, {}, None), {"Error": error}

    session.events.register_first("before-call.imagebuilder.TagResource", unavailable)
    with pytest.raises(botocore.exceptions.ClientError, match="ServiceException"):
        app.handle_batch(batch(*records), SETTINGS, BuildTriggerAws(session, REGION))

    # The build was started untagged; the redelivered batch sees it in flight.
    image_arn = f"arn:aws:imagebuilder:{REGION}:{ACCOUNT}:image/golden-ami/1.0.0/1"
    assert image_builder.image(image_arn).tags == {}
    redelivered = app.lambda_handler(batch(*records), None)
    assert redelivered["decision"]["reason"].startswith("build in flight")
    assert len(started_builds(image_builder)) == 1


def test_missing_pipeline_surfaces_as_not_found(world, monkeypatch):
    s3, _ = world
    monkeypatch.setenv("PIPELINE_ARN", PIPELINE_ARN.replace("golden-ami", "deleted"))
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFoundException"):
        app.lambda_handler(batch(*upload(s3, FIVE[0])), None)


def test_client_config_retries_in_standard_mode_with_timeouts():
    assert CLIENT_CONFIG.retries["mode"] == "standard"
    assert CLIENT_CONFIG.connect_timeout and CLIENT_CONFIG.read_timeout


def test_summary_is_json_serialisable(world):
    s3, _ = world
    summary = app.lambda_handler(batch(*upload(s3, *FIVE)), None)
    assert json.loads(json.dumps(summary)) == copy.deepcopy(summary)
