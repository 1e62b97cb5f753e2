"""Least privilege proven both ways (DESIGN §7): every AWS call a handler made anywhere in the
suite is granted to the role it was made as, and every granted action is called or allowlisted
below with the reason.

The calls come from `tests/iam_recorder.py` (installed by conftest for the whole session); this
module runs last (conftest moves it) and skips, saying why, when the suite was filtered so that a
handler's tests did not all run. The grants come from the example stacks under Pulumi mocks, the
infra stack once per account source, since the fan-out's listing grants depend on it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests import doc_tables
from tests.iam_recorder import (
    EXECUTION_ROLE,
    INVOKE_ROLE,
    UNAUTHORISED_ACTIONS,
    ApiCallRecorder,
    Grant,
    granting,
    merge_grants,
    role_policies,
)
from tests.pulumi_harness import REPO_ROOT, StackRun

# Test files whose full run exercises each handler; a filtered run cannot prove "every call".
HANDLER_TEST_FILES = {
    "build_trigger": "tests/test_build_trigger.py",
    "fanout": "tests/test_fanout_handler.py",
    "recorder": "tests/test_recorder.py",
    "refresh": "tests/test_refresh_handler.py",
    "waves": "tests/test_waves_handler.py",
}
LIST_ACCOUNTS_ROLE = "arn:aws:iam::111122223333:role/GoldenAmiListAccounts"
# Infra stack variants covering every account source the fan-out tests exercise.
INFRA_VARIANTS = (
    {},
    {"organizationalUnitIds": ["ou-ab12-cd34ef56"]},
    {"listAccountsRoleArn": LIST_ACCOUNTS_ROLE},
    {"accountSource": "static", "staticAccountIds": ["222233334444"]},
    # The progressive rollout: its waves Lambda, and the fan-out walking the waves' OUs.
    {
        "rolloutWaves": [
            {"name": "canary", "accounts": ["ou-ab12-cd34ef56"], "approval": "manual"},
            {"name": "rest", "accounts": ["rest"]},
        ],
        "alarmTopicArn": "arn:aws:sns:eu-west-1:111122223333:platform-alerts",
    },
)
WORKLOAD_STACK = "workload-prod"  # two regions: the multi-region grants

# Granted but never called by handler code, and why that is still needed. (role, action) -> reason
GRANTED_NOT_CALLED = {
    ("build_trigger", "imagebuilder:GetImagePipeline"): (
        "dependent action of imagebuilder:StartImagePipelineExecution (Service Authorization "
        "Reference): starting a build also needs permission to read the pipeline"
    ),
    **{
        ("build_trigger", action): "called by the Lambda SQS event source mapping, as this role"
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
    },
    **{
        ("refresh", action): (
            "Auto Scaling authorises the caller of StartInstanceRefresh/UpdateAutoScalingGroup "
            "for the launch template's RunInstances, instance role and launch tags"
        )
        for action in ("ec2:RunInstances", "iam:PassRole", "ec2:CreateTags")
    },
    ("recorder", "sqs:SendMessage"): (
        "Lambda sends an asynchronous invocation that failed every retry to the function's "
        "dead-letter queue as the function's role"
    ),
    **{
        (role, action): "called by the Lambda runtime to write the function's logs"
        for role in ("build_trigger", "fanout", "recorder", "refresh", "waves")
        for action in ("logs:CreateLogStream", "logs:PutLogEvents")
    },
}
# Functions that run another handler package's code, whose calls are recorded as that package's
# (tests/iam_recorder.py attributes a call to the package of the code making it). Their roles
# hold the same rules' grants (tests/test_refresh_rollback_component.py checks that).
RUNS_THE_CODE_OF = {"release": "refresh"}


def granted_not_called(grants: dict[str, list[Grant]]) -> dict[tuple[str, str], str]:
    """GRANTED_NOT_CALLED plus every grant of a role in RUNS_THE_CODE_OF, with the reason."""
    explained = dict(GRANTED_NOT_CALLED)
    for role, runs in RUNS_THE_CODE_OF.items():
        for grant in grants.get(role, []):
            for action in grant.actions:
                explained[role, action] = (
                    f"the {role} function runs the {runs} handler's code: its calls are the "
                    f"{runs} role's, checked there against the same grants"
                )
    return explained


# Actions that have no resource-level permission: "Resource": "*" is the only way to grant them.
NO_RESOURCE_LEVEL_PERMISSION = {
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeInstanceRefreshes",
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplateVersions",
    "organizations:ListAccounts",
    "organizations:ListAccountsForParent",
    "organizations:ListOrganizationalUnitsForParent",
    "cloudwatch:PutMetricData",
}
# AWS managed policies on roles no handler uses, and why each is acceptable.
MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/EC2InstanceProfileForImageBuilder": (
        "build instance: Image Builder's own minimum for its build/test instances"
    ),
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore": (
        "build instance: Image Builder drives the build through SSM Run Command"
    ),
    "arn:aws:iam::aws:policy/service-role/EC2ImageBuilderLifecycleExecutionPolicy": (
        "lifecycle role: the service role policy Image Builder lifecycle policies require"
    ),
}
BROAD_MANAGED_POLICY = re.compile(r"FullAccess|AdministratorAccess|PowerUserAccess")


@pytest.fixture(scope="module")
def stack_runs(stack_run) -> list[StackRun]:
    return [stack_run("infra", variant) for variant in INFRA_VARIANTS] + [stack_run(WORKLOAD_STACK)]


@pytest.fixture(scope="module")
def grants(stack_runs) -> dict[str, list[Grant]]:
    return merge_grants(stack_runs)


@pytest.fixture(scope="module")
def recorded(api_calls: ApiCallRecorder, fully_run_test_files: set[str]) -> ApiCallRecorder:
    """The session's recording, once every handler's tests ran in full."""
    for handler, test_file in HANDLER_TEST_FILES.items():
        if test_file not in fully_run_test_files:
            pytest.skip(
                f"{test_file} did not run in full in this session (suite filtered), so the "
                f"calls of handlers/{handler} are incomplete: run the whole suite"
            )
    assert api_calls.handlers_seen() == set(HANDLER_TEST_FILES), api_calls.handlers_seen()
    return api_calls


def role_key(handler: str, role: str) -> str:
    """The grants a call is checked against: its handler's execution role, or the role assumed."""
    return handler if role == EXECUTION_ROLE else role


def test_every_handler_call_is_granted_to_the_role_it_was_made_as(recorded, grants):
    missing = []
    for call in recorded.calls:
        if call.action in UNAUTHORISED_ACTIONS:
            continue
        key = role_key(call.handler, call.role)
        if not granting(grants.get(key, []), call.action):
            missing.append(f"{call.handler} calls {call.operation} as {key}: {call.action}")
    assert not missing, "calls not granted:\n" + "\n".join(sorted(missing))


def test_every_granted_action_is_called_or_allowlisted(recorded, grants):
    called = {(role_key(c.handler, c.role), c.action) for c in recorded.calls}
    explained = granted_not_called(grants)
    unused = [
        f"{role} is granted {action} (statement {grant.sid}) but never calls it"
        for role, role_grants in grants.items()
        for grant in role_grants
        for action in grant.actions
        if (role, action) not in called and (role, action) not in explained
    ]
    assert not unused, "\n".join(sorted(set(unused)))
    # The allowlist itself stays honest: no reason for a grant that no longer exists or is used.
    stale = [
        entry
        for entry in GRANTED_NOT_CALLED
        if entry in called or not granting(grants.get(entry[0], []), entry[1])
    ]
    assert not stale, f"allowlist entries that are called or no longer granted: {stale}"


def test_the_fanout_invokes_only_as_the_workload_invoke_role(recorded):
    invokes = {c.role for c in recorded.calls if c.action == "lambda:InvokeFunction"}
    assert invokes == {INVOKE_ROLE}


def _documents(run: StackRun) -> list[tuple[str, str, dict]]:
    """(resource name, property, document) for every policy document the run declares."""
    found = []
    for resource in run.resources:
        for prop, value in resource.inputs.items():
            if isinstance(value, str) and '"Statement"' in value:
                found.append((resource.name, prop, json.loads(value)))
    return found


def _statements(document: dict) -> list[dict]:
    statements = document["Statement"]
    return [statements] if isinstance(statements, dict) else statements


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def test_no_allow_of_every_action_and_no_service_wildcard_outside_key_admin(stack_runs):
    offending = []
    for run in stack_runs:
        for name, prop, document in _documents(run):
            for statement in _statements(document):
                if statement["Effect"] != "Allow":
                    continue  # a Deny of s3:* (TLS only) narrows, it never grants
                for action in _as_list(statement.get("Action", [])):
                    key_admin = prop == "policy" and statement.get("Sid") == "AccountAdministersKey"
                    if action == "*" or (action.endswith(":*") and not key_admin):
                        offending.append(f"{run.stack} {name}.{prop}: {action}")
    # The one `kms:*` is the key policy statement AWS itself writes for a new key: the account
    # administers its key through IAM; without it the key becomes unmanageable.
    assert not offending, offending


def test_no_broad_managed_policies_and_every_managed_policy_is_explained(stack_runs):
    for run in stack_runs:
        for policies in role_policies(run):
            for arn in policies.managed_policy_arns:
                assert not BROAD_MANAGED_POLICY.search(arn), arn
                assert arn in MANAGED_POLICIES, f"{arn} on {policies.role_resource.name}"


def test_resource_star_only_without_resource_level_permission_or_with_a_condition(grants):
    unscoped = [
        f"{role} {grant.sid}: {action}"
        for role, role_grants in grants.items()
        for grant in role_grants
        if "*" in grant.resources and not grant.condition
        for action in grant.actions
        if action not in NO_RESOURCE_LEVEL_PERMISSION
    ]
    assert not unscoped, unscoped


def test_condition_bounds_run_instances_pass_role_and_launch_tags(grants):
    def only(action: str) -> Grant:
        [grant] = granting(grants["refresh"], action)
        return grant

    assert set(only("ec2:RunInstances").condition["ArnEquals"]) == {"ec2:LaunchTemplate"}
    pass_role = only("iam:PassRole")
    assert pass_role.condition == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert all(":role/" in arn for arn in pass_role.resources)  # the role, not the profile
    assert only("ec2:CreateTags").condition == {
        "StringEquals": {"ec2:CreateAction": "RunInstances"}
    }


def test_trust_policies_name_exact_principals(stack_runs):
    for run in stack_runs:
        for role in run.resources_of_type("aws:iam/role:Role"):
            for statement in _statements(role.json("assumeRolePolicy")):
                principal = statement["Principal"]
                assert isinstance(principal, dict) and len(principal) == 1, (role.name, principal)
                [(kind, values)] = principal.items()
                for value in _as_list(values):
                    if kind == "Service":
                        assert re.fullmatch(r"[a-z0-9-]+\.amazonaws\.com", value), value
                    else:
                        assert kind == "AWS", (role.name, principal)
                        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", value), value


def test_cross_account_role_trusts_the_fanout_role_only_within_the_organization(stack_run):
    run = stack_run(WORKLOAD_STACK)
    config = run.config
    [invoke_role] = [
        r for r in run.resources_of_type("aws:iam/role:Role") if r.outputs["name"] == INVOKE_ROLE
    ]
    [statement] = _statements(invoke_role.json("assumeRolePolicy"))
    assert statement["Principal"] == {"AWS": config["golden-ami:fanoutRoleArn"]}
    assert statement["Condition"] == {
        "StringEquals": {"aws:PrincipalOrgID": config["golden-ami:organizationId"]}
    }


def test_iam_calls_doc_is_current(recorded, grants, fully_run_test_files):
    """docs/iam-calls.md is rendered from this session's recording: only a whole-suite run can
    tell whether it is stale. `python -m tests.doc_tables` rewrites it."""
    every_test_file = {f"tests/{path.name}" for path in (REPO_ROOT / "tests").glob("test_*.py")}
    if not_run := sorted(every_test_file - fully_run_test_files):
        pytest.skip(f"docs/iam-calls.md reflects the whole suite; not run in full: {not_run}")
    rendered = doc_tables.iam_calls_markdown(recorded.calls, grants, granted_not_called(grants))
    path: Path = doc_tables.IAM_CALLS_DOC
    if os.environ.get(doc_tables.WRITE_DOCS_ENV) == "1":
        path.write_text(rendered)
    assert path.read_text() == rendered, "docs/iam-calls.md is stale: python -m tests.doc_tables"
