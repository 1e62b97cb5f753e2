"""Lambda entry point of the build trigger: one SQS batch in, at most one build decision out.

The queue receives payload upload events (EventBridge, default or CloudTrail shape) and the
pipeline's image-state notifications (SNS envelopes). Its event source mapping batches for the
settle window, so a burst of uploads arrives as one batch. Any failing AWS call fails the whole
batch: every record only means "evaluate again", so retrying all of them is exactly right.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import boto3

from handlers.build_trigger import logic
from handlers.build_trigger.aws import BuildTriggerAws
from handlers.common.log import get_logger, log

LOGGER = get_logger(__name__)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = logic.Settings.from_environ(os.environ)
    return handle_batch(event, settings, _aws(settings.region))


@functools.cache
def _aws(region: str) -> BuildTriggerAws:
    """Clients live as long as the execution environment: warm invocations reuse them."""
    return BuildTriggerAws(boto3.Session(), region)


def handle_batch(
    event: dict[str, Any], settings: logic.Settings, aws: BuildTriggerAws
) -> dict[str, Any]:
    records = event.get("Records") or []
    ignored, payload_changes, image_changes = [], [], []
    for record in records:
        classified = logic.classify_record(record.get("body"), settings)
        if isinstance(classified, logic.Ignored):
            entry = {"messageId": record.get("messageId"), "reason": classified.reason}
            log(LOGGER, "record ignored", level=logging.WARNING, **entry)
            ignored.append(entry)
        elif isinstance(classified, logic.PayloadChanged):
            payload_changes.append(classified)
        else:
            image_changes.append(classified)

    summary: dict[str, Any] = {
        "records": len(records),
        "payloadEvents": len(payload_changes),
        "imageEvents": len(image_changes),
        "ignored": ignored,
        "taggedAmis": [],
    }
    if not payload_changes and not image_changes:
        summary["decision"] = {"action": "none", "reason": "no relevant record in batch"}
        log(LOGGER, "no relevant record", **summary)
        return summary

    payloads = [
        (key, version_id)
        for key, version_id in aws.latest_payload_versions(
            settings.bucket_name, settings.payload_prefix
        )
        if settings.is_payload_key(key)
    ]
    images = aws.pipeline_images(settings.pipeline_arn)
    decision = logic.decide(settings.pipeline_arn, payloads, images)
    summary["decision"] = decision.summary()
    if decision.start_build:
        assert decision.client_token and decision.digest, "decide() sets both to start a build"
        summary["decision"]["imageArn"] = aws.start_build(
            settings.pipeline_arn, decision.client_token, decision.digest
        )
    log(LOGGER, "build decision", pipelineArn=settings.pipeline_arn, **summary["decision"])

    for region, ami_id, digest in logic.amis_to_tag(image_changes, images):
        aws.tag_ami(region, ami_id, digest)
        summary["taggedAmis"].append({"region": region, "amiId": ami_id, "digest": digest})
    if summary["taggedAmis"]:
        log(LOGGER, "output AMIs tagged with payload digest", amis=summary["taggedAmis"])
    return summary
