"""The README stays true to the code: config keys, seed parameters, commands, outputs, paths."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from components.config import Target
from components.refresh_rollback import AMI_KEY_ORGANIZATION_ACTIONS, KMS_GRANT_RESOURCE_ACTIONS
from docs.config_table import (
    END_MARKER,
    PROJECT_FILE,
    README,
    REPO_ROOT,
    START_MARKER,
    key_rows,
    render_table,
    replace_table,
)

# The original templates' parameter lists, quoted from the seed document into the repository.
SEED_PARAMETER_LIST = REPO_ROOT / "tests" / "fixtures" / "seed-parameters.txt"
# DESIGN §8: every parameter of the original CloudFormation templates must map to a key.
SEED_PARAMETERS = (
    "EnvironmentName",
    "AmazonLinux2023EcsOptimizedAmiId",
    "BuildInstanceType",
    "PublicSubnet",
    "DefaultSecurityGroup",
    "BucketName",
    "AWSOrgID",
    "InvokeInstanceRefreshHandlerRole",
    "AccountOrganization",
    "SampleLaunchTemplate",
    "SampleAutoScalingGroup",
    "ImagePrefix",
    "ClusterName",
    "InfraAccount",
)
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


def section(readme: str, heading: str) -> str:
    """The text under `## heading` up to the next level-2 heading."""
    match = re.search(rf"(?m)^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row in `text`, header and separator rows excluded."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        rows.append([cell.strip() for cell in CELL_SEPARATOR.split(line.strip())[1:-1]])
    return [row for row in rows if row[0] not in ("key", "seed parameter", "stack", "outcome")]


def code_text(readme: str) -> str:
    """Inline code spans and fenced blocks: where commands are written."""
    fenced = re.findall(r"(?ms)^```[^\n]*\n(.*?)^```", readme)
    without_fences = re.sub(r"(?ms)^```.*?^```", "", readme)
    return "\n".join(fenced + re.findall(r"`([^`\n]+)`", without_fences))


# --- the key table ----------------------------------------------------------------------------


def test_key_table_lists_every_key_of_pulumi_yaml_as_declared(readme: str) -> None:
    start, end = readme.find(START_MARKER), readme.find(END_MARKER)
    assert 0 <= start < end, "README lacks the config-table markers"
    documented = {row[0].strip("`"): row for row in table_rows(readme[start:end])}
    expected = {row.key: table_rows(row.render())[0] for row in key_rows()}

    missing = sorted(set(expected) - set(documented))
    stale = sorted(set(documented) - set(expected))
    assert not missing, f"keys missing from the README table: {missing}"
    assert not stale, f"README documents keys Pulumi.yaml no longer declares: {stale}"
    columns = ("key", "stack", "type", "default", "description")
    differences = [
        f"{key} {column}: README {got!r}, Pulumi.yaml {want!r}"
        for key, row in expected.items()
        for column, got, want in zip(columns, documented[key], row, strict=True)
        if got != want
    ]
    assert not differences, (
        "README key table differs from Pulumi.yaml (run `python -m docs.config_table --write`):\n"
        + "\n".join(differences)
    )


def test_key_table_shows_required_keys_and_typed_defaults() -> None:
    rows = {row.key: row for row in key_rows()}
    assert rows["golden-ami:fanoutRoleArn"].default == "required"
    assert rows["golden-ami:role"].default == "required"
    assert rows["golden-ami:alarmTopicArn"].default == '`""`'
    assert rows["golden-ami:buildInstanceTypes"].default == '`["m7i.large"]`'
    assert rows["golden-ami:includeInfraAccount"].default == "`false`"
    assert rows["golden-ami:targets"].type == "object[]"
    assert rows["golden-ami:refreshCheckpointPercentages"].type == "integer[]"
    assert (rows["golden-ami:bucketName"].stack, rows["golden-ami:imagePrefix"].stack) == (
        "infra",
        "both",
    )


def test_key_table_escapes_what_markdown_would_swallow() -> None:
    rendered = render_table(key_rows())
    image_prefix = next(line for line in rendered.splitlines() if "golden-ami:imagePrefix" in line)
    assert "&lt;prefix&gt;" in image_prefix
    assert "<prefix>" not in image_prefix


def test_generator_rejects_a_key_the_config_model_does_not_know(tmp_path: Path) -> None:
    project = yaml.safe_load(PROJECT_FILE.read_text())
    project["config"]["retryCount"] = {"type": "integer", "description": "?", "default": 1}
    project_file = tmp_path / "Pulumi.yaml"
    project_file.write_text(yaml.safe_dump(project))
    with pytest.raises(ValueError, match=r"lacks: \['retryCount'\]"):
        key_rows(project_file)


def test_generator_refuses_a_readme_without_markers() -> None:
    with pytest.raises(ValueError, match="lacks the markers"):
        replace_table("# a README without the table\n", "| key |")


def test_generator_replaces_only_the_text_between_the_markers() -> None:
    text = f"before\n{START_MARKER}\nold table\n{END_MARKER}\nafter\n"
    assert replace_table(text, "new table") == (
        f"before\n{START_MARKER}\nnew table\n{END_MARKER}\nafter\n"
    )


# --- the seed parameters ----------------------------------------------------------------------


def test_seed_parameter_list_is_the_original_templates_parameters() -> None:
    named = set(re.findall(r"(?m)^\* ([A-Za-z0-9]+): ", SEED_PARAMETER_LIST.read_text()))
    assert named == set(SEED_PARAMETERS)


def test_every_seed_parameter_maps_to_a_declared_key(readme: str) -> None:
    mapping = {
        row[0]: row[2]
        for row in table_rows(section(readme, "Configuration"))
        if row[0] in SEED_PARAMETERS
    }
    assert sorted(set(SEED_PARAMETERS) - set(mapping)) == []

    declared = yaml.safe_load(PROJECT_FILE.read_text())["config"]
    target_fields = {field.alias for field in Target.model_fields.values()}
    for parameter, cell in mapping.items():
        match = re.fullmatch(r"`golden-ami:(\w+)(?:\[\]\.(\w+))?`", cell)
        assert match, f"{parameter}: {cell!r} is not a `golden-ami:<key>` cell"
        key, field = match.groups()
        assert key in declared, f"{parameter} maps to {key}, which Pulumi.yaml does not declare"
        if field is not None:
            assert field in target_fields, f"{parameter} maps to unknown target field {field}"


# --- commands, outputs, paths -----------------------------------------------------------------


def test_every_make_target_named_exists(readme: str) -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([A-Za-z][\w-]*):", makefile))
    named = set(re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code_text(readme)))
    assert {"demo", "test", "bench"} <= named
    assert sorted(named - targets) == []


def test_every_python_module_named_exists(readme: str) -> None:
    modules = set(re.findall(r"python -m ([\w.]+)", code_text(readme)))
    assert {"deploy", "bench", "docs.config_table"} <= modules

    def runnable(module: str) -> bool:
        path = REPO_ROOT.joinpath(*module.split("."))
        if path.with_suffix(".py").is_file() or (path / "__main__.py").is_file():
            return True
        if path.parent.is_dir() and path.parent != REPO_ROOT:
            return False  # a module of ours that is not there
        return importlib.util.find_spec(module) is not None  # an installed tool

    assert sorted(m for m in modules if not runnable(m)) == []


def test_every_stack_output_is_documented(readme: str) -> None:
    program = ast.parse((REPO_ROOT / "__main__.py").read_text())
    exported = {
        node.args[0].value
        for node in ast.walk(program)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "pulumi.export"
        and isinstance(node.args[0], ast.Constant)
    }
    assert "fanoutRoleArn" in exported
    outputs = set(re.findall(r"`(\w+)`", section(readme, "Operations")))
    assert sorted(exported - outputs) == []


def test_every_document_in_docs_is_listed(readme: str) -> None:
    listed = set(re.findall(r"`(docs/[\w.-]+\.md)`", section(readme, "Operations")))
    documents = {f"docs/{path.name}" for path in (REPO_ROOT / "docs").glob("*.md")}
    assert "docs/fanout-scale.md" in documents
    assert sorted(documents - listed) == []


def test_every_repository_path_named_exists(readme: str) -> None:
    top_level = r"(?:\.github|bench|components|deploy|docs|handlers|sandbox|tests)/[\w./-]*"
    pattern = re.compile(rf"`({top_level}|Pulumi\.[\w-]+\.yaml|Makefile|requirements\.txt)`")
    named = set(pattern.findall(readme))
    assert "docs/fanout-scale.md" in named
    assert sorted(path for path in named if not (REPO_ROOT / path).exists()) == []


def test_key_policy_prerequisite_allows_what_the_kms_grant_resource_calls(readme: str) -> None:
    """The workload stacks' aws.kms.Grant reads (ListGrants) and revokes (RevokeGrant) its grant.

    The key is in the infra account, so only its key policy can allow those calls: a prerequisite
    that omits them leaves every encrypted-AMI workload stack unable to deploy or destroy.
    """
    prerequisite = section(readme, "Deploying for real").split("Only for encrypted AMIs", 1)[1]
    listed = re.search(r"use it \(([^)]*)\)", prerequisite)
    assert listed, "the key-policy prerequisite lists no actions"
    actions = tuple(sorted(re.findall(r"`(kms:[A-Za-z*]+)`", listed.group(1))))
    assert actions == AMI_KEY_ORGANIZATION_ACTIONS
    assert set(KMS_GRANT_RESOURCE_ACTIONS) <= set(actions)
    assert set(KMS_GRANT_RESOURCE_ACTIONS) == {
        "kms:CreateGrant",
        "kms:ListGrants",
        "kms:RevokeGrant",
    }


def test_setup_names_the_pulumi_cli_of_the_pinned_sdk_as_ci_installs_it(readme: str) -> None:
    pinned = re.search(r"(?m)^pulumi==(\S+)$", (REPO_ROOT / "requirements.txt").read_text())
    assert pinned
    workflow = (REPO_ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    assert f"PULUMI_VERSION: {pinned[1]} " in workflow
    tools = section(readme, "Deploying for real").split("### AWS prerequisites")[0]
    assert f"**The Pulumi CLI {pinned[1]}**" in tools
    assert f"sh -s -- --version {pinned[1]}" in tools
    assert "**Python 3.11 or newer**" in tools
    assert "**The AWS CLI v2**" in tools
