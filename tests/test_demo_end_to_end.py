"""`make demo` end to end: the whole story runs and its report says what happened (issue 5).

One run of the default scenario (healthy, failing, not enrolled) through the CLI entry point,
shared by the assertions below; then the option parsing's failure paths.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from sandbox import demo
from sandbox.demo import DemoOptions, parse_options
from sandbox.timeline import TimelineEntry, format_entry

HEALTHY, FAILING, NOT_ENROLLED = "workload-01", "workload-02", "workload-03"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    report_path = tmp_path_factory.mktemp("demo") / "demo-report.json"
    out = io.StringIO()
    assert demo.main(["--report", str(report_path)], out) == 0
    return json.loads(report_path.read_text()), out.getvalue()


@pytest.fixture(scope="module")
def report(run: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """The report with the story's timeline: up to where the progressive rollout begins."""
    timeline = run[0]["timeline"]
    waves_begin = next(i for i, e in enumerate(timeline) if e["result"].startswith("rolloutWaves:"))
    return run[0] | {"timeline": timeline[:waves_begin]}


@pytest.fixture(scope="module")
def full_report(run: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """The report as written, the progressive rollout included."""
    return run[0]


def account(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in report["accounts"] if a["name"] == name)


def entries(report: dict[str, Any], account_name: str, step: str) -> list[tuple[int, dict]]:
    return [
        (index, entry)
        for index, entry in enumerate(report["timeline"])
        if entry["account"] == account_name and entry["step"] == step
    ]


def test_report_has_exactly_the_documented_schema(report: dict[str, Any]) -> None:
    assert report.keys() == {"image", "accounts", "rollout", "timeline", "waves"}
    assert report["waves"].keys() == {"waves", "rollouts", "invoked"}
    assert report["image"].keys() == {"arn", "amiId", "payloads"}
    for entry in report["accounts"]:
        assert entry.keys() == {"accountId", "name", "outcome", "groups"}
        for group in entry["groups"]:
            assert group.keys() == {"name", "refreshStatus", "imageBefore", "imageAfter"}
    assert all(e.keys() == {"time", "account", "step", "result"} for e in report["timeline"])


def test_the_rollout_status_recorded_what_each_workload_account_did(
    report: dict[str, Any],
) -> None:
    """Built from the infra account's status table (the CLI's JSON), not a second bookkeeping."""
    rollout = report["rollout"]
    accounts = {a["accountId"]: a for a in report["accounts"]}
    states = {g["account"]: g for g in rollout["groups"]}
    enrolled = {a["accountId"] for a in report["accounts"] if a["outcome"] == "invoked"}
    assert set(states) == enrolled  # the not-enrolled account was never invoked, reports nothing
    assert rollout["silent"] == 0 and rollout["settled"] is True
    for account_id, group in states.items():
        [local] = accounts[account_id]["groups"]
        assert group["group"] == local["name"] and group["region"] == demo.HOME_REGION
        if local["refreshStatus"] == "Successful":
            assert group["phase"] == "succeeded", group
        else:
            assert local["refreshStatus"] == "RollbackSuccessful"
            assert group["state"] in {"RollbackSuccessful", "quarantined"}, group
            assert group["phase"] == "failed"
    assert [a["account"] for a in rollout["attention"]] == [
        a["accountId"] for a in report["accounts"] if a["name"] == FAILING
    ]


def test_the_demo_ends_with_the_rollout_status_table(run: tuple[dict[str, Any], str]) -> None:
    report, printed = run
    table = printed.split("== Rollout status (python -m rollout status)\n", 1)[1]
    assert table.startswith(f"Rollout {report['rollout']['rolloutId']}: 2 groups reported")
    for group in report["rollout"]["groups"]:
        assert any(
            line.split()[:4] == [group["account"], group["region"], group["group"], group["state"]]
            for line in table.splitlines()
        )


def test_fan_out_outcome_per_account(report: dict[str, Any]) -> None:
    outcomes = {a["name"]: a["outcome"] for a in report["accounts"]}
    assert outcomes == {HEALTHY: "invoked", FAILING: "invoked", NOT_ENROLLED: "not-enrolled"}


def test_unenrolled_account_is_denied_the_invoke_role_and_enrolled_ones_are_reached(
    report: dict[str, Any],
) -> None:
    region = demo.HOME_REGION
    fanout = {
        name: [e["result"] for _, e in entries(report, name, "fan-out")]
        for name in (HEALTHY, FAILING, NOT_ENROLLED)
    }
    # The infra stack distributes to a second region that no workload stack covers: the invoke
    # role may invoke the refresh function in every region, so Lambda answers "not found" there
    # (not AccessDenied, which would fail every enrolled account).
    [other] = [r for r in demo.INFRA_REGIONS if r != region]
    not_covered = (
        f"not-enrolled in {other} (function not found: the workload stack does not cover this "
        "region)"
    )
    no_stack = "(AccessDenied on AssumeRole: no workload stack in this account)"
    assert fanout == {
        HEALTHY: [f"invoked in {region}; {not_covered}"],
        FAILING: [f"invoked in {region}; {not_covered}"],
        NOT_ENROLLED: [f"not-enrolled in {region} {no_stack}; not-enrolled in {other} {no_stack}"],
    }


def test_healthy_group_ends_successful_on_the_new_ami(report: dict[str, Any]) -> None:
    [group] = account(report, HEALTHY)["groups"]
    assert group["refreshStatus"] == "Successful"
    assert group["imageAfter"] == report["image"]["amiId"]
    assert group["imageBefore"] != report["image"]["amiId"]


def test_failing_group_rolls_back_to_the_old_ami(report: dict[str, Any]) -> None:
    [group] = account(report, FAILING)["groups"]
    assert group["refreshStatus"] == "RollbackSuccessful"
    assert group["imageAfter"] == group["imageBefore"] != report["image"]["amiId"]


def test_unenrolled_account_is_untouched(report: dict[str, Any]) -> None:
    [group] = account(report, NOT_ENROLLED)["groups"]
    assert group["refreshStatus"] is None
    assert group["imageAfter"] == group["imageBefore"]


def test_image_manifest_lists_the_sh_payloads_in_key_order(report: dict[str, Any]) -> None:
    payloads = report["image"]["payloads"]
    expected = sorted(
        (key, body)
        for key, body in demo.BASELINE_PAYLOADS + demo.STORY_PAYLOADS
        if key.endswith(".sh")
    )
    assert [p["key"] for p in payloads] == [key for key, _ in expected]
    assert [p["sha256"] for p in payloads] == [
        hashlib.sha256(body.encode()).hexdigest() for _, body in expected
    ]
    assert all(p["versionId"] for p in payloads)


def test_the_burst_started_one_build_and_the_readme_none(report: dict[str, Any]) -> None:
    uploads = [e["result"] for _, e in entries(report, "infra", "upload")]
    assert "payloads/README.md → no rule matched" in uploads
    decisions = [e["result"] for _, e in entries(report, "infra", "golden-ami-build-trigger")]
    assert sum("start-build" in result for result in decisions) == 2  # baseline + the burst
    assert any(result.startswith("batch of 2: start-build") for result in decisions)


def test_alarm_fires_before_the_rollback_and_only_in_the_failing_account(
    report: dict[str, Any],
) -> None:
    [alarm_at] = [
        i for i, e in entries(report, FAILING, "alarm") if e["result"].endswith("OK → ALARM")
    ]
    rollback_at = next(
        i
        for i, e in entries(report, FAILING, "instance refresh")
        if e["result"] == "Rollback Started"
    )
    matched = [
        e for _, e in entries(report, FAILING, "ECS events") if "→ 0 matched" not in e["result"]
    ]
    assert matched, "no ECS error reached the failing account's log group"
    assert alarm_at < rollback_at
    assert not [e for _, e in entries(report, HEALTHY, "alarm") if "ALARM" in e["result"]]
    # The healthy cluster's events went through the same rule and were not counted.
    assert all("→ 0 matched" in e["result"] for _, e in entries(report, HEALTHY, "ECS events"))


def test_finished_refreshes_come_back_through_the_catch_up_rule(report: dict[str, Any]) -> None:
    healthy = [e["result"] for _, e in entries(report, HEALTHY, "refresh (catch-up)")]
    failing = [e["result"] for _, e in entries(report, FAILING, "refresh (catch-up)")]
    assert healthy == [f"web-ecs: current — version 2 already uses {report['image']['amiId']}"]
    assert len(failing) == 1 and "quarantined" in failing[0]


def test_second_convergence_keeps_the_rolled_back_ami_quarantined(report: dict[str, Any]) -> None:
    new_ami = report["image"]["amiId"]
    [(_, failing)] = entries(report, FAILING, "converge (second run)")
    [(_, healthy)] = entries(report, HEALTHY, "converge (second run)")
    assert failing["result"].startswith(f"web-ecs: quarantined — {new_ami} was rolled back")
    assert healthy["result"].startswith("web-ecs: current")
    assert not entries(report, NOT_ENROLLED, "converge (second run)")


def test_timeline_is_printed_as_recorded(run: tuple[dict[str, Any], str]) -> None:
    report, printed = run
    lines = printed.splitlines()
    # Each entry is found after the previous one (two entries of one minute may read the same).
    position = -1
    for entry in report["timeline"]:
        position = lines.index(format_entry(TimelineEntry(**entry)), position + 1)
    assert report["timeline"][0]["time"] == "+00:00:00"


# --- the progressive rollout (issue 13) ------------------------------------------------------


def wave_rollouts(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Image A's and image B's `python -m rollout status --json` documents, from the report."""
    image_a, image_b = report["waves"]["rollouts"]
    return image_a, image_b


def position(
    timeline: list[dict[str, Any]], account: str, step: str, text: str, after: int = -1
) -> int:
    """The first entry after `after` that matches."""
    return next(
        i
        for i, e in enumerate(timeline)
        if i > after and e["account"] == account and e["step"] == step and text in e["result"]
    )


def test_the_canary_is_the_failing_account_and_the_rest_every_other(
    full_report: dict[str, Any],
) -> None:
    report = full_report
    canary, rest = (w["accounts"] for w in report["waves"]["waves"])
    assert canary == [account(report, FAILING)["accountId"]]
    assert rest == ["rest"]


def test_image_a_rolls_back_on_the_alarm_and_halts_with_no_second_wave_invocation(
    full_report: dict[str, Any],
) -> None:
    report = full_report
    halted, _ = wave_rollouts(report)
    image_a = halted["rolloutId"]
    canary_id = account(report, FAILING)["accountId"]
    [wave] = halted["waves"]  # the rest wave never began: no wave item was written for it
    assert (wave["name"], wave["state"]) == ("canary", "halted")
    assert wave["reason"] == (
        f"wave 'canary': 1 failed (tolerated 0): {canary_id} eu-west-1 web-ecs: RollbackSuccessful"
    )
    assert [(g["account"], g["state"]) for g in halted["groups"]] == [
        (canary_id, "RollbackSuccessful")
    ]
    # Only the canary's refresh function was invoked for image A: zero in the second wave.
    assert report["waves"]["invoked"][image_a] == [FAILING]
    timeline = report["timeline"]
    # The real chain: wave start → refresh → ECS failures → alarm → rollback → recorder → halt.
    execution = f"rollout-{image_a.replace('/', '-')}"
    started = position(timeline, "infra", "rollout waves", f"started {execution}")
    chain = [
        started,
        position(timeline, FAILING, "refresh (new image)", "started", started),
        position(timeline, FAILING, "ECS events", "TaskFailedToStart", started),
        position(timeline, FAILING, "alarm", "OK → ALARM", started),
        position(timeline, FAILING, "instance refresh", "Rollback Started", started),
        position(timeline, "infra", "rollout recorder", f"RollbackSuccessful (rollout {image_a})"),
        position(timeline, "infra", "rollout wave", f"{image_a} wave 0 'canary': HALTED"),
        position(timeline, "infra", "state machine", f"{execution}: FAILED (RolloutHalted: "),
    ]
    assert chain == sorted(chain)
    image_b_at = position(timeline, "infra", "image-state topic", "(rollout waves)", started)
    assert not [
        e
        for e in timeline[started:image_b_at]
        if e["account"] != FAILING and e["step"].startswith("refresh (")
    ]
    results = [e["result"] for e in timeline if e["step"] == "state machine"]
    assert results[0].startswith(
        f"execution rollout-{image_a.replace('/', '-')}: FAILED (RolloutHalted: "
    )
    assert f"{image_a} wave 1 'rest': never started — 0 of its 2 accounts invoked" in [
        e["result"] for e in timeline
    ]
    assert f"Golden AMI rollout {image_a} halted at wave canary" in [
        e["result"] for e in timeline if e["step"] == "alarm topic"
    ]


def test_image_b_passes_the_canary_soaks_and_completes_in_the_second_wave(
    full_report: dict[str, Any],
) -> None:
    report = full_report
    _, completed = wave_rollouts(report)
    image_b = completed["rolloutId"]
    assert [(w["name"], w["state"]) for w in completed["waves"]] == [
        ("canary", "passed"),
        ("rest", "passed"),
    ]
    assert completed["counts"] == {"Successful": 2} and completed["attention"] == []
    assert report["waves"]["invoked"][image_b] == [FAILING, HEALTHY]
    timeline = report["timeline"]

    def first(text: str) -> int:
        return next(i for i, e in enumerate(timeline) if e["result"].startswith(text))

    # The rest wave starts only after the canary settled, soaked 30 minutes and passed.
    soaking = first(f"{image_b} wave 0 'canary': settled, soaking 30 min")
    passed = first(f"{image_b} wave 0 'canary': passed")
    rest_started = first(f"{image_b} wave 1 'rest': started")
    healthy_refreshes = [i for i, _ in entries(report, HEALTHY, "refresh (new image)")]
    assert soaking < healthy_refreshes[-1] and max(passed, rest_started) > soaking
    assert _seconds(timeline[passed]["time"]) - _seconds(timeline[soaking]["time"]) == 30 * 60
    assert _seconds(timeline[healthy_refreshes[-1]]["time"]) >= _seconds(timeline[passed]["time"])
    # The canary's services run on image B: its alarm stays OK through the rollout.
    started_b = first(f"{image_b} wave 0 'canary': started")
    assert not [e for e in timeline[started_b:] if e["step"] == "alarm"]
    assert f"execution rollout-{image_b.replace('/', '-')}: SUCCEEDED" in [
        e["result"] for e in timeline if e["step"] == "state machine"
    ]


def test_the_demo_prints_the_status_of_both_wave_rollouts(
    run: tuple[dict[str, Any], str],
) -> None:
    report, printed = run
    halted_report, completed_report = wave_rollouts(report)
    image_a, image_b = halted_report["rolloutId"], completed_report["rolloutId"]
    halted = printed.split(f"== Rollout status (python -m rollout status {image_a})\n", 1)[1]
    assert halted.startswith(f"Rollout {image_a}: 1 groups reported")
    reason = halted_report["waves"][0]["reason"]
    assert f"  0  canary  halted  {reason}\n" in halted
    completed = printed.split(f"== Rollout status (python -m rollout status {image_b})\n", 1)[1]
    assert "  0  canary  passed\n  1  rest  passed\n" in completed
    assert "Nothing needs attention." in completed


def _seconds(offset: str) -> int:
    hours, minutes, seconds = (int(part) for part in offset.lstrip("+").split(":"))
    return hours * 3600 + minutes * 60 + seconds


# --- options ---------------------------------------------------------------------------------


def test_options_pick_the_failing_account_by_index_or_name(tmp_path: Path) -> None:
    assert parse_options(["--accounts", "5", "--failing", "3"]).failing_name() == "workload-03"
    assert parse_options(["--failing", "workload-01"]).failing_name() == "workload-01"
    assert parse_options(["--failing", "none"]).failing_name() is None
    options = parse_options(["--seed", "3", "--report", str(tmp_path / "r.json")])
    assert options == DemoOptions(seed=3, report=tmp_path / "r.json")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--accounts", "2"], "--accounts 2: at least 3"),
        (["--failing", "3"], "--failing '3': expected an enrolled account's index (1-2)"),
        (["--failing", "workload-03"], "the last account has no workload stack"),
        (["--failing", "payments"], "or name (workload-01, workload-02)"),
    ],
)
def test_bad_options_are_rejected_with_what_is_allowed(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_options(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_baseline_fan_out_failure_is_explained_before_it_is_shown(
    run: tuple[dict[str, Any], str],
) -> None:
    timeline = run[0]["timeline"]
    failed = next(i for i, e in enumerate(timeline) if "invocation failed" in e["result"])
    explained = next(i for i, e in enumerate(timeline) if e["step"] == "note")
    assert explained < failed
    assert "fan-out fails" in timeline[explained]["result"]


def test_readme_timeline_excerpt_is_what_the_demo_prints(run: tuple[dict[str, Any], str]) -> None:
    """The README's trimmed timeline is cut from a real run, so it goes stale with the story."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Local sandbox (make demo)", 1)[1].split("\n## ", 1)[0]
    excerpt = [line for line in section.splitlines() if line.startswith("+")]
    printed = set(run[1].splitlines())

    assert len(excerpt) >= 10
    assert [line for line in excerpt if line not in printed] == []
