"""DESIGN §6 cases the mutation check (docs/mutation-check.md) found no test for.

A stopping task passes through DEACTIVATING, STOPPING and DEPROVISIONING before STOPPED; the task
state changes ECS emits once the stop is decided already carry the stop code. Only the final
STOPPED event may count, or one failed task adds several to the rollback alarm's sum and a
single crash can breach a threshold set "above the odd transient".
"""

from __future__ import annotations

import pytest

from tests.test_ecs_error_pattern import matches, stopped_task


@pytest.mark.parametrize("last_status", ["RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"])
@pytest.mark.parametrize(
    ("stop_code", "exit_codes"),
    [("TaskFailedToStart", (None,)), ("EssentialContainerExited", (1,))],
)
def test_a_failing_task_counts_once_on_its_final_stopped_event(
    last_status: str, stop_code: str, exit_codes: tuple[int | None, ...]
) -> None:
    on_the_way_down = stopped_task(stop_code, exit_codes)
    on_the_way_down["detail"]["lastStatus"] = last_status

    assert matches(stopped_task(stop_code, exit_codes))
    assert not matches(on_the_way_down)
