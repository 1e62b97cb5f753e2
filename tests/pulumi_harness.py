"""Run `__main__.py` for an example stack under Pulumi mocks and record what it declares.

No Pulumi CLI, engine or AWS is involved: `run_stack("infra")` loads the stack's config the way
the CLI would (`Pulumi.yaml` defaults overlaid with `Pulumi.<stack>.yaml`, every value a string,
arrays and objects as JSON), runs the program on a fresh event loop against a recording mock
monitor, and returns a `StackRun` holding every resource (type, logical name, parent, inputs,
options, mocked outputs), every provider function call and the stack outputs.

`run_program(fn, ...)` does the same for any program, e.g. one component built from test args.
Used by the pytest fixtures in `tests/conftest.py` and importable from outside the tests (no
pytest here), e.g. by the demo to print a stack's resource tree: `print(run_stack("infra").tree())`.

Resource inputs are recorded as they travel over the wire: camelCase property names
(`eventPattern`, `versioningConfiguration`), nested args as plain dicts, JSON documents as
strings (use `RecordedResource.json(prop)`), and unknown-at-preview values resolved because
runs are never previews. The mocks answer like AWS would for the few things programs read back
from a resource: ARNs, ids (the name, or the ARN / URL where AWS uses those), autonamed
physical names and queue URLs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.stack import run_pulumi_func

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILE = REPO_ROOT / "Pulumi.yaml"
PROGRAM = REPO_ROOT / "__main__.py"
# Real AWS event samples kept in the repo (sources: tests/fixtures/aws-events/README.md).
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "aws-events"

PROJECT = "golden-ami"

# ARNs the mocks hand back, by resource type. `{name}` is the physical name.
_ARN_FORMATS = {
    "aws:s3/bucket:Bucket": "arn:aws:s3:::{name}",
    "aws:iam/role:Role": "arn:aws:iam::{account}:role/{name}",
    "aws:iam/instanceProfile:InstanceProfile": "arn:aws:iam::{account}:instance-profile/{name}",
    "aws:iam/policy:Policy": "arn:aws:iam::{account}:policy/{name}",
    "aws:sns/topic:Topic": "arn:aws:sns:{region}:{account}:{name}",
    "aws:sqs/queue:Queue": "arn:aws:sqs:{region}:{account}:{name}",
    "aws:lambda/function:Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "aws:cloudwatch/logGroup:LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}",
    "aws:cloudwatch/eventRule:EventRule": "arn:aws:events:{region}:{account}:rule/{name}",
    "aws:cloudwatch/eventBus:EventBus": "arn:aws:events:{region}:{account}:event-bus/{name}",
    "aws:dynamodb/table:Table": "arn:aws:dynamodb:{region}:{account}:table/{name}",
    "aws:cloudwatch/metricAlarm:MetricAlarm": "arn:aws:cloudwatch:{region}:{account}:alarm:{name}",
    "aws:kms/key:Key": "arn:aws:kms:{region}:{account}:key/{name}",
    "aws:sfn/stateMachine:StateMachine": "arn:aws:states:{region}:{account}:stateMachine:{name}",
    "aws:imagebuilder/component:Component": (
        "arn:aws:imagebuilder:{region}:{account}:component/{name}/{version}/1"
    ),
    "aws:imagebuilder/imageRecipe:ImageRecipe": (
        "arn:aws:imagebuilder:{region}:{account}:image-recipe/{name}/{version}"
    ),
    "aws:imagebuilder/infrastructureConfiguration:InfrastructureConfiguration": (
        "arn:aws:imagebuilder:{region}:{account}:infrastructure-configuration/{name}"
    ),
    "aws:imagebuilder/distributionConfiguration:DistributionConfiguration": (
        "arn:aws:imagebuilder:{region}:{account}:distribution-configuration/{name}"
    ),
    "aws:imagebuilder/imagePipeline:ImagePipeline": (
        "arn:aws:imagebuilder:{region}:{account}:image-pipeline/{name}"
    ),
    "aws:imagebuilder/lifecyclePolicy:LifecyclePolicy": (
        "arn:aws:imagebuilder:{region}:{account}:lifecycle-policy/{name}"
    ),
}
# The input that holds a resource's physical name, where it is not `name`.
_NAME_PROPERTY = {"aws:s3/bucket:Bucket": "bucket"}


# --- stack configuration ------------------------------------------------------------------------


def pulumi_config_value(value: Any) -> str:
    """A config value as the Pulumi CLI hands it to a program: strings as-is, the rest JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def stack_config(
    stack: str, overrides: Mapping[str, Any] | None = None, *, project_dir: Path = REPO_ROOT
) -> dict[str, str]:
    """The full config of `Pulumi.<stack>.yaml` over the `Pulumi.yaml` defaults, as strings.

    `overrides` keys without a namespace belong to `golden-ami:`; a value of None removes the key.
    The stack file is read from `project_dir` (default: this repository).
    """
    project = yaml.safe_load(PROJECT_FILE.read_text())
    values: dict[str, Any] = {
        f"{PROJECT}:{key}": spec["default"]
        for key, spec in project["config"].items()
        if "default" in spec
    }
    stack_file = project_dir / f"Pulumi.{stack}.yaml"
    values.update(yaml.safe_load(stack_file.read_text()).get("config") or {})
    for key, value in (overrides or {}).items():
        full_key = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            values.pop(full_key, None)
        else:
            values[full_key] = value
    return {key: pulumi_config_value(value) for key, value in values.items()}


# --- what a run records ---------------------------------------------------------------------------


@dataclass
class RecordedResource:
    """One resource the program registered, with the options that matter for review."""

    urn: str
    type: str
    name: str
    parent: str  # parent URN ("" for the stack itself)
    custom: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    protect: bool
    dependencies: list[str]
    provider: str

    def json(self, prop: str) -> Any:
        """An input that holds a JSON document (policy, event pattern, redrive policy) parsed."""
        return json.loads(self.inputs[prop])

    def __getitem__(self, prop: str) -> Any:
        return self.inputs[prop]


@dataclass
class StackRun:
    """Everything one run of the program declared, with lookup helpers for assertions."""

    stack: str
    config: dict[str, str]
    resources: list[RecordedResource] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    logs: list[tuple[str, str]] = field(default_factory=list)  # (severity, message)
    error: BaseException | None = None

    def resources_of_type(self, type_token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name_contains: str = "") -> RecordedResource:
        """The single resource of `type_token` whose logical name contains `name_contains`."""
        found = [r for r in self.resources_of_type(type_token) if name_contains in r.name]
        if len(found) != 1:
            names = [r.name for r in self.resources_of_type(type_token)]
            raise AssertionError(
                f"expected exactly one {type_token} named *{name_contains}*, "
                f"found {len(found)} among {names}"
            )
        return found[0]

    def by_urn(self, urn: str) -> RecordedResource:
        return next(r for r in self.resources if r.urn == urn)

    def children_of(self, resource: RecordedResource) -> list[RecordedResource]:
        return [r for r in self.resources if r.parent == resource.urn]

    def tree(self) -> str:
        """The resource tree, one `type  name` line per resource, children indented and sorted
        (registration order under mocks varies from run to run)."""
        lines: list[str] = [f"stack {self.stack}"]
        urns = {r.urn for r in self.resources}
        ordered = sorted(self.resources, key=lambda r: (r.type, r.name))

        def walk(parent_urn: str | None, depth: int) -> None:
            for resource in ordered:
                is_child = resource.parent == parent_urn or (
                    parent_urn is None and resource.parent not in urns
                )
                if is_child:
                    lines.append(f"{'  ' * depth}{resource.type}  {resource.name}")
                    walk(resource.urn, depth + 1)

        walk(None, 1)
        return "\n".join(lines)


# --- mocks --------------------------------------------------------------------------------------


class GoldenAmiMocks(pulumi.runtime.Mocks):
    """Answers resource registrations and provider calls as the stack's AWS account would."""

    def __init__(self, account_id: str, region: str, run: StackRun) -> None:
        self.account_id = account_id
        self.region = region
        self.run = run
        self._provider_regions: dict[str, str] = {}  # explicit aws.Provider id -> its region

    def _region_of(self, args: pulumi.runtime.MockResourceArgs) -> str:
        """The resource's own region input, else its explicit provider's, else the stack's."""
        provider_id = (args.provider or "").rpartition("::")[2]
        return args.inputs.get("region") or self._provider_regions.get(provider_id) or self.region

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name_property = _NAME_PROPERTY.get(args.typ, "name")
        physical_name = args.inputs.get(name_property) or _autoname(args.name)
        region = self._region_of(args)
        if args.typ == "pulumi:providers:aws":
            provider_id = f"{physical_name}-id"
            self._provider_regions[provider_id] = region
            return provider_id, dict(args.inputs)
        state = {**args.inputs, name_property: physical_name}
        if args.typ in _ARN_FORMATS:
            state["arn"] = _ARN_FORMATS[args.typ].format(
                name=physical_name,
                account=self.account_id,
                region=region,
                version=args.inputs.get("version", "1.0.0"),
            )
        if args.typ == "aws:sqs/queue:Queue":
            state["url"] = f"https://sqs.{region}.amazonaws.com/{self.account_id}/{physical_name}"
        if args.typ == "aws:iam/role:Role":
            state["uniqueId"] = "AROA" + hashlib.sha1(physical_name.encode()).hexdigest()[:17]
        return _physical_id(args.typ, state, physical_name), state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.run.calls.append((args.token, dict(args.args)))
        region = args.args.get("region") or self.region
        answers: dict[str, dict[str, Any]] = {
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "accountId": self.account_id,
                "arn": f"arn:aws:iam::{self.account_id}:user/pulumi",
                "userId": "AIDAEXAMPLE",
                "id": self.account_id,
            },
            "aws:index/getRegion:getRegion": {
                "name": region,
                "region": region,
                "id": region,
                "endpoint": f"ec2.{region}.amazonaws.com",
                "description": region,
            },
            "aws:index/getPartition:getPartition": {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
                "id": "aws",
            },
        }
        if args.token not in answers:
            raise NotImplementedError(f"no mock for provider function {args.token}")
        return answers[args.token]


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, also keeping each registration's parent, options and outputs."""

    def __init__(self, mocks: GoldenAmiMocks) -> None:
        super().__init__(mocks)
        self.run = mocks.run

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.run.resources.append(
                RecordedResource(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    custom=request.custom,
                    inputs=rpc.deserialize_properties(request.object),
                    outputs=self.resources[response.urn].state,
                    protect=request.protect,
                    dependencies=list(request.dependencies),
                    provider=request.provider,
                )
            )
        return response


class RecordingEngine(pulumi_mocks.MockEngine):
    """Keeps `pulumi.log.*` messages (the engine is where the CLI would print them)."""

    def __init__(self, run: StackRun) -> None:
        super().__init__(logger=None)
        self.run = run

    def Log(self, request: Any) -> None:  # noqa: N802 (gRPC method name)
        from pulumi.runtime.proto import engine_pb2

        severity = engine_pb2.LogSeverity.Name(request.severity)
        self.run.logs.append((severity, request.message))


def _physical_id(type_token: str, state: Mapping[str, Any], physical_name: str) -> str:
    """The id AWS gives the resource: its name for most, the ARN or URL for some."""
    if type_token == "aws:sqs/queue:Queue":
        return state["url"]
    if type_token == "aws:sns/topic:Topic" or type_token.startswith("aws:imagebuilder/"):
        return state["arn"]
    return physical_name


def _autoname(logical_name: str) -> str:
    """Pulumi's auto-naming: the logical name plus a random 7-character suffix (stable here)."""
    return f"{logical_name}-{hashlib.sha1(logical_name.encode()).hexdigest()[:7]}"


def _account_of(config: Mapping[str, str]) -> str:
    """The account the stack deploys into: infra's own id, or the workload's instance role's."""
    if config.get(f"{PROJECT}:role") == "workload":
        instance_role = config.get(f"{PROJECT}:ecsInstanceRoleArn", "")
        if instance_role.count(":") >= 4:
            return instance_role.split(":")[4]
    return config.get(f"{PROJECT}:infraAccountId") or "123456789012"


# --- running ------------------------------------------------------------------------------------


def run_stack(
    stack: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    allow_failure: bool = False,
    project_dir: Path = REPO_ROOT,
    secret_keys: Sequence[str] = (),
) -> StackRun:
    """Run `__main__.py` for `Pulumi.<stack>.yaml` in `project_dir` (+ `overrides`) under mocks.

    The program's exception is re-raised unless `allow_failure`, in which case it is returned
    in `StackRun.error` together with whatever was registered before it. `secret_keys`: the full
    config keys the stack holds as secrets.
    """
    config = stack_config(stack, overrides, project_dir=project_dir)
    return run_program(
        lambda: runpy.run_path(str(PROGRAM), run_name="__main__"),
        stack=stack,
        config=config,
        account_id=_account_of(config),
        region=config.get("aws:region", "us-east-1"),
        allow_failure=allow_failure,
        secret_keys=secret_keys,
    )


def run_program(
    program: Callable[[], Any],
    *,
    account_id: str,
    region: str,
    stack: str = "test",
    config: Mapping[str, str] | None = None,
    allow_failure: bool = False,
    secret_keys: Sequence[str] = (),
) -> StackRun:
    """Run any Pulumi program (e.g. one component built from test arguments) under the mocks."""
    run = StackRun(stack=stack, config=dict(config or {}))
    mocks = GoldenAmiMocks(account_id, region, run)

    # Each run gets its own event loop and root stack resource; Outputs from a previous run's
    # loop never resolve on a new one, and set_mocks only creates a root when none is set.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.settings.ROOT.set(None)
        pulumi.runtime.set_all_config(run.config, list(secret_keys))
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=stack, preview=False, monitor=RecordingMonitor(mocks)
        )
        pulumi.runtime.settings.SETTINGS.engine = RecordingEngine(run)
        try:
            loop.run_until_complete(run_pulumi_func(program))
        except Exception as error:
            if not allow_failure:
                raise
            run.error = error
            return run
        root = pulumi.runtime.settings.get_root_resource()
        run.outputs = loop.run_until_complete(pulumi.Output.from_input(dict(root.outputs)).future())
    finally:
        pulumi.runtime.set_all_config({}, [])
        asyncio.set_event_loop(None)
        loop.close()
    return run
