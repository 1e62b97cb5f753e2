"""IAM and resource policy documents, as plain dicts built from plain strings.

Components resolve their Outputs and call these, so tests, the IAM linter and the docs generator
read exactly the documents that get deployed. Every grant names the ARNs the stack creates or
is configured with; where an API has no resource-level permission a condition narrows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from handlers.recorder.logic import IN_USE_TAG
from handlers.refresh.app import METRIC_NAMESPACE as REFRESH_METRIC_NAMESPACE
from handlers.refresh.rules import HELD_TAG, QUARANTINE_REVIEWED_TAG, QUARANTINE_TAG

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


def build_instance_payload_policy(bucket_arn: str, payload_prefix: str) -> Policy:
    """What the build instance needs beyond the AWS managed Image Builder / SSM policies.

    It lists the versions under the payload prefix (ListObjectVersions is authorised by
    s3:ListBucketVersions, not s3:ListBucket) and reads any version of the objects under it:
    the component downloads the exact versions it records. (AMI encryption happens during
    distribution, as Image Builder's service-linked role, so the instance needs no key.)
    """
    return _document(
        _list_prefix_statement(["s3:ListBucketVersions"], bucket_arn, payload_prefix),
        {
            "Sid": "ReadPayloads",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": f"{bucket_arn}/{payload_prefix}*",
        },
    )


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
    (`arn:aws:imagebuilder:<region>:<account>:image/<recipe name>/*`): the trigger tags a new
    image with the payload digest, and only those images' AMIs may get the digest tag.
    `imagebuilder:GetImagePipeline` is a dependent action of StartImagePipelineExecution in the
    Service Authorization Reference: the caller must also be allowed to read the pipeline.
    """
    return _document(
        _list_prefix_statement(["s3:ListBucketVersions"], bucket_arn, payload_prefix),
        {
            "Sid": "RunPipeline",
            "Effect": "Allow",
            "Action": [
                "imagebuilder:ListImagePipelineImages",
                "imagebuilder:StartImagePipelineExecution",
                "imagebuilder:GetImagePipeline",
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
            # Image Builder tags each AMI it distributes with the ARN of its image.
            "Condition": {
                "ForAllValues:StringEquals": {"aws:TagKeys": [PAYLOAD_DIGEST_TAG]},
                "StringLike": {"aws:ResourceTag/Ec2ImageBuilderArn": image_arn_pattern},
            },
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


def build_trigger_queue_policy(
    queue_arn: str, rule_arn: str, topic_arn: str, cancelled_rule_arn: str
) -> Policy:
    """Only the upload rule, the image-state topic and the cancelled-build rule may send to
    the trigger queue."""
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
        {
            "Sid": "CancelledBuildEvents",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": cancelled_rule_arn}},
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


# --- infra: fan-out (OrgFanout) ------------------------------------------------------------------

# CloudWatch namespace of the fan-out's outcome metrics (handlers/fanout reads it from its env).
FANOUT_METRIC_NAMESPACE = "GoldenAmi"


def _write_own_logs(log_group_arns: Iterable[str]) -> dict[str, Any]:
    # The components create the log groups (with retention), so no logs:CreateLogGroup.
    return {
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": sorted(f"{arn}:*" for arn in log_group_arns),
    }


def fanout_policy(
    *,
    invoke_role_name: str,
    organization_id: str,
    log_group_arn: str,
    account_source: str,
    organizational_unit_ids: Sequence[str] = (),
    list_accounts_role_arn: str = "",
    rollout_table_arn: str = "",
    wave_organizational_unit_ids: Sequence[str] = (),
) -> Policy:
    """The fan-out Lambda's role: list accounts, assume the workload invoke roles, report.

    Rollout waves that name OUs make it walk those OUs too (their accounts form the wave).
    """
    statements = [
        {
            "Sid": "AssumeInvokeRoleInOrganizationAccounts",
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            # Every enrolled account holds a role of this name; the account ids are unknown when
            # the infra stack is deployed, so the Organization condition bounds them.
            "Resource": f"arn:aws:iam::*:role/{invoke_role_name}",
            "Condition": {"StringEquals": {"aws:ResourceOrgID": organization_id}},
        },
        {
            "Sid": "PublishFanoutMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            # PutMetricData has no resource-level permission: the namespace condition bounds it.
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": FANOUT_METRIC_NAMESPACE}},
        },
        _write_own_logs([log_group_arn]),
    ]
    if rollout_table_arn:
        statements.append(
            {
                "Sid": "RecordInvocations",
                "Effect": "Allow",
                "Action": ["dynamodb:BatchWriteItem", "dynamodb:PutItem"],
                "Resource": rollout_table_arn,
            }
        )
    if account_source == "organizations" and list_accounts_role_arn:
        statements.append(
            {
                "Sid": "AssumeListAccountsRole",
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": list_accounts_role_arn,
            }
        )
    elif account_source == "organizations":
        # The Organizations list calls have no resource-level permission (Resource "*" only).
        # The handler lists the whole Organization, or walks the configured OUs' subtrees.
        actions = [] if organizational_unit_ids else ["organizations:ListAccounts"]
        if organizational_unit_ids or wave_organizational_unit_ids:
            actions += [
                "organizations:ListAccountsForParent",
                "organizations:ListOrganizationalUnitsForParent",
            ]
        statements.append(
            {
                "Sid": "ListOrganizationAccounts",
                "Effect": "Allow",
                "Action": actions,
                "Resource": "*",
            }
        )
    return _document(*statements)


# --- workload: refresh Lambda and the cross-account invoke role (RefreshWithRollback) -----------


class RefreshTargetScope(Protocol):
    """What the refresh policy needs to know about one configured group."""

    region: str
    auto_scaling_group_name: str
    launch_template_id: str
    cluster_name: str


def auto_scaling_group_arn(region: str, account_id: str, group_name: str) -> str:
    # The stack does not own the group, so its UUID is unknown: wildcarded.
    return (
        f"arn:aws:autoscaling:{region}:{account_id}:autoScalingGroup:*"
        f":autoScalingGroupName/{group_name}"
    )


def launch_template_arn(region: str, account_id: str, template_id: str) -> str:
    return f"arn:aws:ec2:{region}:{account_id}:launch-template/{template_id}"


def ecs_cluster_arn(region: str, account_id: str, cluster_name: str) -> str:
    return f"arn:aws:ecs:{region}:{account_id}:cluster/{cluster_name}"


def refresh_policy(
    *,
    account_id: str,
    targets: Sequence[RefreshTargetScope],
    ecs_instance_role_arn: str,
    log_group_arns: Iterable[str],
    rollback_alarm_arns: Iterable[str],
) -> Policy:
    """The refresh Lambda's role, across every region of the workload stack (IAM is global)."""
    if not targets:
        raise ValueError("the refresh policy needs at least one target group")
    group_arns = sorted(
        {auto_scaling_group_arn(t.region, account_id, t.auto_scaling_group_name) for t in targets}
    )
    template_arns = sorted(
        {launch_template_arn(t.region, account_id, t.launch_template_id) for t in targets}
    )
    regions = sorted({t.region for t in targets})
    return _document(
        {
            "Sid": "ReadGroupsImagesAndTemplates",
            "Effect": "Allow",
            # Describe calls have no resource-level permission.
            "Action": [
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeInstanceRefreshes",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeLaunchTemplateVersions",
            ],
            "Resource": "*",
        },
        {
            "Sid": "RefreshConfiguredGroups",
            "Effect": "Allow",
            "Action": "autoscaling:StartInstanceRefresh",
            "Resource": group_arns,
        },
        {
            "Sid": "PinConfiguredGroupsToANumberedVersion",
            "Effect": "Allow",
            # Only to pin $Latest/$Default to the number it resolves to (DESIGN §5.2): the
            # update must name a numbered launch-template version (the template itself is bounded
            # by LaunchFromConfiguredTemplates below), and may neither switch the group to a launch
            # configuration nor change its size limits or subnets. What is left open has no
            # condition key in Auto Scaling: a numbered version of a configured template other
            # than the one resolving today, the desired capacity, health-check and termination
            # settings of the configured groups. Pinning needs the first; a refresh can set a
            # configured group's version through DesiredConfiguration anyway.
            "Action": "autoscaling:UpdateAutoScalingGroup",
            "Resource": group_arns,
            "Condition": {
                "Bool": {"autoscaling:LaunchTemplateVersionSpecified": "true"},
                "Null": {
                    "autoscaling:LaunchConfigurationName": "true",
                    "autoscaling:MaxSize": "true",
                    "autoscaling:MinSize": "true",
                    "autoscaling:VPCZoneIdentifiers": "true",
                },
            },
        },
        {
            "Sid": "RecordQuarantineAndHoldOnConfiguredGroups",
            "Effect": "Allow",
            "Action": "autoscaling:CreateOrUpdateTags",
            "Resource": group_arns,
            "Condition": {
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": sorted([QUARANTINE_TAG, HELD_TAG, QUARANTINE_REVIEWED_TAG])
                }
            },
        },
        {
            "Sid": "VersionConfiguredTemplates",
            "Effect": "Allow",
            "Action": "ec2:CreateLaunchTemplateVersion",
            "Resource": template_arns,
        },
        {
            "Sid": "LaunchFromConfiguredTemplates",
            "Effect": "Allow",
            # Auto Scaling checks that the caller may launch from the template it is given.
            # RunInstances authorises many resource types (instance, volume, network interface,
            # subnet, security group, the infra account's image), hence "*" bounded by template.
            "Action": "ec2:RunInstances",
            "Resource": "*",
            "Condition": {"ArnEquals": {"ec2:LaunchTemplate": template_arns}},
        },
        {
            "Sid": "TagInstancesAtLaunch",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [f"arn:aws:ec2:{region}:{account_id}:*" for region in regions],
            "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        },
        {
            "Sid": "PassInstanceRoleToEc2",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": ecs_instance_role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        },
        {
            "Sid": "CheckManagedDraining",
            "Effect": "Allow",
            "Action": ["ecs:DescribeClusters", "ecs:DescribeCapacityProviders"],
            # Clusters are configured; their capacity providers are only found at run time.
            "Resource": sorted(
                {ecs_cluster_arn(t.region, account_id, t.cluster_name) for t in targets}
                | {f"arn:aws:ecs:{region}:{account_id}:capacity-provider/*" for region in regions}
            ),
        },
        {
            "Sid": "ReportResultsOnDefaultBus",
            "Effect": "Allow",
            # One event per group result for the rollout status; the default bus only.
            "Action": "events:PutEvents",
            "Resource": [
                f"arn:aws:events:{region}:{account_id}:event-bus/default" for region in regions
            ],
        },
        {
            "Sid": "PreflightRollbackAlarms",
            "Effect": "Allow",
            # No refresh into a cluster whose rollback alarm is already in ALARM (DESIGN §5.9).
            "Action": "cloudwatch:DescribeAlarms",
            "Resource": sorted(rollback_alarm_arns),
        },
        {
            "Sid": "PublishRefreshOutcomeMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            # PutMetricData has no resource-level permission: the namespace condition bounds it.
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": REFRESH_METRIC_NAMESPACE}},
        },
        _write_own_logs(log_group_arns),
    )


def cloudwatch_alarm_arn(region: str, account_id: str, alarm_name: str) -> str:
    return f"arn:aws:cloudwatch:{region}:{account_id}:alarm:{alarm_name}"


def invoke_role_trust_policy(fanout_role_arn: str, organization_id: str) -> Policy:
    """Only the infra account's fan-out role, and only while it belongs to the Organization."""
    return _document(
        {
            "Effect": "Allow",
            "Principal": {"AWS": fanout_role_arn},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": organization_id}},
        }
    )


def invoke_role_policy(account_id: str, function_name: str) -> Policy:
    """The cross-account role may invoke the refresh Lambda, in every region, and nothing else.

    Every region, not only those the stack deploys to: the fan-out invokes each region of the
    image, and IAM evaluates this policy before Lambda looks the function up. A region without
    the function must answer ResourceNotFoundException (the fan-out reports `not-enrolled`
    there), not AccessDeniedException (`failed`). The name pins the function: nothing else in the
    account, in any region, is covered.
    """
    return _document(
        {
            "Sid": "InvokeRefreshFunctions",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": f"arn:aws:lambda:*:{account_id}:function:{function_name}",
        }
    )


def ecs_errors_delivery_policy(log_group_arns: Iterable[str]) -> Policy:
    """CloudWatch Logs resource policy: EventBridge may write the ECS error events to the groups."""
    return _document(
        {
            "Sid": "EventBridgeDeliversEcsErrors",
            "Effect": "Allow",
            "Principal": {"Service": ["events.amazonaws.com", "delivery.logs.amazonaws.com"]},
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": sorted(f"{arn}:*" for arn in log_group_arns),
        }
    )


# --- infra: rollout status (RolloutStatus) --------------------------------------------------------


def rollout_bus_policy(bus_arn: str, organization_id: str) -> Policy:
    """Any principal of the Organization may put events on the rollout bus, nobody else.

    Workload rules forward their results and refresh ends as their own account; EventBridge
    sets each event's `account` from that sender, which is what the recorder trusts.
    """
    return _document(
        {
            "Sid": "OrganizationAccountsReport",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "events:PutEvents",
            "Resource": bus_arn,
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": organization_id}},
        }
    )


def recorder_policy(
    *,
    table_arn: str,
    log_group_arn: str,
    dead_letter_queue_arn: str,
    partition: str,
    regions: Iterable[str],
    pipeline_name: str,
) -> Policy:
    """The recorder Lambda: exactly the calls in handlers/recorder/aws.py, plus its DLQ."""
    return _document(
        {
            "Sid": "RecordRolloutStatus",
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"],
            "Resource": table_arn,
        },
        {
            "Sid": "ReadImages",
            "Effect": "Allow",
            "Action": "ec2:DescribeImages",
            "Resource": "*",
        },
        {
            "Sid": "MaintainInUseTag",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
            "Resource": [f"arn:{partition}:ec2:{region}::image/*" for region in regions],
            # Only the in-use tag, and only on the AMIs this stack's pipeline distributes.
            "Condition": {
                "ForAllValues:StringEquals": {"aws:TagKeys": [IN_USE_TAG]},
                "StringEquals": {"aws:ResourceTag/golden-ami:pipeline": pipeline_name},
            },
        },
        {
            "Sid": "DeadLetters",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": dead_letter_queue_arn,
        },
        _write_own_logs([log_group_arn]),
    )


def dead_letter_queue_policy(queue_arn: str, rule_arn: str) -> Policy:
    """Events the rollout rule could not deliver to the recorder land in its dead-letter queue."""
    return _document(
        {
            "Sid": "UndeliveredRolloutEvents",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }
    )


def rollout_forwarder_trust_policy(account_id: str) -> Policy:
    """EventBridge may assume the forwarder role, for this account's rules only."""
    return _document(
        {
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        }
    )


def rollout_forwarder_policy(rollout_bus_arn: str) -> Policy:
    """The forwarding rules may put events on the infra account's rollout bus, nothing else."""
    return _document(
        {
            "Sid": "ForwardToRolloutBus",
            "Effect": "Allow",
            "Action": "events:PutEvents",
            "Resource": rollout_bus_arn,
        }
    )


# --- infra: progressive rollout (RolloutWaves) ----------------------------------------------------


def state_machine_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:states:{region}:{account_id}:stateMachine:{name}"


def state_machine_executions_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:states:{region}:{account_id}:execution:{name}:*"


def states_trust_policy(account_id: str) -> Policy:
    """Step Functions, for state machines of this account only (confused-deputy guard)."""
    trust = service_trust_policy("states.amazonaws.com")
    trust["Statement"][0]["Condition"] = {"StringEquals": {"aws:SourceAccount": account_id}}
    return trust


def _rollout_table_statement(sid: str, actions: list[str], table_arn: str) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": table_arn}


def rollout_waves_function_policy(
    *, table_arn: str, state_machine_arn: str, alarm_topic_arn: str, log_group_arn: str
) -> Policy:
    """The waves Lambda: start one execution per image, keep the wave items, notify a halt."""
    statements = [
        _rollout_table_statement(
            "KeepWaveRecords",
            ["dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            table_arn,
        ),
        {
            "Sid": "StartRolloutPerImage",
            "Effect": "Allow",
            "Action": "states:StartExecution",
            "Resource": state_machine_arn,
        },
        _write_own_logs([log_group_arn]),
    ]
    if alarm_topic_arn:
        statements.append(
            {
                "Sid": "NotifyHaltsAndGates",
                "Effect": "Allow",
                "Action": "sns:Publish",
                "Resource": alarm_topic_arn,
            }
        )
    return _document(*statements)


def rollout_state_machine_policy(function_arns: Iterable[str]) -> Policy:
    """The state machine's role: invoke the waves Lambda and the fan-out, nothing else."""
    return _document(
        {
            "Sid": "InvokeRolloutSteps",
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": sorted(function_arns),
        }
    )


def rollout_operator_policy(
    *, table_arn: str, state_machine_arn: str, executions_arn: str
) -> Policy:
    """What `python -m rollout approve|abort|resume` calls (rollout/control.py), for operators."""
    return _document(
        _rollout_table_statement(
            "ReadAndAnnotateWaves", ["dynamodb:Query", "dynamodb:UpdateItem"], table_arn
        ),
        {
            # SendTaskSuccess has no resource-level permission: the task token itself names the
            # execution, and only the waves Lambda's record of a gate holds one.
            "Sid": "AnswerApprovals",
            "Effect": "Allow",
            "Action": "states:SendTaskSuccess",
            "Resource": "*",
        },
        {
            "Sid": "ResumeAfterHalt",
            "Effect": "Allow",
            "Action": "states:StartExecution",
            "Resource": state_machine_arn,
        },
        {
            "Sid": "InspectAndAbortExecutions",
            "Effect": "Allow",
            "Action": ["states:DescribeExecution", "states:StopExecution"],
            "Resource": executions_arn,
        },
    )
