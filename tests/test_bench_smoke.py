"""`python -m bench` on a tiny Organization: the output format, not the timing."""

from __future__ import annotations

import re

from bench.__main__ import main


def test_bench_prints_both_runs_and_the_speedup_line(capsys, monkeypatch):
    # The benchmark sets the handler's environment for its own process: keep it out of ours.
    for name in (
        "INVOKE_ROLE_NAME",
        "TARGET_FUNCTION_NAME",
        "ACCOUNT_SOURCE",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.setenv(name, "placeholder")
    monkeypatch.delenv("MAX_CONCURRENCY", raising=False)

    assert main(["--accounts", "6", "--baseline-accounts", "2", "--latency", "0"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fan-out benchmark: 6 accounts x 2 regions, 0 ms per AWS call"
    assert re.fullmatch(
        r"concurrent \(handler, MAX_CONCURRENCY=\d+\): [\d.]+ s wall \([\d.]+ s CPU\), "
        r"12 invocations, peak RSS \d+ MB \(whole process\), summary log line \d+ KB",
        lines[1],
    )
    assert re.fullmatch(
        r"sequential \(seed loop\): [\d.]+ s wall for 2 accounts, "
        r"scaled per account to 6 accounts: [\d.]+ s",
        lines[2],
    )
    assert re.fullmatch(r"fan-out speedup: \d+\.\dx", lines[3])
    assert re.fullmatch(
        r"rollout status: recorder logic [\d,]+ events/s \(24 events: a start and a refresh end "
        r"per group\); `rollout status` of 12 groups in \d+ ms \(in-memory table: code only, "
        r"no DynamoDB latency\)",
        lines[4],
    )
