"""PayloadBucket: the S3 bucket whose `.sh` payloads become the golden AMI."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components import policies

# Parts left by failed multipart uploads are invisible, but billed; a week covers any retry.
ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS = 7


@dataclass(frozen=True)
class PayloadBucketArgs:
    bucket_name: str = ""  # "" = generated from the component name
    noncurrent_version_expiration_days: int = 0  # 0 = keep every old payload version
    tags: Mapping[str, str] = field(default_factory=dict)


class PayloadBucket(pulumi.ComponentResource):
    """Versioned, encrypted, private, TLS-only bucket that tells EventBridge about every object.

    Versioning lets each image record exactly which payload versions it ran; EventBridge
    notifications (not a bucket notification target) let any number of rules subscribe and
    give at-least-once delivery the build trigger de-duplicates.
    """

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: PayloadBucketArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("golden-ami:payload_bucket:PayloadBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        bucket = aws.s3.Bucket(
            name,
            bucket=args.bucket_name or None,
            tags=dict(args.tags),
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status="Enabled"
            ),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                )
            ],
            opts=child,
        )
        # S3 rejects concurrent configuration changes on one bucket ("conflicting conditional
        # operation"), so the policy waits for the public access block.
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(policies.tls_only_bucket_policy(arn))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access_block]),
        )
        aws.s3.BucketNotification(
            f"{name}-eventbridge",
            bucket=bucket.id,
            eventbridge=True,
            opts=child,
        )
        if args.noncurrent_version_expiration_days:
            aws.s3.BucketLifecycleConfiguration(
                f"{name}-lifecycle",
                bucket=bucket.id,
                rules=[
                    aws.s3.BucketLifecycleConfigurationRuleArgs(
                        id="expire-noncurrent-versions",
                        status="Enabled",
                        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                        noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                            noncurrent_days=args.noncurrent_version_expiration_days
                        ),
                        abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                            days_after_initiation=ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS
                        ),
                    )
                ],
                # Lifecycle rules on noncurrent versions need versioning switched on first.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
            )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})
