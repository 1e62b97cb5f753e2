"""`python -m rollout approve|abort|resume <image build version>`: a person's word to a rollout.

Each command reads the rollout's wave items (`sk=WAVE#<nn>`, written by the waves Lambda) from
the rollout table with the infra account's credentials, acts on the rollout's Step Functions
execution, records what it did on the wave item, and says so in one line:

- approve: the wave waiting at a manual gate gets `SendTaskSuccess` on its stored task token;
  the next wave begins.
- abort: `StopExecution` of the running execution. Nothing is rolled back by the abort itself:
  groups mid-refresh finish, or roll back on their own alarms; no further wave is invoked.
- resume: after a halt, once a person judged it a false alarm, a new execution continues with
  the wave after the halted one (named `rollout-<version>-from-<n>`, so resuming twice starts
  nothing twice). The halted execution stays failed in the history, with its reason.

IAM actions used (the RolloutWaves operator policy grants exactly these):
  dynamodb:Query, dynamodb:UpdateItem                   on the rollout table
  states:SendTaskSuccess                                on the state machine (task tokens)
  states:DescribeExecution, states:StopExecution        on the state machine's executions
  states:StartExecution                                 on the state machine
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import boto3
from boto3.dynamodb.conditions import Key
from botocore.exceptions import BotoCoreError, ClientError

from handlers.common.status import rollout_key
from handlers.waves.logic import (
    ABORTED,
    APPROVED,
    AWAITING_APPROVAL,
    HALTED,
    RESUMED,
    WAVE_PREFIX,
    execution_name,
    wave_key,
)

ABORTED_ERROR = "RolloutAborted"


class ControlError(RuntimeError):
    """The rollout is not in a state the command applies to; nothing was changed."""


@dataclass(frozen=True)
class WaveItem:
    index: int
    name: str
    state: str
    item: dict[str, Any]

    @property
    def execution_arn(self) -> str:
        return str(self.item.get("executionArn") or "")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def state_machine_of(execution_arn: str) -> str:
    """arn:aws:states:<r>:<a>:execution:<machine>:<name> -> the state machine's ARN."""
    parts = execution_arn.split(":")
    return ":".join([*parts[:5], "stateMachine", parts[6]])


class RolloutControl:
    def __init__(self, table_name: str, session: boto3.Session | None = None) -> None:
        session = session or boto3.Session()
        self._table = session.resource("dynamodb").Table(table_name)
        self._sfn = session.client("stepfunctions")

    def waves(self, rollout_id: str) -> list[WaveItem]:
        query: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(rollout_key(rollout_id))
            & Key("sk").begins_with(WAVE_PREFIX),
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            page = self._table.query(**query)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if not items:
            raise ControlError(f"no rollout {rollout_id!r} in the table (no wave began)")
        return [
            WaveItem(int(i["index"]), str(i["name"]), str(i.get("state", "")), i)
            for i in sorted(items, key=lambda i: int(i["index"]))
        ]

    def _record(self, rollout_id: str, index: int, fields: dict[str, Any]) -> None:
        names = {f"#f{n}": name for n, name in enumerate(fields)}
        sets = ", ".join(f"#f{n} = :v{n}" for n in range(len(fields)))
        self._table.update_item(
            Key={"pk": rollout_key(rollout_id), "sk": wave_key(index)},
            UpdateExpression=f"SET {sets}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":v{n}": v for n, v in enumerate(fields.values())},
        )

    # --- the commands ---------------------------------------------------------------------------

    def approve(self, rollout_id: str, by: str) -> str:
        waves = self.waves(rollout_id)
        waiting = [w for w in waves if w.state == AWAITING_APPROVAL and w.item.get("taskToken")]
        if not waiting:
            raise ControlError(f"rollout {rollout_id} waits for no approval ({_describe(waves)})")
        wave = waiting[-1]
        self._sfn.send_task_success(
            taskToken=str(wave.item["taskToken"]),
            output=json.dumps({"approvedBy": by, "approvedAt": _now()}),
        )
        self._record(
            rollout_id, wave.index, {"state": APPROVED, "approvedBy": by, "updatedAt": _now()}
        )
        return (
            f"approved rollout {rollout_id} after wave {wave.name!r}: "
            f"wave {wave.item.get('nextWave', wave.index + 1)!r} begins"
        )

    def abort(self, rollout_id: str, by: str) -> str:
        waves = self.waves(rollout_id)
        current = next(
            (w for w in reversed(waves) if w.execution_arn and self._running(w.execution_arn)),
            None,
        )
        if current is None:
            raise ControlError(
                f"rollout {rollout_id} has no running execution ({_describe(waves)})"
            )
        self._sfn.stop_execution(
            executionArn=current.execution_arn,
            error=ABORTED_ERROR,
            cause=f"aborted by {by} with python -m rollout abort during wave {current.name!r}",
        )
        self._record(
            rollout_id, current.index, {"state": ABORTED, "abortedBy": by, "updatedAt": _now()}
        )
        return (
            f"aborted rollout {rollout_id} during wave {current.name!r} "
            f"({current.execution_arn}): no further wave is invoked; groups mid-refresh finish "
            "or roll back on their own"
        )

    def resume(self, rollout_id: str, by: str) -> str:
        waves = self.waves(rollout_id)
        halted = waves[-1]
        if halted.state != HALTED:
            raise ControlError(
                f"rollout {rollout_id} is not halted ({_describe(waves)}): nothing to resume"
            )
        if halted.item.get("last"):
            raise ControlError(
                f"rollout {rollout_id} halted at its last wave {halted.name!r}: no wave to resume"
            )
        start = halted.index + 1
        original = self._sfn.describe_execution(executionArn=halted.execution_arn)
        resumed_input = json.loads(original["input"]) | {"startWave": start, "waveIndex": start}
        name = execution_name(rollout_id, start)
        try:
            arn = self._sfn.start_execution(
                stateMachineArn=state_machine_of(halted.execution_arn),
                name=name,
                input=json.dumps(resumed_input, sort_keys=True),
            )["executionArn"]
        except self._sfn.exceptions.ExecutionAlreadyExists:
            raise ControlError(
                f"rollout {rollout_id} was already resumed from wave {start} ({name})"
            ) from None
        self._record(
            rollout_id,
            halted.index,
            {"state": RESUMED, "resumedBy": by, "resumedExecutionArn": arn, "updatedAt": _now()},
        )
        return (
            f"resumed rollout {rollout_id}: wave {halted.name!r} stays halted "
            f"({halted.item.get('reason', '')}); execution {name} continues with wave {start}"
        )

    def _running(self, execution_arn: str) -> bool:
        return self._sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING"


def _describe(waves: Sequence[WaveItem]) -> str:
    return ", ".join(f"{w.name} {w.state}" for w in waves)


COMMANDS = ("approve", "abort", "resume")
TABLE_ENV = "GOLDEN_AMI_ROLLOUT_TABLE"  # as `python -m rollout status` reads it
DEFAULT_TABLE = "golden-ami-rollout-status"
HELP = {
    "approve": "let a rollout waiting at a manual gate go on with its next wave",
    "abort": "stop a rollout: no further wave (groups mid-refresh finish or roll back)",
    "resume": "after a halt judged a false alarm: continue with the next wave",
}


def add_parser(subparsers: Any) -> None:
    """`approve`, `abort` and `resume` for the `python -m rollout` dispatcher."""
    for command in COMMANDS:
        parser = subparsers.add_parser(command, help=HELP[command], description=HELP[command])
        parser.add_argument("rollout", help="rollout id (image build version, e.g. 1.0.0/3)")
        parser.add_argument(
            "--table", help=f"status table name (default ${TABLE_ENV} or {DEFAULT_TABLE})"
        )
        parser.add_argument(
            "--region", help="the infra stack's home region (default: the AWS config's)"
        )
        parser.add_argument(
            "--as", dest="by", help="who to record as deciding (default: your user name)"
        )
        parser.set_defaults(func=run, control_command=command)


def run(
    args: argparse.Namespace,
    out: TextIO,
    session: boto3.Session | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Print what was done (exit 0), or why nothing was (exit 1)."""
    table_name = args.table or environ.get(TABLE_ENV) or DEFAULT_TABLE
    control = RolloutControl(table_name, session or boto3.Session(region_name=args.region))
    command = {"approve": control.approve, "abort": control.abort, "resume": control.resume}
    try:
        said = command[args.control_command](args.rollout, args.by or getpass.getuser())
    except ControlError as error:
        out.write(f"rollout {args.control_command}: nothing done: {error}\n")
        return 1
    except (BotoCoreError, ClientError) as error:
        out.write(f"rollout {args.control_command}: {error}\n")
        return 1
    out.write(said + "\n")
    return 0
