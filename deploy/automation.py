"""The driver's `StackFactory`, implemented with the Pulumi Automation API.

Each stack is a `LocalWorkspace` stack whose work dir is the project directory, so the CLI reads
the same `Pulumi.yaml`, `Pulumi.<stack>.yaml` and backend login as `pulumi up` there would: the
driver adds ordering and propagation, nothing else. Engine failures become `StackOperationError`
carrying the engine's own error lines instead of the CLI's full stdout/stderr dump.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from deploy.driver import ChangeSummary, OutputSink, StackOperationError, StackOutput

# Lines that only announce a failure the lines around them describe.
_GENERIC_FAILURE = re.compile(
    r"(update|preview|destroy|refresh) failed|an unhandled error occurred"
    r"|Program failed with an unhandled exception:"
)
# `str(CommandError)` labels the first line of each captured stream.
_STREAM_LABEL = re.compile(r"^(code|stdout|stderr):\s*")
_PYTHON_EXCEPTION = re.compile(r"[\w.]*(Error|Exception): .+")
_MAX_ERROR_LINES = 5


class PulumiCliNotFoundError(Exception):
    """The Automation API drives the `pulumi` binary, and there is none on PATH."""


def engine_message(command_output: str) -> str:
    """The lines of a failed CLI run that say what went wrong.

    Pulumi reports resource and program failures as `error: ...` diagnostics and a program's
    uncaught exception as its Python traceback; everything else (progress, resource tables,
    the traceback frames) is noise in a CI summary.
    """
    lines = [_STREAM_LABEL.sub("", line.strip()) for line in command_output.splitlines()]
    lines = [line for line in lines if line]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    specific = [line for line in errors if line and not _GENERIC_FAILURE.fullmatch(line)]
    specific += [line for line in lines if _PYTHON_EXCEPTION.fullmatch(line)]
    chosen = list(dict.fromkeys(specific)) or errors or lines[-1:]
    return "; ".join(chosen[:_MAX_ERROR_LINES]) or "the Pulumi CLI failed without a message"


@contextmanager
def _engine_errors() -> Iterator[None]:
    try:
        yield
    except auto.CommandError as error:
        raise StackOperationError(engine_message(str(error))) from error


class AutomationStack:
    def __init__(self, stack: auto.Stack) -> None:
        self._stack = stack

    def set_config(self, values: Mapping[str, str]) -> None:
        with _engine_errors():
            self._stack.set_all_config(
                {key: auto.ConfigValue(value) for key, value in values.items()}
            )

    def preview(self, on_output: OutputSink) -> ChangeSummary:
        with _engine_errors():
            result = self._stack.preview(on_output=on_output, color="never")
        return _counts(result.change_summary)

    def up(self, on_output: OutputSink) -> ChangeSummary:
        with _engine_errors():
            result = self._stack.up(on_output=on_output, color="never")
        return _counts(result.summary.resource_changes)

    def destroy(self, on_output: OutputSink) -> ChangeSummary:
        with _engine_errors():
            result = self._stack.destroy(on_output=on_output, color="never")
        return _counts(result.summary.resource_changes)

    def outputs(self) -> dict[str, StackOutput]:
        with _engine_errors():
            outputs = self._stack.outputs()
        return {name: StackOutput(output.value, output.secret) for name, output in outputs.items()}


class AutomationStackFactory:
    def __init__(self) -> None:
        if shutil.which("pulumi") is None:
            raise PulumiCliNotFoundError(
                "the Pulumi CLI is not on PATH (https://www.pulumi.com/docs/iac/download-install/)"
                "; `python -m deploy plan` works without it"
            )
        # Selecting or creating a stack rewrites the project's shared workspace settings, so
        # parallel workload stacks take turns for that step and run their updates concurrently.
        self._workspace_lock = threading.Lock()

    def create_or_select(self, stack_name: str, work_dir: Path) -> AutomationStack:
        with self._workspace_lock, _engine_errors():
            return AutomationStack(auto.create_or_select_stack(stack_name, work_dir=str(work_dir)))

    def select(self, stack_name: str, work_dir: Path) -> AutomationStack:
        with self._workspace_lock, _engine_errors():
            return AutomationStack(auto.select_stack(stack_name, work_dir=str(work_dir)))


def _counts(summary: Mapping[Any, int] | None) -> ChangeSummary:
    # OpType is a str enum: keep the plain operation names ("create", "update", ...).
    return {str(getattr(op, "value", op)): count for op, count in (summary or {}).items()}
