"""Typed stack config: Pulumi.yaml matches the model, examples load, every kind of bad value fails
with one ConfigError naming the key, the value and what is allowed."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
import yaml

from components.config import (
    ALARM_DETECTION_MARGIN_SECONDS,
    CONFIG_KEYS,
    DEFAULT_PARENT_IMAGE,
    REQUIRED,
    ConfigError,
    InfraConfig,
    WorkloadConfig,
    aws_provider_keys,
    known_regions,
    parse_config,
)
from tests.pulumi_harness import PROJECT_FILE, pulumi_config_value, run_stack, stack_config

PROJECT_CONFIG: dict[str, dict[str, Any]] = yaml.safe_load(PROJECT_FILE.read_text())["config"]

MRK = "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef"
SINGLE_REGION_KEY = "arn:aws:kms:eu-west-1:111122223333:key/12345678-1234-1234-1234-123456789012"
FOREIGN_OU_ARN = "arn:aws:organizations::999988887777:ou/o-zzzzzzzzzz/ou-ab12-cd34ef56"
TARGET = {
    "autoScalingGroupName": "dev-ecs-general",
    "launchTemplateId": "lt-0123456789abcdef0",
    "clusterName": "dev-general",
}


def config_of(stack: str, **overrides: Any) -> dict[str, str]:
    return stack_config(stack, overrides)


# --- Pulumi.yaml <-> model ------------------------------------------------------------------------


def test_pulumi_yaml_declares_exactly_the_model_keys() -> None:
    assert set(PROJECT_CONFIG) == set(CONFIG_KEYS)


@pytest.mark.parametrize("key", sorted(CONFIG_KEYS))
def test_pulumi_yaml_type_default_and_description_match_the_model(key: str) -> None:
    declared, known = PROJECT_CONFIG[key], CONFIG_KEYS[key]
    assert declared["description"].strip()
    assert declared["default"] == known.unset_value
    if known.item_type == "object":
        # Pulumi's project schema cannot type an array of objects (pulumi/pulumi#11321).
        assert "type" not in declared
        return
    assert declared["type"] == known.pulumi_type
    if known.pulumi_type == "array":
        assert declared["items"] == {"type": known.item_type}


@pytest.mark.parametrize(
    ("role", "required"),
    [
        ("infra", {"role", "infraAccountId", "organizationId"}),
        ("workload", {"role", "infraAccountId", "organizationId", "fanoutRoleArn",
                      "ecsInstanceRoleArn", "targets"}),
    ],
)  # fmt: skip
def test_defaults_pass_validation_once_the_required_keys_are_set(
    role: str, required: set[str]
) -> None:
    assert {k for k, v in CONFIG_KEYS.items() if v.default is REQUIRED and role in v.roles} == (
        required
    )
    required_values = {
        "aws:region": "eu-west-1",
        "golden-ami:role": role,
        "golden-ami:infraAccountId": "111122223333",
        "golden-ami:organizationId": "o-a1b2c3d4e5",
    }
    if role == "infra":  # sharing with the Organization (the default) names its management account
        required_values["golden-ami:managementAccountId"] = "999988887777"
    else:
        required_values |= {
            "golden-ami:fanoutRoleArn": "arn:aws:iam::111122223333:role/GoldenAmiFanoutRole",
            "golden-ami:ecsInstanceRoleArn": "arn:aws:iam::222233334444:role/ecsInstanceRole",
            "golden-ami:targets": pulumi_config_value([TARGET]),
        }
    defaults = {
        f"golden-ami:{key}": pulumi_config_value(spec["default"])
        for key, spec in PROJECT_CONFIG.items()
    }
    config = parse_config(defaults | required_values)
    for key in CONFIG_KEYS.values():
        if role not in key.roles or f"golden-ami:{key.name}" in required_values:
            continue
        field = next(n for n, f in type(config).model_fields.items() if f.alias == key.name)
        value = getattr(config, field)
        loaded = list(value) if isinstance(value, tuple) else value
        # The home region always leads the region list.
        assert loaded == (["eu-west-1"] if key.name == "regions" else key.default), key.name


# --- the example stacks -----------------------------------------------------------------------


def test_infra_example_loads_with_home_region_first_and_organization_sharing() -> None:
    config = parse_config(config_of("infra"))
    assert isinstance(config, InfraConfig)
    assert config.regions == ("eu-west-1", "us-east-1")
    assert config.parent_image == DEFAULT_PARENT_IMAGE
    assert config.shares_with_organization
    assert (
        config.organization_arn == "arn:aws:organizations::999988887777:organization/o-a1b2c3d4e5"
    )
    assert config.fanout_role_arn == "arn:aws:iam::111122223333:role/GoldenAmiFanoutRole"


def test_home_region_leads_and_duplicates_collapse() -> None:
    config = parse_config(config_of("infra", regions=["us-east-1", "eu-west-1", "us-east-1"]))
    assert config.regions == ("eu-west-1", "us-east-1")


def test_workload_examples_load_and_prod_is_stricter_than_dev() -> None:
    dev, prod = parse_config(config_of("workload-dev")), parse_config(config_of("workload-prod"))
    assert isinstance(dev, WorkloadConfig)
    assert isinstance(prod, WorkloadConfig)
    assert prod.refresh_min_healthy_percentage > dev.refresh_min_healthy_percentage
    assert prod.refresh_bake_time_seconds > dev.refresh_bake_time_seconds
    assert prod.refresh_checkpoint_percentages == (20, 50, 100)
    assert not dev.refresh_checkpoint_percentages


def test_targets_default_to_the_home_region_and_group_by_region() -> None:
    prod = parse_config(config_of("workload-prod"))
    assert [t.region for t in prod.targets] == ["eu-west-1", "us-east-1"]
    assert [t.launch_template_id for t in prod.targets_in("us-east-1")] == ["lt-0b1c2d3e4f5a60719"]


def test_refresh_preferences_use_api_names_and_omit_empty_checkpoints() -> None:
    assert parse_config(config_of("workload-prod")).refresh_preferences.to_api() == {
        "MinHealthyPercentage": 100,
        "MaxHealthyPercentage": 125,
        "InstanceWarmup": 300,
        "CheckpointPercentages": [20, 50, 100],
        "CheckpointDelay": 900,
        "BakeTime": 1800,
        "StandbyInstances": "Ignore",
    }
    # The API rejects a CheckpointDelay without CheckpointPercentages.
    dev_preferences = parse_config(config_of("workload-dev")).refresh_preferences.to_api()
    assert "CheckpointPercentages" not in dev_preferences
    assert "CheckpointDelay" not in dev_preferences


def test_waves_load_in_order_and_unset_is_one_wave_of_every_account() -> None:
    unset = parse_config(config_of("infra"))
    assert not unset.waves_enabled
    assert [(w.name, w.accounts) for w in unset.effective_waves] == [("all", ("rest",))]
    waves = [
        {"name": "canary", "accounts": ["222233334444"], "soakMinutes": 30, "approval": "manual"},
        {"name": "early", "accounts": ["ou-ab12-abcd1234", "333344445555"], "maxFailedGroups": 2},
        {"name": "rest", "accounts": ["rest"], "timeoutMinutes": 120},
    ]
    config = parse_config(config_of("infra", rolloutWaves=waves))
    assert config.waves_enabled
    canary, early, rest = config.effective_waves
    assert (canary.soak_minutes, canary.approval, canary.max_failed_groups) == (30, "manual", 0)
    assert early.organizational_unit_ids == ("ou-ab12-abcd1234",)
    assert early.account_ids == ("333344445555",)
    assert rest.is_rest and rest.timeout_minutes == 120 and rest.approval == "auto"


def test_multi_region_key_is_addressed_in_each_region() -> None:
    config = parse_config(config_of("infra", amiKmsKeyArn=MRK))
    assert config.ami_kms_key_arn_in("us-east-1") == MRK.replace("eu-west-1", "us-east-1")


# --- bad values ---------------------------------------------------------------------------------

INFRA, DEV = "infra", "workload-dev"
CANARY = {"name": "canary", "accounts": ["222233334444"], "soakMinutes": 30}
BAD_VALUES = [
    # (stack, overrides, key named in the error, value shown, what is allowed)
    (INFRA, {"role": "builder"}, "role", "'builder'", "one of 'infra', 'workload'"),
    (INFRA, {"role": None}, "role", "''", "one of 'infra', 'workload'"),
    (INFRA, {"aws:region": None}, "aws:region", "not set", "AWS region name"),
    (INFRA, {"aws:region": "europe"}, "aws:region", "'europe'", "AWS region name"),
    (INFRA, {"regions": ["eu-west-1", "mars-1"]}, "regions[1]", "'mars-1'", "AWS region name"),
    (DEV, {"aws:region": "eu-wset-1"}, "aws:region", "'eu-wset-1'", "did you mean eu-west-1?"),
    (DEV, {"aws:region": "eu-west-9"}, "aws:region", "'eu-west-9'", "did you mean eu-west-1?"),
    (DEV, {"aws:region": None}, "aws:region", "not set", "AWS region name"),
    (INFRA, {"regions": ["us-est-1"]}, "regions[0]", "'us-est-1'", "did you mean us-east-1?"),
    (INFRA, {"aws:regoin": "eu-west-1"}, "aws:regoin", "'eu-west-1'",
     "not a setting of the AWS provider; did you mean aws:region?"),
    (INFRA, {"aws:assumeRole": "{}"}, "aws:assumeRole", "'{}'", "did you mean aws:assumeRoles?"),
    (INFRA, {"regions": "eu-west-1"}, "regions", "'eu-west-1'", "list"),
    (INFRA, {"infraAccountId": "11112222333"}, "infraAccountId", "'11112222333'", "12-digit"),
    (INFRA, {"infraAccountId": None}, "infraAccountId", "not set; required for role infra",
     "12-digit"),
    (DEV, {"infraAccountId": ""}, "infraAccountId", "not set; required for role workload",
     "12-digit"),
    (INFRA, {"organizationId": "org-12"}, "organizationId", "'org-12'", "o-a1b2c3d4e5"),
    (INFRA, {"environmentName": "Golden_AMI"}, "environmentName", "'Golden_AMI'", "lowercase"),
    (INFRA, {"imagePrefix": "x"}, "imagePrefix", "'x'", "3-100"),
    (INFRA, {"invokeRoleName": "bad role"}, "invokeRoleName", "'bad role'", "IAM name"),
    (INFRA, {"refreshFunctionName": "a:b"}, "refreshFunctionName", "'a:b'", "Lambda function name"),
    (INFRA, {"logRetentionDays": 31}, "logRetentionDays", "31", "30, 60"),
    (INFRA, {"alarmTopicArn": "arn:aws:sqs:eu-west-1:111122223333:q"}, "alarmTopicArn",
     "arn:aws:sqs", "SNS topic ARN"),
    (INFRA, {"amiKmsKeyArn": "arn:aws:kms:eu-west-1:111122223333:alias/ami"}, "amiKmsKeyArn",
     "alias/ami", "not an alias"),
    (INFRA, {"amiKmsKeyArn": SINGLE_REGION_KEY}, "amiKmsKeyArn", SINGLE_REGION_KEY,
     "multi-Region key"),
    (INFRA, {"amiKmsKeyArn": MRK.replace("eu-west-1", "us-east-1")}, "amiKmsKeyArn", "us-east-1",
     "home region eu-west-1"),
    (INFRA, {"bucketName": "Golden_Payloads"}, "bucketName", "'Golden_Payloads'", "S3 bucket name"),
    (INFRA, {"payloadPrefix": "payloads"}, "payloadPrefix", "'payloads'", "ending in '/'"),
    (INFRA, {"payloadPrefix": "/payloads/"}, "payloadPrefix", "'/payloads/'", "leading '/'"),
    (INFRA, {"payloadPrefix": "pay*/"}, "payloadPrefix", "'pay*/'", "wildcard"),
    (INFRA, {"noncurrentVersionExpirationDays": -1}, "noncurrentVersionExpirationDays", "-1",
     "greater than or equal to 0"),
    (INFRA, {"parentImage": "ubuntu-22.04"}, "parentImage", "'ubuntu-22.04'", "ssm:"),
    (INFRA, {"parentImage": "ami-123"}, "parentImage", "'ami-123'", "AMI id"),
    (INFRA, {"buildInstanceTypes": ["m7i_large"]}, "buildInstanceTypes[0]", "'m7i_large'",
     "instance type"),
    (INFRA, {"buildInstanceTypes": []}, "buildInstanceTypes", "[]", "at least one instance type"),
    (INFRA, {"subnetId": "subnet-xyz"}, "subnetId", "'subnet-xyz'", "subnet id"),
    (INFRA, {"securityGroupIds": ["sg-1"]}, "securityGroupIds[0]", "'sg-1'", "security group id"),
    (INFRA, {"subnetId": ""}, "securityGroupIds", "sg-0a1b2c3d4e5f60718",
     "need golden-ami:subnetId"),
    (INFRA, {"managementAccountId": ""}, "managementAccountId", "''", "share AMIs with the Organ"),
    (INFRA, {"managementAccountId": "99998888777"}, "managementAccountId", "'99998888777'",
     "12-digit"),
    (INFRA, {"shareWithOuArns": ["ou-ab12-cd34ef56"]}, "shareWithOuArns[0]", "'ou-ab12-cd34ef56'",
     "OU ARN"),
    (INFRA, {"shareWithOuArns": [FOREIGN_OU_ARN]}, "shareWithOuArns", "o-zzzzzzzzzz",
     "belong to organizationId o-a1b2c3d4e5"),
    (INFRA, {"shareWithAccountIds": ["1234"]}, "shareWithAccountIds[0]", "'1234'", "12-digit"),
    (INFRA, {"buildTrigger": "s3"}, "buildTrigger", "'s3'", "'eventbridge' or 'cloudtrail'"),
    (INFRA, {"buildSettleSeconds": 301}, "buildSettleSeconds", "301",
     "less than or equal to 300"),
    (INFRA, {"buildSettleSeconds": 0}, "buildSettleSeconds", "0", "greater than or equal to 1"),
    (INFRA, {"buildSettleSeconds": "ninety"}, "buildSettleSeconds", "'ninety'", "valid integer"),
    (INFRA, {"buildSchedule": "every sunday"}, "buildSchedule", "'every sunday'", "cron("),
    (INFRA, {"keepNewestImages": 11}, "keepNewestImages", "11", "less than or equal to 10"),
    (INFRA, {"keepNewestImages": 0}, "keepNewestImages", "0", "greater than or equal to 1"),
    (INFRA, {"imageRetentionDays": 0}, "imageRetentionDays", "0", "greater than or equal to 1"),
    (INFRA, {"accountSource": "ldap"}, "accountSource", "'ldap'", "'organizations' or 'static'"),
    (INFRA, {"accountSource": "static"}, "staticAccountIds", "[]", "at least one account"),
    (INFRA, {"staticAccountIds": ["222233334444"]}, "staticAccountIds", "222233334444",
     "only read when accountSource is static"),
    (INFRA, {"accountSource": "static", "staticAccountIds": ["222233334444"],
         "organizationalUnitIds": ["ou-ab12-cd34ef56"]}, "organizationalUnitIds",
     "ou-ab12-cd34ef56", "accountSource organizations only"),
    (INFRA, {"organizationalUnitIds": ["ou-bad"]}, "organizationalUnitIds[0]", "'ou-bad'", "OU id"),
    (INFRA, {"listAccountsRoleArn": "arn:aws:iam::123:role/x"}, "listAccountsRoleArn",
     "arn:aws:iam::123:role/x", "IAM role ARN"),
    (INFRA, {"includeInfraAccount": "maybe"}, "includeInfraAccount", "'maybe'", "valid boolean"),
    (INFRA, {"expectedAccountIds": ["12"]}, "expectedAccountIds[0]", "'12'", "12-digit"),
    (INFRA, {"fanoutMaxConcurrency": 65}, "fanoutMaxConcurrency", "65",
     "less than or equal to 64"),
    (INFRA, {"fanoutTimeoutSeconds": 901}, "fanoutTimeoutSeconds", "901",
     "less than or equal to 900"),
    (INFRA, {"buildSettleSecond": 60}, "buildSettleSecond", "60",
     "not a key this project knows (see Pulumi.yaml); did you mean golden-ami:buildSettleSeconds?"),
    (INFRA, {"colour": "blue"}, "colour", "'blue'",
     "not a key this project knows (see Pulumi.yaml)"),
    (INFRA, {"rolloutWaves": [CANARY, {"name": "rest", "accounts": ["333344445555", "rest"]}]},
     "rolloutWaves[1].accounts", "333344445555", "wave 'rest': 'rest' (every account not in an "
     "earlier wave) must be the only entry of the last wave"),
    (INFRA, {"rolloutWaves": [{"name": "all", "accounts": ["rest"]}, CANARY]},
     "rolloutWaves[0].accounts", '["rest"]', "wave 'all': 'rest'"),
    (INFRA,
     {"rolloutWaves": [CANARY, {"name": "prod", "accounts": ["333344445555", "222233334444"]}]},
     "rolloutWaves[1].accounts", "'222233334444'", "wave 'prod': already in wave 'canary'"),
    (INFRA, {"rolloutWaves": [{**CANARY, "accounts": ["ou-abc"]}]}, "rolloutWaves[0].accounts[0]",
     "'ou-abc'", "wave 'canary': expected a 12-digit account id (quoted), an OU id"),
    (INFRA, {"rolloutWaves": [{**CANARY, "accounts": []}]}, "rolloutWaves[0].accounts", "[]",
     "wave 'canary': expected at least one account id, OU id or 'rest'"),
    (INFRA, {"rolloutWaves": [CANARY, CANARY | {"accounts": ["333344445555"]}]},
     "rolloutWaves[1].name", "'canary'", "wave 'canary': names are unique"),
    (INFRA, {"rolloutWaves": [{**CANARY, "approval": "yes"}]}, "rolloutWaves[0].approval", "'yes'",
     "wave 'canary': Input should be 'auto' or 'manual'"),
    (INFRA, {"rolloutWaves": [{**CANARY, "soakMinute": 5}]}, "rolloutWaves[0].soakMinute", "5",
     "wave 'canary': unknown key (a wave has name, accounts, soakMinutes, maxFailedGroups, "
     "approval, timeoutMinutes); did you mean soakMinutes?"),
    (INFRA, {"rolloutWaves": [{**CANARY, "maxFailedGroups": -1}]},
     "rolloutWaves[0].maxFailedGroups", "-1", "wave 'canary': Input should be greater than or"),
    (INFRA, {"rolloutWaves": [{"accounts": ["rest"]}]}, "rolloutWaves[0].name", "is not set",
     "wave 0: a wave has name, accounts"),
    (INFRA, {"accountSource": "static", "staticAccountIds": ["222233334444"],
             "rolloutWaves": [{**CANARY, "accounts": ["ou-ab12-abcd1234"]}]},
     "rolloutWaves[0].accounts", "ou-ab12-abcd1234", "OU ids need accountSource organizations"),
    (INFRA, {"accountSource": "static", "staticAccountIds": ["222233334444"],
             "rolloutWaves": [{**CANARY, "accounts": ["333344445555"]}]},
     "rolloutWaves[0].accounts", "333344445555", "not in staticAccountIds"),
    (INFRA, {"targets": [TARGET]}, "targets", "dev-ecs-general", "workload stacks only"),
    (DEV, {"bucketName": "payloads"}, "bucketName", "'payloads'", "infra stacks only"),
    (DEV, {"fanoutRoleArn": "GoldenAmiFanoutRole"}, "fanoutRoleArn", "'GoldenAmiFanoutRole'",
     "IAM role ARN"),
    (DEV, {"fanoutRoleArn": "arn:aws:iam::222233334444:role/GoldenAmiFanoutRole"}, "fanoutRoleArn",
     "222233334444", "lives in infraAccountId 111122223333"),
    (DEV, {"rolloutBusArn": "golden-ami-rollout"}, "rolloutBusArn", "'golden-ami-rollout'",
     "an event bus ARN"),
    (DEV, {"rolloutBusArn": "arn:aws:events:eu-west-1:222233334444:event-bus/golden-ami-rollout"},
     "rolloutBusArn", "222233334444", "the rollout bus lives in infraAccountId 111122223333"),
    (DEV, {"ecsInstanceRoleArn": None}, "ecsInstanceRoleArn", "not set; required for role workload",
     "IAM role ARN"),
    (DEV, {"targets": []}, "targets", "not set; required for role workload", "at least one"),
    (DEV, {"targets": "dev-ecs-general"}, "targets", "'dev-ecs-general'", "list"),
    (DEV, {"targets": [{**TARGET, "launchTemplate": "lt-0123456789abcdef0"}]},
     "targets[0].launchTemplate", "lt-0123456789abcdef0", "unknown key (a target has"),
    (DEV, {"targets": [{**TARGET, "launchTemplateId": "lt-123"}]}, "targets[0].launchTemplateId",
     "'lt-123'", "launch template id"),
    (DEV, {"targets": [{k: v for k, v in TARGET.items() if k != "clusterName"}]},
     "targets[0].clusterName", "is not set", "a target has autoScalingGroupName, launchTemplateId"),
    (DEV, {"targets": [{"autoScalingGroupName": "dev-ecs-general",
                        "launchTemplate": "lt-0123456789abcdef0", "clusterName": "dev-general"}]},
     "targets[0].launchTemplate", "'lt-0123456789abcdef0'", "did you mean launchTemplateId?"),
    (DEV, {"targets": [{**TARGET, "regoin": "eu-west-1"}]}, "targets[0].regoin", "'eu-west-1'",
     "did you mean region?"),
    (DEV, {"targets": [{**TARGET, "region": "eu-wset-1"}]}, "targets[0].region", "'eu-wset-1'",
     "did you mean eu-west-1?"),
    (DEV, {"targets": [{**TARGET, "clusterName": "dev/general"}]}, "targets[0].clusterName",
     "'dev/general'", "ECS cluster name"),
    (DEV, {"targets": [{**TARGET, "region": "us-east-1"}]}, "targets[0].region", "'us-east-1'",
     "one of the stack's regions ['eu-west-1']"),
    (DEV, {"targets": [TARGET, {**TARGET, "launchTemplateId": "lt-0fedcba9876543210"}]},
     "targets[1].autoScalingGroupName", "'dev-ecs-general'", "each group once per region"),
    (DEV, {"refreshMinHealthyPercentage": 101}, "refreshMinHealthyPercentage", "101",
     "less than or equal to 100"),
    (DEV, {"refreshMaxHealthyPercentage": 99}, "refreshMaxHealthyPercentage", "99",
     "greater than or equal to 100"),
    (DEV, {"refreshMinHealthyPercentage": 40, "refreshMaxHealthyPercentage": 150},
     "refreshMaxHealthyPercentage", "150", "at most 100 above refreshMinHealthyPercentage (40)"),
    (DEV, {"refreshMinHealthyPercentage": 100, "refreshMaxHealthyPercentage": 100},
     "refreshMaxHealthyPercentage", "100", "above 100 when refreshMinHealthyPercentage is 100"),
    (DEV, {"refreshCheckpointPercentages": [50, 20, 100]}, "refreshCheckpointPercentages",
     "[50, 20, 100]", "strictly ascending percentages ending at 100"),
    (DEV, {"refreshCheckpointPercentages": [20, 50]}, "refreshCheckpointPercentages", "[20, 50]",
     "ending at 100"),
    (DEV, {"refreshCheckpointPercentages": [50, 50, 100]}, "refreshCheckpointPercentages",
     "[50, 50, 100]", "strictly ascending"),
    (DEV, {"refreshCheckpointPercentages": [0, 100]}, "refreshCheckpointPercentages[0]", "0",
     "greater than or equal to 1"),
    (DEV, {"refreshInstanceWarmupSeconds": -1}, "refreshInstanceWarmupSeconds", "-1",
     "greater than or equal to 0"),
    (DEV, {"refreshCheckpointDelaySeconds": 172801}, "refreshCheckpointDelaySeconds", "172801",
     "less than or equal to 172800"),
    (DEV, {"refreshBakeTimeSeconds": 300}, "refreshBakeTimeSeconds", "300",
     f"at least {300 + ALARM_DETECTION_MARGIN_SECONDS}"),
    (DEV, {"rollbackAlarmEvaluationPeriods": 3}, "refreshBakeTimeSeconds", "600",
     f"at least {900 + ALARM_DETECTION_MARGIN_SECONDS}"),
    (DEV, {"refreshStandbyInstances": "Keep"}, "refreshStandbyInstances", "'Keep'",
     "'Ignore', 'Terminate' or 'Wait'"),
    (DEV, {"rollbackAlarmThreshold": 0}, "rollbackAlarmThreshold", "0",
     "greater than or equal to 1"),
    (DEV, {"rollbackAlarmPeriodSeconds": 90}, "rollbackAlarmPeriodSeconds", "90",
     "multiple of 60"),
    (DEV, {"rollbackAlarmEvaluationPeriods": 0}, "rollbackAlarmEvaluationPeriods", "0",
     "greater than or equal to 1"),
    (DEV, {"instanceCountAlarm": "sometimes"}, "instanceCountAlarm", "'sometimes'",
     "valid boolean"),
    (DEV, {"convergeSchedule": "hourly"}, "convergeSchedule", "'hourly'", "rate(<n> <unit>)"),
    # An alarm can only notify a topic in its own region (CloudWatch refuses any other).
    ("workload-prod", {"alarmTopicArns": ["arn:aws:sns:eu-west-1:555566667777:alerts"]},
     "alarmTopicArns", '["arn:aws:sns:eu-west-1:555566667777:alerts"]',
     "no topic in us-east-1, where this stack has alarms too"),
    ("workload-prod", {"alarmTopicArn": "arn:aws:sns:eu-west-1:555566667777:alerts"},
     "alarmTopicArn", "'arn:aws:sns:eu-west-1:555566667777:alerts'",
     "use alarmTopicArns, one topic per region"),
    (INFRA, {"alarmTopicArns": ["arn:aws:sqs:eu-west-1:111122223333:q"]}, "alarmTopicArns[0]",
     "'arn:aws:sqs:eu-west-1:111122223333:q'", "SNS topic ARN"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "shown", "allowed"),
    BAD_VALUES,
    ids=[f"{row[0]}:{row[2]}:{'/'.join(map(str, row[1].values()))}"[:90] for row in BAD_VALUES],
)
def test_bad_value_fails_with_one_problem_naming_key_value_and_allowed(
    stack: str, overrides: dict[str, Any], key: str, shown: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config_of(stack, **overrides))
    assert len(raised.value.problems) == 1, raised.value.problems
    problem = raised.value.problems[0]
    full_key = key if ":" in key else f"golden-ami:{key}"
    assert problem.startswith(f"{full_key} "), problem
    assert shown in problem
    assert allowed in problem


def test_a_bad_home_region_is_one_line_not_one_per_target_that_inherits_it() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config_of("workload-prod", **{"aws:region": "eu-wset-1"}))
    # workload-prod's first target inherits aws:region; its second names us-east-1 itself.
    assert raised.value.problems == [
        "aws:region = 'eu-wset-1': not an AWS region name; did you mean eu-west-1?"
    ]


def test_a_misspelt_target_key_names_the_key_it_was_meant_to_be_not_the_target() -> None:
    target = {"autoScalingGroupName": "g", "launchTemplate": "lt-0123456789abcdef0"}
    with pytest.raises(ConfigError) as raised:
        parse_config(config_of(DEV, targets=[target]))
    assert raised.value.problems == [
        "golden-ami:targets[0].clusterName is not set: a target has autoScalingGroupName, "
        "launchTemplateId, clusterName, region (region optional, default aws:region)",
        "golden-ami:targets[0].launchTemplate = 'lt-0123456789abcdef0': unknown key (a target has "
        "autoScalingGroupName, launchTemplateId, clusterName, region); "
        "did you mean launchTemplateId?",
    ]


def test_regions_are_botocores_every_partition_with_opt_in_ones_and_no_pseudo_regions() -> None:
    regions = known_regions()
    assert {"eu-west-1", "af-south-1", "me-central-1", "ap-southeast-7", "il-central-1"} <= regions
    assert {"us-gov-west-1", "cn-north-1", "us-iso-east-1", "eusc-de-east-1"} <= regions
    assert not {r for r in regions if r.endswith("-global")}
    config = parse_config(config_of("infra", regions=["af-south-1", "me-central-1"]))
    assert config.regions == ("eu-west-1", "af-south-1", "me-central-1")


@pytest.mark.parametrize("stack", ["infra", DEV])
def test_a_stacks_regions_are_all_in_the_home_regions_partition(stack: str) -> None:
    """Credentials, ARNs and Image Builder's distribution all stop at a partition's border."""
    with pytest.raises(ConfigError) as raised:
        parse_config(config_of(stack, regions=["eu-west-1", "us-gov-west-1"]))
    assert raised.value.problems == [
        'golden-ami:regions = ["eu-west-1", "us-gov-west-1"]: us-gov-west-1 is in the aws-us-gov '
        "partition and aws:region eu-west-1 in aws: one stack's regions are all in one partition"
    ]


@pytest.mark.parametrize("stack", ["infra", DEV])
@pytest.mark.parametrize(
    ("region", "partition"), [("us-gov-west-1", "aws-us-gov"), ("cn-north-1", "aws-cn")]
)
def test_a_stack_outside_the_aws_partition_is_refused(
    stack: str, region: str, partition: str
) -> None:
    """The policies say arn:aws:…: in China or GovCloud they would match nothing."""
    with pytest.raises(ConfigError) as raised:
        parse_config(config_of(stack, **{"aws:region": region, "regions": [region]}))
    assert raised.value.problems == [
        f"aws:region = {region!r}: {region} is in the {partition} partition; this program's IAM "
        "policies and ARNs are written for the aws partition (arn:aws:…), so only regions of the "
        "aws partition are supported"
    ]


def test_aws_keys_are_the_providers_settings() -> None:
    keys = aws_provider_keys()
    assert {"region", "allowedAccountIds", "assumeRoles", "profile", "defaultTags"} <= keys
    assert "regoin" not in keys
    config = parse_config(config_of("infra", **{"aws:profile": "infra", "aws:maxRetries": "5"}))
    assert config.home_region == "eu-west-1"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config_of("infra", buildSettleSeconds=301, keepNewestImages=0))
    assert [p.split(" ")[0] for p in raised.value.problems] == [
        "golden-ami:buildSettleSeconds",
        "golden-ami:keepNewestImages",
    ]
    assert str(raised.value).count("\n  - ") == 2


def test_program_reports_bad_config_without_a_traceback_and_creates_nothing() -> None:
    run = run_stack("infra", {"infraAccountId": "1234"}, allow_failure=True)
    # RunError is Pulumi's clean bail-out: the CLI prints the message, not a stack trace.
    assert type(run.error) is pulumi.RunError
    assert "golden-ami:infraAccountId = '1234'" in str(run.error)
    assert run.resources == []
