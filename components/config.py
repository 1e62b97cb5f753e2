"""Typed stack configuration: every `golden-ami:*` key, validated once when the program starts.

`load_config()` reads the stack's config and returns an `InfraConfig` or a `WorkloadConfig`
(chosen by `golden-ami:role`). Anything wrong raises one `ConfigError` listing every problem as
`golden-ami:<key> = <value>: <what is allowed>`, before a single resource is declared, so a bad
value fails `pulumi preview` instead of half-creating a stack.

Pulumi hands every config value to the program as a string (arrays and objects as JSON), and
passes the `Pulumi.yaml` defaults for keys a stack does not set. Keys a role requires therefore
default to "" / [] in `Pulumi.yaml` and have no default here. `CONFIG_KEYS` describes every key
(type, default, role) so tests can hold `Pulumi.yaml` to exactly what this module accepts.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args, get_origin

import botocore.loaders
import pulumi
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

NAMESPACE = "golden-ami"
HOME_REGION_KEY: Final = "aws:region"
DEFAULT_PARENT_IMAGE = "ssm:/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"

# Time from an ECS event to the rollback alarm seeing it, on top of the alarm's own
# period x evaluation periods: EventBridge -> CloudWatch Logs delivery (seconds), the metric
# filter publishing its one-minute datapoint, and CloudWatch evaluating the alarm about a
# minute later. The refresh's BakeTime must outlast all of it, or a bad AMI finishes "Successful".
ALARM_DETECTION_MARGIN_SECONDS = 180

# Values CloudWatch Logs accepts for a log group's retention.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip


class ConfigError(Exception):
    """The stack configuration is invalid; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            message = f"invalid stack configuration: {problems[0]}"
        else:
            message = "invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(message)


def config_key(alias: str) -> str:
    """The full key for a field alias: `infraAccountId` -> `golden-ami:infraAccountId`."""
    return alias if ":" in alias else f"{NAMESPACE}:{alias}"


# --- value types -------------------------------------------------------------------------------

_PARTITION = r"aws(?:-cn|-us-gov)?"
_REGION = r"[a-z]{2}(?:-gov)?-[a-z]+-\d{1,2}"
_ACCOUNT = r"\d{12}"
_ORG_ID = r"o-[a-z0-9]{10,32}"
_OU_ID = r"ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}"
_IAM_NAME = r"[\w+=,.@-]{1,64}"
_EC2_ID = r"[0-9a-f]{8}(?:[0-9a-f]{9})?"  # old 8-hex and current 17-hex resource ids
_SCHEDULE = r"cron\((?:\S+ ){5}\S+\)|rate\([1-9]\d* (?:minute|hour|day)s?\)"


def _matching(regex: str, allowed: str, *, optional: bool = False) -> AfterValidator:
    """A validator accepting strings that fully match `regex` ("" too when `optional`)."""
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if (optional and value == "") or compiled.fullmatch(value):
            return value
        raise ValueError(f"expected {allowed}{' or empty' if optional else ''}")

    return AfterValidator(check)


@functools.cache
def region_partitions() -> Mapping[str, str]:
    """Region -> partition (aws, aws-cn, aws-us-gov, ...) of every region in botocore's shipped
    endpoint data, opt-in ones included.

    Read offline from the botocore in the venv: `endpoints` lists the regions of each partition
    (named by `partition`), `partitions` the same plus newer ones (named by `id`) and the
    `aws-global`-style pseudo-regions (left out).
    """
    loader = botocore.loaders.create_loader()
    return {
        region: partition.get("partition") or partition["id"]
        for data in ("endpoints", "partitions")
        for partition in loader.load_data(data)["partitions"]
        for region in partition["regions"]
        if not region.endswith("-global")
    }


def known_regions() -> frozenset[str]:
    """Every region of every partition in botocore's shipped endpoint data."""
    return frozenset(region_partitions())


@functools.cache
def aws_provider_keys() -> frozenset[str]:
    """The `aws:` settings the AWS provider reads, as its Python SDK's config module lists them.

    Read from the module's source (`__config__.get('region')`, ...) so nothing is imported.
    """
    spec = importlib.util.find_spec("pulumi_aws")
    assert spec is not None and spec.submodule_search_locations, "pulumi_aws is not installed"
    source = Path(spec.submodule_search_locations[0], "config", "vars.py").read_text()
    return frozenset(re.findall(r"__config__\.get\w*\('(\w+)'\)", source))


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to `word`, if any is similar enough to be a likely typo."""
    scored = [
        (difflib.SequenceMatcher(None, word, candidate).ratio(), candidate)
        for candidate in sorted(candidates)
    ]
    # max() keeps the first of equal scores: eu-west-9 -> eu-west-1, not eu-west-3.
    score, best = max(scored, key=lambda pair: pair[0], default=(0.0, ""))
    return best if score >= 0.75 else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """ "; did you mean <closest>?", or "" when nothing is close."""
    best = closest(word, candidates)
    return f"; did you mean {best}?" if best else ""


def _known_region(value: str) -> str:
    if value in known_regions():
        return value
    suggestion = did_you_mean(value, known_regions())
    if suggestion:
        raise ValueError(f"not an AWS region name{suggestion}")
    raise ValueError(
        "expected an AWS region name such as eu-west-1 "
        "(one in botocore's list of every partition's regions, opt-in ones included)"
    )


Region = Annotated[str, AfterValidator(_known_region)]
AccountId = Annotated[
    str, _matching(_ACCOUNT, "a 12-digit AWS account id (quote it so YAML keeps leading zeros)")
]
OptionalAccountId = Annotated[
    str, _matching(_ACCOUNT, "a 12-digit AWS account id (quoted)", optional=True)
]
OrganizationId = Annotated[str, _matching(_ORG_ID, "an Organization id such as o-a1b2c3d4e5")]
OrganizationalUnitArn = Annotated[
    str,
    _matching(
        rf"arn:{_PARTITION}:organizations::{_ACCOUNT}:ou/{_ORG_ID}/{_OU_ID}",
        "an OU ARN arn:aws:organizations::<management account>:ou/o-…/ou-…",
    ),
]
OrganizationalUnitOrRootId = Annotated[
    str, _matching(rf"{_OU_ID}|r-[0-9a-z]{{4,32}}", "an OU id (ou-…) or the root id (r-…)")
]
IamName = Annotated[str, _matching(_IAM_NAME, "an IAM name: 1-64 of A-Z a-z 0-9 +=,.@_-")]
_ROLE_ARN = rf"arn:{_PARTITION}:iam::{_ACCOUNT}:role/(?:[\w+=,.@-]+/)*{_IAM_NAME}"
_ROLE_ARN_ALLOWED = "an IAM role ARN arn:aws:iam::<account>:role/<name>"
RoleArn = Annotated[str, _matching(_ROLE_ARN, _ROLE_ARN_ALLOWED)]
OptionalRoleArn = Annotated[str, _matching(_ROLE_ARN, _ROLE_ARN_ALLOWED, optional=True)]
_SNS_TOPIC_ARN = rf"arn:{_PARTITION}:sns:{_REGION}:{_ACCOUNT}:[\w-]{{1,256}}"
_SNS_TOPIC_ARN_ALLOWED = "an SNS topic ARN arn:aws:sns:<region>:<account>:<name>"
SnsTopicArn = Annotated[str, _matching(_SNS_TOPIC_ARN, _SNS_TOPIC_ARN_ALLOWED)]
OptionalSnsTopicArn = Annotated[
    str, _matching(_SNS_TOPIC_ARN, _SNS_TOPIC_ARN_ALLOWED, optional=True)
]
OptionalKmsKeyArn = Annotated[
    str,
    _matching(
        rf"arn:{_PARTITION}:kms:{_REGION}:{_ACCOUNT}:key/"
        r"(?:mrk-[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
        "a KMS key ARN arn:aws:kms:<region>:<account>:key/<key id> (not an alias)",
        optional=True,
    ),
]
OptionalEventBusArn = Annotated[
    str,
    _matching(
        rf"arn:{_PARTITION}:events:{_REGION}:{_ACCOUNT}:event-bus/[\w.-]{{1,256}}",
        "an event bus ARN arn:aws:events:<region>:<account>:event-bus/<name>",
        optional=True,
    ),
]
LambdaName = Annotated[
    str, _matching(r"[A-Za-z0-9_-]{1,64}", "a Lambda function name: 1-64 of A-Z a-z 0-9 _-")
]
EnvironmentName = Annotated[
    str,
    _matching(
        r"[a-z][a-z0-9-]{0,23}",
        "1-24 lowercase letters, digits or hyphens starting with a letter "
        "(it prefixes bucket, role and function names)",
    ),
]
ImagePrefix = Annotated[
    str,
    _matching(
        r"[A-Za-z0-9][A-Za-z0-9._-]{2,99}",
        "3-100 of A-Z a-z 0-9 . _ - starting with a letter or digit (the AMI name prefix)",
    ),
]
OptionalBucketName = Annotated[
    str,
    _matching(
        r"(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
        "an S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens",
        optional=True,
    ),
]
PayloadPrefix = Annotated[
    str,
    _matching(
        r"(?:[A-Za-z0-9!_.'()-]+/)+",
        "an S3 key prefix ending in '/', without a leading '/' or wildcard, e.g. payloads/",
    ),
]
ParentImage = Annotated[
    str,
    _matching(
        rf"ssm:/[A-Za-z0-9_./-]+|ami-{_EC2_ID}",
        "an AMI id (ami-…) or an SSM parameter path prefixed with ssm:",
    ),
]
InstanceType = Annotated[
    str,
    _matching(
        r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*\.[a-z0-9]+",
        "an EC2 instance type such as m7i.large",
    ),
]
OptionalSubnetId = Annotated[
    str, _matching(rf"subnet-{_EC2_ID}", "a subnet id (subnet-…)", optional=True)
]
SecurityGroupId = Annotated[str, _matching(rf"sg-{_EC2_ID}", "a security group id (sg-…)")]
LaunchTemplateId = Annotated[
    str, _matching(rf"lt-{_EC2_ID}", "a launch template id (lt- and 17 hex digits)")
]
ClusterName = Annotated[
    str, _matching(r"[A-Za-z0-9_-]{1,255}", "an ECS cluster name: 1-255 of A-Z a-z 0-9 _-")
]
AutoScalingGroupName = Annotated[
    str,
    _matching(
        r"[A-Za-z0-9][A-Za-z0-9 _.@+=/-]{0,254}",
        "an Auto Scaling group name (1-255 characters, no ':')",
    ),
]
OptionalSchedule = Annotated[
    str,
    _matching(
        _SCHEDULE,
        "a schedule cron(<min> <hour> <day> <month> <weekday> <year>) or rate(<n> <unit>)",
        optional=True,
    ),
]
WaveName = Annotated[
    str,
    _matching(
        r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}",
        "a wave name: 1-40 of A-Z a-z 0-9 _- starting with a letter or digit",
    ),
]
REST_OF_ACCOUNTS = "rest"
WaveMember = Annotated[
    str,
    _matching(
        rf"{_ACCOUNT}|{_OU_ID}|{REST_OF_ACCOUNTS}",
        "a 12-digit account id (quoted), an OU id (ou-…-…) or 'rest' (every account not in an "
        "earlier wave)",
    ),
]
LogRetentionDays = Literal[LOG_RETENTION_DAYS]  # type: ignore[valid-type]
Percentage = Annotated[int, Field(ge=1, le=100)]


def _non_empty(allowed: str) -> Any:
    """A validator rejecting an empty list (after its items validated, unlike min_length)."""

    def check(values: tuple[Any, ...]) -> tuple[Any, ...]:
        if not values:
            raise ValueError(f"expected {allowed}")
        return values

    return check


class _StrictModel(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
    )


# --- models -----------------------------------------------------------------------------------


class Target(_StrictModel):
    """One Auto Scaling group of ECS container instances that follows the golden AMI."""

    auto_scaling_group_name: AutoScalingGroupName
    launch_template_id: LaunchTemplateId
    cluster_name: ClusterName
    region: Region  # parse_config fills in the home region (aws:region) when a target omits it


class RefreshPreferences(_StrictModel):
    """The instance refresh preferences a stack configures, with their API member names."""

    min_healthy_percentage: int
    max_healthy_percentage: int
    instance_warmup: int
    checkpoint_percentages: tuple[int, ...]
    checkpoint_delay: int
    bake_time: int
    standby_instances: str

    def to_api(self) -> dict[str, Any]:
        """`REFRESH_PREFERENCES_JSON`: StartInstanceRefresh member names, no empty checkpoints."""
        preferences: dict[str, Any] = {
            "MinHealthyPercentage": self.min_healthy_percentage,
            "MaxHealthyPercentage": self.max_healthy_percentage,
            "InstanceWarmup": self.instance_warmup,
            "CheckpointPercentages": list(self.checkpoint_percentages),
            "CheckpointDelay": self.checkpoint_delay,
            "BakeTime": self.bake_time,
            "StandbyInstances": self.standby_instances,
        }
        if not self.checkpoint_percentages:
            # The API rejects a CheckpointDelay without CheckpointPercentages.
            del preferences["CheckpointPercentages"], preferences["CheckpointDelay"]
        return preferences


class RolloutWave(_StrictModel):
    """One wave of the progressive rollout (DESIGN §10): who, how long to watch, how strict."""

    name: WaveName
    accounts: Annotated[
        tuple[WaveMember, ...],
        AfterValidator(_non_empty("at least one account id, OU id or 'rest'")),
    ]
    # How long the wave's groups must stay healthy after they all settled.
    soak_minutes: Annotated[int, Field(ge=0, le=10080)] = 0
    # Failed groups (and silent accounts) the wave tolerates before the rollout halts.
    max_failed_groups: Annotated[int, Field(ge=0)] = 0
    approval: Literal["auto", "manual"] = "auto"
    # An invoked account that has not reported every group by then counts as failed.
    timeout_minutes: Annotated[int, Field(ge=1, le=1440)] = 60

    @property
    def is_rest(self) -> bool:
        return self.accounts == (REST_OF_ACCOUNTS,)

    @property
    def account_ids(self) -> tuple[str, ...]:
        return tuple(a for a in self.accounts if a.isdigit())

    @property
    def organizational_unit_ids(self) -> tuple[str, ...]:
        return tuple(a for a in self.accounts if a.startswith("ou-"))


class CommonConfig(_StrictModel):
    """Keys every stack has."""

    role: Literal["infra", "workload"]
    home_region: Region = Field(alias=HOME_REGION_KEY)
    environment_name: EnvironmentName = "golden-ami"
    # Always starts with the home region, without duplicates (see the validator).
    regions: tuple[Region, ...] = ()
    image_prefix: ImagePrefix = "golden-ecs-al2023"
    infra_account_id: AccountId
    organization_id: OrganizationId
    invoke_role_name: IamName = "InvokeInstanceRefreshHandlerRole"
    refresh_function_name: LambdaName = "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
    log_retention_days: LogRetentionDays = 30
    # An alarm can only notify a topic in its own region: one topic, or one per alarm region.
    alarm_topic_arn: OptionalSnsTopicArn = ""
    alarm_topic_arns: tuple[SnsTopicArn, ...] = ()
    ami_kms_key_arn: OptionalKmsKeyArn = ""

    @field_validator("regions")
    @classmethod
    def _home_region_first(cls, regions: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        home = info.data.get("home_region")
        ordered = ((home,) if home else ()) + regions
        return tuple(dict.fromkeys(ordered))

    def ami_kms_key_arn_in(self, region: str) -> str:
        """The AMI key ARN in `region` ("" for none); multi-Region replicas share the key id."""
        if not self.ami_kms_key_arn:
            return ""
        arn_parts = self.ami_kms_key_arn.split(":")
        arn_parts[3] = region
        return ":".join(arn_parts)

    @property
    def alarm_regions(self) -> tuple[str, ...]:
        """The regions this stack creates alarms in."""
        return (self.home_region,)

    def alarm_topic_arn_in(self, region: str) -> str:
        """The topic the alarms in `region` notify ("" for none)."""
        topics = (self.alarm_topic_arn,) if self.alarm_topic_arn else self.alarm_topic_arns
        return next((arn for arn in topics if arn.split(":")[3] == region), "")

    def _alarm_topic_problems(self) -> list[str]:
        if self.alarm_topic_arn and self.alarm_topic_arns:
            return [
                _problem(
                    "alarmTopicArns",
                    list(self.alarm_topic_arns),
                    "set alarmTopicArn (one region) or alarmTopicArns (one topic per region), "
                    "not both",
                )
            ]
        key, topics = (
            ("alarmTopicArn", (self.alarm_topic_arn,))
            if self.alarm_topic_arn
            else ("alarmTopicArns", self.alarm_topic_arns)
        )
        if not topics:
            return []
        regions = self.alarm_regions
        per_region = "; use alarmTopicArns, one topic per region" if len(regions) > 1 else ""
        problems = []
        seen: set[str] = set()
        for arn in topics:
            region = arn.split(":")[3]
            if region not in regions:
                problems.append(
                    _problem(
                        key,
                        arn,
                        "an alarm can only notify an SNS topic in its own region, and this "
                        f"stack's alarms are in {', '.join(regions)}{per_region}",
                    )
                )
            elif region in seen:
                problems.append(_problem(key, arn, f"one topic per region; {region} has two"))
            seen.add(region)
        missing = [region for region in regions if region not in seen]
        if missing and not problems:
            problems.append(
                _problem(
                    key,
                    topics[0] if key == "alarmTopicArn" else list(topics),
                    f"no topic in {', '.join(missing)}, where this stack has alarms too: an "
                    f"alarm can only notify an SNS topic in its own region{per_region}",
                )
            )
        return problems

    def _common_problems(self) -> list[str]:
        return self._partition_problems() + self._alarm_topic_problems() + self._key_problems()

    def _partition_problems(self) -> list[str]:
        """One stack's regions share a partition: its credentials, its ARNs and Image Builder's
        distribution all stop at the partition's border (aws, aws-cn, aws-us-gov, ...). The
        policies and ARNs the components build are written for the aws partition, so a stack in
        another one (China, GovCloud, ...) is refused rather than deployed with grants that match
        nothing."""
        home = region_partitions()[self.home_region]
        if home != "aws":
            return [
                _problem(
                    HOME_REGION_KEY,
                    self.home_region,
                    f"{self.home_region} is in the {home} partition; this program's IAM policies "
                    "and ARNs are written for the aws partition (arn:aws:…), so only regions of "
                    "the aws partition are supported",
                )
            ]
        return [
            _problem(
                "regions",
                list(self.regions),
                f"{region} is in the {region_partitions()[region]} partition and aws:region "
                f"{self.home_region} in {home}: one stack's regions are all in one partition",
            )
            for region in self.regions
            if region_partitions()[region] != home
        ]

    def _key_problems(self) -> list[str]:
        if not self.ami_kms_key_arn:
            return []
        key_region = self.ami_kms_key_arn.split(":")[3]
        if key_region != self.home_region:
            return [
                _problem(
                    "amiKmsKeyArn",
                    self.ami_kms_key_arn,
                    f"the key must be in the home region {self.home_region} (aws:region)",
                )
            ]
        if len(self.regions) > 1 and ":key/mrk-" not in self.ami_kms_key_arn:
            return [
                _problem(
                    "amiKmsKeyArn",
                    self.ami_kms_key_arn,
                    f"AMIs are copied to {', '.join(self.regions)}: use a multi-Region key "
                    "(key/mrk-…) replicated to each of them",
                )
            ]
        return []


class InfraConfig(CommonConfig):
    """The infra account: payload bucket, image pipeline, build trigger and fan-out."""

    role: Literal["infra"]
    bucket_name: OptionalBucketName = ""
    payload_prefix: PayloadPrefix = "payloads/"
    noncurrent_version_expiration_days: Annotated[int, Field(ge=0, le=36500)] = 0
    parent_image: ParentImage = DEFAULT_PARENT_IMAGE
    build_instance_types: Annotated[
        tuple[InstanceType, ...], AfterValidator(_non_empty("at least one instance type"))
    ] = ("m7i.large",)
    subnet_id: OptionalSubnetId = ""
    security_group_ids: tuple[SecurityGroupId, ...] = ()
    management_account_id: OptionalAccountId = ""
    share_with_ou_arns: tuple[OrganizationalUnitArn, ...] = ()
    share_with_account_ids: tuple[AccountId, ...] = ()
    build_trigger: Literal["eventbridge", "cloudtrail"] = "eventbridge"
    # Lambda's SQS batching window is at most 300 s; a zero window would not coalesce a burst.
    build_settle_seconds: Annotated[int, Field(ge=1, le=300)] = 90
    build_schedule: OptionalSchedule = ""
    # Image Builder lifecycle limits: retainAtLeast 1-10, age 1-1000 days.
    keep_newest_images: Annotated[int, Field(ge=1, le=10)] = 5
    image_retention_days: Annotated[int, Field(ge=1, le=1000)] = 180
    fanout_function_name: LambdaName = (
        "Lambda-Invoke-Another-LambdaInMultiAccout-For-InstanceRefresh"
    )
    fanout_role_name: IamName = "GoldenAmiFanoutRole"
    account_source: Literal["organizations", "static"] = "organizations"
    static_account_ids: tuple[AccountId, ...] = ()
    organizational_unit_ids: tuple[OrganizationalUnitOrRootId, ...] = ()
    list_accounts_role_arn: OptionalRoleArn = ""
    include_infra_account: bool = False
    expected_account_ids: tuple[AccountId, ...] = ()
    fanout_max_concurrency: Annotated[int, Field(ge=1, le=64)] = 32
    fanout_timeout_seconds: Annotated[int, Field(ge=1, le=900)] = 300
    # Unset (Pulumi passes [] for it, so [] is unset too): no wave gate, the fan-out follows
    # the image topic, which is one wave of every account.
    rollout_waves: tuple[RolloutWave, ...] = ()

    @property
    def waves_enabled(self) -> bool:
        return bool(self.rollout_waves)

    @property
    def effective_waves(self) -> tuple[RolloutWave, ...]:
        """The configured waves, or the single wave of every account when none is set."""
        return self.rollout_waves or (RolloutWave(name="all", accounts=(REST_OF_ACCOUNTS,)),)

    @property
    def organization_arn(self) -> str:
        return (
            f"arn:aws:organizations::{self.management_account_id}"
            f":organization/{self.organization_id}"
        )

    @property
    def shares_with_organization(self) -> bool:
        """No OU or account list configured: the AMIs are shared with the whole Organization."""
        return not (self.share_with_ou_arns or self.share_with_account_ids)

    @property
    def fanout_role_arn(self) -> str:
        return f"arn:aws:iam::{self.infra_account_id}:role/{self.fanout_role_name}"

    @property
    def rollout_table_name(self) -> str:
        """The RolloutStatus table: the recorder, the fan-out and `python -m rollout` use it."""
        return f"{self.environment_name}-rollout-status"

    @property
    def rollout_bus_arn(self) -> str:
        """The RolloutStatus bus (`<environmentName>-rollout`, home region)."""
        return (
            f"arn:aws:events:{self.home_region}:{self.infra_account_id}"
            f":event-bus/{self.environment_name}-rollout"
        )

    @model_validator(mode="after")
    def _consistent(self) -> InfraConfig:
        problems = self._common_problems()
        if self.security_group_ids and not self.subnet_id:
            problems.append(
                _problem(
                    "securityGroupIds",
                    list(self.security_group_ids),
                    "security groups need golden-ami:subnetId (the subnet of their VPC)",
                )
            )
        if self.shares_with_organization and not self.management_account_id:
            problems.append(
                _problem(
                    "managementAccountId",
                    "",
                    "required to share AMIs with the Organization (its ARN names the management "
                    "account); or set shareWithOuArns / shareWithAccountIds",
                )
            )
        for arn in self.share_with_ou_arns:
            if f":ou/{self.organization_id}/" not in arn:
                problems.append(
                    _problem(
                        "shareWithOuArns",
                        arn,
                        f"OUs must belong to organizationId {self.organization_id}",
                    )
                )
        if self.account_source == "static" and not self.static_account_ids:
            problems.append(
                _problem("staticAccountIds", [], "accountSource static needs at least one account")
            )
        if self.account_source == "static" and self.organizational_unit_ids:
            problems.append(
                _problem(
                    "organizationalUnitIds",
                    list(self.organizational_unit_ids),
                    "an OU filter applies to accountSource organizations only",
                )
            )
        if self.account_source == "organizations" and self.static_account_ids:
            problems.append(
                _problem(
                    "staticAccountIds",
                    list(self.static_account_ids),
                    "only read when accountSource is static",
                )
            )
        problems += self._wave_problems()
        return _raise_if(problems, self)

    def _wave_problems(self) -> list[str]:
        """An account or OU in one wave only, `rest` alone in the last wave, members reachable."""
        problems: list[str] = []
        first_wave_of: dict[str, str] = {}
        names: set[str] = set()
        last = len(self.rollout_waves) - 1
        for index, wave in enumerate(self.rollout_waves):
            if wave.name in names:
                problems.append(_wave_problem(index, wave, "name", wave.name, "names are unique"))
            names.add(wave.name)
            if REST_OF_ACCOUNTS in wave.accounts and (index != last or not wave.is_rest):
                problems.append(
                    _wave_problem(
                        index,
                        wave,
                        "accounts",
                        list(wave.accounts),
                        "'rest' (every account not in an earlier wave) must be the only entry "
                        "of the last wave",
                    )
                )
            for member in dict.fromkeys(wave.accounts):
                if member == REST_OF_ACCOUNTS:
                    continue
                earlier = first_wave_of.setdefault(member, wave.name)
                if earlier != wave.name:
                    problems.append(
                        _wave_problem(
                            index, wave, "accounts", member, f"already in wave {earlier!r}"
                        )
                    )
                elif wave.accounts.count(member) > 1:
                    problems.append(_wave_problem(index, wave, "accounts", member, "listed twice"))
            if self.account_source == "static":
                problems += self._static_wave_problems(index, wave)
        return problems

    def _static_wave_problems(self, index: int, wave: RolloutWave) -> list[str]:
        problems = []
        if wave.organizational_unit_ids:
            problems.append(
                _wave_problem(
                    index,
                    wave,
                    "accounts",
                    list(wave.organizational_unit_ids),
                    "OU ids need accountSource organizations (a static list has no OUs)",
                )
            )
        unknown = [a for a in wave.account_ids if a not in self.static_account_ids]
        if unknown:
            problems.append(
                _wave_problem(
                    index, wave, "accounts", unknown, "not in staticAccountIds: never reached"
                )
            )
        return problems


class WorkloadConfig(CommonConfig):
    """A workload account: the refresh Lambda, its invoke role and the rollback alarms."""

    role: Literal["workload"]
    fanout_role_arn: RoleArn
    rollout_bus_arn: OptionalEventBusArn = ""
    ecs_instance_role_arn: RoleArn
    targets: Annotated[
        tuple[Target, ...],
        AfterValidator(
            _non_empty(
                "a list of at least one {autoScalingGroupName, launchTemplateId, clusterName, "
                "region (optional, default aws:region)}"
            )
        ),
    ]
    refresh_min_healthy_percentage: Annotated[int, Field(ge=0, le=100)] = 90
    refresh_max_healthy_percentage: Annotated[int, Field(ge=100, le=200)] = 110
    refresh_instance_warmup_seconds: Annotated[int, Field(ge=0, le=172800)] = 300
    refresh_checkpoint_percentages: tuple[Percentage, ...] = ()
    refresh_checkpoint_delay_seconds: Annotated[int, Field(ge=0, le=172800)] = 600
    refresh_bake_time_seconds: Annotated[int, Field(ge=0, le=172800)] = 900
    refresh_standby_instances: Literal["Ignore", "Terminate", "Wait"] = "Ignore"
    rollback_alarm_threshold: Annotated[int, Field(ge=1)] = 3
    # The alarm watches a metric-filter metric (one-minute resolution): whole minutes only.
    rollback_alarm_period_seconds: Annotated[int, Field(ge=60, le=86400, multiple_of=60)] = 300
    rollback_alarm_evaluation_periods: Annotated[int, Field(ge=1, le=1440)] = 1
    instance_count_alarm: bool = False
    converge_schedule: OptionalSchedule = ""

    @property
    def refresh_preferences(self) -> RefreshPreferences:
        return RefreshPreferences(
            min_healthy_percentage=self.refresh_min_healthy_percentage,
            max_healthy_percentage=self.refresh_max_healthy_percentage,
            instance_warmup=self.refresh_instance_warmup_seconds,
            checkpoint_percentages=self.refresh_checkpoint_percentages,
            checkpoint_delay=self.refresh_checkpoint_delay_seconds,
            bake_time=self.refresh_bake_time_seconds,
            standby_instances=self.refresh_standby_instances,
        )

    def targets_in(self, region: str) -> tuple[Target, ...]:
        return tuple(t for t in self.targets if t.region == region)

    @property
    def alarm_regions(self) -> tuple[str, ...]:
        """The regions with targets: each has its clusters' rollback alarms."""
        return tuple(r for r in self.regions if self.targets_in(r))

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadConfig:
        problems = self._common_problems()
        fanout_account = self.fanout_role_arn.split(":")[4]
        if fanout_account != self.infra_account_id:
            problems.append(
                _problem(
                    "fanoutRoleArn",
                    self.fanout_role_arn,
                    f"the fan-out role lives in infraAccountId {self.infra_account_id}",
                )
            )
        if self.rollout_bus_arn and self.rollout_bus_arn.split(":")[4] != self.infra_account_id:
            problems.append(
                _problem(
                    "rolloutBusArn",
                    self.rollout_bus_arn,
                    f"the rollout bus lives in infraAccountId {self.infra_account_id}",
                )
            )
        low, high = self.refresh_min_healthy_percentage, self.refresh_max_healthy_percentage
        if high - low > 100:
            problems.append(
                _problem(
                    "refreshMaxHealthyPercentage",
                    high,
                    f"at most 100 above refreshMinHealthyPercentage ({low}), an Auto Scaling limit",
                )
            )
        if low == 100 and high == 100:
            problems.append(
                _problem(
                    "refreshMaxHealthyPercentage",
                    high,
                    "above 100 when refreshMinHealthyPercentage is 100, or no instance can be "
                    "replaced",
                )
            )
        checkpoints = list(self.refresh_checkpoint_percentages)
        if checkpoints and (checkpoints != sorted(set(checkpoints)) or checkpoints[-1] != 100):
            problems.append(
                _problem(
                    "refreshCheckpointPercentages",
                    checkpoints,
                    "strictly ascending percentages ending at 100 (e.g. [20, 50, 100]), "
                    "or [] for no checkpoints",
                )
            )
        detection = (
            self.rollback_alarm_period_seconds * self.rollback_alarm_evaluation_periods
            + ALARM_DETECTION_MARGIN_SECONDS
        )
        if self.refresh_bake_time_seconds < detection:
            problems.append(
                _problem(
                    "refreshBakeTimeSeconds",
                    self.refresh_bake_time_seconds,
                    f"at least {detection} (rollbackAlarmPeriodSeconds "
                    f"{self.rollback_alarm_period_seconds} x rollbackAlarmEvaluationPeriods "
                    f"{self.rollback_alarm_evaluation_periods} + {ALARM_DETECTION_MARGIN_SECONDS}"
                    " s event-to-alarm margin): the alarm can only roll back a refresh in progress",
                )
            )
        seen: set[tuple[str, str]] = set()
        for index, target in enumerate(self.targets):
            if target.region not in self.regions:
                problems.append(
                    _problem(
                        f"targets[{index}].region",
                        target.region,
                        f"one of the stack's regions {list(self.regions)}",
                    )
                )
            group = (target.auto_scaling_group_name, target.region)
            if group in seen:
                problems.append(
                    _problem(
                        f"targets[{index}].autoScalingGroupName",
                        target.auto_scaling_group_name,
                        f"each group once per region; it is already listed for {target.region}",
                    )
                )
            seen.add(group)
        return _raise_if(problems, self)


StackConfig = InfraConfig | WorkloadConfig
MODELS: dict[str, type[InfraConfig] | type[WorkloadConfig]] = {
    "infra": InfraConfig,
    "workload": WorkloadConfig,
}


class _CrossFieldError(ValueError):
    """Raised from model validators; its lines are already fully formatted problems."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _problem(key: str, value: Any, allowed: str) -> str:
    return f"{config_key(key)} = {_show(value)}: {allowed}"


def _wave_problem(index: int, wave: RolloutWave, field: str, value: Any, allowed: str) -> str:
    return _problem(f"rolloutWaves[{index}].{field}", value, f"wave {wave.name!r}: {allowed}")


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict | tuple) else repr(value)


def _raise_if(problems: list[str], model: Any) -> Any:
    if problems:
        raise _CrossFieldError(problems)
    return model


# --- the key catalogue (what Pulumi.yaml must declare) ------------------------------------------

REQUIRED = object()  # marks a key whose Pulumi.yaml default is "unset" ("" or [])


@dataclass(frozen=True)
class ConfigKey:
    """One `golden-ami:*` key as Pulumi.yaml declares it."""

    name: str
    pulumi_type: str  # string | integer | boolean | array
    item_type: str | None  # for arrays: string | integer | object
    default: Any  # REQUIRED, or the value a stack gets when it does not set the key
    roles: tuple[str, ...]

    @property
    def unset_value(self) -> Any:
        """What Pulumi.yaml declares as the default: the model's default, or "" / [] if required."""
        if self.default is not REQUIRED:
            return self.default
        return [] if self.pulumi_type == "array" else ""


def _pulumi_type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _pulumi_type(get_args(annotation)[0])
    if origin is Literal:
        return _pulumi_type(type(get_args(annotation)[0]))
    if origin is tuple:
        return "array"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return {bool: "boolean", int: "integer", str: "string"}[annotation]


def _catalogue() -> dict[str, ConfigKey]:
    keys: dict[str, ConfigKey] = {}
    for role, model in MODELS.items():
        for name, field in model.model_fields.items():
            if name in ("role", "home_region") or field.alias is None:
                continue
            entry = keys.get(field.alias)
            keys[field.alias] = ConfigKey(
                name=field.alias,
                pulumi_type=_pulumi_type(field.annotation),
                item_type=(
                    _pulumi_type(get_args(field.annotation)[0])
                    if get_origin(field.annotation) is tuple
                    else None
                ),
                default=_json_default(field),
                roles=(*entry.roles, role) if entry else (role,),
            )
    keys["role"] = ConfigKey("role", "string", None, REQUIRED, tuple(MODELS))
    return dict(sorted(keys.items()))


def _json_default(field: FieldInfo) -> Any:
    if field.is_required():
        return REQUIRED
    return list(field.default) if isinstance(field.default, tuple) else field.default


CONFIG_KEYS: dict[str, ConfigKey] = _catalogue()


# --- loading ----------------------------------------------------------------------------------


def load_config() -> StackConfig:
    """Validate the running stack's configuration (raises ConfigError)."""
    # Pulumi passes config to the program through PULUMI_CONFIG or, in tests and
    # the automation API, the runtime's config map; reading all of it lets us reject typos.
    values = {
        **pulumi.runtime.config.get_config_env(),
        **pulumi.runtime.config.CONFIG.get(),
    }
    return parse_config(values)


def parse_config(values: Mapping[str, str]) -> StackConfig:
    """Validate raw stack config: full keys (`golden-ami:role`, `aws:region`) -> strings."""
    unknown = [
        _problem(
            key,
            values[key],
            "not a key this project knows (see Pulumi.yaml)"
            + did_you_mean(key, (config_key(name) for name in CONFIG_KEYS)),
        )
        for key in sorted(values)
        if key.startswith(f"{NAMESPACE}:") and key.removeprefix(f"{NAMESPACE}:") not in CONFIG_KEYS
    ]
    unknown += [
        _problem(
            key,
            values[key],
            "not a setting of the AWS provider"
            + did_you_mean(key, (f"aws:{name}" for name in aws_provider_keys())),
        )
        for key in sorted(values)
        if key.startswith("aws:") and key.removeprefix("aws:") not in aws_provider_keys()
    ]
    if unknown:
        raise ConfigError(unknown)

    role = values.get(config_key("role"), "")
    if role not in MODELS:
        raise ConfigError([_problem("role", role, "one of 'infra', 'workload'")])
    model = MODELS[role]

    problems: list[str] = []
    # An absent required key is validated as unset so its error says what is allowed.
    fields: dict[str, Any] = {"role": role, HOME_REGION_KEY: values.get(HOME_REGION_KEY, "")}
    for key in CONFIG_KEYS.values():
        raw = values.get(config_key(key.name))
        if key.name == "role" or (raw is None and key.default is not REQUIRED):
            continue
        value = key.unset_value if raw is None else _decode(raw, key)
        if role in key.roles:
            fields[key.name] = value
        elif value != key.unset_value:
            problems.append(
                _problem(
                    key.name,
                    value,
                    f"applies to {' and '.join(key.roles)} stacks only; "
                    f"remove it from this {role} stack",
                )
            )

    # A target without a region is in the home region. When aws:region itself is bad, only its
    # own line reports it: the targets that inherit it add none.
    inherits_home_region = _default_target_regions(fields)
    try:
        config = model.model_validate(fields)
    except ValidationError as error:
        raise ConfigError(
            [*problems, *_describe(error, role, fields, inherits_home_region)]
        ) from None
    if problems:
        raise ConfigError(problems)
    return config


def _default_target_regions(fields: dict[str, Any]) -> set[int]:
    """Give each target without a `region` the home region; their indexes."""
    targets = fields.get("targets")
    if not isinstance(targets, list):
        return set()
    defaulted = {i for i, t in enumerate(targets) if isinstance(t, dict) and "region" not in t}
    fields["targets"] = [
        {**target, "region": fields[HOME_REGION_KEY]} if i in defaulted else target
        for i, target in enumerate(targets)
    ]
    return defaulted


def _decode(raw: str, key: ConfigKey) -> Any:
    """Pulumi passes numbers, booleans and arrays as JSON text; strings stay as they are.

    Text that is not JSON is passed on unchanged, for the model to reject with its message.
    """
    if key.pulumi_type == "string":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _describe(
    error: ValidationError,
    role: str,
    fields: Mapping[str, Any],
    inherits_home_region: set[int],
) -> list[str]:
    problems: list[str] = []
    details = error.errors(include_url=False)
    target_keys = [field.alias or name for name, field in Target.model_fields.items()]
    wave_keys = [field.alias or name for name, field in RolloutWave.model_fields.items()]
    meant = _misspelt_target_keys(details)
    for detail in details:
        context = detail.get("ctx", {})
        cross_field = context.get("error")
        if isinstance(cross_field, _CrossFieldError):
            problems.extend(cross_field.problems)
            continue
        location = detail["loc"]
        key = _location_key(location)
        wave = _wave_named(location, fields)
        if location[0] == "targets" and len(location) == 3:
            if location[2] == "region" and location[1] in inherits_home_region:
                continue  # the aws:region line says it
            if detail["type"] == "missing" and location in meant.values():
                continue  # the misspelt key's line says it
        if _is_unset_required(location, fields):
            problems.append(
                f"{config_key(key)} is not set; required for role {role}: "
                f"{_without_prefix(detail['msg'])}"
            )
        elif detail["type"] == "extra_forbidden" and wave is not None:
            problems.append(
                f"{config_key(key)} = {_show(detail['input'])}: {wave}unknown key "
                f"(a wave has {', '.join(wave_keys)})"
                f"{did_you_mean(str(location[-1]), wave_keys)}"
            )
        elif detail["type"] == "extra_forbidden":
            hint = (
                f"; did you mean {meant[location][-1]}?"
                if location in meant
                else did_you_mean(str(location[-1]), target_keys)
            )
            problems.append(
                f"{config_key(key)} = {_show(detail['input'])}: unknown key "
                f"(a target has {', '.join(target_keys)}){hint}"
            )
        elif detail["type"] == "missing" and wave is not None:
            problems.append(
                f"{config_key(key)} is not set: {wave}a wave has {', '.join(wave_keys)} "
                "(name and accounts required)"
            )
        elif detail["type"] == "missing":
            problems.append(
                f"{config_key(key)} is not set: a target has {', '.join(target_keys)} "
                "(region optional, default aws:region)"
            )
        else:
            problems.append(
                f"{config_key(key)} = {_show(detail['input'])}: "
                f"{wave or ''}{_without_prefix(detail['msg'])}"
            )
    return problems


def _misspelt_target_keys(details: Iterable[Any]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Unknown target key -> the missing key of the same target it most likely spells."""
    details = list(details)
    meant: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for extra in (d["loc"] for d in details if d["type"] == "extra_forbidden"):
        missing = [
            d["loc"]
            for d in details
            if d["type"] == "missing"
            and d["loc"][:-1] == extra[:-1]
            and d["loc"] not in meant.values()
        ]
        best = closest(str(extra[-1]), (str(loc[-1]) for loc in missing))
        if best is not None:
            meant[extra] = next(loc for loc in missing if loc[-1] == best)
    return meant


def _wave_named(location: tuple[int | str, ...], fields: Mapping[str, Any]) -> str | None:
    """ "wave 'canary': " for an error inside a named wave of rolloutWaves, else None."""
    if len(location) < 2 or location[0] != "rolloutWaves" or not isinstance(location[1], int):
        return None
    waves = fields.get("rolloutWaves")
    wave = waves[location[1]] if isinstance(waves, list) and location[1] < len(waves) else None
    name = wave.get("name") if isinstance(wave, dict) else None
    return f"wave {name!r}: " if isinstance(name, str) else f"wave {location[1]}: "


def _is_unset_required(location: tuple[int | str, ...], fields: Mapping[str, Any]) -> bool:
    if len(location) != 1 or fields.get(str(location[0])) not in ("", []):
        return False
    key = CONFIG_KEYS.get(str(location[0]))
    return key is None or key.default is REQUIRED  # None: aws:region


def _location_key(location: tuple[int | str, ...]) -> str:
    key = str(location[0])
    for part in location[1:]:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    return key


def _without_prefix(message: str) -> str:
    # Arrays are tuples in the models only to keep them immutable; users write YAML lists.
    return message.removeprefix("Value error, ").replace("valid tuple", "list")
