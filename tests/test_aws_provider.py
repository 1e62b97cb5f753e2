"""The workload stack's regional providers carry the stack's `aws:` settings (DESIGN §3, §11).

An explicit `aws.Provider` reads none of the stack's `aws:` config: without forwarding, a stack
with `aws:assumeRoles` would put its IAM roles in the workload account and every regional
resource in the caller's, and `aws:allowedAccountIds` would pin no regional resource.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi_aws
import pytest
from pulumi.runtime import rpc

from components.aws_provider import PROVIDER_SETTINGS, provider_settings, stack_secret_settings
from components.config import ConfigError
from tests.pulumi_harness import run_stack

ACCOUNT = "555566667777"  # the prod example's pinned account
ASSUME_ROLES = [
    {
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/golden-ami-deploy",
        "sessionName": "ci",
        "externalId": "golden-ami",
    }
]
DEFAULT_TAGS = {"tags": {"team": "platform", "cost-centre": "1234"}}
SETTINGS = {
    "aws:assumeRoles": ASSUME_ROLES,
    "aws:profile": "prod-deployer",
    "aws:defaultTags": DEFAULT_TAGS,
    "aws:maxRetries": 10,
}


@pytest.fixture(scope="module")
def providers() -> dict[str, dict[str, Any]]:
    """The explicit providers of workload-prod (two regions) with SETTINGS, by region."""
    run = run_stack("workload-prod", SETTINGS)
    found = [r for r in run.resources if r.type == "pulumi:providers:aws"]
    return {provider.inputs["region"]: provider.inputs for provider in found}


def test_every_regional_provider_carries_the_stacks_aws_settings(
    providers: dict[str, dict[str, Any]],
) -> None:
    assert sorted(providers) == ["eu-west-1", "us-east-1"]
    for inputs in providers.values():
        # Provider inputs travel as strings, lists and objects as JSON (camelCase members).
        assert json.loads(inputs["allowedAccountIds"]) == [ACCOUNT]  # from Pulumi.workload-prod
        assert json.loads(inputs["assumeRoles"]) == ASSUME_ROLES
        assert inputs["profile"] == "prod-deployer"
        assert json.loads(inputs["defaultTags"]) == DEFAULT_TAGS
        assert inputs["maxRetries"] == "10"


def test_every_regional_resource_is_deployed_through_a_regional_provider() -> None:
    run = run_stack("workload-prod", SETTINGS)
    provider_urns = {r.urn for r in run.resources if r.type == "pulumi:providers:aws"}
    regional = [
        r
        for r in run.resources
        if r.custom and not r.type.startswith(("pulumi:providers:", "aws:iam/"))
    ]
    assert regional
    assert {r.name: r.provider.rsplit("::", 1)[0] in provider_urns for r in regional} == {
        r.name: True for r in regional
    }


def test_every_setting_of_the_provider_is_forwarded_but_the_region() -> None:
    """A setting pulumi_aws adds later must be added here too, not silently dropped."""
    exported = {
        name
        for name, member in vars(pulumi_aws.config.vars._ExportableConfig).items()
        if isinstance(member, property)
    }
    camel = {key[0].lower() + key[1:] for key in PROVIDER_SETTINGS}
    snake_of = {"".join(f"_{c.lower()}" if c.isupper() else c for c in k): k for k in camel}
    assert set(snake_of) | {"region"} == exported


def test_settings_are_read_with_their_types() -> None:
    settings = provider_settings(
        {
            "aws:region": "eu-west-1",
            "aws:allowedAccountIds": json.dumps([ACCOUNT]),
            "aws:skipMetadataApiCheck": "true",
            "aws:profile": "prod",
            "aws:secretKey": "s3cr3t",
            "golden-ami:role": "workload",
        }
    )
    assert sorted(settings) == [
        "allowed_account_ids",
        "profile",
        "secret_key",
        "skip_metadata_api_check",
    ]
    assert settings["allowed_account_ids"] == [ACCOUNT]
    assert settings["skip_metadata_api_check"] is True
    assert settings["profile"] == "prod"
    assert settings["secret_key"] == "s3cr3t"


def test_static_credentials_reach_the_regional_providers_as_secrets() -> None:
    run = run_stack("workload-dev", {"aws:accessKey": "AKIAEXAMPLE", "aws:secretKey": "s3cr3t"})
    [provider] = [r for r in run.resources if r.type == "pulumi:providers:aws"]

    def secret(value: str) -> dict[str, str]:  # how a secret input travels to the engine
        return {rpc._special_sig_key: rpc._special_secret_sig, "value": value}

    assert provider.inputs["accessKey"] == secret("AKIAEXAMPLE")
    assert provider.inputs["secretKey"] == secret("s3cr3t")


@pytest.mark.parametrize(
    ("key", "raw", "problem"),
    [
        ("aws:assumeRole", '{"roleArn": "arn:aws:iam::1:role/x"}', "use aws:assumeRoles"),
        ("aws:assumeRoles", '{"roleArn": "arn:aws:iam::1:role/x"}', "expected a list"),
        ("aws:assumeRoles", '[{"roleArm": "arn:aws:iam::1:role/x"}]', "unknown member"),
        ("aws:allowedAccountIds", "555566667777", "expected a list of strings"),
        ("aws:maxRetries", "many", "not valid JSON"),
        ("aws:insecure", "1", "expected true or false"),
    ],
)
def test_a_setting_of_the_wrong_shape_is_one_clear_error(key: str, raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        provider_settings({key: raw})
    [message] = raised.value.problems
    assert message.startswith(f"{key} = ") and problem in message


def test_settings_the_stack_keeps_secret_reach_the_regional_providers_as_secrets() -> None:
    """A provider's inputs are stored in the state: a secret setting must stay a secret there."""
    web_identity = {
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/golden-ami-deploy",
        "webIdentityToken": "eyJhbGciOiJSUzI1NiJ9.token",
    }
    run = run_stack(
        "workload-dev",
        {"aws:assumeRoleWithWebIdentity": web_identity, "aws:profile": "dev"},
        secret_keys=["aws:assumeRoleWithWebIdentity"],
    )
    [provider] = [r for r in run.resources if r.type == "pulumi:providers:aws"]

    secret = provider.inputs["assumeRoleWithWebIdentity"]
    assert secret[rpc._special_sig_key] == rpc._special_secret_sig
    assert json.loads(secret["value"]) == web_identity
    assert provider.inputs["profile"] == "dev"  # not a secret in the stack: stays plain


def test_the_clis_secret_keys_count_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pulumi up` names the secret keys in PULUMI_CONFIG_SECRET_KEYS, not in the runtime."""
    monkeypatch.setenv(
        "PULUMI_CONFIG_SECRET_KEYS", json.dumps(["aws:assumeRoles", "golden-ami:role"])
    )
    assert stack_secret_settings() == {"assumeRoles"}
