"""Golden AMI: one program, two roles. `golden-ami:role` picks what this stack deploys.

infra     payload bucket, image pipeline with its build trigger (this account builds and shares),
          fan-out, rollout status (bus, recorder, table, dashboard), and with rolloutWaves
          the progressive rollout (state machine that invokes the fan-out wave by wave)
workload  refresh Lambda, invoke role and rollback alarms (this account follows the AMI)
"""

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_aws as aws

from components.aws_provider import stack_provider_settings
from components.config import ConfigError, InfraConfig, WorkloadConfig, load_config
from components.image_pipeline import GoldenImagePipeline, GoldenImagePipelineArgs
from components.org_fanout import OrgFanout, OrgFanoutArgs
from components.payload_bucket import PayloadBucket, PayloadBucketArgs
from components.refresh_rollback import RefreshWithRollback, RefreshWithRollbackArgs
from components.rollout_status import RolloutStatus, RolloutStatusArgs
from components.rollout_waves import RolloutWaves, RolloutWavesArgs


def deploy_infra(cfg: InfraConfig) -> None:
    tags = {"golden-ami:environment": cfg.environment_name}
    bucket = PayloadBucket(
        f"{cfg.environment_name}-payloads",
        PayloadBucketArgs(
            bucket_name=cfg.bucket_name,
            noncurrent_version_expiration_days=cfg.noncurrent_version_expiration_days,
            tags=tags,
        ),
    )
    pipeline = GoldenImagePipeline(
        cfg.environment_name,
        GoldenImagePipelineArgs.from_config(
            cfg, bucket_name=bucket.bucket_name, bucket_arn=bucket.bucket_arn
        ),
    )
    fanout = OrgFanout(
        f"{cfg.environment_name}-fanout",
        OrgFanoutArgs.from_config(cfg, image_topic_arn=pipeline.image_topic_arn),
    )
    status = RolloutStatus(
        f"{cfg.environment_name}-rollout",
        RolloutStatusArgs.from_config(cfg, pipeline_name=pipeline.pipeline_name),
    )
    pulumi.export("bucketName", bucket.bucket_name)
    pulumi.export("payloadPrefix", cfg.payload_prefix)
    pulumi.export("pipelineArn", pipeline.pipeline_arn)
    pulumi.export("imageTopicArn", pipeline.image_topic_arn)
    pulumi.export("amiNamePrefix", cfg.image_prefix)
    pulumi.export("regions", list(cfg.regions))
    # `python -m deploy` feeds infraAccountId, amiNamePrefix and fanoutRoleArn to workload stacks.
    pulumi.export("infraAccountId", cfg.infra_account_id)
    # Workload stacks' fanoutRoleArn must name this role (their invoke roles trust it).
    pulumi.export("fanoutRoleArn", fanout.role_arn)
    pulumi.export("fanoutRoleName", fanout.role_name)
    pulumi.export("fanoutFunctionArn", fanout.function_arn)
    pulumi.export("fanoutLogGroupName", fanout.log_group_name)
    # Workload stacks' rolloutBusArn: where their refresh results and refresh ends are forwarded.
    pulumi.export("rolloutBusArn", status.bus_arn)
    # `python -m rollout status` reads this table (infra credentials).
    pulumi.export("rolloutTableName", status.table_name)
    pulumi.export("rolloutDashboardName", status.dashboard_name)
    if cfg.waves_enabled:
        waves = RolloutWaves(
            f"{cfg.environment_name}-waves",
            RolloutWavesArgs.from_config(
                cfg,
                table_name=status.table_name,
                table_arn=status.table_arn,
                fanout_function_arn=fanout.function_arn,
                image_topic_arn=pipeline.image_topic_arn,
            ),
        )
        pulumi.export("rolloutStateMachineArn", waves.state_machine_arn)
        # Attach to the people who run `python -m rollout approve|abort|resume`.
        pulumi.export("rolloutOperatorPolicyArn", waves.operator_policy_arn)


def deploy_workload(cfg: WorkloadConfig, provider_settings: Mapping[str, Any]) -> None:
    refresh = RefreshWithRollback(
        cfg.environment_name,
        RefreshWithRollbackArgs.from_config(
            cfg,
            account_id=aws.get_caller_identity_output().account_id,
            provider_settings=provider_settings,
        ),
    )
    pulumi.export("regions", list(cfg.regions))
    pulumi.export("infraAccountId", cfg.infra_account_id)
    pulumi.export("amiNamePrefix", cfg.image_prefix)
    pulumi.export(
        "autoScalingGroups", [f"{t.region}/{t.auto_scaling_group_name}" for t in cfg.targets]
    )
    pulumi.export("invokeRoleArn", refresh.invoke_role_arn)
    pulumi.export("refreshFunctionArns", refresh.function_arns)
    pulumi.export("releaseFunctionArns", refresh.release_function_arns)
    pulumi.export("rollbackAlarmNames", refresh.alarm_names)


def main() -> None:
    try:
        cfg = load_config()
        # Explicit (regional) providers get the stack's aws: settings; read and checked up front.
        provider_settings = stack_provider_settings()
    except ConfigError as error:
        # RunError ends the program with the message alone: no stack trace, no resources.
        raise pulumi.RunError(str(error)) from None
    if isinstance(cfg, InfraConfig):
        deploy_infra(cfg)
    else:
        deploy_workload(cfg, provider_settings)


main()
