"""`python -m rollout status` on moto: what the recorder and the fan-out wrote, for people."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import boto3
import pytest
from moto import mock_aws

from handlers.common import status as record
from handlers.recorder.app import Recorder
from handlers.recorder.aws import RecorderAws
from rollout import status as cli
from rollout.__main__ import main
from tests.rollout_fixtures import (
    REGION,
    ROLLOUT,
    T0,
    TABLE,
    WORKLOAD_A,
    WORKLOAD_B,
    at,
    create_table,
    refresh_end_event,
    refresh_id,
    result_event,
)

NOW = T0 + timedelta(hours=1)
T0_TEXT = at(0)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def session():
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        create_table(session)
        yield session


def invoked(session, account: str, region: str = REGION, rollout: str = ROLLOUT, when=T0_TEXT):
    table = session.resource("dynamodb").Table(TABLE)
    table.put_item(Item=record.Invocation(account, region, when).to_item(rollout))
    table.put_item(Item=record.rollout_index_item(rollout, when))


def status(session, *argv: str, out: io.StringIO | None = None) -> tuple[int, str]:
    out = out or io.StringIO()
    code = cli.run(cli.parse(["--table", TABLE, *argv]), out, session=session, now=NOW)
    return code, out.getvalue()


@pytest.fixture
def recorded(session):
    recorder = Recorder(RecorderAws(session, TABLE))
    for account in (WORKLOAD_A, WORKLOAD_B, "444444444444"):
        invoked(session, account)
    recorder.record(result_event(WORKLOAD_A, group="web", refresh=refresh_id(1), time=at(5)))
    recorder.record(refresh_end_event("Succeeded", WORKLOAD_A, group="web", refresh=refresh_id(1),
                                      time=at(600)))  # fmt: skip
    recorder.record(result_event(WORKLOAD_A, group="batch", refresh=refresh_id(2), time=at(5)))
    recorder.record(refresh_end_event("Rollback Succeeded", WORKLOAD_A, group="batch",
                                      refresh=refresh_id(2), time=at(900)))  # fmt: skip
    recorder.record(result_event(WORKLOAD_B, outcome="deferred", reason="refresh r-9 InProgress"))
    return recorder


def test_status_prints_counts_every_group_and_what_needs_attention(session, recorded):
    code, out = status(session)
    assert code == 2  # something needs attention
    lines = out.splitlines()
    assert (
        lines[0]
        == f"Rollout {ROLLOUT}: 3 groups reported, 1 invoked (account, region) pairs silent"
    )
    assert lines[1:4] == [
        "  RollbackSuccessful      1",
        "  Successful              1",
        "  deferred                1",
    ]
    attention = out.split("Needing attention (2):\n", 1)[1].splitlines()
    assert [line.split()[:4] for line in attention[1:]] == [
        ["222222222222", REGION, "batch", "RollbackSuccessful"],
        ["444444444444", REGION, "-", "silent"],
    ]
    assert "invoked, no report for 1 h 0 min" in attention[2]
    # Aligned columns: every row of a table starts its STATE column at the same offset.
    header = attention[0]
    assert all(line[header.index("STATE") - 1] == " " for line in attention)
    assert "\x1b[" not in out  # no colours when the output is not a terminal


def test_colours_only_on_a_terminal(session, recorded):
    _, out = status(session, out=Tty())
    assert "\x1b[31mRollbackSuccessful" in out and "\x1b[32mSuccessful" in out


def test_thresholds_decide_when_deferred_and_silent_need_attention(session, recorded):
    _, out = status(session, "--json", "--silent-after", "90", "--deferred-after", "90")
    assert [a["state"] for a in json.loads(out)["attention"]] == ["RollbackSuccessful"]
    _, out = status(session, "--json", "--deferred-after", "60")
    assert [a["state"] for a in json.loads(out)["attention"]] == [
        "RollbackSuccessful",
        "deferred",
        "silent",
    ]


def test_json_is_one_stable_document(session, recorded):
    code, out = status(session, "--json")
    document = json.loads(out)
    assert code == 2
    assert set(document) == {
        "schemaVersion", "rolloutId", "counts", "phases", "silent", "settled", "groups",
        "attention", "waves",
    }  # fmt: skip
    assert document["waves"] == []  # no rolloutWaves: no wave items
    assert document["counts"] == {"RollbackSuccessful": 1, "Successful": 1, "deferred": 1}
    assert document["phases"] == {"pending": 1, "succeeded": 1, "failed": 1}
    assert document["silent"] == 1 and document["settled"] is False
    assert document["attention"][1] == {
        "account": "444444444444",
        "region": REGION,
        "group": None,
        "state": "silent",
        "since": at(0),
        "reason": "invoked, no report for 1 h 0 min",
    }
    assert status(session, "--json")[1] == out  # same table, same text


def test_the_newest_rollout_is_the_default_and_an_older_one_can_be_named(session, recorded):
    invoked(session, WORKLOAD_A, rollout="1.0.0/10", when=at(3000))
    recorded.record(result_event(WORKLOAD_A, outcome="current", rollout="1.0.0/10", time=at(3005)))
    assert json.loads(status(session, "--json")[1])["rolloutId"] == "1.0.0/10"
    assert json.loads(status(session, ROLLOUT, "--json")[1])["rolloutId"] == ROLLOUT


def test_nothing_to_show_is_one_clear_line(session):
    assert status(session) == (1, f"rollout status: table {TABLE} records no rollout yet\n")
    invoked(session, WORKLOAD_A)
    assert status(session, "9.9.9/1") == (
        1,
        f"rollout status: table {TABLE} has nothing recorded for rollout 9.9.9/1\n",
    )


def test_a_missing_table_is_one_clear_line(session):
    code, out = status(session, "--table", "nope")
    assert code == 1
    assert out.startswith("rollout status: cannot read table nope: ")
    assert "ResourceNotFoundException" in out


def test_the_dispatcher_runs_status_and_rejects_unknown_commands(session, monkeypatch, capsys):
    monkeypatch.setenv(cli.TABLE_ENV, TABLE)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    invoked(session, WORKLOAD_A)
    out = io.StringIO()
    assert main(["status", "--json"], out) == 2
    assert json.loads(out.getvalue())["attention"][0]["state"] == "silent"
    with pytest.raises(SystemExit):
        main(["launch"], io.StringIO())
    assert "invalid choice: 'launch'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["status"], ["approve", "1.0.0/1"]])
def test_no_region_anywhere_is_one_line_naming_the_option(command, monkeypatch):
    for variable in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    out = io.StringIO()
    assert main(command, out) == 1
    assert out.getvalue() == (
        f"rollout {command[0]}: no AWS region: pass --region with the infra stack's home region, "
        "or set AWS_DEFAULT_REGION\n"
    )


def test_bad_thresholds_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        cli.parse(["--silent-after", "soon"])
    assert "'soon' is not a whole number of minutes" in capsys.readouterr().err


def test_a_thousand_accounts_in_two_regions_counted_as_recorded(session):
    """1,000 accounts x 2 regions of results through the recorder: the table's items and the
    CLI's counts agree, and the accounts that never reported are the silent ones."""
    recorder = Recorder(RecorderAws(session, TABLE))
    table = session.resource("dynamodb").Table(TABLE)
    outcomes = ("current", "deferred", "rejected", "failed", "quarantined", "held")
    accounts = [f"{100000000000 + n}" for n in range(1000)]
    expected: dict[str, int] = {}
    with table.batch_writer() as batch:
        for account in [*accounts, "999999999999"]:
            for region in (REGION, "us-east-1"):
                batch.put_item(Item=record.Invocation(account, region, at(0)).to_item(ROLLOUT))
    for n, account in enumerate(accounts):
        for region in (REGION, "us-east-1"):
            outcome = outcomes[n % len(outcomes)]
            result = recorder.record(
                result_event(account, outcome=outcome, region=region, time=at(60))
            )
            assert result["recorded"], result
            expected[outcome] = expected.get(outcome, 0) + 1

    items = table.scan(Select="COUNT")
    count, request = items["Count"], {}
    while "LastEvaluatedKey" in items:
        request["ExclusiveStartKey"] = items["LastEvaluatedKey"]
        items = table.scan(Select="COUNT", **request)
        count += items["Count"]
    # 2,000 group items + 2,002 invocations + the rollout index entry.
    assert count == 2000 + 2002 + 1
    document = json.loads(status(session, "--json")[1])
    assert document["counts"] == dict(sorted(expected.items()))
    assert sum(document["counts"].values()) == 2000
    assert document["silent"] == 2
    assert len(document["groups"]) == 2000
