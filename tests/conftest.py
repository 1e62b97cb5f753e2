"""Shared fixtures. Pulumi mock runs are expensive (~1 s): each (stack, overrides) runs once."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
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
#
# A plain `pytest` records in its own process. `make test` runs the suite in two phases, because
# pytest-xdist workers each see only their own calls: with IAM_RECORDING_OUT=<file>, every test
# but RUNS_LAST runs (on workers), and the controller writes the workers' recordings and
# selections, merged, to <file> — only when the run passed and every worker reported, so a
# missing file means "no complete recording"; with IAM_RECORDING_IN=<file>, only RUNS_LAST runs,
# in one process, starting from that recording, and a missing file is a usage error, not a skip.

from tests.iam_recorder import ApiCallRecorder  # noqa: E402

API_CALLS = ApiCallRecorder()
API_CALLS.install()
LEAST_PRIVILEGE_MODULE = "tests/test_least_privilege.py"
# Modules that read the whole session's recording, so they run after every other test.
RUNS_LAST = (LEAST_PRIVILEGE_MODULE, "tests/test_sdk_floor.py")
RECORDING_OUT_ENV = "IAM_RECORDING_OUT"
RECORDING_IN_ENV = "IAM_RECORDING_IN"
_SELECTION: dict[str, set[str]] = {"selected": set(), "deselected": set()}
# Phase 1's controller: the recordings its workers handed over, and the workers that handed none.
_WORKER_RECORDINGS: list[dict[str, Any]] = []
_SILENT_WORKERS: list[str] = []
_PHASE_ONE: dict[str, Any] = {}  # phase 2: the loaded recording's test outcome counts
_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "deselected")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    out, into = os.environ.get(RECORDING_OUT_ENV), os.environ.get(RECORDING_IN_ENV)
    if out and into:
        raise pytest.UsageError(
            f"set {RECORDING_OUT_ENV} (phase 1) or {RECORDING_IN_ENV}, not both"
        )
    if out and not _is_worker(config):
        Path(out).unlink(missing_ok=True)  # never leave an older run's recording for phase 2
    if into:
        try:
            recording = json.loads(Path(into).read_text())
        except FileNotFoundError:
            raise pytest.UsageError(
                f"{RECORDING_IN_ENV}={into}: no recording there; a {RECORDING_OUT_ENV} run "
                "writes it only when it passed and every worker reported (Makefile `test`)"
            ) from None
        API_CALLS.merge_json(recording)
        _SELECTION["selected"].update(recording["selected"])
        _SELECTION["deselected"].update(recording["deselected"])
        _PHASE_ONE.update(outcomes=recording["outcomes"], workers=recording["workers"])


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not collection_path.is_file() or not collection_path.is_relative_to(config.rootpath):
        return None
    is_last = collection_path.relative_to(config.rootpath).as_posix() in RUNS_LAST
    if os.environ.get(RECORDING_OUT_ENV) and is_last:
        return True  # phase 1: the recording's readers run in phase 2
    if os.environ.get(RECORDING_IN_ENV) and not is_last:
        return True  # phase 2: the rest ran in phase 1
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.startswith(RUNS_LAST))  # stable sort


def pytest_deselected(items: list[pytest.Item]) -> None:
    _SELECTION["deselected"].update(item.nodeid.split("::")[0] for item in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    _SELECTION["selected"].update(item.nodeid.split("::")[0] for item in session.items)


def _recording() -> dict[str, Any]:
    return {
        **API_CALLS.to_json(),
        "selected": sorted(_SELECTION["selected"]),
        "deselected": sorted(_SELECTION["deselected"]),
    }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """pytest-xdist, on the controller: a worker finished (or died) and sent its output."""
    if recording := getattr(node, "workeroutput", {}).get("iam_recording"):
        _WORKER_RECORDINGS.append(recording)
    else:
        _SILENT_WORKERS.append(f"{node.gateway.id}: {error or 'no recording'}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = os.environ.get(RECORDING_OUT_ENV)
    if not out:
        return
    if _is_worker(session.config):
        session.config.workeroutput["iam_recording"] = _recording()  # type: ignore[attr-defined]
        return
    distributed = getattr(session.config.option, "dist", "no") != "no"
    recordings = _WORKER_RECORDINGS if distributed else [_recording()]
    if exitstatus != 0 or _SILENT_WORKERS or not recordings:
        return  # no file: phase 2 refuses to run on an incomplete recording
    merged = ApiCallRecorder()
    for recording in recordings:
        merged.merge_json(recording)
    stats = session.config.pluginmanager.get_plugin("terminalreporter").stats
    Path(out).write_text(
        json.dumps(
            {
                **merged.to_json(),
                "selected": sorted({f for r in recordings for f in r["selected"]}),
                "deselected": sorted({f for r in recordings for f in r["deselected"]}),
                "workers": len(recordings) if distributed else 0,
                "outcomes": {o: len(stats[o]) for o in _OUTCOMES if stats.get(o)},
            }
        )
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Phase 2 prints the whole suite's count; its own closing line covers only RUNS_LAST."""
    if not _PHASE_ONE or _is_worker(terminalreporter.config):
        return
    ours = {o: len(terminalreporter.stats[o]) for o in _OUTCOMES if terminalreporter.stats.get(o)}
    total = {o: _PHASE_ONE["outcomes"].get(o, 0) + ours.get(o, 0) for o in _OUTCOMES}

    def line(counts: dict[str, int]) -> str:
        return ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "no tests"

    workers = _PHASE_ONE["workers"]
    terminalreporter.write_sep("-", "suite recorded in phase 1 and checked here")
    terminalreporter.write_line(
        f"phase 1 ({f'{workers} workers' if workers else 'one process'}): "
        f"{line(_PHASE_ONE['outcomes'])}"
    )
    terminalreporter.write_line(f"phase 2 (this run): {line(ours)}")
    terminalreporter.write_line(f"whole suite: {line(total)}")


@pytest.fixture(scope="session")
def api_calls() -> ApiCallRecorder:
    """Every AWS call a handler has made so far in this session (tests/iam_recorder.py)."""
    return API_CALLS


@pytest.fixture(scope="session")
def fully_run_test_files() -> set[str]:
    """Test files (`tests/test_x.py`) selected with none of their tests deselected."""
    return _SELECTION["selected"] - _SELECTION["deselected"]
