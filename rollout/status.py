"""`python -m rollout status [ROLLOUT] [--json]`: where a rollout stands, from the status table.

Reads the table the recorder writes (infra account credentials; `--table`, else
`$GOLDEN_AMI_ROLLOUT_TABLE`, else `<environmentName>-rollout-status`), the newest rollout by
default. Prints the counts by outcome and every group that needs attention: rolled back,
failed, rejected, held, quarantined, deferred for longer than `--deferred-after`, and the
silent ones (invoked, but no report from that account and region after `--silent-after`).
`--json` prints the same as one stable JSON document for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from handlers.common import status as record
from handlers.waves.logic import WAVE_PREFIX

TABLE_ENV = "GOLDEN_AMI_ROLLOUT_TABLE"
DEFAULT_TABLE = "golden-ami-rollout-status"
DEFAULT_SILENT_AFTER = timedelta(minutes=30)
DEFAULT_DEFERRED_AFTER = timedelta(hours=2)
JSON_SCHEMA_VERSION = 1
_COLOURS = {record.Phase.SUCCEEDED: "32", record.Phase.PENDING: "33", record.Phase.FAILED: "31"}


class StatusError(Exception):
    """The status cannot be read: one line saying why."""


@dataclass(frozen=True)
class Attention:
    account: str
    region: str
    group: str  # "" for a silent (account, region)
    state: str  # a recorded state, or "silent"
    since: str
    reason: str


@dataclass(frozen=True)
class WaveLine:
    """A progressive rollout's wave as the waves Lambda records it (handlers/waves)."""

    index: int
    name: str
    state: str  # invoking, watching, soaking, awaiting-approval, passed, halted, ...
    reason: str  # why it halted or was superseded; "" otherwise


@dataclass(frozen=True)
class RolloutReport:
    rollout_id: str
    summary: record.RolloutSummary
    attention: tuple[Attention, ...]
    waves: tuple[WaveLine, ...] = ()

    def as_json(self) -> dict[str, Any]:
        summary = self.summary
        return {
            "schemaVersion": JSON_SCHEMA_VERSION,
            "rolloutId": self.rollout_id,
            "counts": dict(summary.counts),
            "phases": {phase.value: len(summary.in_phase(phase)) for phase in record.Phase},
            "silent": len(summary.silent),
            "settled": summary.settled,
            "groups": [
                {
                    "account": g.account,
                    "region": g.region,
                    "group": g.group,
                    "state": g.state,
                    "phase": g.phase.value,
                    "updatedAt": g.updated_at,
                    "reason": g.reason,
                    "amiBefore": g.ami_before,
                    "amiAfter": g.ami_after,
                    "refreshId": g.refresh_id,
                }
                for g in summary.groups
            ],
            "attention": [
                {
                    "account": a.account,
                    "region": a.region,
                    "group": a.group or None,
                    "state": a.state,
                    "since": a.since,
                    "reason": a.reason,
                }
                for a in self.attention
            ],
            "waves": [
                {"index": w.index, "name": w.name, "state": w.state, "reason": w.reason or None}
                for w in self.waves
            ],
        }


class StatusTable:
    """The reads the CLI makes (dynamodb:Query on the table)."""

    def __init__(self, session: boto3.Session, table_name: str) -> None:
        self._table = session.resource("dynamodb").Table(table_name)
        self.name = table_name

    def items(self, pk: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": pk},
        }
        while True:
            page = self._table.query(**request)
            found += page["Items"]
            if "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def build_report(
    table: StatusTable,
    rollout_id: str | None,
    now: datetime,
    silent_after: timedelta = DEFAULT_SILENT_AFTER,
    deferred_after: timedelta = DEFAULT_DEFERRED_AFTER,
) -> RolloutReport:
    if rollout_id is None:
        rollout_id = record.newest_rollout(table.items(record.ROLLOUT_INDEX_KEY))
        if rollout_id is None:
            raise StatusError(f"table {table.name} records no rollout yet")
    items = table.items(record.rollout_key(rollout_id))
    if not items:
        raise StatusError(f"table {table.name} has nothing recorded for rollout {rollout_id}")
    summary = record.summarize(record.parse_item(item) for item in items)
    return RolloutReport(
        rollout_id,
        summary,
        needing_attention(summary, now, silent_after, deferred_after),
        waves_of(items),
    )


def waves_of(items: Iterable[Mapping[str, Any]]) -> tuple[WaveLine, ...]:
    """The rollout's wave items (`sk=WAVE#<nn>`), in order; none without rolloutWaves."""
    return tuple(
        sorted(
            (
                WaveLine(int(i["index"]), str(i["name"]), str(i.get("state", "")),
                         str(i.get("reason", "")))
                for i in items
                if str(i["sk"]).startswith(WAVE_PREFIX) and "name" in i
            ),
            key=lambda wave: wave.index,
        )
    )  # fmt: skip


def needing_attention(
    summary: record.RolloutSummary,
    now: datetime,
    silent_after: timedelta,
    deferred_after: timedelta,
) -> tuple[Attention, ...]:
    found = [
        Attention(g.account, g.region, g.group, g.state, g.updated_at, g.reason)
        for g in summary.groups
        if g.phase is record.Phase.FAILED
        or (g.state == "deferred" and now - _time(g.updated_at) >= deferred_after)
    ]
    found += [
        Attention(
            i.account, i.region, "", "silent", i.invoked_at,
            f"invoked, no report for {_duration(now - _time(i.invoked_at))}",
        )
        for i in summary.silent
        if now - _time(i.invoked_at) >= silent_after
    ]  # fmt: skip
    return tuple(sorted(found, key=lambda a: (a.account, a.region, a.group)))


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


# --- rendering ------------------------------------------------------------------------------------


def render_table(report: RolloutReport, colour: bool) -> str:
    summary = report.summary

    def paint(text: str, state: str) -> str:
        phase = record.STATE_PHASES.get(state, record.Phase.FAILED)
        return f"\x1b[{_COLOURS[phase]}m{text}\x1b[0m" if colour else text

    lines = [f"Rollout {report.rollout_id}: {len(summary.groups)} groups reported, "
             f"{len(summary.silent)} invoked (account, region) pairs silent"]  # fmt: skip
    width = max((len(state) for state in summary.counts), default=5)
    for state, count in summary.counts.items():
        lines.append(f"  {paint(state.ljust(width), state)}  {count:>5}")
    if report.waves:
        lines += ["", "Waves:"]
        for wave in report.waves:
            why = f"  {wave.reason}" if wave.reason else ""
            lines.append(f"  {wave.index}  {wave.name}  {wave.state}{why}")
    rows = [("ACCOUNT", "REGION", "GROUP", "STATE", "SINCE", "REASON")] + [
        (g.account, g.region, g.group, g.state, g.updated_at, g.reason) for g in summary.groups
    ]
    lines += ["", "Groups:", *_aligned(rows, paint)]
    if report.attention:
        rows = [("ACCOUNT", "REGION", "GROUP", "STATE", "SINCE", "REASON")] + [
            (a.account, a.region, a.group or "-", a.state, a.since, a.reason)
            for a in report.attention
        ]
        lines += ["", f"Needing attention ({len(report.attention)}):", *_aligned(rows, paint)]
    else:
        lines += ["", "Nothing needs attention."]
    return "\n".join(lines) + "\n"


def _aligned(rows: Sequence[tuple[str, ...]], paint: Any) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        if index:
            cells[3] = paint(cells[3], row[3].strip())
        out.append("  " + "  ".join([*cells, row[-1]]).rstrip())
    return out


# --- the command ----------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="counts by outcome and the groups needing attention",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument(
        "rollout",
        nargs="?",
        help="rollout id (image build version, e.g. 1.0.0/3); default: the newest",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document, stable for scripts")
    parser.add_argument(
        "--table", help=f"status table name (default ${TABLE_ENV} or {DEFAULT_TABLE})"
    )
    parser.add_argument(
        "--region", help="the infra stack's home region (default: the AWS config's)"
    )
    parser.add_argument(
        "--silent-after",
        type=_minutes,
        default=DEFAULT_SILENT_AFTER,
        help="minutes after its invocation an account without a report is silent (30)",
    )
    parser.add_argument(
        "--deferred-after",
        type=_minutes,
        default=DEFAULT_DEFERRED_AFTER,
        help="minutes a deferred group waits before it needs attention (120)",
    )
    parser.set_defaults(func=run)  # fmt: skip


def _minutes(text: str) -> timedelta:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of minutes")
    return timedelta(minutes=int(text))


def run(
    args: argparse.Namespace,
    out: TextIO,
    session: boto3.Session | None = None,
    now: datetime | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    table_name = args.table or environ.get(TABLE_ENV) or DEFAULT_TABLE
    session = session or boto3.Session(region_name=args.region)
    try:
        report = build_report(
            StatusTable(session, table_name),
            args.rollout,
            now or datetime.now(UTC),
            args.silent_after,
            args.deferred_after,
        )
    except StatusError as error:
        out.write(f"rollout status: {error}\n")
        return 1
    except (BotoCoreError, ClientError) as error:
        out.write(f"rollout status: cannot read table {table_name}: {error}\n")
        return 1
    if args.json:
        out.write(json.dumps(report.as_json(), indent=2, sort_keys=True) + "\n")
    else:
        out.write(render_table(report, colour=out.isatty()))
    return 2 if report.attention else 0


def parse(argv: Iterable[str]) -> argparse.Namespace:
    """The parsed arguments of `python -m rollout status ...` (for callers such as the demo)."""
    parser = argparse.ArgumentParser(prog="python -m rollout")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["status", *argv])
