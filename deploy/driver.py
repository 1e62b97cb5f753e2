"""Runs a deployment plan stack by stack: infra first, then the workload stacks in parallel.

The driver knows the order, the infra-output -> workload-config propagation and what a failure
means for the stacks after it; it does not know Pulumi. It talks to stacks through the small
`StackFactory` / `ManagedStack` protocols below: `deploy.automation` implements them with
`pulumi.automation`, the tests with a fake.

Failure semantics: a stack that fails stops the stacks that depend on it (no workload runs after
the infra stack failed; the infra stack is not destroyed while a workload stack that trusts it
failed to go), and independent workload stacks carry on when a sibling fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from deploy.plan import SECRET_MASK, DeploymentPlan, Role, StackPlan

ProgressSink = Callable[[str, str], None]  # (stack name, line)
OutputSink = Callable[[str], None]
ChangeSummary = dict[str, int]  # operation ("create", "update", ...) -> resource count


class StackOperationError(Exception):
    """The Pulumi engine (or backend) reported a failure; the message is the engine's."""


@dataclass(frozen=True)
class StackOutput:
    value: Any
    secret: bool = False

    @property
    def shown(self) -> Any:
        """The value as it may be printed or logged."""
        return SECRET_MASK if self.secret else self.value


class ManagedStack(Protocol):
    def set_config(self, values: Mapping[str, str]) -> None: ...

    def preview(self, on_output: OutputSink) -> ChangeSummary: ...

    def up(self, on_output: OutputSink) -> ChangeSummary: ...

    def destroy(self, on_output: OutputSink) -> ChangeSummary: ...

    def outputs(self) -> Mapping[str, StackOutput]: ...


class StackFactory(Protocol):
    def create_or_select(self, stack_name: str, work_dir: Path) -> ManagedStack: ...

    def select(self, stack_name: str, work_dir: Path) -> ManagedStack:
        """An existing stack; raises StackOperationError when there is none."""
        ...


class Operation(StrEnum):
    PREVIEW = "preview"
    UP = "up"
    DESTROY = "destroy"
    OUTPUTS = "outputs"


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run because a stack it depends on failed


@dataclass(frozen=True)
class StackResult:
    stack: StackPlan
    status: Status
    changes: ChangeSummary = field(default_factory=dict)
    outputs: Mapping[str, StackOutput] = field(default_factory=dict)
    message: str = ""

    @property
    def pending_changes(self) -> ChangeSummary:
        """The operations that change something (`same` is not a change)."""
        return {op: count for op, count in self.changes.items() if op != "same" and count}

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack.name,
            "role": self.stack.role.value,
            "account": self.stack.account,
            "status": self.status.value,
            "changes": self.pending_changes,
            "outputs": {name: output.shown for name, output in self.outputs.items()},
            "message": self.message,
        }


class Driver:
    def __init__(
        self,
        plan: DeploymentPlan,
        factory: StackFactory,
        work_dir: Path,
        progress: ProgressSink,
        max_parallel: int = 4,
    ) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
        self._plan = plan
        self._factory = factory
        self._work_dir = work_dir
        self._progress = progress
        self._max_parallel = max_parallel

    def run(self, operation: Operation, stacks: Sequence[StackPlan]) -> list[StackResult]:
        """Run `operation` on `stacks` (a selection of the plan); results in plan order."""
        infra = [stack for stack in stacks if stack.role is Role.INFRA]
        workloads = [stack for stack in stacks if stack.role is Role.WORKLOAD]
        if operation is Operation.OUTPUTS:
            return [self._read_outputs(stack) for stack in stacks]
        if operation is Operation.DESTROY:
            return self._destroy(infra, workloads)
        return self._deploy(operation, infra, workloads)

    def _deploy(
        self, operation: Operation, infra: list[StackPlan], workloads: list[StackPlan]
    ) -> list[StackResult]:
        results: list[StackResult] = []
        if infra:
            results.append(self._run_stack(infra[0], operation, config={}))
            if results[0].status is not Status.SUCCEEDED:
                return results + [
                    self._skipped(workload, f"infra stack {infra[0].name} failed")
                    for workload in workloads
                ]
        if not workloads:
            return results

        # A preview sees the infra outputs of the last `up`; an `up` those it just produced.
        # Either way they come from the backend, so a workload run on its own (--stack) works too.
        try:
            infra_outputs = {
                name: output.value
                for name, output in self._factory.select(self._plan.infra.name, self._work_dir)
                .outputs()
                .items()
            }
        except StackOperationError as error:
            reason = f"cannot read the outputs of infra stack {self._plan.infra.name}: {error}"
            return results + [self._failed(workload, operation, reason) for workload in workloads]

        def deploy_workload(workload: StackPlan) -> StackResult:
            missing = workload.missing_propagated(infra_outputs)
            if missing:
                return self._failed(
                    workload,
                    operation,
                    f"{workload.file_name} does not set {', '.join(missing)} and infra stack "
                    f"{self._plan.infra.name} has no such output (deploy the infra stack first)",
                )
            # Setting config rewrites the stack file: only touch what it lacks or has stale.
            updates: dict[str, str] = {}
            for key, value in workload.propagated_config(infra_outputs).items():
                in_file = workload.config.get(key)
                if in_file is not None and str(in_file) != value:
                    self._progress(
                        workload.name,
                        f"{key}: {workload.file_name} has {in_file!r}, "
                        f"the infra output is {value!r}; using the infra output",
                    )
                if in_file is None or str(in_file) != value:
                    updates[key] = value
            return self._run_stack(workload, operation, updates)

        return results + self._in_parallel(deploy_workload, workloads)

    def _destroy(self, infra: list[StackPlan], workloads: list[StackPlan]) -> list[StackResult]:
        results = self._in_parallel(
            lambda workload: self._run_stack(workload, Operation.DESTROY, config={}), workloads
        )
        if infra:
            failed = [result.stack.name for result in results if result.status is Status.FAILED]
            if failed:
                reason = f"workload stack {', '.join(failed)} still trusts its fan-out role"
                results.append(self._skipped(infra[0], reason))
            else:
                results.append(self._run_stack(infra[0], Operation.DESTROY, config={}))
        return results

    def _run_stack(
        self, stack: StackPlan, operation: Operation, config: Mapping[str, str]
    ) -> StackResult:
        def say(line: str) -> None:
            self._progress(stack.name, line)

        say(f"{operation} in account {stack.account} ({', '.join(stack.regions)})")
        try:
            if operation is Operation.DESTROY:
                # Destroying must never create the stack it is asked to remove.
                managed = self._factory.select(stack.name, self._work_dir)
            else:
                managed = self._factory.create_or_select(stack.name, self._work_dir)
            if config:
                managed.set_config(config)
            changes = getattr(managed, operation.value)(say)
        except StackOperationError as error:
            return self._failed(stack, operation, str(error))
        result = StackResult(stack, Status.SUCCEEDED, changes=changes)
        say(f"{operation} succeeded: {describe_changes(result)}")
        return result

    def _read_outputs(self, stack: StackPlan) -> StackResult:
        try:
            outputs = self._factory.select(stack.name, self._work_dir).outputs()
        except StackOperationError as error:
            return self._failed(stack, Operation.OUTPUTS, str(error))
        return StackResult(stack, Status.SUCCEEDED, outputs=outputs)

    def _in_parallel(
        self, task: Callable[[StackPlan], StackResult], stacks: list[StackPlan]
    ) -> list[StackResult]:
        if not stacks:
            return []
        workers = min(self._max_parallel, len(stacks))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stack") as pool:
            return list(pool.map(task, stacks))

    def _failed(self, stack: StackPlan, operation: Operation, reason: str) -> StackResult:
        self._progress(stack.name, f"{operation} failed: {reason}")
        return StackResult(
            stack, Status.FAILED, message=f"{stack.name}: {operation} failed: {reason}"
        )

    def _skipped(self, stack: StackPlan, reason: str) -> StackResult:
        self._progress(stack.name, f"not run: {reason}")
        return StackResult(stack, Status.SKIPPED, message=f"{stack.name}: not run: {reason}")


def describe_changes(result: StackResult) -> str:
    counts = [f"{op} {count}" for op, count in sorted(result.pending_changes.items())]
    return ", ".join(counts) or "no changes"
