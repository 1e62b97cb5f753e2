"""Shared fixtures. Pulumi mock runs are expensive (~1 s): each (stack, overrides) runs once."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tests.pulumi_harness import FIXTURES, StackRun, run_stack

__all__ = ["FIXTURES"]


@pytest.fixture(scope="session")
def stack_run() -> Callable[..., StackRun]:
    """`stack_run("infra")` -> the StackRun of `Pulumi.infra.yaml` under mocks, cached.

    `stack_run("infra", {"buildTrigger": "cloudtrail"})` runs it with config overrides (keys
    without namespace are `golden-ami:`; None removes a key). The program's exception is raised.
    """
    runs: dict[tuple[str, str], StackRun] = {}

    def run(stack: str, overrides: Mapping[str, Any] | None = None) -> StackRun:
        cache_key = (stack, json.dumps(overrides or {}, sort_keys=True))
        if cache_key not in runs:
            runs[cache_key] = run_stack(stack, overrides)
        return runs[cache_key]

    return run


@pytest.fixture(scope="session")
def aws_event() -> Callable[[str], dict[str, Any]]:
    """`aws_event("s3_eventbridge_object_created")` -> a fresh copy of a real AWS event sample."""

    def load(name: str) -> dict[str, Any]:
        return json.loads((FIXTURES / f"{name}.json").read_text())

    return load
