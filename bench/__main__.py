"""`python -m bench`: the fan-out handler over a simulated Organization, concurrent vs. sequential.

Then (bench/waves.py) a rollout of the Organization in three waves through the real state
machine on moto, with the state machine's overhead per wave next to the fan-out's time.

Every AWS call answers after a fixed latency (bench/simulated_aws.py). The concurrent run is the
real handler (`handlers.fanout.app.lambda_handler`) with its configured MAX_CONCURRENCY; the
sequential baseline is the seed's loop, run on a slice of the Organization and scaled per
account. A benchmark, not a test: it prints its figures and asserts only that every account was
reached.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import resource
import sys
import time
import types

from bench import rollout_status
from bench.sequential import sequential_fanout
from bench.simulated_aws import INFRA_ACCOUNT, SimulatedAws

REGIONS = ("us-east-1", "eu-west-1")
ROLE = "InvokeInstanceRefreshHandlerRole"
FUNCTION = "LambdaForUpdateLaunchTemplate-And-InstanceRefresh"
LAMBDA_TIMEOUT_SECONDS = 900  # the maximum; the OrgFanout default is 300


def image_available_event() -> dict:
    """An SNS delivery of an Image Builder AVAILABLE message for an image in two regions."""
    image_arn = f"arn:aws:imagebuilder:us-east-1:{INFRA_ACCOUNT}:image/golden-ecs-al2023/1.0.0/7"
    message = {
        "arn": image_arn,
        "name": "golden-ecs-al2023",
        "version": "1.0.0",
        "buildVersion": 7,
        "semver": 1237940039285380274899124231,
        "state": {"status": "AVAILABLE"},
        "outputResources": {
            "amis": [
                {"region": region, "image": f"ami-0{n}23456789abcdef0", "accountId": INFRA_ACCOUNT}
                for n, region in enumerate(REGIONS)
            ]
        },
    }
    topic = f"arn:aws:sns:us-east-1:{INFRA_ACCOUNT}:golden-ami-image-state"
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic}:bench",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": "7f3c8a5e-bench-4d1e-9b7a-2c0f1e6d9a11",
                    "TopicArn": topic,
                    "Subject": None,
                    "Message": json.dumps(message),
                    "Timestamp": "2025-01-01T00:00:00.000Z",
                    "SignatureVersion": "1",
                    "MessageAttributes": {},
                },
            }
        ]
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_concurrent(accounts: int, latency: float) -> tuple[float, float, dict, int]:
    """Wall time, CPU time, summary and summary-line size of the real handler."""
    from handlers.fanout import app

    simulated = SimulatedAws(accounts, latency)
    session = simulated.session()
    context = types.SimpleNamespace(
        get_remaining_time_in_millis=lambda: LAMBDA_TIMEOUT_SECONDS * 1000
    )
    log_handler = logging.getLogger("golden-ami.fanout").handlers[0]
    captured = io.StringIO()
    previous_stream = log_handler.setStream(captured)  # the summary line is ~100 KB of JSON
    try:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        summary = app.lambda_handler(image_available_event(), context, session)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    finally:
        log_handler.setStream(previous_stream)
    summary_bytes = max(len(line) for line in captured.getvalue().splitlines())
    return wall, cpu, summary, summary_bytes


def run_sequential(accounts: int, latency: float) -> tuple[float, int]:
    simulated = SimulatedAws(accounts, latency)
    payload = {"schemaVersion": 1, "amis": dict.fromkeys(REGIONS, "ami-0123456789abcdef0")}
    started = time.perf_counter()
    invocations = sequential_fanout(simulated.session(), payload, ROLE, FUNCTION)
    return time.perf_counter() - started, invocations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--baseline-accounts", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per AWS call")
    parser.add_argument(
        "--wave-accounts",
        type=int,
        default=1000,
        help="accounts of the three-wave rollout on moto (0: skip it)",
    )
    args = parser.parse_args(argv)

    os.environ.update(
        INVOKE_ROLE_NAME=ROLE,
        TARGET_FUNCTION_NAME=FUNCTION,
        ACCOUNT_SOURCE="organizations",
        AWS_DEFAULT_REGION="us-east-1",
    )
    from handlers.fanout import logic

    concurrency = logic.parse_settings(os.environ).max_concurrency
    print(
        f"fan-out benchmark: {args.accounts} accounts x {len(REGIONS)} regions, "
        f"{args.latency * 1000:.0f} ms per AWS call"
    )

    wall, cpu, summary, summary_bytes = run_concurrent(args.accounts, args.latency)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    expected_pairs = args.accounts * len(REGIONS)
    if summary["counts"]["invoked"] != expected_pairs:
        print(f"error: concurrent run reached {summary['counts']} of {expected_pairs} pairs")
        return 1
    print(
        f"concurrent (handler, MAX_CONCURRENCY={concurrency}): {wall:.1f} s wall "
        f"({cpu:.1f} s CPU), {expected_pairs} invocations, "
        f"peak RSS {peak_rss_mb:.0f} MB (whole process), "
        f"summary log line {summary_bytes / 1024:.0f} KB"
    )

    measured, invocations = run_sequential(args.baseline_accounts, args.latency)
    if invocations != args.baseline_accounts * len(REGIONS):
        print(f"error: sequential run made {invocations} invocations")
        return 1
    scaled = measured * args.accounts / args.baseline_accounts
    print(
        f"sequential (seed loop): {measured:.1f} s wall for {args.baseline_accounts} accounts, "
        f"scaled per account to {args.accounts} accounts: {scaled:.1f} s"
    )
    print(f"fan-out speedup: {scaled / wall:.1f}x")

    recorded, per_second, status_seconds, groups = rollout_status.measure(args.accounts)
    if recorded != args.accounts * len(REGIONS) * 2:
        print(f"error: the recorder recorded {recorded} events")
        return 1
    print(
        f"rollout status: recorder logic {per_second:,.0f} events/s ({recorded} events: a start "
        f"and a refresh end per group); `rollout status` of {groups} groups in "
        f"{status_seconds * 1000:.0f} ms (in-memory table: code only, no DynamoDB latency)"
    )
    return print_waves(args.wave_accounts) if args.wave_accounts else 0


def print_waves(accounts: int) -> int:
    """The state machine's overhead per wave next to its fan-out (bench/waves.py)."""
    try:
        import antlr4  # noqa: F401  (moto's ASL interpreter)
    except ImportError:
        print("rollout waves: skipped, moto's ASL interpreter needs antlr4-python3-runtime")
        return 0
    from bench.waves import run_waves

    status, figures, wall = run_waves(accounts)
    if status != "SUCCEEDED":
        print(f"error: the rollout ended {status}")
        return 1
    print(
        f"rollout waves on moto's ASL interpreter: {accounts} accounts in {len(figures)} waves, "
        f"{wall:.1f} s wall (waits on the emulated clock)"
    )
    for wave in figures:
        print(
            f"  wave {wave.name}: {wave.accounts} invoked, fan-out {wave.fanout:.2f} s, "
            f"state machine overhead {wave.overhead:.2f} s ({wave.steps} waves-Lambda steps), "
            f"stand-in workloads {wave.workload:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
