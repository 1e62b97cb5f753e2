"""`python -m sandbox.stacks`: the example stacks' resource trees, as `make stacks` prints them."""

from __future__ import annotations

import io

from sandbox import stacks


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

    assert stacks.main(["workload-qa"], out) == 2

    assert out.getvalue() == ""
    assert "unknown stack(s) workload-qa" in capsys.readouterr().err
