"""`python -m bench` on a tiny Organization: the output format, not the timing."""

from __future__ import annotations

import re

import pytest

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

    assert (
        main(
            [
                "--accounts",
                "6",
                "--baseline-accounts",
                "2",
                "--latency",
                "0",
                "--wave-accounts",
                "0",
            ]
        )
        == 0
    )

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


def test_bench_prints_the_state_machines_overhead_per_wave(capsys):
    pytest.importorskip("antlr4", reason="moto's ASL interpreter needs antlr4-python3-runtime")
    from bench.__main__ import print_waves

    assert print_waves(12) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"rollout waves on moto's ASL interpreter: 12 accounts in 3 waves, [\d.]+ s wall "
        r"\(waits on the emulated clock\)",
        lines[0],
    )
    invoked = []
    for line, name in zip(lines[1:], ("canary", "early", "rest"), strict=True):
        found = re.fullmatch(
            rf"  wave {name}: (\d+) invoked, fan-out [\d.]+ s, state machine overhead "
            r"-?[\d.]+ s \(\d+ waves-Lambda steps\), stand-in workloads [\d.]+ s",
            line,
        )
        assert found, line
        invoked.append(int(found.group(1)))
    assert invoked == [1, 1, 10]  # every account once, in three waves
