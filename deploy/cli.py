"""Command line of `python -m deploy`; commands and exit codes: the `deploy` package docstring."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

import deploy
from deploy.driver import Driver, Operation, StackFactory, StackResult, Status, describe_changes
from deploy.plan import DeploymentPlan, PlanError, config_problems, load_plan

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES_PENDING = 2
EXIT_USAGE = 3

REPO_ROOT = Path(__file__).resolve().parent.parent


class _ArgumentParser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage, which here means "changes pending": use 3 instead."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = _ArgumentParser(add_help=False)
    common.add_argument(
        "--stack",
        dest="stacks",
        action="append",
        default=[],
        metavar="NAME",
        help="only this stack (repeatable); a workload stack alone reads the deployed infra "
        "stack's outputs",
    )
    common.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    common.add_argument(
        "--project-dir",
        type=Path,
        default=REPO_ROOT,
        help="directory holding Pulumi.yaml and the stack files (default: %(default)s)",
    )
    parallel = _ArgumentParser(add_help=False)
    parallel.add_argument(
        "--parallel",
        type=_positive_int,
        default=4,
        metavar="N",
        help="workload stacks run at once (default: %(default)s)",
    )

    parser = _ArgumentParser(
        prog="python -m deploy",
        description="Deploy the golden-ami stacks in order with the Pulumi Automation API.",
        epilog="exit codes:" + deploy.__doc__.split("Exit codes:", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "plan", parents=[common], help="show order, accounts and config offline (no Pulumi CLI)"
    )
    commands.add_parser(
        "preview", parents=[common, parallel], help="preview every stack; exit 2 if changes"
    )
    commands.add_parser("up", parents=[common, parallel], help="deploy: infra, then workloads")
    destroy = commands.add_parser(
        "destroy", parents=[common, parallel], help="destroy: workloads, then infra"
    )
    destroy.add_argument(
        "--yes", action="store_true", help="required: destroy deletes every resource it manages"
    )
    commands.add_parser("outputs", parents=[common], help="print the deployed stacks' outputs")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    factory: Callable[[], StackFactory] | None = None,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    """Run one command; returns the exit code. `factory` makes the stack factory (tests: a fake)."""
    args = _parser().parse_args(argv)
    if args.command == "destroy" and not args.yes:
        print(
            "deploy: destroy deletes every resource of the selected stacks; pass --yes", file=stderr
        )
        return EXIT_USAGE
    try:
        plan = load_plan(args.project_dir.resolve())
        stacks = plan.select(args.stacks)
        if args.command == "plan":
            problems = config_problems(plan)
            if problems:
                raise PlanError(problems)
    except PlanError as error:
        print("deploy: configuration error:", file=stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=stderr)
        return EXIT_USAGE

    if args.command == "plan":
        _print_plan(plan, args.stacks, args.json, stdout)
        return EXIT_OK

    if factory is None:
        from deploy.automation import AutomationStackFactory, PulumiCliNotFoundError

        try:
            stack_factory: StackFactory = AutomationStackFactory()
        except PulumiCliNotFoundError as error:
            print(f"deploy: {error}", file=stderr)
            return EXIT_USAGE
    else:
        stack_factory = factory()

    operation = Operation(args.command)
    driver = Driver(
        plan,
        stack_factory,
        work_dir=args.project_dir.resolve(),
        progress=_ProgressPrinter(stderr),
        max_parallel=getattr(args, "parallel", 1),
    )
    results = driver.run(operation, stacks)
    code = exit_code(operation, results)
    if args.json:
        summary = {
            "command": operation.value,
            "exitCode": code,
            "stacks": [result.to_json() for result in results],
        }
        print(json.dumps(summary, indent=2), file=stdout)
    else:
        _print_results(operation, results, stdout)
    return code


def exit_code(operation: Operation, results: Sequence[StackResult]) -> int:
    if any(result.status is not Status.SUCCEEDED for result in results):
        return EXIT_FAILED
    if operation is Operation.PREVIEW and any(result.pending_changes for result in results):
        return EXIT_CHANGES_PENDING
    return EXIT_OK


class _ProgressPrinter:
    """Engine output of parallel stacks, one whole line at a time, each tagged with its stack."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, stack_name: str, line: str) -> None:
        text = line.rstrip()
        if not text:
            return
        with self._lock:
            print(f"[{stack_name}] {text}", file=self._stream, flush=True)


def _print_plan(plan: DeploymentPlan, names: Sequence[str], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(plan.to_json(names), indent=2), file=out)
        return
    stacks = plan.select(names)
    width = max(len(stack.name) for stack in stacks)
    print(
        f"Deployment plan for {plan.project} (in order; workload stacks run in parallel):", file=out
    )
    for position, stack in enumerate(stacks, start=1):
        after = f"  after {', '.join(stack.depends_on)}" if stack.depends_on else ""
        print(
            f"  {position}. {stack.name:<{width}}  {stack.role:<8}  account {stack.account}  "
            f"regions {', '.join(stack.regions)}{after}",
            file=out,
        )
        for key, value in stack.propagated_config(None).items():
            print(f"       {key} = {value}", file=out)


def _print_results(operation: Operation, results: Sequence[StackResult], out: TextIO) -> None:
    width = max((len(result.stack.name) for result in results), default=0)
    print(f"{operation} summary:", file=out)
    for result in results:
        if result.status is not Status.SUCCEEDED:
            detail = result.message
        elif operation is Operation.OUTPUTS:
            detail = f"{len(result.outputs)} outputs"
        else:
            detail = describe_changes(result)
        print(f"  {result.stack.name:<{width}}  {result.status:<9}  {detail}", file=out)
        for name, output in sorted(result.outputs.items()):
            print(f"      {name} = {output.shown}", file=out)
