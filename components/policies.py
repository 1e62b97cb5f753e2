"""IAM and resource policy documents, as plain dicts built from plain strings.

Components resolve their Outputs and call these, so tests, the IAM linter and the docs generator
read exactly the documents that get deployed. Every grant names the ARNs the stack creates or
is configured with; where an API has no resource-level permission a condition narrows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Policy = dict[str, Any]

# The tag the build trigger writes on Image Builder images and their AMIs (handlers/build_trigger).
PAYLOAD_DIGEST_TAG = "golden-ami:payload-digest"


def _document(*statements: dict[str, Any]) -> Policy:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def service_trust_policy(service: str) -> Policy:
    """Trust policy letting one AWS service (e.g. `lambda.amazonaws.com`) assume the role."""
    return _document(
        {
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
        }
    )


def lambda_trust_policy() -> Policy:
    return service_trust_policy("lambda.amazonaws.com")


def lambda_log_group_arn(region: str, account_id: str, function_name: str) -> str:
    """The ARN of the log group Lambda writes `function_name`'s logs to."""
    return f"arn:aws:logs:{region}:{account_id}:log-group:/aws/lambda/{function_name}"


def tls_only_bucket_policy(bucket_arn: str) -> Policy:
    """Deny every request to the bucket and its objects that does not arrive over TLS."""
    return _document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    )


def _list_prefix_statement(actions: list[str], bucket_arn: str, prefix: str) -> dict[str, Any]:
    # Listing has no object-level resource: the s3:prefix condition keeps it to the payloads.
    return {
        "Sid": "ListPayloadPrefix",
        "Effect": "Allow",
        "Action": actions,
        "Resource": bucket_arn,
        "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}},
    }


def build_instance_payload_policy(
    bucket_arn: str, payload_prefix: str, ami_kms_key_arns: Sequence[str] = ()
) -> Policy:
    """What the build instance needs beyond the AWS managed Image Builder / SSM policies.

    It lists the payload prefix and reads any version of the objects under it (the component
    downloads the exact versions it records). With AMI encryption it also needs the key for
    the snapshots it writes.
    """
    statements = [
        _list_prefix_statement(["s3:ListBucket"], bucket_arn, payload_prefix),
        {
            "Sid": "ReadPayloads",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": f"{bucket_arn}/{payload_prefix}*",
        },
    ]
    if ami_kms_key_arns:
        statements.append(
            {
                "Sid": "EncryptImageVolumes",
                "Effect": "Allow",
                "Action": [
                    "kms:Decrypt",
                    "kms:Encrypt",
                    "kms:GenerateDataKeyWithoutPlaintext",
                    "kms:ReEncrypt*",
                    "kms:CreateGrant",
                    "kms:DescribeKey",
                ],
                "Resource": list(ami_kms_key_arns),
            }
        )
    return _document(*statements)


def build_trigger_policy(
    *,
    bucket_arn: str,
    payload_prefix: str,
    pipeline_arn: str,
    image_arn_pattern: str,
    queue_arn: str,
    log_group_arn: str,
    partition: str,
    regions: Iterable[str],
) -> Policy:
    """The build-trigger Lambda: exactly the calls in handlers/build_trigger/aws.py.

    `image_arn_pattern` covers the images the pipeline's recipe produces
    (`arn:aws:imagebuilder:<region>:<account>:image/<recipe name>/*`): starting a build
    tags the new image with the payload digest (tag-on-create needs imagebuilder:TagResource).
    """
    return _document(
        _list_prefix_statement(["s3:ListBucketVersions"], bucket_arn, payload_prefix),
        {
            "Sid": "RunPipeline",
            "Effect": "Allow",
            "Action": [
                "imagebuilder:ListImagePipelineImages",
                "imagebuilder:StartImagePipelineExecution",
            ],
            "Resource": pipeline_arn,
        },
        {
            "Sid": "TagNewImage",
            "Effect": "Allow",
            "Action": "imagebuilder:TagResource",
            "Resource": image_arn_pattern,
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": [PAYLOAD_DIGEST_TAG]}},
        },
        {
            "Sid": "TagOutputAmis",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [f"arn:{partition}:ec2:{region}::image/*" for region in regions],
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": [PAYLOAD_DIGEST_TAG]}},
        },
        {
            "Sid": "ConsumeTriggerQueue",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            "Resource": queue_arn,
        },
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{log_group_arn}:*",
        },
    )


def build_trigger_queue_policy(queue_arn: str, rule_arn: str, topic_arn: str) -> Policy:
    """Only the upload rule and the image-state topic may send to the trigger queue."""
    return _document(
        {
            "Sid": "UploadEvents",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        },
        {
            "Sid": "ImageStateNotifications",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        },
    )


def image_builder_service_role_arn(partition: str, account_id: str) -> str:
    """Image Builder publishes notifications and uses keys as its service-linked role."""
    return (
        f"arn:{partition}:iam::{account_id}:role/aws-service-role/"
        "imagebuilder.amazonaws.com/AWSServiceRoleForImageBuilder"
    )


def image_state_topic_policy(topic_arn: str, partition: str, account_id: str) -> Policy:
    """Image Builder may publish to the image-state topic; nobody may use it without TLS."""
    return _document(
        {
            "Sid": "ImageBuilderPublishes",
            "Effect": "Allow",
            "Principal": {"AWS": image_builder_service_role_arn(partition, account_id)},
            "Action": "sns:Publish",
            "Resource": topic_arn,
        },
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sns:Publish",
            "Resource": topic_arn,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    )


def image_state_key_policy(partition: str, account_id: str) -> Policy:
    """Key of the image-state topic: the account administers it, Image Builder encrypts with it.

    Image Builder cannot publish to a topic under the AWS managed `aws/sns` key (its policy
    cannot name the service-linked role), hence a customer managed key.
    """
    return _document(
        {
            "Sid": "AccountAdministersKey",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
        {
            "Sid": "ImageBuilderEncryptsNotifications",
            "Effect": "Allow",
            "Principal": {"AWS": image_builder_service_role_arn(partition, account_id)},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
        },
    )
