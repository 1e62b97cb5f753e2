"""Shared fixtures. Pulumi mock runs are expensive (~1 s): each (stack, overrides) runs once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from sandbox.service_models import shared_service_models
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


@pytest.fixture(scope="session", autouse=True)
def _shared_service_models() -> Iterator[None]:
    """Parse each botocore service model once per run, not once per boto3 Session."""
    with shared_service_models():
        yield


@pytest.fixture(scope="session")
def aws_event() -> Callable[[str], dict[str, Any]]:
    """`aws_event("s3_eventbridge_object_created")` -> a fresh copy of a real AWS event sample."""

    def load(name: str) -> dict[str, Any]:
        return json.loads((FIXTURES / f"{name}.json").read_text())

    return load


# --- least-privilege recording (tests/iam_recorder.py; owned with tests/test_least_privilege.py) --
# Installed at import, before any test creates a boto3 Session, so every AWS call a handler makes
# anywhere in the suite is recorded. The comparison runs last and must know whether the suite was
# filtered: which test files were selected, and whether any of their tests were deselected.

from tests.iam_recorder import ApiCallRecorder  # noqa: E402

API_CALLS = ApiCallRecorder()
API_CALLS.install()
LEAST_PRIVILEGE_MODULE = "tests/test_least_privilege.py"
# Modules that read the whole session's recording, so they run after every other test.
RUNS_LAST = (LEAST_PRIVILEGE_MODULE, "tests/test_sdk_floor.py")
_SELECTION: dict[str, set[str]] = {"selected": set(), "deselected": set()}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.startswith(RUNS_LAST))  # stable sort


def pytest_deselected(items: list[pytest.Item]) -> None:
    _SELECTION["deselected"].update(item.nodeid.split("::")[0] for item in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    _SELECTION["selected"].update(item.nodeid.split("::")[0] for item in session.items)


@pytest.fixture(scope="session")
def api_calls() -> ApiCallRecorder:
    """Every AWS call a handler has made so far in this session (tests/iam_recorder.py)."""
    return API_CALLS


@pytest.fixture(scope="session")
def fully_run_test_files() -> set[str]:
    """Test files (`tests/test_x.py`) selected with none of their tests deselected."""
    return _SELECTION["selected"] - _SELECTION["deselected"]
