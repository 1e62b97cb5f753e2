"""`python -m sandbox.stacks`: the stacks' resource trees, as `make stacks` prints them."""

from __future__ import annotations

import asyncio
import gc
import io
import shutil
from pathlib import Path

import yaml

from sandbox import stacks
from tests.pulumi_harness import REPO_ROOT


def test_tree_nests_every_resource_under_its_component() -> None:
    out = io.StringIO()

    assert stacks.main(["workload-dev"], out) == 0

    lines = out.getvalue().splitlines()
    assert lines[0] == "stack workload-dev"
    assert lines[1] == "  golden-ami:refresh_rollback:RefreshWithRollback  golden-ami"
    children = [line for line in lines[2:] if line.startswith("    ")]
    # Both clusters' alarm chains and the invoke role sit under the component.
    for name in (
        "golden-ami-eu-west-1-dev-general-ecs-errors-alarm",
        "golden-ami-eu-west-1-dev-batch-ecs-errors-alarm",
        "golden-ami-invoke-role",
    ):
        assert any(line.endswith(f"  {name}") for line in children), name
    resource_lines = [line for line in lines[1:] if line.startswith("  ") and "  (" not in line]
    assert f"  ({len(resource_lines)} resources)" in lines


def test_unknown_stack_is_refused_before_anything_runs(capsys) -> None:
    out = io.StringIO()

    assert stacks.main(["workload-dev", "workload-qa"], out) == 3

    assert out.getvalue() == ""
    assert capsys.readouterr().err == (
        f"stacks: no stack file Pulumi.workload-qa.yaml in {REPO_ROOT}; "
        "stacks there: infra, workload-dev, workload-prod\n"
    )


def _project_with(tmp_path: Path, stack: str, config: dict[str, object]) -> Path:
    """A copy of the project's Pulumi.yaml with one stack file of the user's own."""
    shutil.copy(REPO_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))
    return tmp_path


def _workload_config(**changes: object) -> dict[str, object]:
    config = yaml.safe_load((REPO_ROOT / "Pulumi.workload-dev.yaml").read_text())["config"]
    return {**config, **changes}


def test_any_stack_file_the_user_writes_is_shown(tmp_path: Path) -> None:
    project = _project_with(tmp_path, "workload-qa", _workload_config())
    out = io.StringIO()

    assert stacks.main([], out, project_dir=project) == 0

    assert out.getvalue().startswith("stack workload-qa\n")
    assert "golden-ami:refresh_rollback:RefreshWithRollback" in out.getvalue()


def test_a_config_error_is_its_one_message_and_stops_there(tmp_path: Path, capsys) -> None:
    project = _project_with(
        tmp_path, "workload-qa", _workload_config(**{"golden-ami:logRetentionDay": 30})
    )
    (project / "Pulumi.workload-zz.yaml").write_text(yaml.safe_dump({"config": _workload_config()}))
    out = io.StringIO()

    assert stacks.main([], out, project_dir=project) == 3

    assert out.getvalue() == ""  # workload-zz, after the bad stack, did not run
    assert capsys.readouterr().err == (
        "stacks: Pulumi.workload-qa.yaml: invalid stack configuration: "
        "golden-ami:logRetentionDay = '30': not a key this project knows (see Pulumi.yaml); "
        "did you mean golden-ami:logRetentionDays?\n"
    )


def test_a_stack_file_that_is_not_yaml_is_named(tmp_path: Path, capsys) -> None:
    project = _project_with(tmp_path, "workload-qa", {})
    (project / "Pulumi.workload-qa.yaml").write_text("config:\n  aws:region: [eu-west-1\n")

    assert stacks.main(["workload-qa"], io.StringIO(), project_dir=project) == 3

    err = capsys.readouterr().err
    assert err.startswith("stacks: Pulumi.workload-qa.yaml: while parsing a flow sequence")


def test_no_event_loop_is_left_for_the_garbage_collector_at_exit() -> None:
    """Pulumi's mock workers each open a loop; one finalised at exit prints a traceback."""
    assert stacks.main(["workload-dev"], io.StringIO()) == stacks.EXIT_OK
    open_loops = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.BaseEventLoop) and not obj.is_closed()
    ]
    assert open_loops == []
