"""The offline deployment plan (`python -m deploy plan`): order, accounts, config, bad files."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.cli import EXIT_CHANGES_PENDING, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from deploy.plan import PlanError, load_plan

REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA_ACCOUNT = "111111111111"
DEV_ACCOUNT = "222222222222"
PROD_ACCOUNT = "333333333333"

# Valid for components/config.py, so `plan` (which runs the program's validator) accepts them.
INFRA: dict[str, Any] = {
    "aws:region": "eu-west-1",
    "aws:allowedAccountIds": [INFRA_ACCOUNT],
    "aws:assumeRoles": [{"roleArn": f"arn:aws:iam::{INFRA_ACCOUNT}:role/deploy"}],
    "golden-ami:role": "infra",
    "golden-ami:regions": ["us-east-1", "eu-west-1"],
    "golden-ami:infraAccountId": INFRA_ACCOUNT,
    "golden-ami:organizationId": "o-a1b2c3d4e5",
    "golden-ami:managementAccountId": "999999999999",
    "golden-ami:imagePrefix": "acme-ecs",
}


def workload(account: str, **extra: Any) -> dict[str, Any]:
    return {
        "aws:region": "eu-west-1",
        "aws:allowedAccountIds": [account],
        "golden-ami:role": "workload",
        "golden-ami:organizationId": "o-a1b2c3d4e5",
        "golden-ami:ecsInstanceRoleArn": f"arn:aws:iam::{account}:role/ecsInstanceRole",
        "golden-ami:targets": [
            {
                "autoScalingGroupName": "ecs-general",
                "launchTemplateId": "lt-0123456789abcdef0",
                "clusterName": "general",
            }
        ],
        **extra,
    }


def write_project(directory: Path, stacks: dict[str, dict[str, Any] | str]) -> Path:
    """A project dir with Pulumi.yaml and one Pulumi.<name>.yaml per stack (a str is raw YAML)."""
    (directory / "Pulumi.yaml").write_text("name: golden-ami\nruntime: python\n")
    for name, config in stacks.items():
        text = config if isinstance(config, str) else yaml.safe_dump({"config": config})
        (directory / f"Pulumi.{name}.yaml").write_text(text)
    return directory


def standard_project(directory: Path) -> Path:
    return write_project(
        directory,
        {
            "workload-prod": workload(PROD_ACCOUNT),
            "infra": INFRA,
            "workload-dev": workload(
                DEV_ACCOUNT,
                **{
                    "golden-ami:imagePrefix": "acme-ecs",
                    "golden-ami:alarmTopicArn": {"secure": "v1:AAA"},
                },
            ),
        },
    )


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def problems_for(directory: Path) -> list[str]:
    with pytest.raises(PlanError) as caught:
        load_plan(directory)
    return caught.value.problems


# --- order and shape --------------------------------------------------------------------------


def test_plan_orders_infra_first_then_workloads_by_name_each_depending_on_infra(tmp_path):
    plan = load_plan(standard_project(tmp_path))

    assert [(s.name, s.role, s.account, s.depends_on) for s in plan.stacks] == [
        ("infra", "infra", INFRA_ACCOUNT, ()),
        ("workload-dev", "workload", DEV_ACCOUNT, ("infra",)),
        ("workload-prod", "workload", PROD_ACCOUNT, ("infra",)),
    ]
    # The home region leads and is not repeated, whatever order the file lists it in.
    assert plan.infra.regions == ("eu-west-1", "us-east-1")


def test_stacks_are_told_apart_by_golden_ami_role_whatever_their_names(tmp_path):
    # README: any stack name works; `golden-ami:role` alone decides infra or workload.
    write_project(tmp_path, {"builder": INFRA, "payments": workload(DEV_ACCOUNT)})

    plan = load_plan(tmp_path)

    assert [(s.name, s.role, s.depends_on) for s in plan.stacks] == [
        ("builder", "infra", ()),
        ("payments", "workload", ("builder",)),
    ]


@pytest.mark.parametrize("command", ["plan", "outputs"])
def test_only_preview_up_and_destroy_take_parallel(tmp_path, command, capsys):
    # README: `--parallel N` (preview, up, destroy); plan and outputs refuse it as bad usage.
    project = str(standard_project(tmp_path))

    with pytest.raises(SystemExit) as exited:
        run_cli(command, "--parallel", "2", "--project-dir", project)

    assert exited.value.code == EXIT_USAGE
    assert "unrecognized arguments: --parallel 2" in capsys.readouterr().err


def test_plan_json_lists_each_stack_with_the_config_it_will_get(tmp_path):
    code, out, _ = run_cli("plan", "--json", "--project-dir", str(standard_project(tmp_path)))

    assert code == EXIT_OK
    document = json.loads(out)
    assert [stack["stack"] for stack in document["stacks"]] == [
        "infra",
        "workload-dev",
        "workload-prod",
    ]
    infra, dev, _prod = document["stacks"]
    assert infra == {
        "stack": "infra",
        "role": "infra",
        "account": INFRA_ACCOUNT,
        "region": "eu-west-1",
        "regions": ["eu-west-1", "us-east-1"],
        "dependsOn": [],
        "config": dict(sorted(INFRA.items())),
    }
    assert dev["dependsOn"] == ["infra"]
    assert dev["account"] == DEV_ACCOUNT
    assert dev["regions"] == ["eu-west-1"]
    # Infra outputs not yet known show as placeholders; a value the file holds is shown as is.
    assert dev["config"]["golden-ami:fanoutRoleArn"] == "<from infra output fanoutRoleArn>"
    assert dev["config"]["golden-ami:infraAccountId"] == "<from infra output infraAccountId>"
    assert dev["config"]["golden-ami:imagePrefix"] == "acme-ecs"
    assert dev["config"]["golden-ami:alarmTopicArn"] == "[secret]"
    assert "v1:AAA" not in out
    assert list(dev["config"]) == sorted(dev["config"])


def test_plan_stack_filter_keeps_deployment_order_and_rejects_unknown_names(tmp_path):
    project = str(standard_project(tmp_path))

    selection = ["--stack", "workload-prod", "--stack", "infra"]
    code, out, _ = run_cli("plan", "--json", "--project-dir", project, *selection)
    assert code == EXIT_OK
    assert [s["stack"] for s in json.loads(out)["stacks"]] == ["infra", "workload-prod"]

    code, out, err = run_cli("plan", "--project-dir", project, "--stack", "workload-qa")
    assert code == EXIT_USAGE
    assert out == ""
    assert "no stack named workload-qa (stacks: infra, workload-dev, workload-prod)" in err


def test_plan_text_shows_accounts_order_and_propagated_values(tmp_path):
    code, out, _ = run_cli("plan", "--project-dir", str(standard_project(tmp_path)))

    assert code == EXIT_OK
    lines = out.splitlines()
    assert re.search(
        rf"1\. infra .*account {INFRA_ACCOUNT}\s+regions eu-west-1, us-east-1$", lines[1]
    )
    assert re.search(rf"2\. workload-dev .*account {DEV_ACCOUNT} .*after infra$", lines[2])
    assert "golden-ami:fanoutRoleArn = <from infra output fanoutRoleArn>" in out


# --- account pinning --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pinning", "expected"),
    [
        ({}, "aws:allowedAccountIds is not set; pin the stack"),
        ({"aws:allowedAccountIds": [222222222222]}, "exactly one quoted 12-digit account id"),
        ({"aws:allowedAccountIds": [DEV_ACCOUNT, PROD_ACCOUNT]}, "exactly one quoted"),
        ({"aws:allowedAccountIds": DEV_ACCOUNT}, "exactly one quoted"),
        (
            {
                "aws:allowedAccountIds": [DEV_ACCOUNT],
                "aws:assumeRoles": [
                    {"roleArn": f"arn:aws:iam::{INFRA_ACCOUNT}:role/hop"},
                    {"roleArn": f"arn:aws:iam::{PROD_ACCOUNT}:role/deploy"},
                ],
            },
            f"assumes arn:aws:iam::{PROD_ACCOUNT}:role/deploy in account {PROD_ACCOUNT}, "
            f"but aws:allowedAccountIds pins the stack to {DEV_ACCOUNT}",
        ),
        (
            {"aws:allowedAccountIds": [DEV_ACCOUNT], "aws:assumeRoles": [{"roleArn": "deploy"}]},
            "roleArn 'deploy' is not a role ARN",
        ),
    ],
)
def test_a_stack_without_exactly_one_pinned_account_is_refused(tmp_path, pinning, expected):
    config = {k: v for k, v in workload(DEV_ACCOUNT).items() if k != "aws:allowedAccountIds"}
    write_project(tmp_path, {"infra": INFRA, "workload-dev": {**config, **pinning}})

    [problem] = problems_for(tmp_path)

    assert problem.startswith("Pulumi.workload-dev.yaml: aws:")
    assert expected in problem


def test_role_chaining_pins_on_the_last_role_assumed(tmp_path):
    chained = workload(
        DEV_ACCOUNT,
        **{
            "aws:assumeRoles": [
                {"roleArn": f"arn:aws:iam::{INFRA_ACCOUNT}:role/hop"},
                {"roleArn": f"arn:aws:iam::{DEV_ACCOUNT}:role/deploy"},
            ]
        },
    )
    plan = load_plan(write_project(tmp_path, {"infra": INFRA, "workload-dev": chained}))

    assert plan.stacks[1].account == DEV_ACCOUNT


def test_a_workload_stack_in_the_infra_account_is_refused_unless_the_infra_enrols_it(tmp_path):
    write_project(tmp_path, {"infra": INFRA, "workload-dev": workload(INFRA_ACCOUNT)})

    [problem] = problems_for(tmp_path)
    assert problem.startswith(
        f"Pulumi.workload-dev.yaml: aws:allowedAccountIds targets {INFRA_ACCOUNT}, the infra "
    )
    assert "golden-ami:includeInfraAccount: true in Pulumi.infra.yaml" in problem

    enrolling_infra = {**INFRA, "golden-ami:includeInfraAccount": True}
    write_project(tmp_path, {"infra": enrolling_infra, "workload-dev": workload(INFRA_ACCOUNT)})
    assert load_plan(tmp_path).stacks[1].account == INFRA_ACCOUNT


def test_two_workload_stacks_in_one_account_are_refused(tmp_path):
    write_project(
        tmp_path,
        {"infra": INFRA, "workload-a": workload(DEV_ACCOUNT), "workload-b": workload(DEV_ACCOUNT)},
    )

    assert problems_for(tmp_path) == [
        f"Pulumi.workload-b.yaml: aws:allowedAccountIds targets {DEV_ACCOUNT}, already the account "
        "of Pulumi.workload-a.yaml; one workload stack per account (its IAM roles have fixed names "
        "and its regions are listed in one stack)"
    ]


def test_an_infra_stack_pinned_to_another_account_than_its_infra_account_id_is_refused(tmp_path):
    write_project(tmp_path, {"infra": {**INFRA, "golden-ami:infraAccountId": DEV_ACCOUNT}})

    assert problems_for(tmp_path) == [
        f"Pulumi.infra.yaml: golden-ami:infraAccountId = '{DEV_ACCOUNT}', but "
        f"aws:allowedAccountIds pins the infra stack to {INFRA_ACCOUNT}"
    ]


# --- bad stack files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack_file", "expected"),
    [
        (
            "config:\n  golden-ami:role: workload\n   aws:region: eu-west-1\n",
            "Pulumi.workload-dev.yaml: invalid YAML (line 3, column",
        ),
        ("config: [1, 2]\n", "Pulumi.workload-dev.yaml: expected a mapping under `config:`"),
        (
            yaml.safe_dump({"config": {**workload(DEV_ACCOUNT), "golden-ami:role": "workloads"}}),
            "Pulumi.workload-dev.yaml: golden-ami:role = 'workloads' (one of: infra, workload)",
        ),
        (
            yaml.safe_dump(
                {"config": {k: v for k, v in workload(DEV_ACCOUNT).items() if "role" not in k}}
            ),
            "Pulumi.workload-dev.yaml: golden-ami:role is not set (one of: infra, workload)",
        ),
        (
            yaml.safe_dump(
                {"config": {k: v for k, v in workload(DEV_ACCOUNT).items() if k != "aws:region"}}
            ),
            "Pulumi.workload-dev.yaml: aws:region is not set",
        ),
        (
            yaml.safe_dump(
                {"config": {**workload(DEV_ACCOUNT), "golden-ami:regions": "us-east-1"}}
            ),
            "Pulumi.workload-dev.yaml: golden-ami:regions must be a list of region names",
        ),
        (
            # The provider no longer reads it: the program refuses it, so does the plan.
            yaml.safe_dump(
                {
                    "config": {
                        **workload(DEV_ACCOUNT),
                        "aws:assumeRole": {"roleArn": f"arn:aws:iam::{DEV_ACCOUNT}:role/deploy"},
                    }
                }
            ),
            "Pulumi.workload-dev.yaml: aws:assumeRole = ",
        ),
    ],
)
def test_a_bad_stack_file_is_a_configuration_error_naming_file_and_key(
    tmp_path, stack_file, expected
):
    write_project(tmp_path, {"infra": INFRA, "workload-dev": stack_file})

    code, out, err = run_cli("plan", "--json", "--project-dir", str(tmp_path))

    assert code == EXIT_USAGE
    assert out == ""
    assert expected in err


def test_every_broken_stack_file_is_reported_at_once(tmp_path):
    broken = {k: v for k, v in workload(DEV_ACCOUNT).items() if k != "aws:allowedAccountIds"}
    write_project(tmp_path, {"infra": INFRA, "workload-a": broken, "workload-b": "config: [\n"})

    problems = problems_for(tmp_path)

    assert [problem.split(":")[0] for problem in problems] == [
        "Pulumi.workload-a.yaml",
        "Pulumi.workload-b.yaml",
    ]


@pytest.mark.parametrize(
    ("stacks", "expected"),
    [
        ({"workload-dev": workload(DEV_ACCOUNT)}, "found none"),
        (
            {"infra": INFRA, "infra-2": {**INFRA, "aws:assumeRoles": []}},
            "found Pulumi.infra-2.yaml, Pulumi.infra.yaml",
        ),
    ],
)
def test_the_project_needs_exactly_one_infra_stack(tmp_path, stacks, expected):
    write_project(tmp_path, stacks)

    [problem] = problems_for(tmp_path)

    assert "expected exactly one stack file with golden-ami:role: infra" in problem
    assert problem.endswith(expected)


def test_a_directory_without_pulumi_yaml_is_refused(tmp_path):
    code, _, err = run_cli("plan", "--project-dir", str(tmp_path))

    assert code == EXIT_USAGE
    assert f"{tmp_path / 'Pulumi.yaml'}: not found" in err


# --- the program's own config validation -------------------------------------------------------


def test_plan_reports_values_the_program_would_reject(tmp_path):
    bad = workload(DEV_ACCOUNT, **{"golden-ami:refreshStandbyInstances": "Sometimes"})
    write_project(tmp_path, {"infra": INFRA, "workload-dev": bad})

    code, out, err = run_cli("plan", "--project-dir", str(tmp_path))

    assert code == EXIT_USAGE
    assert out == ""
    assert "Pulumi.workload-dev.yaml: golden-ami:refreshStandbyInstances = " in err
    assert "Sometimes" in err


def test_plan_reports_a_hand_copied_infra_value_that_went_stale(tmp_path):
    stale = workload(
        DEV_ACCOUNT,
        **{"golden-ami:fanoutRoleArn": f"arn:aws:iam::{INFRA_ACCOUNT}:role/OldFanoutRole"},
    )
    write_project(tmp_path, {"infra": INFRA, "workload-dev": stale})

    code, _, err = run_cli("plan", "--project-dir", str(tmp_path))

    assert code == EXIT_USAGE
    assert (
        "Pulumi.workload-dev.yaml: golden-ami:fanoutRoleArn = "
        f"'arn:aws:iam::{INFRA_ACCOUNT}:role/OldFanoutRole', but the infra stack exports "
        f"'arn:aws:iam::{INFRA_ACCOUNT}:role/GoldenAmiFanoutRole'"
    ) in err


def test_an_invalid_infra_config_is_reported_before_the_workloads_are_checked(tmp_path):
    infra = {k: v for k, v in INFRA.items() if k != "golden-ami:organizationId"}
    write_project(tmp_path, {"infra": infra, "workload-dev": workload(DEV_ACCOUNT)})

    code, _, err = run_cli("plan", "--project-dir", str(tmp_path))

    assert code == EXIT_USAGE
    assert "Pulumi.infra.yaml: golden-ami:organizationId is not set" in err
    assert "workload stacks are checked once the infra stack's config is valid" in err


# --- the repository's own stack files ---------------------------------------------------------


def test_the_repository_stack_files_form_a_valid_plan():
    code, out, err = run_cli("plan", "--json", "--project-dir", str(REPO_ROOT))

    assert code == EXIT_OK, err
    stacks = json.loads(out)["stacks"]
    assert stacks[0]["stack"] == "infra"
    assert {s["role"] for s in stacks[1:]} == {"workload"}
    infra_account = stacks[0]["account"]
    assert all(s["account"] != infra_account and s["dependsOn"] == ["infra"] for s in stacks[1:])


# --- the example CI workflow -----------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return yaml.safe_load((REPO_ROOT / ".github/workflows/deploy.yml").read_text())


def test_workflow_previews_pull_requests_and_deploys_main(workflow):
    triggers = workflow[True]  # YAML 1.1 reads the bare key `on` as a boolean
    assert set(triggers) == {"pull_request", "push"}
    assert triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["env"]["DEPLOY_COMMAND"] == (
        "${{ github.event_name == 'pull_request' && 'preview' || 'up' }}"
    )
    assert workflow["concurrency"]["cancel-in-progress"] is False

    deploy_steps = [
        step
        for name in ("infra", "workloads")
        for step in workflow["jobs"][name]["steps"]
        if "-m deploy" in step.get("run", "")
    ]
    assert len(deploy_steps) == 2
    infra_step, workload_step = deploy_steps
    assert infra_step["shell"] == workload_step["shell"] == "bash"
    assert infra_step["run"] == workload_step["run"]  # the script below is tested once
    assert '-m deploy "$DEPLOY_COMMAND" --stack "$STACK" --json' in infra_step["run"]


@pytest.mark.parametrize(
    ("deploy_exit", "step_exit"),
    [(EXIT_OK, 0), (EXIT_CHANGES_PENDING, 0), (EXIT_FAILED, 1), (EXIT_USAGE, 3)],
)
def test_workflow_deploy_step_passes_pending_changes_and_fails_on_errors(
    workflow, tmp_path, deploy_exit, step_exit
):
    [step] = [s for s in workflow["jobs"]["infra"]["steps"] if "-m deploy" in s.get("run", "")]
    fake_python = tmp_path / ".venv/bin/python"
    fake_python.parent.mkdir(parents=True)
    fake_python.write_text(f'#!/bin/sh\necho "python $*"\nexit {deploy_exit}\n')
    fake_python.chmod(0o755)
    summary = tmp_path / "step-summary.md"

    # GitHub runs `shell: bash` steps as `bash --noprofile --norc -eo pipefail {0}`.
    finished = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=tmp_path,
        env={
            "PATH": os.environ["PATH"],
            "DEPLOY_COMMAND": "preview",
            "STACK": "infra",
            "GITHUB_STEP_SUMMARY": str(summary),
        },
        check=False,
    )

    assert finished.returncode == step_exit
    # The summary JSON reaches the job summary whatever the exit code.
    assert "python -m deploy preview --stack infra --json" in summary.read_text()


def test_workflow_runs_one_job_per_account_with_its_own_oidc_role(workflow):
    jobs = workflow["jobs"]
    assert jobs["infra"]["needs"] == "plan"
    assert jobs["workloads"]["needs"] == "infra"
    strategy = jobs["workloads"]["strategy"]
    assert strategy["fail-fast"] is False

    role_by_stack = {"infra": jobs["infra"]["env"]["DEPLOY_ROLE_ARN"]}
    role_by_stack |= {
        entry["stack"]: entry["role-to-assume"] for entry in strategy["matrix"]["include"]
    }
    account_by_stack = {stack.name: stack.account for stack in load_plan(REPO_ROOT).stacks}
    assert set(role_by_stack) == set(account_by_stack), "one job per stack file, no job without one"
    for stack, role_arn in role_by_stack.items():
        assert role_arn.split(":")[4] == account_by_stack[stack], (
            f"{stack}: role in another account"
        )

    for name in ("infra", "workloads"):
        job = jobs[name]
        assert job["permissions"] == {"id-token": "write", "contents": "read"}
        [credentials] = [
            step["with"]
            for step in job["steps"]
            if step.get("uses", "").startswith("aws-actions/configure-aws-credentials@")
        ]
        expected_role = (
            "${{ env.DEPLOY_ROLE_ARN }}" if name == "infra" else "${{ matrix.role-to-assume }}"
        )
        assert credentials["role-to-assume"] == expected_role
        assert any(step.get("uses", "").startswith("pulumi/actions@") for step in job["steps"])
