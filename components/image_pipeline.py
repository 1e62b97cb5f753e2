"""GoldenImagePipeline: S3 payloads -> EC2 Image Builder -> an AMI shared with the Organization.

Builds are started by the build-trigger Lambda, never by the upload event directly:

    upload rule (S3 Object Created | CloudTrail PutObject...) --+
                                                                +--> SQS queue --(batched for
    image-state SNS topic (a build finished) -------------------+    buildSettleSeconds)--> Lambda
    cancelled-build rule (Image Builder state change event) ----+

The queue's batching window coalesces a burst of uploads into one invocation, reserved
concurrency 1 keeps evaluations serial, and the end of every build makes the Lambda look again,
so an upload that landed mid-build still gets its own image (handlers/build_trigger decides;
this component wires it). Image Builder's SNS notification covers AVAILABLE and FAILED images
only: a cancelled build reaches the queue through its EventBridge state change event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from components import policies
from components.alarms import dead_letter_queue
from components.config import InfraConfig
from components.lambda_code import LAMBDA_RUNTIME, handler_archive, handler_entrypoint

PAYLOAD_RUNNER_DOCUMENT = Path(__file__).with_name("payload_runner.yaml")

# Images (and their AMIs) carrying this tag are never touched by the lifecycle policy.
KEEP_IMAGE_TAG = {"golden-ami:keep": "true"}
# AMIs some enrolled group runs or may roll back to: tagged in the infra account by the rollout
# status (DESIGN §10). The lifecycle exclusion matches key and value, so the value is fixed here.
IN_USE_AMI_TAG = {"golden-ami:in-use": "true"}
# The lifecycle selects images of every version of the recipe: each recipe change (payload
# runner, bucket, parent) is a new version, and the images of older versions must age out too.
EVERY_RECIPE_VERSION = "x.x.x"
# Image Builder's lifecycle `lastLaunched` exclusion accepts at most 365 days.
MAX_LAST_LAUNCHED_DAYS = 365

TRIGGER_TIMEOUT_SECONDS = 60
# The trigger reads every payload version and image summary once per batch: small and fast.
TRIGGER_MEMORY_MB = 256
# Reserved concurrency 1 means the SQS pollers are sometimes throttled and a message goes back
# to the queue unprocessed; generous receives keep such a message out of the DLQ.
TRIGGER_MAX_RECEIVES = 10
MAX_SQS_BATCH = 100
IMAGE_TEST_TIMEOUT_MINUTES = 60

AMI_NAME_SUFFIX = "{{ imagebuilder:buildDate }}"
CLOUDTRAIL_UPLOAD_EVENTS = ("PutObject", "CompleteMultipartUpload", "CopyObject")
BUILD_INSTANCE_MANAGED_POLICIES = (
    "AmazonSSMManagedInstanceCore",
    "EC2InstanceProfileForImageBuilder",
)


def image_arn_prefix(partition: str, region: str, account_id: str, recipe_name: str) -> str:
    """The ARN prefix of every image of one recipe: Image Builder names an image after its
    recipe, in lower case (`arn:<partition>:imagebuilder:<region>:<account>:image/<recipe>/`
    then `<version>/<build>`)."""
    return f"arn:{partition}:imagebuilder:{region}:{account_id}:image/{recipe_name.lower()}/"


def cancelled_build_pattern(image_arn_prefix: str) -> dict[str, Any]:
    """EventBridge pattern for a cancelled image of this pipeline's recipe only.

    Image Builder notifies its SNS topic of AVAILABLE and FAILED images only. The state change
    event names the image in `resources`; without the prefix every pipeline's cancellations in
    the account would wake the trigger.
    """
    return {
        "source": ["aws.imagebuilder"],
        "detail-type": ["EC2 Image Builder Image State Change"],
        "resources": [{"prefix": image_arn_prefix}],
        "detail": {"state": {"status": ["CANCELLED"]}},
    }


def upload_event_pattern(trigger: str, bucket_name: str, payload_prefix: str) -> dict[str, Any]:
    """EventBridge pattern for a new `.sh` payload under the prefix.

    `eventbridge`: the bucket's own S3 EventBridge notifications (delivered at least once,
    nothing else to run). `cloudtrail`: data events of an existing trail, as the seed did;
    failed calls are dropped here so they never reach the trigger.
    """
    payload_key = [{"wildcard": f"{payload_prefix}*.sh"}]
    if trigger == "eventbridge":
        return {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": [bucket_name]}, "object": {"key": payload_key}},
        }
    return {
        "source": ["aws.s3"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {
            "eventSource": ["s3.amazonaws.com"],
            "eventName": list(CLOUDTRAIL_UPLOAD_EVENTS),
            "errorCode": [{"exists": False}],
            "requestParameters": {"bucketName": [bucket_name], "key": payload_key},
        },
    }


def content_version(*parts: str) -> str:
    """A semantic version that changes whenever `parts` do.

    Image Builder components and recipes are immutable and identified by name + version, so a
    changed document needs a new version for Pulumi to create it before deleting the old one.
    """
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"1.0.{int(digest[:7], 16)}"


@dataclass(frozen=True)
class LaunchPermission:
    """Who may launch the AMIs: the Organization, or OUs and/or accounts instead."""

    organization_arns: tuple[str, ...] = ()
    organizational_unit_arns: tuple[str, ...] = ()
    account_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GoldenImagePipelineArgs:
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    payload_prefix: str
    account_id: str
    regions: Sequence[str]  # home region first: the pipeline and its trigger live there
    image_prefix: str
    parent_image: str
    build_instance_types: Sequence[str]
    launch_permission: LaunchPermission
    ami_kms_key_arns: Mapping[str, str] = field(default_factory=dict)  # region -> key ARN
    subnet_id: str = ""
    security_group_ids: Sequence[str] = ()
    build_trigger: str = "eventbridge"
    build_settle_seconds: int = 90
    build_schedule: str = ""
    keep_newest_images: int = 5
    image_retention_days: int = 180
    log_retention_days: int = 30
    alarm_topic_arn: str = ""  # notified when payload events end in the dead-letter queue
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(
        cls,
        cfg: InfraConfig,
        *,
        bucket_name: pulumi.Input[str],
        bucket_arn: pulumi.Input[str],
    ) -> GoldenImagePipelineArgs:
        if cfg.shares_with_organization:
            launch_permission = LaunchPermission(organization_arns=(cfg.organization_arn,))
        else:
            launch_permission = LaunchPermission(
                organizational_unit_arns=cfg.share_with_ou_arns,
                account_ids=cfg.share_with_account_ids,
            )
        return cls(
            bucket_name=bucket_name,
            bucket_arn=bucket_arn,
            payload_prefix=cfg.payload_prefix,
            account_id=cfg.infra_account_id,
            regions=cfg.regions,
            image_prefix=cfg.image_prefix,
            parent_image=cfg.parent_image,
            build_instance_types=cfg.build_instance_types,
            launch_permission=launch_permission,
            ami_kms_key_arns=(
                {region: cfg.ami_kms_key_arn_in(region) for region in cfg.regions}
                if cfg.ami_kms_key_arn
                else {}
            ),
            subnet_id=cfg.subnet_id,
            security_group_ids=cfg.security_group_ids,
            build_trigger=cfg.build_trigger,
            build_settle_seconds=cfg.build_settle_seconds,
            build_schedule=cfg.build_schedule,
            keep_newest_images=cfg.keep_newest_images,
            image_retention_days=cfg.image_retention_days,
            log_retention_days=cfg.log_retention_days,
            alarm_topic_arn=cfg.alarm_topic_arn_in(cfg.home_region),
            tags={"golden-ami:environment": cfg.environment_name},
        )

    @property
    def home_region(self) -> str:
        return self.regions[0]


class GoldenImagePipeline(pulumi.ComponentResource):
    """Payload-runner component, recipe, build infrastructure, distribution, pipeline,
    lifecycle policy, image-state topic and the build trigger."""

    pipeline_arn: pulumi.Output[str]
    pipeline_name: str
    image_topic_arn: pulumi.Output[str]
    trigger_function_name: pulumi.Output[str]
    trigger_queue_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: GoldenImagePipelineArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("golden-ami:image_pipeline:GoldenImagePipeline", name, None, opts)
        self._name = name
        self._args = args
        self._partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self))
        self.pipeline_name = f"{name}-golden-ecs"
        tags = dict(args.tags)

        topic = self._image_state_topic(tags)
        recipe = self._recipe(tags)
        infrastructure = self._infrastructure(topic, tags)
        distribution = self._distribution(tags)
        pipeline = aws.imagebuilder.ImagePipeline(
            f"{name}-pipeline",
            name=self.pipeline_name,
            description="Golden ECS AMI: payloads from S3 on the ECS-optimized parent",
            image_recipe_arn=recipe.arn,
            infrastructure_configuration_arn=infrastructure.arn,
            distribution_configuration_arn=distribution.arn,
            enhanced_image_metadata_enabled=True,
            image_tests_configuration=aws.imagebuilder.ImagePipelineImageTestsConfigurationArgs(
                image_tests_enabled=True, timeout_minutes=IMAGE_TEST_TIMEOUT_MINUTES
            ),
            schedule=(
                aws.imagebuilder.ImagePipelineScheduleArgs(
                    schedule_expression=args.build_schedule,
                    # A scheduled run builds only when the parent image (the ssm: parameter) or
                    # a component changed; uploads start builds through the trigger.
                    pipeline_execution_start_condition=(
                        "EXPRESSION_MATCH_AND_DEPENDENCY_UPDATES_AVAILABLE"
                    ),
                )
                if args.build_schedule
                else None
            ),
            status="ENABLED",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._lifecycle_policy(recipe, tags)
        trigger_queue, trigger_function = self._build_trigger(pipeline, recipe, topic, tags)

        self.pipeline_arn = pipeline.arn
        self.image_topic_arn = topic.arn
        self.trigger_function_name = trigger_function.name
        self.trigger_queue_arn = trigger_queue.arn
        self.register_outputs(
            {
                "pipeline_arn": self.pipeline_arn,
                "image_topic_arn": self.image_topic_arn,
                "trigger_function_name": self.trigger_function_name,
                "trigger_queue_arn": self.trigger_queue_arn,
            }
        )

    # --- image state notifications -----------------------------------------------------------

    def _image_state_topic(self, tags: dict[str, str]) -> aws.sns.Topic:
        name, child = self._name, pulumi.ResourceOptions(parent=self)
        key = aws.kms.Key(
            f"{name}-image-state-key",
            description="Encrypts the golden AMI image-state notifications",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=self._partition.partition.apply(
                lambda partition: json.dumps(
                    policies.image_state_key_policy(partition, self._args.account_id)
                )
            ),
            tags=tags,
            opts=child,
        )
        topic = aws.sns.Topic(
            f"{name}-image-state",
            name=f"{name}-image-state",
            kms_master_key_id=key.arn,
            tags=tags,
            opts=child,
        )
        aws.sns.TopicPolicy(
            f"{name}-image-state-policy",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, self._partition.partition).apply(
                lambda values: json.dumps(
                    policies.image_state_topic_policy(values[0], values[1], self._args.account_id)
                )
            ),
            opts=child,
        )
        return topic

    # --- what gets built -----------------------------------------------------------------------

    def _recipe(self, tags: dict[str, str]) -> aws.imagebuilder.ImageRecipe:
        name, args, child = self._name, self._args, pulumi.ResourceOptions(parent=self)
        document = PAYLOAD_RUNNER_DOCUMENT.read_text()
        component = aws.imagebuilder.Component(
            f"{name}-payload-runner",
            name=f"{name}-payload-runner",
            description="Runs the S3 payloads in key order, records a manifest, resets ECS",
            platform="Linux",
            version=content_version(document),
            data=document,
            tags=tags,
            opts=child,
        )
        # Every input that replaces the recipe goes into its version (components, parameters,
        # parent), so the replacement never collides with the recipe it replaces.
        recipe_version = pulumi.Output.all(component.arn, args.bucket_name).apply(
            lambda values: content_version(*values, args.payload_prefix, args.parent_image)
        )
        return aws.imagebuilder.ImageRecipe(
            f"{name}-recipe",
            name=self.pipeline_name,
            description="ECS-optimized Amazon Linux 2023 plus the S3 payloads",
            parent_image=args.parent_image,
            version=recipe_version,
            components=[
                aws.imagebuilder.ImageRecipeComponentArgs(
                    component_arn=component.arn,
                    parameters=[
                        aws.imagebuilder.ImageRecipeComponentParameterArgs(
                            name="Bucket", value=args.bucket_name
                        ),
                        aws.imagebuilder.ImageRecipeComponentParameterArgs(
                            name="Prefix", value=args.payload_prefix
                        ),
                    ],
                )
            ],
            tags=tags,
            opts=child,
        )

    def _infrastructure(
        self, topic: aws.sns.Topic, tags: dict[str, str]
    ) -> aws.imagebuilder.InfrastructureConfiguration:
        name, args, child = self._name, self._args, pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-build-instance",
            description="Golden AMI build instance: SSM, Image Builder, read the payload prefix",
            assume_role_policy=json.dumps(policies.service_trust_policy("ec2.amazonaws.com")),
            tags=tags,
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-build-instance-{policy_name}",
                role=role.name,
                policy_arn=pulumi.Output.concat(
                    "arn:", self._partition.partition, f":iam::aws:policy/{policy_name}"
                ),
                opts=child,
            )
            for policy_name in BUILD_INSTANCE_MANAGED_POLICIES
        ]
        payload_read = aws.iam.RolePolicy(
            f"{name}-build-instance-payloads",
            role=role.name,
            policy=pulumi.Output.from_input(args.bucket_arn).apply(
                lambda bucket_arn: json.dumps(
                    policies.build_instance_payload_policy(bucket_arn, args.payload_prefix)
                )
            ),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(
            f"{name}-build-instance",
            role=role.name,
            tags=tags,
            opts=child,
        )
        return aws.imagebuilder.InfrastructureConfiguration(
            f"{name}-infrastructure",
            name=f"{name}-build",
            description="Where golden AMI builds and tests run",
            instance_profile_name=profile.name,
            instance_types=list(args.build_instance_types),
            subnet_id=args.subnet_id or None,
            security_group_ids=list(args.security_group_ids) or None,
            sns_topic_arn=topic.arn,
            terminate_instance_on_failure=True,
            instance_metadata_options=aws.imagebuilder.InfrastructureConfigurationInstanceMetadataOptionsArgs(
                http_tokens="required", http_put_response_hop_limit=2
            ),
            resource_tags=tags,
            tags=tags,
            # A build must not start before its instance may read the payloads.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*attachments, payload_read]),
        )

    def _distribution(self, tags: dict[str, str]) -> aws.imagebuilder.DistributionConfiguration:
        name, args = self._name, self._args
        permission = args.launch_permission
        ami_tags = {**tags, "golden-ami:pipeline": self.pipeline_name}
        return aws.imagebuilder.DistributionConfiguration(
            f"{name}-distribution",
            name=f"{name}-distribution",
            description="Golden ECS AMI in every configured region, launchable by the Organization",
            distributions=[
                aws.imagebuilder.DistributionConfigurationDistributionArgs(
                    region=region,
                    ami_distribution_configuration=aws.imagebuilder.DistributionConfigurationDistributionAmiDistributionConfigurationArgs(
                        name=f"{args.image_prefix}-{AMI_NAME_SUFFIX}",
                        description=f"Golden ECS AMI built by {self.pipeline_name}",
                        ami_tags=ami_tags,
                        launch_permission=aws.imagebuilder.DistributionConfigurationDistributionAmiDistributionConfigurationLaunchPermissionArgs(
                            organization_arns=list(permission.organization_arns) or None,
                            organizational_unit_arns=(
                                list(permission.organizational_unit_arns) or None
                            ),
                            user_ids=list(permission.account_ids) or None,
                        ),
                        kms_key_id=args.ami_kms_key_arns.get(region),
                    ),
                )
                for region in args.regions
            ],
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _lifecycle_policy(
        self, recipe: aws.imagebuilder.ImageRecipe, tags: dict[str, str]
    ) -> aws.imagebuilder.LifecyclePolicy:
        """Delete old images and their AMIs, never the newest N nor one still being launched.

        Disabling or deleting an AMI breaks launches and rollbacks in every account using it,
        so only images past the retention age are candidates, the newest `keep_newest_images`
        always stay, and so does any AMI launched within the retention window (capped at
        Image Builder's 365 days), tagged `golden-ami:keep=true`, or tagged
        `golden-ami:in-use=true` by the rollout status: `lastLaunched` lags a day and does not
        see launches in other accounts, and a group held on an older AMI (newer ones quarantined)
        is not among the newest N. Selection is by recipe name and every version
        (`x.x.x`): a changed recipe is a new version, and images of older versions are
        retained, counted and deleted by the same rules.
        """
        name, args, child = self._name, self._args, pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-lifecycle",
            description="Image Builder lifecycle policy execution for the golden AMI",
            assume_role_policy=json.dumps(
                policies.service_trust_policy("imagebuilder.amazonaws.com")
            ),
            tags=tags,
            opts=child,
        )
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-lifecycle-execution",
            role=role.name,
            policy_arn=self._partition.partition.apply(
                lambda partition: (
                    f"arn:{partition}:iam::aws:policy/service-role/"
                    "EC2ImageBuilderLifecycleExecutionPolicy"
                )
            ),
            opts=child,
        )
        in_use_window = min(args.image_retention_days, MAX_LAST_LAUNCHED_DAYS)
        return aws.imagebuilder.LifecyclePolicy(
            f"{name}-lifecycle",
            name=f"{name}-lifecycle",
            description=(
                f"Delete golden AMIs older than {args.image_retention_days} days, keeping the "
                f"newest {args.keep_newest_images}, any launched in the last {in_use_window} "
                "and any tagged in use"
            ),
            execution_role=role.arn,
            resource_type="AMI_IMAGE",
            status="ENABLED",
            policy_details=[
                aws.imagebuilder.LifecyclePolicyPolicyDetailArgs(
                    action=aws.imagebuilder.LifecyclePolicyPolicyDetailActionArgs(
                        type="DELETE",
                        include_resources=aws.imagebuilder.LifecyclePolicyPolicyDetailActionIncludeResourcesArgs(
                            amis=True, snapshots=True
                        ),
                    ),
                    filter=aws.imagebuilder.LifecyclePolicyPolicyDetailFilterArgs(
                        type="AGE",
                        value=args.image_retention_days,
                        unit="DAYS",
                        retain_at_least=args.keep_newest_images,
                    ),
                    exclusion_rules=aws.imagebuilder.LifecyclePolicyPolicyDetailExclusionRulesArgs(
                        tag_map=KEEP_IMAGE_TAG,
                        amis=aws.imagebuilder.LifecyclePolicyPolicyDetailExclusionRulesAmisArgs(
                            last_launched=aws.imagebuilder.LifecyclePolicyPolicyDetailExclusionRulesAmisLastLaunchedArgs(
                                value=in_use_window, unit="DAYS"
                            ),
                            tag_map={**KEEP_IMAGE_TAG, **IN_USE_AMI_TAG},
                        ),
                    ),
                )
            ],
            resource_selection=aws.imagebuilder.LifecyclePolicyResourceSelectionArgs(
                recipes=[
                    aws.imagebuilder.LifecyclePolicyResourceSelectionRecipeArgs(
                        name=recipe.name, semantic_version=EVERY_RECIPE_VERSION
                    )
                ]
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[attachment]),
        )

    # --- build trigger ------------------------------------------------------------------------

    def _build_trigger(
        self,
        pipeline: aws.imagebuilder.ImagePipeline,
        recipe: aws.imagebuilder.ImageRecipe,
        topic: aws.sns.Topic,
        tags: dict[str, str],
    ) -> tuple[aws.sqs.Queue, aws.lambda_.Function]:
        name, args, child = self._name, self._args, pulumi.ResourceOptions(parent=self)
        function_name = f"{name}-build-trigger"

        # A message there is an upload (or build completion) the trigger gave up on: until the
        # next event arrives, no build reflects the payloads.
        dead_letters = dead_letter_queue(
            f"{name}-build-trigger-dlq",
            alarm_name=f"{function_name}-dead-letters",
            description="Golden AMI: payload events the build trigger could not process",
            alarm_topic_arn=args.alarm_topic_arn,
            tags=tags,
            opts=child,
        )
        queue = aws.sqs.Queue(
            f"{name}-build-trigger-queue",
            sqs_managed_sse_enabled=True,
            # AWS guidance for Lambda event sources: six function timeouts plus the batching window.
            visibility_timeout_seconds=6 * TRIGGER_TIMEOUT_SECONDS + args.build_settle_seconds,
            redrive_policy=dead_letters.arn.apply(
                lambda dlq_arn: json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": TRIGGER_MAX_RECEIVES}
                )
            ),
            tags=tags,
            opts=child,
        )

        rule = aws.cloudwatch.EventRule(
            f"{name}-payload-uploaded",
            description=f"A .sh payload was written under s3://…/{args.payload_prefix}",
            event_pattern=pulumi.Output.from_input(args.bucket_name).apply(
                lambda bucket: json.dumps(
                    upload_event_pattern(args.build_trigger, bucket, args.payload_prefix)
                )
            ),
            tags=tags,
            opts=child,
        )
        # A cancelled build sends no SNS notification; without this rule an upload made during
        # it would wait for the next event.
        cancelled_rule = aws.cloudwatch.EventRule(
            f"{name}-build-cancelled",
            description="An Image Builder build was cancelled: evaluate the payloads again",
            event_pattern=pulumi.Output.all(self._partition.partition, recipe.name).apply(
                lambda values: json.dumps(
                    cancelled_build_pattern(
                        image_arn_prefix(values[0], args.home_region, args.account_id, values[1])
                    )
                )
            ),
            tags=tags,
            opts=child,
        )
        queue_policy = aws.sqs.QueuePolicy(
            f"{name}-build-trigger",
            queue_url=queue.url,
            policy=pulumi.Output.all(queue.arn, rule.arn, topic.arn, cancelled_rule.arn).apply(
                lambda arns: json.dumps(policies.build_trigger_queue_policy(*arns))
            ),
            opts=child,
        )
        for target_name, event_rule in (
            (f"{name}-payload-uploaded", rule),
            (f"{name}-build-cancelled", cancelled_rule),
        ):
            aws.cloudwatch.EventTarget(
                target_name,
                rule=event_rule.name,
                arn=queue.arn,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[queue_policy]),
            )
        aws.sns.TopicSubscription(
            f"{name}-image-state-to-trigger",
            topic=topic.arn,
            protocol="sqs",
            endpoint=queue.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[queue_policy]),
        )

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-build-trigger",
            name=f"/aws/lambda/{function_name}",
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-build-trigger",
            description="Golden AMI build trigger: reads payload versions, starts the pipeline",
            assume_role_policy=json.dumps(policies.lambda_trust_policy()),
            tags=tags,
            opts=child,
        )
        role_policy = aws.iam.RolePolicy(
            f"{name}-build-trigger",
            role=role.name,
            policy=pulumi.Output.all(
                bucket_arn=args.bucket_arn,
                pipeline_arn=pipeline.arn,
                recipe_name=recipe.name,
                queue_arn=queue.arn,
                log_group_arn=log_group.arn,
                partition=self._partition.partition,
            ).apply(lambda arns: json.dumps(self._trigger_policy(**arns))),
            opts=child,
        )
        function = aws.lambda_.Function(
            f"{name}-build-trigger",
            name=function_name,
            description="Golden AMI: starts one pipeline build per settled payload change",
            role=role.arn,
            runtime=LAMBDA_RUNTIME,
            handler=handler_entrypoint("build_trigger"),
            code=handler_archive("build_trigger"),
            timeout=TRIGGER_TIMEOUT_SECONDS,
            memory_size=TRIGGER_MEMORY_MB,
            reserved_concurrent_executions=1,
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables={
                    "PIPELINE_ARN": pipeline.arn,
                    "BUCKET_NAME": args.bucket_name,
                    "PAYLOAD_PREFIX": args.payload_prefix,
                }
            ),
            tags=tags,
            # The log group first, or Lambda creates one without retention on the first run.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, role_policy]),
        )
        aws.lambda_.EventSourceMapping(
            f"{name}-build-trigger",
            event_source_arn=queue.arn,
            function_name=function.arn,
            batch_size=MAX_SQS_BATCH,
            maximum_batching_window_in_seconds=args.build_settle_seconds,
            opts=child,
        )
        return queue, function

    def _trigger_policy(
        self,
        *,
        bucket_arn: str,
        pipeline_arn: str,
        recipe_name: str,
        queue_arn: str,
        log_group_arn: str,
        partition: str,
    ) -> dict[str, Any]:
        args = self._args
        image_arns = (
            image_arn_prefix(partition, args.home_region, args.account_id, recipe_name) + "*"
        )
        return policies.build_trigger_policy(
            bucket_arn=bucket_arn,
            payload_prefix=args.payload_prefix,
            pipeline_arn=pipeline_arn,
            image_arn_pattern=image_arns,
            queue_arn=queue_arn,
            log_group_arn=log_group_arn,
            partition=partition,
            regions=args.regions,
        )
