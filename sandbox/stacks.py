"""`python -m sandbox.stacks [STACK ...]`: each stack's resource tree, offline.

Runs `__main__.py` for `Pulumi.<stack>.yaml` under Pulumi mocks (tests/pulumi_harness.py), the
way `pulumi preview` would evaluate it, and prints the component tree: a quick look at what a
stack declares without an AWS account or the Pulumi CLI. Any stack file in the project works
(default: all of them). Exit codes: 0 every tree printed; 3 an unknown stack, or a stack file
or configuration the program refuses (its one message, no traceback), in which case nothing
after that stack runs.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import pulumi
import yaml

from tests.pulumi_harness import REPO_ROOT, run_stack

EXIT_OK = 0
EXIT_USAGE = 3


def stack_names(project_dir: Path) -> list[str]:
    """The stacks with a `Pulumi.<stack>.yaml` in `project_dir`, infra first."""
    names = [
        path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        for path in project_dir.glob("Pulumi.*.yaml")
    ]
    return sorted(names, key=lambda name: (name != "infra", name))


def main(argv: Sequence[str], out: TextIO, *, project_dir: Path = REPO_ROOT) -> int:
    known = stack_names(project_dir)
    unknown = [name for name in argv if name not in known]
    if unknown:
        print(
            f"stacks: no stack file Pulumi.{unknown[0]}.yaml in {project_dir}; "
            f"stacks there: {', '.join(known) or 'none'}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    for stack in argv or known:
        try:
            run = run_stack(stack, project_dir=project_dir)
        except (pulumi.RunError, yaml.YAMLError) as error:
            print(f"stacks: Pulumi.{stack}.yaml: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(run.tree(), file=out)
        print(f"  ({len(run.resources)} resources)\n", file=out)
    close_leftover_event_loops()
    return EXIT_OK


def close_leftover_event_loops() -> None:
    """Close the event loop each mock worker thread leaves open (Pulumi's `_ensure_event_loop`).

    Left to the garbage collector at exit, a loop can be finalised after its own self-pipe
    socket, and Python prints an "Exception ignored ... Invalid file descriptor" traceback.
    """
    for candidate in gc.get_objects():
        if (
            isinstance(candidate, asyncio.BaseEventLoop)
            and not candidate.is_closed()
            and not candidate.is_running()
        ):
            candidate.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], sys.stdout))
