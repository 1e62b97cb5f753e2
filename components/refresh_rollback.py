"""RefreshWithRollback: a workload account's refresh Lambda and the alarms that roll refreshes back.

IAM is global, so the roles are created once with the stack's default provider. Everything else
is regional and created in every configured region through an explicit provider:

    refresh Lambda  <- invoked by the fan-out through the invoke role, by the catch-up rule on
                       finished refreshes and by the optional converge schedule
    per cluster:    ECS error rule (DESIGN §6) -> log group -> metric filter -> alarm, whose name
                    the Lambda passes in each group's AlarmSpecification
    per region:     alarms on the Lambda's `failed` and `rejected` group outcomes and on its errors
                    (the fan-out only sees the 202 of its asynchronous invoke)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.alarms import any_occurrence_alarm
from components.aws_provider import regional_provider
from components.config import Target, WorkloadConfig
from components.ecs_errors import METRIC_FILTER_PATTERN, ecs_error_event_pattern
from components.lambda_code import LAMBDA_RUNTIME, handler_archive, handler_entrypoint
from components.policies import (
    cloudwatch_alarm_arn,
    ecs_errors_delivery_policy,
    invoke_role_policy,
    invoke_role_trust_policy,
    lambda_log_group_arn,
    lambda_trust_policy,
    refresh_policy,
    rollout_forwarder_policy,
    rollout_forwarder_trust_policy,
)
from handlers.common.status import AUTOSCALING_SOURCE, RESULT_DETAIL_TYPE, RESULT_SOURCE
from handlers.refresh.app import METRIC_NAMESPACE, OUTCOME_METRIC_NAMES

ECS_ERRORS_METRIC_NAMESPACE = "GoldenAmi/EcsErrors"
REFRESH_FUNCTION_MEMORY_MB = 256
# A run handles each group with a handful of API calls (retried with backoff when throttled).
REFRESH_FUNCTION_TIMEOUT_SECONDS = 300
REFRESH_FINISHED_DETAIL_TYPES = (
    "EC2 Auto Scaling Instance Refresh Succeeded",
    "EC2 Auto Scaling Instance Refresh Failed",
    "EC2 Auto Scaling Instance Refresh Cancelled",
    "EC2 Auto Scaling Instance Refresh Rollback Succeeded",
    "EC2 Auto Scaling Instance Refresh Rollback Failed",
)
# What the Auto Scaling service-linked role needs to launch from an AMI encrypted with the key.
AUTO_SCALING_KEY_OPERATIONS = (
    "Decrypt",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
    "DescribeKey",
)
# What `aws.kms.Grant` calls on the key as the workload stack's deploying principal
# (terraform-provider-aws internal/service/kms/grant.go): CreateGrant; ListGrants to read the grant
# back after creating it, on every refresh, and to wait for it to go after deleting it;
# RevokeGrant on delete (retire_on_delete is left false). The key lives in the infra account, so
# only its key policy can allow these to the workload accounts.
KMS_GRANT_RESOURCE_ACTIONS = ("kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant")
# The README's key-policy prerequisite for the Organization's accounts: the grant resource's calls
# plus what launching instances from a shared encrypted AMI needs.
AMI_KEY_ORGANIZATION_ACTIONS = tuple(
    sorted(
        {
            *KMS_GRANT_RESOURCE_ACTIONS,
            "kms:Decrypt",
            "kms:DescribeKey",
            "kms:ReEncrypt*",
            "kms:GenerateDataKeyWithoutPlaintext",
        }
    )
)
EVENTBRIDGE_RULE_NAME_LIMIT = 64


@dataclass(frozen=True)
class RefreshWithRollbackArgs:
    environment_name: str
    regions: Sequence[str]  # the home region first
    targets: Sequence[Target]
    account_id: pulumi.Input[str]  # this workload account
    infra_account_id: str
    image_prefix: str
    fanout_role_arn: str
    organization_id: str
    invoke_role_name: str
    function_name: str
    refresh_preferences: Mapping[str, Any]  # StartInstanceRefresh member names
    ecs_instance_role_arn: str
    log_retention_days: int
    alarm_threshold: int
    alarm_period_seconds: int
    alarm_evaluation_periods: int
    instance_count_alarm: bool = False
    converge_schedule: str = ""
    ami_kms_key_arns: Mapping[str, str] = field(default_factory=dict)  # region -> key ARN
    # region -> the SNS topic its alarms notify: an alarm can only notify a topic in its region.
    alarm_topic_arns: Mapping[str, str] = field(default_factory=dict)
    # The stack's aws: settings (components/aws_provider.py), given to every regional provider.
    provider_settings: Mapping[str, Any] = field(default_factory=dict)
    # The infra account's rollout bus; "" = results are not forwarded (DESIGN §10).
    rollout_bus_arn: str = ""

    @classmethod
    def from_config(
        cls,
        cfg: WorkloadConfig,
        account_id: pulumi.Input[str],
        provider_settings: Mapping[str, Any] | None = None,
    ) -> RefreshWithRollbackArgs:
        return cls(
            environment_name=cfg.environment_name,
            regions=cfg.regions,
            targets=cfg.targets,
            account_id=account_id,
            infra_account_id=cfg.infra_account_id,
            image_prefix=cfg.image_prefix,
            fanout_role_arn=cfg.fanout_role_arn,
            organization_id=cfg.organization_id,
            invoke_role_name=cfg.invoke_role_name,
            function_name=cfg.refresh_function_name,
            refresh_preferences=cfg.refresh_preferences.to_api(),
            ecs_instance_role_arn=cfg.ecs_instance_role_arn,
            log_retention_days=cfg.log_retention_days,
            alarm_threshold=cfg.rollback_alarm_threshold,
            alarm_period_seconds=cfg.rollback_alarm_period_seconds,
            alarm_evaluation_periods=cfg.rollback_alarm_evaluation_periods,
            instance_count_alarm=cfg.instance_count_alarm,
            converge_schedule=cfg.converge_schedule,
            ami_kms_key_arns={region: cfg.ami_kms_key_arn_in(region) for region in cfg.regions},
            alarm_topic_arns={region: cfg.alarm_topic_arn_in(region) for region in cfg.regions},
            provider_settings=dict(provider_settings or {}),
            rollout_bus_arn=cfg.rollout_bus_arn,
        )


def ecs_errors_name(environment_name: str, cluster_name: str) -> str:
    """Shared by the cluster's error rule, log group, metric and alarm."""
    name = f"{environment_name}-{cluster_name}-ecs-errors"
    if len(name) > EVENTBRIDGE_RULE_NAME_LIMIT:
        raise ValueError(
            f"ECS cluster name {cluster_name!r} is too long: the rule name {name!r} exceeds "
            f"EventBridge's {EVENTBRIDGE_RULE_NAME_LIMIT} characters"
        )
    return name


def release_function_name(environment_name: str) -> str:
    """The release function of every workload region (environmentName is at most 24 long)."""
    return f"{environment_name}-release"


def instance_count_alarm_name(environment_name: str, cluster_name: str) -> str:
    return f"{environment_name}-{cluster_name}-container-instances"


def refresh_finished_event_pattern(group_names: Sequence[str]) -> dict[str, Any]:
    """Finished refreshes of these groups: convergence re-runs for them (DESIGN §5.6)."""
    return {
        "source": ["aws.autoscaling"],
        "detail-type": list(REFRESH_FINISHED_DETAIL_TYPES),
        "detail": {"AutoScalingGroupName": sorted(group_names)},
    }


def rollout_forward_event_pattern(group_names: Sequence[str]) -> dict[str, Any]:
    """What a region forwards to the rollout bus: the refresh handler's results and the refresh
    ends of its groups (the status records both; DESIGN §10)."""
    return {
        "$or": [
            {"source": [RESULT_SOURCE], "detail-type": [RESULT_DETAIL_TYPE]},
            {
                "source": [AUTOSCALING_SOURCE],
                "detail-type": list(REFRESH_FINISHED_DETAIL_TYPES),
                "detail": {"AutoScalingGroupName": sorted(group_names)},
            },
        ]
    }


def auto_scaling_service_linked_role_arn(account_id: str) -> str:
    return (
        f"arn:aws:iam::{account_id}:role/aws-service-role/autoscaling.amazonaws.com/"
        "AWSServiceRoleForAutoScaling"
    )


class RefreshWithRollback(pulumi.ComponentResource):
    invoke_role_arn: pulumi.Output[str]
    refresh_role_arn: pulumi.Output[str]
    function_arns: pulumi.Output[dict[str, str]]
    release_function_arns: pulumi.Output[dict[str, str]]
    alarm_names: dict[str, dict[str, list[str]]]  # region -> cluster -> rollback alarm names

    def __init__(
        self, name: str, args: RefreshWithRollbackArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("golden-ami:refresh_rollback:RefreshWithRollback", name, None, opts)
        if not args.targets:
            raise ValueError(f"{name}: RefreshWithRollback needs at least one target group")
        outside = sorted({t.region for t in args.targets} - set(args.regions))
        if outside:
            raise ValueError(f"{name}: targets in {outside} are outside the stack's regions")
        crossed = {
            r: arn for r, arn in args.alarm_topic_arns.items() if arn and f":{r}:" not in arn
        }
        if crossed:
            raise ValueError(
                f"{name}: an alarm can only notify an SNS topic in its own region: {crossed}"
            )
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)
        self.release_function_name = release_function_name(args.environment_name)
        if self.release_function_name == args.function_name:
            raise ValueError(
                f"{name}: the refresh function may not be named {args.function_name!r}, the "
                "release function's name: the invoke role would then cover the release"
            )

        # A region without groups gets nothing: a refresh Lambda there could only fail, and the
        # fan-out reports a missing function as not enrolled.
        regions = [r for r in args.regions if any(t.region == r for t in args.targets)]
        self.alarm_names = {
            region: {
                cluster: self._rollback_alarm_names(cluster) for cluster in self._clusters(region)
            }
            for region in regions
        }

        refresh_role, refresh_role_policy = self._role(
            "refresh",
            "Golden AMI refresh Lambda: new launch-template versions and refreshes",
            args.function_name,
            regions,
        )
        # Release gets a function and a role of its own, which the invoke role's policy does not
        # cover: the fan-out can start rollouts, never lift a quarantine (README "Quarantine").
        release_role, release_role_policy = self._role(
            "release",
            "Golden AMI release Lambda: lifts a quarantine or hold, invoked by operators",
            self.release_function_name,
            regions,
        )
        forwarder = self._rollout_forwarder(name) if args.rollout_bus_arn else None
        functions: dict[str, aws.lambda_.Function] = {}
        release_functions: dict[str, aws.lambda_.Function] = {}
        for region in regions:
            functions[region], release_functions[region] = self._regional(
                region,
                (refresh_role, refresh_role_policy),
                (release_role, release_role_policy),
                forwarder,
            )

        invoke_role = aws.iam.Role(
            f"{name}-invoke-role",
            name=args.invoke_role_name,
            description="Assumed by the infra account's golden AMI fan-out to invoke the refresh",
            assume_role_policy=json.dumps(
                invoke_role_trust_policy(args.fanout_role_arn, args.organization_id)
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-invoke-policy",
            role=invoke_role.name,
            policy=pulumi.Output.from_input(args.account_id).apply(
                lambda account_id: json.dumps(invoke_role_policy(account_id, args.function_name))
            ),
            opts=child,
        )

        self.invoke_role_arn = invoke_role.arn
        self.refresh_role_arn = refresh_role.arn
        self.function_arns = pulumi.Output.all(**{region: f.arn for region, f in functions.items()})
        self.release_function_arns = pulumi.Output.all(
            **{region: f.arn for region, f in release_functions.items()}
        )
        self.register_outputs(
            {
                "invoke_role_arn": self.invoke_role_arn,
                "refresh_role_arn": self.refresh_role_arn,
                "function_arns": self.function_arns,
                "release_function_arns": self.release_function_arns,
                "alarm_names": self.alarm_names,
            }
        )

    def _role(
        self, purpose: str, description: str, function_name: str, regions: Sequence[str]
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        """A function's execution role: the refresh rules' grants, its own log groups."""
        args, child = self._args, pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{self._name}-{purpose}-role",
            description=description,
            assume_role_policy=json.dumps(lambda_trust_policy()),
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{self._name}-{purpose}-policy",
            role=role.name,
            policy=pulumi.Output.from_input(args.account_id).apply(
                lambda account_id: json.dumps(
                    refresh_policy(
                        account_id=account_id,
                        targets=args.targets,
                        ecs_instance_role_arn=args.ecs_instance_role_arn,
                        log_group_arns=[
                            lambda_log_group_arn(region, account_id, function_name)
                            for region in regions
                        ],
                        rollback_alarm_arns=[
                            cloudwatch_alarm_arn(region, account_id, alarm_name)
                            for region, clusters in self.alarm_names.items()
                            for alarm_names in clusters.values()
                            for alarm_name in alarm_names
                        ],
                    )
                )
            ),
            opts=child,
        )
        return role, policy

    # --- per region -------------------------------------------------------------------------

    def _clusters(self, region: str) -> list[str]:
        return sorted({t.cluster_name for t in self._args.targets if t.region == region})

    def _rollback_alarm_names(self, cluster: str) -> list[str]:
        names = [ecs_errors_name(self._args.environment_name, cluster)]
        if self._args.instance_count_alarm:
            names.append(instance_count_alarm_name(self._args.environment_name, cluster))
        return names

    def _rollout_forwarder(self, name: str) -> aws.iam.Role:
        """The role EventBridge forwards to the rollout bus as (one per account: IAM is global).

        The bus admits the Organization through `aws:PrincipalOrgID`, and for a bus that grants
        an organization (rather than account ids) EventBridge requires a role on the target, in
        every region (PutPermission / PutTargets API reference).
        """
        args, child = self._args, pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-rollout-forwarder",
            description="EventBridge forwards golden AMI refresh results to the rollout bus",
            assume_role_policy=pulumi.Output.from_input(args.account_id).apply(
                lambda account_id: json.dumps(rollout_forwarder_trust_policy(account_id))
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-rollout-forwarder",
            role=role.name,
            policy=json.dumps(rollout_forwarder_policy(args.rollout_bus_arn)),
            opts=child,
        )
        return role

    def _regional(
        self,
        region: str,
        refresh_role: tuple[aws.iam.Role, aws.iam.RolePolicy],
        release_role: tuple[aws.iam.Role, aws.iam.RolePolicy],
        forwarder: aws.iam.Role | None,
    ) -> tuple[aws.lambda_.Function, aws.lambda_.Function]:
        """The region's refresh and release functions, rules, alarms, forwarding and key grant."""
        args, prefix = self._args, f"{self._name}-{region}"
        # An explicit provider reads none of the stack's aws: config: it is given all of it.
        provider = regional_provider(
            prefix, region, args.provider_settings, pulumi.ResourceOptions(parent=self)
        )
        opts = pulumi.ResourceOptions(parent=self, provider=provider)
        targets = [t for t in args.targets if t.region == region]

        alarms = self._rollback_alarms(region, opts)
        targets_json = pulumi.Output.all(
            *(pulumi.Output.all(*(a.name for a in alarms[t.cluster_name])) for t in targets)
        ).apply(
            lambda alarm_names: json.dumps(
                [
                    {
                        "autoScalingGroupName": t.auto_scaling_group_name,
                        "launchTemplateId": t.launch_template_id,
                        "clusterName": t.cluster_name,
                        "rollbackAlarmNames": list(names),
                    }
                    for t, names in zip(targets, alarm_names, strict=True)
                ]
            )
        )

        environment: dict[str, pulumi.Input[str]] = {
            "INFRA_ACCOUNT_ID": args.infra_account_id,
            "IMAGE_PREFIX": args.image_prefix,
            "TARGETS_JSON": targets_json,
            "REFRESH_PREFERENCES_JSON": json.dumps(dict(args.refresh_preferences)),
        }
        function = self._function(
            f"{prefix}-refresh",
            function_name=args.function_name,
            handler_package="refresh",
            description="Golden AMI: moves the configured Auto Scaling groups onto the newest AMI",
            role=refresh_role,
            environment=environment,
            opts=opts,
        )
        # Invoked by people only (no event source, no resource policy): same-account principals
        # whose own policies allow it.
        release_function = self._function(
            f"{prefix}-release",
            function_name=self.release_function_name,
            handler_package="release",
            description=(
                "Golden AMI: lifts the quarantine or hold of one AMI on one group (operators only)"
            ),
            role=release_role,
            environment=environment,
            opts=opts,
        )

        self._outcome_alarms(region, function, opts)
        self._invoke_on(
            f"{prefix}-refresh-finished",
            function,
            opts,
            event_pattern=json.dumps(
                refresh_finished_event_pattern([t.auto_scaling_group_name for t in targets])
            ),
            description="Re-run convergence when a refresh of a configured group finishes",
        )
        if forwarder is not None:
            forward = aws.cloudwatch.EventRule(
                f"{prefix}-rollout-forward",
                description="Refresh results and refresh ends, for the infra rollout status",
                event_pattern=json.dumps(
                    rollout_forward_event_pattern([t.auto_scaling_group_name for t in targets])
                ),
                opts=opts,
            )
            aws.cloudwatch.EventTarget(
                f"{prefix}-rollout-forward-target",
                rule=forward.name,
                arn=args.rollout_bus_arn,
                role_arn=forwarder.arn,
                opts=opts,
            )
        if args.converge_schedule:
            self._invoke_on(
                f"{prefix}-converge",
                function,
                opts,
                schedule_expression=args.converge_schedule,
                target_input=json.dumps({"action": "converge"}),
                description="Periodic convergence: catch-up events are best-effort",
            )
        key_arn = args.ami_kms_key_arns.get(region, "")
        if key_arn:
            aws.kms.Grant(
                f"{prefix}-autoscaling-ami-key",
                name=f"{args.environment_name}-autoscaling-golden-ami",
                key_id=key_arn,
                grantee_principal=pulumi.Output.from_input(args.account_id).apply(
                    auto_scaling_service_linked_role_arn
                ),
                operations=list(AUTO_SCALING_KEY_OPERATIONS),
                opts=opts,
            )
        return function, release_function

    def _function(
        self,
        resource_name: str,
        *,
        function_name: str,
        handler_package: str,
        description: str,
        role: tuple[aws.iam.Role, aws.iam.RolePolicy],
        environment: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions,
    ) -> aws.lambda_.Function:
        execution_role, role_policy = role
        log_group = aws.cloudwatch.LogGroup(
            f"{resource_name}-logs",
            name=f"/aws/lambda/{function_name}",
            retention_in_days=self._args.log_retention_days,
            opts=opts,
        )
        return aws.lambda_.Function(
            resource_name,
            name=function_name,
            description=description,
            role=execution_role.arn,
            runtime=LAMBDA_RUNTIME,
            handler=handler_entrypoint(handler_package),
            code=handler_archive(handler_package),
            memory_size=REFRESH_FUNCTION_MEMORY_MB,
            timeout=REFRESH_FUNCTION_TIMEOUT_SECONDS,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(environment)),
            # The log group first, or Lambda creates it without retention on the first run.
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[log_group, role_policy])
            ),
        )

    def _outcome_alarms(
        self, region: str, function: aws.lambda_.Function, opts: pulumi.ResourceOptions
    ) -> None:
        """A broken account shows in that account: a group the Lambda could not move, and a
        Lambda run that failed as a whole (bad environment, crash) before any group outcome."""
        args, prefix = self._args, f"{self._name}-{region}"
        topic_arn = args.alarm_topic_arns.get(region, "")
        for outcome, why in (
            ("failed", "an AWS call failed or the group is missing"),
            ("rejected", "the image, the launch template or the group cannot be refreshed"),
        ):
            any_occurrence_alarm(
                f"{prefix}-refresh-{outcome}",
                alarm_name=f"{args.function_name}-{outcome}-groups",
                description=(
                    f"The golden AMI refresh reported a group {outcome}: {why}; the Lambda's "
                    "log says which and why"
                ),
                namespace=METRIC_NAMESPACE,
                metric_name=OUTCOME_METRIC_NAMES[outcome],
                statistic="Sum",
                alarm_topic_arn=topic_arn,
                opts=opts,
            )
        any_occurrence_alarm(
            f"{prefix}-refresh-errors",
            alarm_name=f"{args.function_name}-errors",
            description="The golden AMI refresh Lambda failed as a whole: no group was handled",
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": function.name},
            statistic="Sum",
            alarm_topic_arn=topic_arn,
            opts=opts,
        )

    def _invoke_on(
        self,
        rule_name: str,
        function: aws.lambda_.Function,
        opts: pulumi.ResourceOptions,
        *,
        target_input: str | None = None,
        **rule_args: Any,
    ) -> None:
        rule = aws.cloudwatch.EventRule(rule_name, opts=opts, **rule_args)
        permission = aws.lambda_.Permission(
            f"{rule_name}-invoke",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=opts,
        )
        aws.cloudwatch.EventTarget(
            f"{rule_name}-target",
            rule=rule.name,
            arn=function.arn,
            input=target_input,
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[permission])
            ),
        )

    def _rollback_alarms(
        self, region: str, opts: pulumi.ResourceOptions
    ) -> dict[str, list[aws.cloudwatch.MetricAlarm]]:
        """Each cluster's rollback alarms, by cluster name."""
        clusters = self._clusters(region)
        log_groups = {
            cluster: aws.cloudwatch.LogGroup(
                f"{self._name}-{region}-{cluster}-ecs-errors-logs",
                name=f"/aws/events/{ecs_errors_name(self._args.environment_name, cluster)}",
                retention_in_days=self._args.log_retention_days,
                opts=opts,
            )
            for cluster in clusters
        }
        # One policy for all of the region's groups: CloudWatch Logs allows an account only ten
        # resource policies per region, shared with every other stack and service.
        delivery_policy = aws.cloudwatch.LogResourcePolicy(
            f"{self._name}-{region}-ecs-errors-delivery",
            policy_name=f"{self._args.environment_name}-ecs-errors-delivery",
            policy_document=pulumi.Output.all(*(g.arn for g in log_groups.values())).apply(
                lambda arns: json.dumps(ecs_errors_delivery_policy(arns))
            ),
            opts=opts,
        )
        return {
            cluster: self._cluster_alarms(
                region, cluster, log_groups[cluster], delivery_policy, opts
            )
            for cluster in clusters
        }

    def _cluster_alarms(
        self,
        region: str,
        cluster: str,
        log_group: aws.cloudwatch.LogGroup,
        delivery_policy: aws.cloudwatch.LogResourcePolicy,
        opts: pulumi.ResourceOptions,
    ) -> list[aws.cloudwatch.MetricAlarm]:
        """ECS error rule -> log group -> metric filter -> alarm (+ the instance-count alarm)."""
        args = self._args
        base = ecs_errors_name(args.environment_name, cluster)
        prefix = f"{self._name}-{region}-{cluster}"

        rule = aws.cloudwatch.EventRule(
            f"{prefix}-ecs-errors",
            name=base,
            description=f"ECS errors that roll back golden AMI refreshes on cluster {cluster}",
            event_pattern=json.dumps(ecs_error_event_pattern(cluster)),
            opts=opts,
        )
        aws.cloudwatch.EventTarget(
            f"{prefix}-ecs-errors-target",
            rule=rule.name,
            arn=log_group.arn,
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[delivery_policy])
            ),
        )
        # No default value: the log group only ever holds errors, so a default would be emitted
        # for no event at all; quiet periods stay "missing data", which the alarm treats as OK.
        metric_filter = aws.cloudwatch.LogMetricFilter(
            f"{prefix}-ecs-errors-filter",
            name=base,
            log_group_name=log_group.name,
            pattern=METRIC_FILTER_PATTERN,
            metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                name=base,
                namespace=ECS_ERRORS_METRIC_NAMESPACE,
                value="1",
                unit="Count",
            ),
            opts=opts,
        )
        topic_arn = args.alarm_topic_arns.get(region, "")
        alarm_actions = [topic_arn] if topic_arn else []
        alarms = [
            aws.cloudwatch.MetricAlarm(
                f"{prefix}-ecs-errors-alarm",
                name=base,
                alarm_description=(
                    f"ECS errors on cluster {cluster}: fails and rolls back a golden AMI refresh"
                ),
                namespace=ECS_ERRORS_METRIC_NAMESPACE,
                metric_name=metric_filter.metric_transformation.name,
                statistic="Sum",
                period=args.alarm_period_seconds,
                evaluation_periods=args.alarm_evaluation_periods,
                comparison_operator="GreaterThanOrEqualToThreshold",
                threshold=args.alarm_threshold,
                treat_missing_data="notBreaching",
                alarm_actions=alarm_actions,
                ok_actions=alarm_actions,
                opts=opts,
            )
        ]
        if args.instance_count_alarm:
            alarms.append(self._instance_count_alarm(region, cluster, alarm_actions, opts))
        return alarms

    def _instance_count_alarm(
        self,
        region: str,
        cluster: str,
        alarm_actions: list[str],
        opts: pulumi.ResourceOptions,
    ) -> aws.cloudwatch.MetricAlarm:
        """Fewer registered container instances than the cluster's groups want (DESIGN §6).

        An AMI whose ECS agent never starts emits no ECS event at all. Needs Container Insights on
        the cluster and group metrics collection on the groups. The best registered count of a
        period is compared with the lowest desired capacity, so an instance replaced mid-period or
        a scale-out does not count as missing.
        """
        args = self._args
        groups = sorted(
            t.auto_scaling_group_name
            for t in args.targets
            if t.region == region and t.cluster_name == cluster
        )

        def metric(query_id: str, namespace: str, metric_name: str, dimensions: dict, stat: str):
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=query_id,
                return_data=False,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace=namespace,
                    metric_name=metric_name,
                    dimensions=dimensions,
                    period=args.alarm_period_seconds,
                    stat=stat,
                ),
            )

        desired = [
            metric(
                f"desired{index}",
                "AWS/AutoScaling",
                "GroupDesiredCapacity",
                {"AutoScalingGroupName": group},
                "Minimum",
            )
            for index, group in enumerate(groups)
        ]
        registered = metric(
            "registered",
            "ECS/ContainerInsights",
            "ContainerInstanceCount",
            {"ClusterName": cluster},
            "Maximum",
        )
        missing = aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id="missing",
            expression=" + ".join(q.id for q in desired) + " - registered",
            label="Container instances missing",
            return_data=True,
        )
        return aws.cloudwatch.MetricAlarm(
            f"{self._name}-{region}-{cluster}-instance-count-alarm",
            name=instance_count_alarm_name(args.environment_name, cluster),
            alarm_description=(
                f"Cluster {cluster} has fewer container instances than its groups' desired "
                "capacity: new instances are not joining ECS"
            ),
            metric_queries=[*desired, registered, missing],
            evaluation_periods=args.alarm_evaluation_periods,
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            treat_missing_data="notBreaching",
            alarm_actions=alarm_actions,
            ok_actions=alarm_actions,
            opts=opts,
        )
