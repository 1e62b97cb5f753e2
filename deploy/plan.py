"""The deployment plan, read offline from `Pulumi.yaml` and the `Pulumi.<stack>.yaml` files.

Which stacks exist, in what order they deploy, which account and regions each one targets and
what configuration it gets: everything a reviewer needs to check a change before anything runs,
computed without the Pulumi CLI or AWS credentials. The driver executes exactly this plan.

Account pinning is required, not advisory: every stack must set `aws:allowedAccountIds` to the
one account it deploys into, so the AWS provider itself refuses credentials for any other
account. That is what keeps a workload stack from ever landing in the infra account because a
CI job or a laptop happened to hold the infra account's credentials.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

ROLE_KEY = "role"
HOME_REGION_KEY = "aws:region"
ALLOWED_ACCOUNTS_KEY = "aws:allowedAccountIds"
ASSUME_ROLES_KEY = "aws:assumeRoles"

# Workload config keys (in the project namespace) set from the infra stack's outputs, by the
# output that carries each value: the infra stack is their single source of truth.
PROPAGATED_OUTPUTS = {
    "fanoutRoleArn": "fanoutRoleArn",
    "rolloutBusArn": "rolloutBusArn",
    "infraAccountId": "infraAccountId",
    "imagePrefix": "amiNamePrefix",
}

SECRET_MASK = "[secret]"
_ACCOUNT_ID = re.compile(r"\d{12}")
_ROLE_ARN = re.compile(r"arn:aws[\w-]*:iam::(\d{12}):role/\S+")


class Role(StrEnum):
    INFRA = "infra"
    WORKLOAD = "workload"


class PlanError(Exception):
    """The stack files cannot be deployed as they are: one problem per line, naming the file."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def placeholder(output_name: str) -> str:
    """What the offline plan shows for a value only the deployed infra stack knows."""
    return f"<from infra output {output_name}>"


@dataclass(frozen=True)
class StackPlan:
    name: str
    role: Role
    file_name: str
    account: str
    regions: tuple[str, ...]  # home region (aws:region) first
    depends_on: tuple[str, ...]
    config: Mapping[str, Any]  # the stack file's, by full key (`golden-ami:role`, `aws:region`)
    namespace: str

    @property
    def region(self) -> str:
        return self.regions[0]

    def key(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    def propagated_config(self, infra_outputs: Mapping[str, Any] | None) -> dict[str, str]:
        """The config keys this stack takes from the infra stack's outputs.

        `infra_outputs=None` is the offline view: a value the stack file already holds, else a
        placeholder. With real outputs, the output wins over the file (the deployed infra stack is
        the truth; a stale hand-copied value is exactly what propagation exists to replace) and a
        key neither provides is left out for `missing_propagated` to report.
        """
        if self.role is Role.INFRA:
            return {}
        values: dict[str, str] = {}
        for name, output in PROPAGATED_OUTPUTS.items():
            key = self.key(name)
            if infra_outputs is not None and output in infra_outputs:
                values[key] = str(infra_outputs[output])
            elif key in self.config:
                values[key] = str(self.config[key])
            elif infra_outputs is None:
                values[key] = placeholder(output)
        return values

    def missing_propagated(self, infra_outputs: Mapping[str, Any]) -> list[str]:
        """What this workload needs that neither the infra outputs nor its stack file provide."""
        if self.role is Role.INFRA:
            return []
        return [
            f"{self.key(name)} (infra output {output})"
            for name, output in PROPAGATED_OUTPUTS.items()
            if output not in infra_outputs and self.key(name) not in self.config
        ]

    def effective_config(self) -> dict[str, Any]:
        """The config the stack gets (offline view), secrets masked, keys sorted for review."""
        merged = {**self.config, **self.propagated_config(None)}
        return {key: _mask_secrets(merged[key]) for key in sorted(merged)}

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.name,
            "role": self.role.value,
            "account": self.account,
            "region": self.region,
            "regions": list(self.regions),
            "dependsOn": list(self.depends_on),
            "config": self.effective_config(),
        }


@dataclass(frozen=True)
class DeploymentPlan:
    project: str
    stacks: tuple[StackPlan, ...]  # deployment order: the infra stack, then workloads by name

    @property
    def infra(self) -> StackPlan:
        return self.stacks[0]

    def select(self, names: Sequence[str]) -> tuple[StackPlan, ...]:
        """The named stacks in deployment order (all of them when `names` is empty)."""
        unknown = sorted(set(names) - {stack.name for stack in self.stacks})
        if unknown:
            known = ", ".join(stack.name for stack in self.stacks)
            raise PlanError([f"no stack named {', '.join(unknown)} (stacks: {known})"])
        return tuple(stack for stack in self.stacks if not names or stack.name in names)

    def to_json(self, names: Sequence[str] = ()) -> dict[str, Any]:
        return {"stacks": [stack.to_json() for stack in self.select(names)]}


def load_plan(project_dir: Path) -> DeploymentPlan:
    """Read and cross-check every stack file under `project_dir` (raises PlanError)."""
    project_file = project_dir / "Pulumi.yaml"
    project = _read_yaml(project_file)
    if not isinstance(project, dict) or not isinstance(project.get("name"), str):
        raise PlanError([f"{project_file}: no project `name` (is this a Pulumi project?)"])
    namespace = project["name"]

    problems: list[str] = []
    stacks: list[StackPlan] = []
    for stack_file in sorted(project_dir.glob("Pulumi.*.yaml")):
        try:
            stacks.append(_read_stack(stack_file, namespace))
        except PlanError as error:
            problems.extend(error.problems)
    if problems:
        raise PlanError(problems)

    infra_stacks = [stack for stack in stacks if stack.role is Role.INFRA]
    if len(infra_stacks) != 1:
        found = ", ".join(stack.file_name for stack in infra_stacks) or "none"
        raise PlanError(
            [
                f"{project_dir}: expected exactly one stack file with "
                f"{namespace}:{ROLE_KEY}: infra, found {found}"
            ]
        )
    infra = infra_stacks[0]
    # Workloads read the infra stack's outputs and trust its fan-out role.
    workloads = [
        replace(stack, depends_on=(infra.name,)) for stack in stacks if stack.role is Role.WORKLOAD
    ]
    problems.extend(_account_problems(infra, workloads))
    if problems:
        raise PlanError(problems)
    return DeploymentPlan(project=namespace, stacks=(infra, *workloads))


def _read_stack(stack_file: Path, namespace: str) -> StackPlan:
    document = _read_yaml(stack_file) or {}
    config = document.get("config", {}) if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise PlanError([f"{stack_file.name}: expected a mapping under `config:`"])
    name = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    problems: list[str] = []

    role_key = f"{namespace}:{ROLE_KEY}"
    allowed_roles = ", ".join(role.value for role in Role)
    role_value = config.get(role_key)
    if role_value is None:
        problems.append(f"{stack_file.name}: {role_key} is not set (one of: {allowed_roles})")
    elif role_value not in tuple(Role):
        problems.append(f"{stack_file.name}: {role_key} = {role_value!r} (one of: {allowed_roles})")

    home_region = config.get(HOME_REGION_KEY)
    if not isinstance(home_region, str) or not home_region:
        problems.append(f"{stack_file.name}: {HOME_REGION_KEY} is not set (the home region)")
    regions_key = f"{namespace}:regions"
    extra_regions = config.get(regions_key, [])
    if not isinstance(extra_regions, list) or not all(isinstance(r, str) for r in extra_regions):
        problems.append(f"{stack_file.name}: {regions_key} must be a list of region names")
        extra_regions = []

    account, account_problems = _pinned_account(stack_file.name, config)
    problems.extend(account_problems)
    if problems:
        raise PlanError(problems)

    role = Role(str(role_value))
    return StackPlan(
        name=name,
        role=role,
        file_name=stack_file.name,
        account=account,
        regions=tuple(dict.fromkeys([str(home_region), *extra_regions])),
        depends_on=(),
        config=config,
        namespace=namespace,
    )


def _pinned_account(file_name: str, config: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The one account the stack may deploy into, from `aws:allowedAccountIds`."""
    pinned = config.get(ALLOWED_ACCOUNTS_KEY)
    if pinned is None:
        return "", [
            f"{file_name}: {ALLOWED_ACCOUNTS_KEY} is not set; pin the stack to the account it "
            f'deploys into (e.g. ["123456789012"]) so the AWS provider refuses any other account'
        ]
    # Unquoted in YAML, an account id becomes an int (and one with a leading zero an octal int).
    if (
        not isinstance(pinned, list)
        or len(pinned) != 1
        or not isinstance(pinned[0], str)
        or not _ACCOUNT_ID.fullmatch(pinned[0])
    ):
        return "", [
            f"{file_name}: {ALLOWED_ACCOUNTS_KEY} = {pinned!r}: expected a list holding exactly "
            f'one quoted 12-digit account id, e.g. ["123456789012"]'
        ]
    account = pinned[0]

    # With role chaining the last role assumed is the one whose account the stack deploys into.
    assume_roles = config.get(ASSUME_ROLES_KEY, [])
    final_role = assume_roles[-1] if isinstance(assume_roles, list) and assume_roles else {}
    role_arn = final_role.get("roleArn") if isinstance(final_role, dict) else None
    if assume_roles and not isinstance(role_arn, str):
        return account, [
            f"{file_name}: {ASSUME_ROLES_KEY} must be a list of {{roleArn: ...}} entries"
        ]
    if role_arn is not None:
        match = _ROLE_ARN.fullmatch(role_arn)
        if match is None:
            return account, [
                f"{file_name}: {ASSUME_ROLES_KEY} roleArn {role_arn!r} is not a role ARN"
            ]
        if match.group(1) != account:
            return account, [
                f"{file_name}: {ASSUME_ROLES_KEY} assumes {role_arn} in account {match.group(1)}, "
                f"but {ALLOWED_ACCOUNTS_KEY} pins the stack to {account}"
            ]
    return account, []


def _account_problems(infra: StackPlan, workloads: Sequence[StackPlan]) -> list[str]:
    problems: list[str] = []
    declared_infra_account = infra.config.get(infra.key("infraAccountId"))
    if declared_infra_account is not None and str(declared_infra_account) != infra.account:
        problems.append(
            f"{infra.file_name}: {infra.key('infraAccountId')} = {declared_infra_account!r}, but "
            f"{ALLOWED_ACCOUNTS_KEY} pins the infra stack to {infra.account}"
        )
    # The fan-out only invokes a refresh function in its own account when told to.
    infra_hosts_workload = str(infra.config.get(infra.key("includeInfraAccount"))).lower() == "true"
    owners: dict[str, str] = {}
    for workload in workloads:
        if workload.account == infra.account and not infra_hosts_workload:
            problems.append(
                f"{workload.file_name}: {ALLOWED_ACCOUNTS_KEY} targets {workload.account}, the "
                f"infra account; a workload stack belongs in its own account (or set "
                f"{infra.key('includeInfraAccount')}: true in {infra.file_name} to enrol it)"
            )
        if workload.account in owners:
            problems.append(
                f"{workload.file_name}: {ALLOWED_ACCOUNTS_KEY} targets {workload.account}, already "
                f"the account of {owners[workload.account]}; one workload stack per account "
                "(its IAM roles have fixed names and its regions are listed in one stack)"
            )
        owners.setdefault(workload.account, workload.file_name)
    return problems


def _mask_secrets(value: Any) -> Any:
    """`secure:` values are ciphertext only the Pulumi backend can read: never print them."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SECRET_MASK
        return {key: _mask_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_secrets(item) for item in value]
    return value


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PlanError([f"{path}: not found"]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PlanError([f"{path.name}: invalid YAML{where}: {problem}"]) from None


def config_problems(plan: DeploymentPlan) -> list[str]:
    """Check every stack's config with the program's own validator (`components/config.py`).

    A workload stack is checked with the values the infra stack will export standing in for the
    propagated keys it leaves to the driver; a propagated key it sets by hand must equal that
    value, so a stale copy shows up here rather than being silently overwritten at deploy time.
    """
    # Imported on use: they bring pydantic and the Pulumi SDK, which only this check needs.
    from components.aws_provider import provider_settings
    from components.config import ConfigError, parse_config

    def checked(values: dict[str, str]) -> Any:
        """The program's two checks on start: its own keys, then the aws: provider settings."""
        config = parse_config(values)
        provider_settings(values)
        return config

    infra = plan.infra
    try:
        infra_config = checked(_as_pulumi_strings(infra.config))
    except ConfigError as error:
        return [
            *(f"{infra.file_name}: {problem}" for problem in error.problems),
            "(workload stacks are checked once the infra stack's config is valid)",
        ]
    # What the infra program exports for each propagated key, predicted from its config.
    exported = {
        "fanoutRoleArn": infra_config.fanout_role_arn,
        "rolloutBusArn": infra_config.rollout_bus_arn,
        "infraAccountId": infra_config.infra_account_id,
        "imagePrefix": infra_config.image_prefix,
    }
    problems: list[str] = []
    for workload in plan.stacks[1:]:
        for name, value in exported.items():
            key = workload.key(name)
            if key in workload.config and str(workload.config[key]) != value:
                problems.append(
                    f"{workload.file_name}: {key} = {workload.config[key]!r}, but the infra stack "
                    f"exports {value!r}; remove the key (the driver sets it from the infra output)"
                )
        stand_ins = {workload.key(name): value for name, value in exported.items()}
        try:
            checked({**stand_ins, **_as_pulumi_strings(workload.config)})
        except ConfigError as error:
            problems.extend(f"{workload.file_name}: {problem}" for problem in error.problems)
    return problems


def _as_pulumi_strings(config: Mapping[str, Any]) -> dict[str, str]:
    """Stack-file values as the program receives them: strings, arrays and objects as JSON.

    Secrets are left out: only the Pulumi backend can decrypt them.
    """
    strings: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue
        if isinstance(value, bool):
            strings[key] = "true" if value else "false"
        elif isinstance(value, list | dict):
            strings[key] = json.dumps(value)
        else:
            strings[key] = str(value)
    return strings
