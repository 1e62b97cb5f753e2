"""Fan-out cases the mutation check (docs/mutation-check.md) found no test for.

An account whose worker crashes (an exception that is no AWS error: a bug, an unexpected
response shape) must cost that account only: the others are still invoked, the crashed pairs are
reported `failed` with the error, and the invocation fails so SNS retries it. Accounts are reached
one at a time here (MAX_CONCURRENCY=1) with the crashing one first, so a fan-out that stops at the
first crash leaves the healthy account visibly untouched.
"""

from __future__ import annotations

from typing import Any

import pytest

from handlers.fanout import app
from tests import test_fanout_handler as fanout_world
from tests.test_fanout_handler import REGIONS, AwsEdge, run, summary_line

# The fan-out handler tests' moto Organization and environment, offered to pytest under their names.
backoff_sleeps, env, log_lines, org = (
    fanout_world.backoff_sleeps,
    fanout_world.env,
    fanout_world.log_lines,
    fanout_world.org,
)


class CrashingEdge(AwsEdge):
    """AssumeRole into `crashing` raises from inside the client call, as a botocore bug would."""

    def __init__(self, crashing: str) -> None:
        super().__init__()
        self.crashing = crashing

    def _assume_role(self, context: dict, **kwargs: Any):
        if context["edge_params"]["RoleArn"].split(":")[4] == self.crashing:
            raise RuntimeError("credentials response without Expiration")
        return super()._assume_role(context, **kwargs)


def test_a_crashing_account_is_failed_and_the_next_account_is_still_invoked(org, env, log_lines):
    crashing, healthy = org.add_account("crashing"), org.add_account("healthy")
    org.enroll(crashing)
    org.enroll(healthy)
    env.setenv("ACCOUNT_SOURCE", "static")
    env.setenv("STATIC_ACCOUNT_IDS", f"{crashing},{healthy}")
    env.setenv("MAX_CONCURRENCY", "1")
    crash_edge = CrashingEdge(crashing)

    with pytest.raises(app.FanoutFailedError, match="2 \\(account, region\\) pairs failed"):
        run(crash_edge)

    assert crash_edge.invoked_pairs() == {(healthy, region) for region in REGIONS}
    summary = summary_line(log_lines)
    assert summary["counts"] == {"invoked": 2, "not-enrolled": 0, "failed": 2}
    assert {(p["accountId"], p["region"], p["reason"]) for p in summary["problems"]} == {
        (crashing, region, "error: RuntimeError('credentials response without Expiration')")
        for region in REGIONS
    }
