"""Explicit AWS providers that carry the stack's `aws:` settings.

A stack's `aws:` config (`aws:allowedAccountIds`, `aws:assumeRoles`, `aws:profile`,
`aws:defaultTags`, ...) configures the *default* provider only. An explicit `aws.Provider`
reads none of it: a regional provider built with `region=` alone deploys with whatever
credentials the environment holds, into whatever account they belong to, without the account pin
and without default tags. So every explicit provider is given the stack's settings, with its own
region, by `regional_provider`.

`provider_settings` turns the raw config into `aws.Provider` arguments. `PROVIDER_SETTINGS` lists
every setting of the pulumi_aws provider (its `config` module) with its type, so none is silently
dropped; `region` is the one left out (each explicit provider sets its own). Values arrive as
Pulumi passes them to a program: strings, with lists, objects, booleans and numbers as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi_aws as aws

from components.config import ConfigError

NAMESPACE = "aws"
# Credentials: Pulumi keeps them secret, so the providers get them as secret Outputs.
SECRET_SETTINGS = frozenset({"accessKey", "secretKey", "token"})
# `aws:assumeRole` (one object) was replaced by `aws:assumeRoles` (a list) in pulumi-aws 6: the
# provider no longer reads it, so a stack setting it would deploy with the caller's credentials.
REPLACED_SETTINGS = {"assumeRole": "assumeRoles (a list: [{roleArn: ..., sessionName: ...}])"}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _block(args_class: type) -> Callable[[Any], Any]:
    """An object setting (camelCase members, as in YAML) as the provider's typed args."""

    def convert(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("expected an object")
        members = {_snake(key): member for key, member in value.items()}
        try:
            return args_class(**members)
        except TypeError as error:
            raise ValueError(f"unknown member: {error}") from None

    return convert


def _list_of(convert: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def convert_all(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError("expected a list")
        return [convert(item) for item in value]

    return convert_all


# Every provider setting but `region`, by its config key, with how its value is read.
PROVIDER_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "accessKey": _string,
    "allowedAccountIds": _strings,
    "assumeRoleWithWebIdentity": _block(aws.ProviderAssumeRoleWithWebIdentityArgs),
    "assumeRoles": _list_of(_block(aws.ProviderAssumeRoleArgs)),
    "customCaBundle": _string,
    "defaultTags": _block(aws.ProviderDefaultTagsArgs),  # {tags: {Key: value}}
    "ec2MetadataServiceEndpoint": _string,
    "ec2MetadataServiceEndpointMode": _string,
    "endpoints": _list_of(_block(aws.ProviderEndpointArgs)),  # [{s3: url}, ...]
    "forbiddenAccountIds": _strings,
    "httpProxy": _string,
    "httpsProxy": _string,
    "ignoreTags": _block(aws.ProviderIgnoreTagsArgs),
    "insecure": _boolean,
    "maxRetries": _integer,
    "noProxy": _string,
    "profile": _string,
    "retryMode": _string,
    "s3UsEast1RegionalEndpoint": _string,
    "s3UsePathStyle": _boolean,
    "secretKey": _string,
    "sharedConfigFiles": _strings,
    "sharedCredentialsFiles": _strings,
    "skipCredentialsValidation": _boolean,
    "skipMetadataApiCheck": _boolean,
    "skipRegionValidation": _boolean,
    "skipRequestingAccountId": _boolean,
    "stsRegion": _string,
    "tagPolicyCompliance": _string,
    "token": _string,
    "tokenBucketRateLimiterCapacity": _integer,
    "useDualstackEndpoint": _boolean,
    "useFipsEndpoint": _boolean,
    "userAgents": _strings,
}


def provider_settings(values: Mapping[str, str]) -> dict[str, Any]:
    """`aws.Provider` keyword arguments for the stack's `aws:*` settings in `values` (full keys).

    `region` is left out; a value of the wrong shape raises ConfigError naming the key.
    """
    problems: list[str] = []
    settings: dict[str, Any] = {}
    for key, raw in sorted(values.items()):
        namespace, _, name = key.partition(":")
        if namespace != NAMESPACE or name == "region":
            continue
        if name in REPLACED_SETTINGS:
            problems.append(
                f"{key} = {raw!r}: the AWS provider (pulumi-aws 7) no longer reads it and would "
                "deploy with the caller's own credentials; use "
                f"{NAMESPACE}:{REPLACED_SETTINGS[name]}"
            )
            continue
        convert = PROVIDER_SETTINGS.get(name)
        if convert is None:
            continue  # not a provider setting: the engine reports unknown aws: keys itself
        try:
            value = convert(raw if convert is _string else _json(raw))
        except ValueError as error:
            problems.append(f"{key} = {raw!r}: {error}")
            continue
        settings[_snake(name)] = value
    if problems:
        raise ConfigError(problems)
    return settings


def _json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError("not valid JSON") from None


def stack_provider_settings() -> dict[str, Any]:
    """`provider_settings` of the running stack's config."""
    values = {
        **pulumi.runtime.config.get_config_env(),
        **pulumi.runtime.config.CONFIG.get(),
    }
    return provider_settings(values)


def stack_secret_settings() -> frozenset[str]:
    """The provider settings the stack's config holds as secrets (`pulumi config set --secret`).

    The CLI names them in PULUMI_CONFIG_SECRET_KEYS, the Automation API's inline programs in the
    runtime's secret keys.
    """
    secret_keys = set(pulumi.runtime.get_config_secret_keys_env())
    return frozenset(
        name
        for name in PROVIDER_SETTINGS
        if f"{NAMESPACE}:{name}" in secret_keys
        or pulumi.runtime.is_config_secret(f"{NAMESPACE}:{name}")
    )


def regional_provider(
    name: str, region: str, settings: Mapping[str, Any], opts: pulumi.ResourceOptions
) -> aws.Provider:
    """An explicit provider for `region` carrying the stack's `aws:` settings.

    Credentials, and every setting the stack keeps secret (say an `aws:assumeRoleWithWebIdentity`
    holding its token), reach the provider as secrets: its inputs are stored in the state, where
    the default provider keeps them encrypted too.
    """
    secret = {_snake(key) for key in SECRET_SETTINGS | stack_secret_settings()}
    arguments: dict[str, Any] = {
        key: pulumi.Output.secret(value) if key in secret else value
        for key, value in settings.items()
    }
    return aws.Provider(name, **{**arguments, "region": region}, opts=opts)
