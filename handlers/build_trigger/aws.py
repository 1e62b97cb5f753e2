"""Thin boto3 adapter of the build trigger: each method is one API call pattern, no decisions.

IAM actions used (grant exactly these):
  s3:ListBucketVersions                      ListObjectVersions on the payload bucket (prefix)
  imagebuilder:ListImagePipelineImages       on the pipeline ARN
  imagebuilder:StartImagePipelineExecution   on the pipeline ARN
  imagebuilder:GetImagePipeline              on the pipeline ARN: a dependent action of the
                                             start (Service Authorization Reference), not called
  imagebuilder:TagResource                   on the new image (the payload digest tag)
  ec2:CreateTags                             on the output AMIs (arn:aws:ec2:<region>::image/*)

The Lambda runtime's boto3 is older than the tests': every request member the handlers use
exists in botocore 1.35.53 (tests/sdk_floor.py). StartImagePipelineExecution's own `tags` would
tag the image in the same call, but botocore before 1.40.41 rejects that member.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config

from handlers.build_trigger.logic import PAYLOAD_DIGEST_TAG, PipelineImage

# Standard mode retries throttling and transient errors with backoff; whatever still fails
# surfaces, and the SQS message is received again after its visibility timeout.
MAX_ATTEMPTS = 5  # the first call included
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    connect_timeout=5,
    read_timeout=15,
)


class BuildTriggerAws:
    def __init__(self, session: boto3.Session, region: str) -> None:
        self._session = session
        self._s3 = session.client("s3", region_name=region, config=CLIENT_CONFIG)
        self._imagebuilder = session.client(
            "imagebuilder", region_name=region, config=CLIENT_CONFIG
        )
        self._ec2_by_region: dict[str, object] = {}

    def latest_payload_versions(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        """(key, version id) of every object under `prefix` whose latest version is not deleted."""
        paginator = self._s3.get_paginator("list_object_versions")
        return [
            (version["Key"], version["VersionId"])
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for version in page.get("Versions", [])
            if version["IsLatest"]
        ]

    def pipeline_images(self, pipeline_arn: str) -> list[PipelineImage]:
        paginator = self._imagebuilder.get_paginator("list_image_pipeline_images")
        return [
            _pipeline_image(summary)
            for page in paginator.paginate(imagePipelineArn=pipeline_arn)
            for summary in page.get("imageSummaryList", [])
        ]

    def start_build(self, pipeline_arn: str, client_token: str, digest: str) -> str:
        """Start the build, then tag its image with the digest.

        Should the tagging fail, the batch fails and is received again; the build runs on
        untagged, like one started by hand, and when it ends the payloads are compared with the
        newest tagged image again: the same client token then returns the same image (while
        Image Builder remembers the token) and this tags it, or one more build runs.
        """
        image_arn = self._imagebuilder.start_image_pipeline_execution(
            imagePipelineArn=pipeline_arn, clientToken=client_token
        )["imageBuildVersionArn"]
        self._imagebuilder.tag_resource(resourceArn=image_arn, tags={PAYLOAD_DIGEST_TAG: digest})
        return image_arn

    def tag_ami(self, region: str, ami_id: str, digest: str) -> None:
        self._ec2(region).create_tags(
            Resources=[ami_id], Tags=[{"Key": PAYLOAD_DIGEST_TAG, "Value": digest}]
        )

    def _ec2(self, region: str):
        if region not in self._ec2_by_region:
            self._ec2_by_region[region] = self._session.client(
                "ec2", region_name=region, config=CLIENT_CONFIG
            )
        return self._ec2_by_region[region]


def _pipeline_image(summary: Mapping[str, Any]) -> PipelineImage:
    amis = (summary.get("outputResources") or {}).get("amis", [])
    return PipelineImage(
        arn=summary["arn"],
        status=summary["state"]["status"],
        # Image Builder's DateTime members are ISO 8601 strings ("2024-03-11T17:26:01.386Z").
        date_created=datetime.fromisoformat(summary["dateCreated"].replace("Z", "+00:00")),
        payload_digest=(summary.get("tags") or {}).get(PAYLOAD_DIGEST_TAG),
        amis=tuple((ami["region"], ami["image"]) for ami in amis),
    )
