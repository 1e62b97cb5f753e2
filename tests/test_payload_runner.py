"""The payload-runner component document (components/payload_runner.yaml), run for real.

Each ExecuteBash step is extracted, its `{{ Bucket }}` / `{{ Prefix }}` substituted as AWSTOE
does, and run with bash on a fake build host (tests/awstoe.py): fake `aws`, `systemctl` and
`dnf` on PATH, the document's absolute paths moved under a fake root. The S3 side is moto: the
fake CLI serves exactly the ListObjectVersions entries and object versions moto holds, so the
runner and the build trigger's adapter (handlers/build_trigger) read the same bucket state.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from components import policies
from components.image_pipeline import PAYLOAD_RUNNER_DOCUMENT
from handlers.build_trigger.aws import BuildTriggerAws
from handlers.build_trigger.logic import Settings, payload_digest
from tests.awstoe import REBOOT_EXIT_STATUS, BuildHost, ComponentDocument, referenced_parameters
from tests.pulumi_harness import StackRun

DOCUMENT = ComponentDocument(PAYLOAD_RUNNER_DOCUMENT.read_text())
REGION = "us-east-1"
PREFIX = "payloads/"
MANIFEST = "/etc/golden-ami/manifest.json"
ECS_DATA = "/var/lib/ecs/data"
PIPELINE_ARN = f"arn:aws:imagebuilder:{REGION}:111122223333:image-pipeline/golden-ami"


# --- the document's shape ------------------------------------------------------------------------


def test_document_has_the_awstoe_shape_image_builder_accepts() -> None:
    data = DOCUMENT.data
    assert data["schemaVersion"] == 1.0
    assert data["name"] and data["description"]
    phases = [phase["name"] for phase in data["phases"]]
    assert phases[0] == "build" and set(phases) <= {"build", "validate", "test"}
    assert len(phases) == len(set(phases))
    for phase in data["phases"]:
        names = [step["name"] for step in phase["steps"]]
        assert len(names) == len(set(names)), f"duplicate step names in {phase['name']}"
        for step in phase["steps"]:
            assert set(step) == {"name", "action", "inputs"}, step
            assert re.fullmatch(r"[A-Za-z0-9_-]+", step["name"]), step["name"]
            assert step["action"] == "ExecuteBash"
            commands = step["inputs"]["commands"]
            assert commands and all(isinstance(command, str) for command in commands)


def test_parameters_are_declared_used_and_passed_by_the_recipe(
    stack_run: Callable[..., StackRun],
) -> None:
    declarations = {
        name: spec for item in DOCUMENT.data["parameters"] for name, spec in item.items()
    }
    assert list(declarations) == DOCUMENT.parameter_names == ["Bucket", "Prefix"]
    for name, spec in declarations.items():
        # AWSTOE: 3-128 characters of [A-Za-z0-9_-]; `string` is the only type.
        assert re.fullmatch(r"[A-Za-z0-9_-]{3,128}", name)
        assert spec["type"] == "string" and "default" not in spec
    commands = "\n".join("\n".join(step.inputs["commands"]) for step in DOCUMENT.steps())
    assert referenced_parameters(commands) == set(declarations)

    [component] = stack_run("infra").one("aws:imagebuilder/imageRecipe:ImageRecipe")["components"]
    assert {parameter["name"] for parameter in component["parameters"]} == set(declarations)


def test_build_phase_resets_the_ecs_agent_last() -> None:
    build_steps = [step.name for step in DOCUMENT.steps() if step.phase == "build"]
    assert build_steps == ["RunPayloads", "ResetEcsAgent"]


def test_every_step_runs_with_errexit_nounset_and_pipefail() -> None:
    for step in DOCUMENT.steps():
        assert step.inputs["commands"][0].startswith("set -euo pipefail"), step.name


def test_embedded_python_runs_on_the_build_hosts_python_3_9() -> None:
    # The fake host runs this interpreter; AL2023's python3 is 3.9.
    script = DOCUMENT.bash("RunPayloads", {"Bucket": "b", "Prefix": "p/"})
    snippets = re.findall(r"<<'PY'\n(.*?)^PY$", script, flags=re.DOTALL | re.MULTILINE)
    assert len(snippets) == 2
    for snippet in snippets:
        ast.parse(snippet, feature_version=(3, 9))


def test_substitution_refuses_a_parameter_without_a_value() -> None:
    with pytest.raises(KeyError, match="parameter Prefix has no value"):
        DOCUMENT.bash("RunPayloads", {"Bucket": "b"})


# --- S3 state (moto) and the fake build host -----------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("s3", region_name=REGION)


class PayloadStore:
    """A versioned moto bucket of payloads, served to a BuildHost as the AWS CLI would see it."""

    _count = 0

    def __init__(self, s3: Any) -> None:
        PayloadStore._count += 1
        self.s3 = s3
        self.bucket = f"golden-ami-payloads-{PayloadStore._count}"
        s3.create_bucket(Bucket=self.bucket)
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        self.texts: dict[str, tuple[str, str]] = {}  # version id -> (key, text)

    def put(self, key: str, text: str) -> str:
        version_id = self.s3.put_object(Bucket=self.bucket, Key=key, Body=text.encode())[
            "VersionId"
        ]
        self.texts[version_id] = (key, text)
        return version_id

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def listing(self) -> dict[str, list[dict[str, Any]]]:
        """Every ListObjectVersions page merged, JSON-shaped as the CLI prints it."""
        listing: dict[str, list[dict[str, Any]]] = {"Versions": [], "DeleteMarkers": []}
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket):
            for kind in listing:
                listing[kind] += [
                    {**entry, "LastModified": entry["LastModified"].isoformat()}
                    for entry in page.get(kind, [])
                ]
        return listing

    def serve(
        self,
        host: BuildHost,
        prefix: str = PREFIX,
        errors: dict[str, tuple[str, str]] | None = None,
    ) -> BuildHost:
        """Serve the bucket to `host`'s fake CLI; `errors` by "ListObjectVersions" or version id."""
        bodies = {
            version_id: (key, text.encode()) for version_id, (key, text) in self.texts.items()
        }
        host.serve_s3(
            bucket=self.bucket, prefix=prefix, listing=self.listing(), bodies=bodies, errors=errors
        )
        return host


def logs(name: str) -> str:
    """A payload that appends `name` to the run log: the order of the log is the run order."""
    return f'echo {name} >> "$RUN_LOG"\n'


class Build:
    """One run of a step on a host; `ran` is what the payloads logged, in order."""

    def __init__(self, host: BuildHost, step: str, bucket: str, prefix: str = PREFIX) -> None:
        run_log = host.directory / "run.log"
        run_log.touch()
        script = DOCUMENT.bash(step, {"Bucket": bucket, "Prefix": prefix})
        self.result = host.run(script, env={"RUN_LOG": str(run_log)})
        self.ran = run_log.read_text().splitlines()
        self.host = host

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.host.path(MANIFEST).read_text())


@pytest.fixture
def host(tmp_path: Path) -> BuildHost:
    return BuildHost(tmp_path)


def test_host_refuses_a_script_writing_outside_its_fake_root(host: BuildHost) -> None:
    with pytest.raises(AssertionError, match=r"\['/opt/agent'\]"):
        host.run("install -d /opt/agent\n")


# --- running the payloads ------------------------------------------------------------------------

# Code-point order (= S3's UTF-8 byte order); a locale-aware sort would put "a" before "B"
# and "10" after "9".
LEXICAL_ORDER = [
    "payloads/10-b.sh",
    "payloads/9-a.sh",
    "payloads/B.sh",
    "payloads/a.sh",
    "payloads/sub/c.sh",
    "payloads/z.sh",
    "payloads/é.sh",
]


@pytest.fixture(scope="module")
def full_build(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[PayloadStore, Build]:
    """A bucket with every kind of entry the runner must include or skip, built once."""
    store = PayloadStore(s3)
    store.put("payloads/a.sh", logs("a-old-version"))
    for key in reversed(LEXICAL_ORDER):  # upload order must not matter
        store.put(key, logs(key.removeprefix(PREFIX)))
    store.put("payloads/deleted.sh", logs("deleted"))
    store.delete("payloads/deleted.sh")  # latest entry is a delete marker
    store.put("payloads/readme.txt", logs("readme.txt"))
    store.put("payloads/z.sh.bak", logs("z.sh.bak"))
    store.put("other/outside.sh", logs("outside"))
    host = store.serve(BuildHost(tmp_path_factory.mktemp("full-build")))
    return store, Build(host, "RunPayloads", store.bucket)


def test_latest_version_of_each_sh_payload_runs_once_in_lexical_key_order(
    full_build: tuple[PayloadStore, Build],
) -> None:
    _, build = full_build
    assert build.result.returncode == 0, build.result.stderr
    assert build.ran == [key.removeprefix(PREFIX) for key in LEXICAL_ORDER]


def test_payloads_are_listed_under_the_prefix_and_downloaded_at_the_listed_version(
    full_build: tuple[PayloadStore, Build],
) -> None:
    store, build = full_build
    [listing, *downloads] = build.host.calls("aws")
    assert listing == [
        "aws", "s3api", "list-object-versions",
        "--bucket", store.bucket, "--prefix", PREFIX, "--output", "json",
    ]  # fmt: skip
    latest = {
        entry["Key"]: entry["VersionId"]
        for entry in store.listing()["Versions"]
        if entry["IsLatest"]
    }
    assert [(argv[6], argv[8]) for argv in downloads] == [
        (key, latest[key]) for key in LEXICAL_ORDER
    ]
    assert all(argv[:3] == ["aws", "s3api", "get-object"] for argv in downloads)


def test_manifest_records_key_version_and_sha256_in_run_order(
    full_build: tuple[PayloadStore, Build],
) -> None:
    store, build = full_build
    manifest = build.manifest
    assert manifest["bucket"] == store.bucket and manifest["prefix"] == PREFIX
    assert [entry["key"] for entry in manifest["payloads"]] == LEXICAL_ORDER
    for entry in manifest["payloads"]:
        key, text = store.texts[entry["versionId"]]
        assert key == entry["key"]
        assert entry["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert oct(build.host.path(MANIFEST).stat().st_mode & 0o777) == "0o644"


def test_manifest_is_printed_to_the_build_log(full_build: tuple[PayloadStore, Build]) -> None:
    _, build = full_build
    stdout = build.result.stdout
    header = "golden-ami: payload manifest\n"
    assert header in stdout
    assert json.loads(stdout.split(header, 1)[1]) == build.manifest
    for entry in build.manifest["payloads"]:
        assert (
            f"golden-ami: running s3://{build.manifest['bucket']}/{entry['key']} "
            f"version {entry['versionId']} sha256 {entry['sha256']}"
        ) in stdout


def test_runner_runs_exactly_the_payloads_the_build_trigger_digests(
    full_build: tuple[PayloadStore, Build],
) -> None:
    store, build = full_build
    settings = Settings(PIPELINE_ARN, store.bucket, PREFIX)
    trigger_view = [
        (key, version_id)
        for key, version_id in BuildTriggerAws(boto3.Session(), REGION).latest_payload_versions(
            store.bucket, PREFIX
        )
        if settings.is_payload_key(key)
    ]
    baked = [(entry["key"], entry["versionId"]) for entry in build.manifest["payloads"]]
    assert baked == sorted(trigger_view)
    assert payload_digest(baked) == payload_digest(trigger_view)


def test_no_payloads_builds_with_an_empty_manifest(s3: Any, host: BuildHost) -> None:
    store = PayloadStore(s3)
    store.put("payloads/notes.md", "# not a payload\n")
    build = Build(store.serve(host), "RunPayloads", store.bucket)
    assert build.result.returncode == 0, build.result.stderr
    assert build.ran == [] and build.manifest["payloads"] == []


def test_prefix_with_a_quote_is_taken_literally(s3: Any, host: BuildHost) -> None:
    # Config allows every S3 "safe" character in the prefix, the single quote included.
    prefix = "team's-payloads/"
    store = PayloadStore(s3)
    store.put(f"{prefix}one.sh", logs("one"))
    build = Build(store.serve(host, prefix), "RunPayloads", store.bucket, prefix)
    assert build.result.returncode == 0, build.result.stderr
    assert build.ran == ["one"] and build.manifest["prefix"] == prefix


def test_missing_aws_cli_is_installed_with_dnf(s3: Any, tmp_path: Path) -> None:
    store = PayloadStore(s3)
    store.put("payloads/one.sh", logs("one"))
    host = store.serve(BuildHost(tmp_path, aws_installed=False))
    build = Build(host, "RunPayloads", store.bucket)
    assert build.result.returncode == 0, build.result.stderr
    assert host.calls("dnf") == [["dnf", "install", "-y", "awscli-2"]]
    assert build.ran == ["one"]


def test_aws_cli_already_present_is_not_reinstalled(full_build: tuple[PayloadStore, Build]) -> None:
    _, build = full_build
    assert build.host.calls("dnf") == []


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failing_body",
    [
        pytest.param("exit 1\n", id="exit-1"),
        pytest.param('echo "$NOT_SET_ANYWHERE"\n', id="unset-variable"),
        pytest.param('false | cat\necho survived >> "$RUN_LOG"\n', id="failing-pipe"),
        pytest.param('false\necho survived >> "$RUN_LOG"\n', id="failing-command"),
        # 194 would make AWSTOE reboot and rerun every payload; the runner must fail instead.
        pytest.param(f"exit {REBOOT_EXIT_STATUS}\n", id="exit-194"),
    ],
)
def test_failing_payload_fails_the_step_and_stops_later_payloads(
    s3: Any, host: BuildHost, failing_body: str
) -> None:
    store = PayloadStore(s3)
    store.put("payloads/1-first.sh", logs("first"))
    store.put("payloads/2-broken.sh", logs("broken") + failing_body)
    store.put("payloads/3-last.sh", logs("last"))
    build = Build(store.serve(host), "RunPayloads", store.bucket)
    assert build.result.returncode == 1
    assert build.ran == ["first", "broken"]
    assert "payloads/2-broken.sh" in build.result.stderr
    assert not host.path(MANIFEST).exists()


def test_payload_reading_stdin_cannot_swallow_the_rest_of_the_list(
    s3: Any, host: BuildHost
) -> None:
    store = PayloadStore(s3)
    store.put("payloads/1-greedy.sh", 'echo "greedy read $(cat | wc -c) bytes" >> "$RUN_LOG"\n')
    store.put("payloads/2-next.sh", logs("next"))
    store.put("payloads/3-last.sh", logs("last"))
    build = Build(store.serve(host), "RunPayloads", store.bucket)
    assert build.result.returncode == 0, build.result.stderr
    assert build.ran == ["greedy read 0 bytes", "next", "last"]


def test_listing_denied_fails_before_any_payload_runs(s3: Any, host: BuildHost) -> None:
    store = PayloadStore(s3)
    store.put("payloads/one.sh", logs("one"))
    store.serve(host, errors={"ListObjectVersions": ("AccessDenied", "Access Denied")})
    build = Build(host, "RunPayloads", store.bucket)
    assert build.result.returncode != 0
    assert "AccessDenied" in build.result.stderr
    assert build.ran == [] and not host.path(MANIFEST).exists()


def test_one_failed_download_means_no_payload_runs(s3: Any, host: BuildHost) -> None:
    store = PayloadStore(s3)
    store.put("payloads/1-first.sh", logs("first"))
    second = store.put("payloads/2-second.sh", logs("second"))
    store.serve(host, errors={second: ("SlowDown", "Please reduce your request rate.")})
    build = Build(host, "RunPayloads", store.bucket)
    assert build.result.returncode != 0
    assert "SlowDown" in build.result.stderr
    assert build.ran == [] and not host.path(MANIFEST).exists()


def test_key_that_cannot_be_listed_unambiguously_fails_naming_it(s3: Any, host: BuildHost) -> None:
    store = PayloadStore(s3)
    store.put("payloads/1-fine.sh", logs("fine"))
    store.put("payloads/2-tab\there.sh", logs("tab"))
    build = Build(store.serve(host), "RunPayloads", store.bucket)
    assert build.result.returncode != 0
    assert "'payloads/2-tab\\there.sh'" in build.result.stderr
    assert build.ran == [] and not host.path(MANIFEST).exists()


# --- the ECS agent reset and the checks after it -------------------------------------------------


def seed_agent_state(host: BuildHost) -> Path:
    data = host.path(ECS_DATA)
    data.mkdir(parents=True)
    (data / "agent.db").write_text("container instance arn of the build instance")
    (data / "ecs_agent_data.json").write_text("{}")
    return data


def test_reset_stops_the_agent_and_empties_its_state(host: BuildHost) -> None:
    data = seed_agent_state(host)
    result = host.run(DOCUMENT.bash("ResetEcsAgent", {}))
    assert result.returncode == 0, result.stderr
    assert host.calls("systemctl") == [["systemctl", "stop", "ecs"]]
    assert data.is_dir() and list(data.iterdir()) == []


def test_reset_fails_when_the_agent_does_not_stop(host: BuildHost) -> None:
    data = seed_agent_state(host)
    host.fail_command("systemctl", 5)
    result = host.run(DOCUMENT.bash("ResetEcsAgent", {}))
    assert result.returncode == 5
    assert sorted(path.name for path in data.iterdir()) == ["agent.db", "ecs_agent_data.json"]


def write_manifest(host: BuildHost, text: str) -> None:
    host.path(MANIFEST).parent.mkdir(parents=True)
    host.path(MANIFEST).write_text(text)


@pytest.mark.parametrize("step", ["CheckManifestAndCleanAgent", "CheckManifest"])
def test_checks_pass_on_a_good_build(host: BuildHost, step: str) -> None:
    write_manifest(host, '{"payloads": []}')
    host.path(ECS_DATA).mkdir(parents=True)
    result = host.run(DOCUMENT.bash(step, {}))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("step", ["CheckManifestAndCleanAgent", "CheckManifest"])
@pytest.mark.parametrize("manifest", [None, "{not json"], ids=["missing", "corrupt"])
def test_checks_fail_without_a_readable_manifest(
    host: BuildHost, step: str, manifest: str | None
) -> None:
    if manifest is not None:
        write_manifest(host, manifest)
    assert host.run(DOCUMENT.bash(step, {})).returncode != 0


def test_validate_fails_when_agent_state_is_left_behind(host: BuildHost) -> None:
    write_manifest(host, '{"payloads": []}')
    seed_agent_state(host)
    assert host.run(DOCUMENT.bash("CheckManifestAndCleanAgent", {})).returncode != 0


# --- what the build instance may do --------------------------------------------------------------


# The IAM action each AWS CLI call the runner makes is authorised as (Service Authorization
# Reference; ListObjectVersions is s3:ListBucketVersions, "be aware of the name difference").
def required_grant(argv: list[str]) -> tuple[str, str, dict[str, str]]:
    """(action, resource ARN, condition context) for one recorded `aws s3api` call."""
    options = dict(zip(argv[3::2], argv[4::2], strict=False))
    bucket_arn = f"arn:aws:s3:::{options['--bucket']}"
    if argv[2] == "list-object-versions":
        return "s3:ListBucketVersions", bucket_arn, {"s3:prefix": options["--prefix"]}
    if argv[2] == "get-object":
        action = "s3:GetObjectVersion" if "--version-id" in options else "s3:GetObject"
        return action, f"{bucket_arn}/{options['--key']}", {}
    raise AssertionError(f"no IAM mapping for {argv}")


def allows(policy: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    """Identity-policy Allow check for the statement shapes policies.py writes."""
    for statement in policy["Statement"]:
        actions, resources = statement["Action"], statement["Resource"]
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        conditions = statement.get("Condition", {})
        assert set(conditions) <= {"StringLike"}, f"unsupported condition in {statement}"
        if (
            statement["Effect"] == "Allow"
            and any(fnmatch.fnmatchcase(action, pattern) for pattern in actions)
            and any(fnmatch.fnmatchcase(resource, pattern) for pattern in resources)
            and all(
                key in context and any(fnmatch.fnmatchcase(context[key], p) for p in patterns)
                for key, patterns in conditions.get("StringLike", {}).items()
            )
        ):
            return True
    return False


def test_build_instance_policy_grants_every_call_the_runner_makes(
    full_build: tuple[PayloadStore, Build],
) -> None:
    store, build = full_build
    policy = policies.build_instance_payload_policy(f"arn:aws:s3:::{store.bucket}", PREFIX)
    calls = build.host.calls("aws")
    assert calls
    denied = [argv for argv in calls if not allows(policy, *required_grant(argv))]
    assert denied == []
