"""`python -m sandbox.stacks [STACK ...]`: each example stack's resource tree, offline.

Runs `__main__.py` for `Pulumi.<stack>.yaml` under Pulumi mocks (tests/pulumi_harness.py), the
way `pulumi preview` would evaluate it, and prints the component tree: a quick look at what a
stack declares without an AWS account or the Pulumi CLI.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from tests.pulumi_harness import EXAMPLE_STACKS, run_stack


def main(argv: Sequence[str], out: TextIO) -> int:
    unknown = sorted(set(argv) - set(EXAMPLE_STACKS))
    if unknown:
        print(
            f"unknown stack(s) {', '.join(unknown)}; known: {', '.join(EXAMPLE_STACKS)}",
            file=sys.stderr,
        )
        return 2
    for stack in argv or EXAMPLE_STACKS:
        run = run_stack(stack)
        print(run.tree(), file=out)
        print(f"  ({len(run.resources)} resources)\n", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], sys.stdout))
