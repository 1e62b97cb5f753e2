"""Pure decisions of the build trigger: which queue records matter, and whether to start a build.

The trigger is level-based, not edge-based: every relevant record only means "look again". The
decision depends on the payload prefix's current state (digest of sorted key + version id) and
the pipeline's images, never on the record itself. That makes a burst start one build, a
redelivered event start none, and the end of a running build pick up uploads that arrived while
it ran: its SNS notification (AVAILABLE, FAILED) or, for a cancelled build, which Image Builder
does not notify, the EventBridge image state change event.

Only images this trigger started carry a payload digest. A scheduled build (the pipeline's
`buildSchedule`: a new parent image) has none; it says nothing about which payloads it ran, so
the comparison is with the newest image that carries a digest, never with a scheduled one.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PAYLOAD_DIGEST_TAG = "golden-ami:payload-digest"
PAYLOAD_SUFFIX = ".sh"

# Fixed forever: changing it changes every client token and defeats idempotency across a deploy.
CLIENT_TOKEN_NAMESPACE = uuid.UUID("0b5c3f0e-4a0e-5d2c-9a57-6f1d2c8e7b41")

IN_FLIGHT_STATUSES = frozenset(
    {"PENDING", "CREATING", "BUILDING", "TESTING", "DISTRIBUTING", "INTEGRATING"}
)

CLOUDTRAIL_WRITE_EVENTS = frozenset({"PutObject", "CompleteMultipartUpload", "CopyObject"})
IMAGE_STATE_CHANGE = "EC2 Image Builder Image State Change"

_PIPELINE_ARN = re.compile(
    r"^arn:aws[^:]*:imagebuilder:(?P<region>[^:]+):(?P<account>[0-9]{12}):image-pipeline/[a-z0-9-_]+$"
)
_REQUIRED_ENV = ("PIPELINE_ARN", "BUCKET_NAME", "PAYLOAD_PREFIX")


class SettingsError(ValueError):
    """The function's environment is wrong: every invocation would fail the same way."""


@dataclass(frozen=True)
class Settings:
    pipeline_arn: str
    bucket_name: str
    payload_prefix: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        missing = [name for name in _REQUIRED_ENV if not environ.get(name)]
        if missing:
            raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")
        pipeline_arn = environ["PIPELINE_ARN"]
        if not _PIPELINE_ARN.match(pipeline_arn):
            raise SettingsError(
                f"PIPELINE_ARN={pipeline_arn!r} is not an Image Builder image-pipeline ARN"
            )
        return cls(pipeline_arn, environ["BUCKET_NAME"], environ["PAYLOAD_PREFIX"])

    @property
    def region(self) -> str:
        match = _PIPELINE_ARN.match(self.pipeline_arn)
        assert match, "from_environment validated the ARN"
        return match["region"]

    def is_payload_key(self, key: str) -> bool:
        return key.startswith(self.payload_prefix) and key.endswith(PAYLOAD_SUFFIX)


# --- queue records -------------------------------------------------------------------------


@dataclass(frozen=True)
class PayloadChanged:
    key: str
    source: str  # "eventbridge" or "cloudtrail:<eventName>"


@dataclass(frozen=True)
class ImageStateChanged:
    image_arn: str
    status: str


@dataclass(frozen=True)
class Ignored:
    reason: str


Record = PayloadChanged | ImageStateChanged | Ignored


def classify_record(body: str, settings: Settings) -> Record:
    """What one SQS message body means for this pipeline; never raises on bad input."""
    try:
        message = json.loads(body)
    except (TypeError, ValueError) as error:
        return Ignored(f"body is not JSON: {error}")
    if not isinstance(message, dict):
        return Ignored(f"body is a JSON {type(message).__name__}, not an object")
    if message.get("Type") == "Notification" and "TopicArn" in message:
        return _classify_image_notification(message, settings)
    if message.get("source") == "aws.s3" and isinstance(message.get("detail"), dict):
        return _classify_s3_event(message, settings)
    if message.get("source") == "aws.imagebuilder" and isinstance(message.get("detail"), dict):
        return _classify_image_state_event(message)
    return Ignored("neither an S3 or Image Builder event nor an SNS notification")


def _classify_s3_event(event: dict[str, Any], settings: Settings) -> Record:
    detail = event["detail"]
    detail_type = event.get("detail-type")
    if detail_type == "Object Created":
        bucket = (detail.get("bucket") or {}).get("name")
        key = (detail.get("object") or {}).get("key")
        source = "eventbridge"
    elif detail_type == "AWS API Call via CloudTrail":
        event_name = detail.get("eventName")
        if event_name not in CLOUDTRAIL_WRITE_EVENTS:
            return Ignored(f"CloudTrail event {event_name!r} does not create objects")
        if detail.get("errorCode"):
            return Ignored(f"CloudTrail {event_name} failed with {detail['errorCode']}")
        request = detail.get("requestParameters") or {}
        bucket, key = request.get("bucketName"), request.get("key")
        source = f"cloudtrail:{event_name}"
    else:
        return Ignored(f"S3 event type {detail_type!r} is not an object creation")
    if not isinstance(bucket, str) or not isinstance(key, str):
        return Ignored(f"S3 {detail_type!r} event without bucket name and object key")
    if bucket != settings.bucket_name:
        return Ignored(f"object in bucket {bucket!r}, not {settings.bucket_name!r}")
    if not settings.is_payload_key(key):
        return Ignored(
            f"key {key!r} is not a {PAYLOAD_SUFFIX} payload under {settings.payload_prefix!r}"
        )
    return PayloadChanged(key=key, source=source)


def _classify_image_notification(envelope: dict[str, Any], settings: Settings) -> Record:
    try:
        # Plain json keeps `semver` (wider than 64 bits) an exact int; it is not used anyway.
        message = json.loads(envelope.get("Message", ""))
    except (TypeError, ValueError) as error:
        return Ignored(f"SNS Message from {envelope['TopicArn']} is not JSON: {error}")
    if not isinstance(message, dict) or not isinstance(message.get("state"), dict):
        return Ignored(f"SNS Message from {envelope['TopicArn']} is not an Image Builder image")
    pipeline_arn = message.get("sourcePipelineArn")
    if pipeline_arn != settings.pipeline_arn:
        return Ignored(f"image of pipeline {pipeline_arn!r}, not {settings.pipeline_arn!r}")
    image_arn, status = message.get("arn"), message["state"].get("status")
    if not isinstance(image_arn, str) or not isinstance(status, str):
        return Ignored("Image Builder message without image arn and state.status")
    return ImageStateChanged(image_arn=image_arn, status=status)


def _classify_image_state_event(event: dict[str, Any]) -> Record:
    """An Image Builder image state change (the cancel rule routes CANCELLED ones here).

    The event names the image (`resources`) but not its pipeline; an image of another pipeline
    of the account only costs one evaluation, which finds nothing to do.
    """
    if event.get("detail-type") != IMAGE_STATE_CHANGE:
        return Ignored(f"Image Builder event {event.get('detail-type')!r} is no image state change")
    state = event["detail"].get("state")
    status = state.get("status") if isinstance(state, dict) else None
    resources = event.get("resources")
    image_arn = resources[0] if isinstance(resources, list) and resources else None
    if not isinstance(status, str) or not isinstance(image_arn, str):
        return Ignored("image state change without resources[0] and detail.state.status")
    return ImageStateChanged(image_arn=image_arn, status=status)


# --- payload state -------------------------------------------------------------------------


def payload_digest(payloads: Iterable[tuple[str, str]]) -> str:
    """sha256 hex over the sorted (key, version id) pairs; JSON keeps any key unambiguous."""
    canonical = json.dumps(sorted(payloads), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def client_token(pipeline_arn: str, digest: str) -> str:
    """Deterministic StartImagePipelineExecution token: 36 characters, the API's usable limit."""
    return str(uuid.uuid5(CLIENT_TOKEN_NAMESPACE, f"{pipeline_arn}\n{digest}"))


# --- decision --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineImage:
    arn: str
    status: str
    date_created: datetime
    payload_digest: str | None
    amis: tuple[tuple[str, str], ...] = ()  # (region, ami id)


@dataclass(frozen=True)
class Decision:
    start_build: bool
    reason: str
    digest: str | None = None
    client_token: str | None = None
    image_arn: str | None = None  # the image the decision is about (in flight, or newest)
    payload_count: int = 0

    def summary(self) -> dict[str, Any]:
        summary = {
            "action": "start-build" if self.start_build else "skip",
            "reason": self.reason,
            "payloadCount": self.payload_count,
            "digest": self.digest,
            "clientToken": self.client_token,
            "imageArn": self.image_arn,
        }
        return {key: value for key, value in summary.items() if value is not None}


def decide(
    pipeline_arn: str, payloads: Sequence[tuple[str, str]], images: Sequence[PipelineImage]
) -> Decision:
    """Start a build only for payloads no image of this pipeline has been built from yet.

    Never beside a build in flight (scheduled ones included); compared with the newest image
    that carries a payload digest (scheduled builds carry none).
    """
    if not payloads:
        return Decision(False, "no payloads under prefix")
    digest, count = payload_digest(payloads), len(payloads)
    in_flight = [image for image in images if image.status in IN_FLIGHT_STATUSES]
    if in_flight:
        return Decision(
            False,
            "build in flight; its completion notification re-triggers evaluation",
            digest=digest,
            image_arn=newest(in_flight).arn,
            payload_count=count,
        )
    with_digest = [image for image in images if image.payload_digest]
    latest = newest(with_digest) if with_digest else None
    if latest is not None and latest.payload_digest == digest:
        reason = f"newest image already built from these payloads ({latest.status})"
        if latest.status != "AVAILABLE":
            reason += "; not retried: upload a changed payload to build again"
        return Decision(False, reason, digest, image_arn=latest.arn, payload_count=count)
    return Decision(
        True,
        "payloads changed since the newest image"
        if latest
        else "first build of this pipeline from the payloads",
        digest=digest,
        client_token=client_token(pipeline_arn, digest),
        payload_count=count,
    )


def newest(images: Iterable[PipelineImage]) -> PipelineImage:
    return max(images, key=lambda image: image.date_created)


def amis_to_tag(
    notified: Iterable[ImageStateChanged], images: Sequence[PipelineImage]
) -> list[tuple[str, str, str]]:
    """(region, ami id, digest) for every AVAILABLE notified image that carries a digest.

    Image Builder's distribution tags are static, so the per-build digest reaches the AMIs
    only through this step. Image state comes from the API, not from the message.
    """
    notified_arns = {change.image_arn for change in notified}
    return [
        (region, ami_id, image.payload_digest)
        for image in images
        if image.arn in notified_arns and image.status == "AVAILABLE" and image.payload_digest
        for region, ami_id in image.amis
    ]
