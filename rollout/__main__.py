"""`python -m rollout <command>`: one subcommand per module, each adding its own parser.

A command module exposes `add_parser(subparsers)` (which sets `func` on its parser, a callable
taking the parsed arguments and an output stream and returning the exit code); list it in
COMMANDS to make it available.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

import boto3

from rollout import control, status

COMMANDS = (status, control)


def main(argv: Sequence[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rollout", description="The golden AMI rollout status, for people."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    args = parser.parse_args(argv)
    if args.region is None and boto3.Session().region_name is None:
        # botocore's own "You must specify a region." names neither the option nor the region.
        out.write(
            f"rollout {args.command}: no AWS region: pass --region with the infra stack's home "
            "region, or set AWS_DEFAULT_REGION\n"
        )
        return 1
    return int(args.func(args, out))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], sys.stdout))
