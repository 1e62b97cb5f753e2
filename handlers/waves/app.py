"""Lambda entry point of the progressive rollout (DESIGN §10 "Waves").

Two callers:
- the image topic (SNS): an AVAILABLE image starts one execution of the RolloutWaves state
  machine, named after the image build version. A redelivered notification starts nothing:
  StartExecution answers the running execution for the same name and input, or
  ExecutionAlreadyExists once it has finished; both are success here. Other image states are
  acknowledged.
- the state machine: `{"action": ..., "state": {...}}`, one step of the wave loop, returning
  the next state (see handlers/waves/logic.py). The state machine does the waiting; each step
  is a few DynamoDB calls.

Every step records where the wave stands on its own item of the rollout table
(`pk=ROLLOUT#<version>`, `sk=WAVE#<nn>`), which is what `python -m rollout` reads and answers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import boto3

from handlers.common.log import get_logger, log
from handlers.common.status import parse_item
from handlers.waves import logic
from handlers.waves.aws import WavesAws

LOGGER = get_logger("golden-ami.waves")


def lambda_handler(
    event: dict[str, Any], context: Any, session: boto3.Session | None = None
) -> dict[str, Any]:
    settings = logic.parse_settings(os.environ)
    aws = WavesAws(settings.table_name, session) if session else _warm_aws(settings.table_name)
    if isinstance(event, dict) and "Records" in event:
        return start_rollout(event, settings, aws)
    action = event.get("action") if isinstance(event, dict) else None
    step = STEPS.get(action) if isinstance(action, str) else None
    state = event.get("state") if isinstance(event, dict) else None
    if step is None or not isinstance(state, dict):
        raise logic.MalformedInputError(
            f"expected an SNS delivery or {{'action': one of {sorted(STEPS)}, 'state': {{...}}}}"
        )
    return step(event, state, settings, aws)


@functools.cache
def _warm_aws_for(table_name: str, access_key: str) -> WavesAws:
    return WavesAws(table_name)


def _warm_aws(table_name: str) -> WavesAws:
    """Clients kept across warm invocations (a step runs every poll): one per role credentials."""
    return _warm_aws_for(table_name, os.environ.get("AWS_ACCESS_KEY_ID", ""))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the start -----------------------------------------------------------------------------------


def start_rollout(
    event: dict[str, Any], settings: logic.WavesSettings, aws: WavesAws
) -> dict[str, Any]:
    try:
        status, message, message_id = logic.parse_image_notification(event)
        if status != logic.AVAILABLE:
            log(
                LOGGER,
                "image not available: no rollout",
                status=status,
                imageArn=message.get("arn"),
            )
            return {"status": status, "started": False}
        rollout_id = logic.rollout_id_of(message)
    except logic.MalformedInputError as error:
        log(LOGGER, "rejected image message", logging.ERROR, error=str(error))
        raise
    raw = event["Records"][0]["Sns"]["Message"]
    name = logic.execution_name(rollout_id)
    execution = json.dumps(logic.execution_input(rollout_id, raw, message_id), sort_keys=True)
    try:
        arn = aws.start_execution(settings.state_machine_arn, name, execution)
    except aws.execution_already_exists():
        log(LOGGER, "rollout already started for this image", rolloutId=rollout_id, name=name)
        return {"rolloutId": rollout_id, "started": False, "executionName": name}
    log(LOGGER, "rollout started", rolloutId=rollout_id, executionArn=arn)
    return {"rolloutId": rollout_id, "started": True, "executionArn": arn}


# --- the steps -----------------------------------------------------------------------------------


def begin_wave(
    event: dict[str, Any], state: dict[str, Any], settings: logic.WavesSettings, aws: WavesAws
) -> dict[str, Any]:
    """Stop if a newer image's rollout began; otherwise describe wave `waveIndex` to run."""
    rollout_id, index = state["rolloutId"], int(state["waveIndex"])
    state = {k: v for k, v in state.items() if k not in ("fanout", "error", "approval")}
    newer = logic.superseded_by(rollout_id, aws.latest_rollout())
    if newer is None:
        aws.claim_latest(rollout_id, logic.version_order(rollout_id), _now())
        newer = logic.superseded_by(rollout_id, aws.latest_rollout())
    if index >= len(settings.waves):
        log(LOGGER, "rollout complete", rolloutId=rollout_id)
        return state | {"next": "done"}
    if newer is not None:
        reason = f"superseded by the rollout of {newer}: stopped before wave {index}"
        aws.update_wave(
            rollout_id,
            index,
            {"name": settings.waves[index].name, "index": index, "state": logic.SUPERSEDED,
             "reason": reason, "updatedAt": _now(), "executionArn": event.get("executionArn")},
        )  # fmt: skip
        log(LOGGER, "rollout superseded", rolloutId=rollout_id, by=newer, waveIndex=index)
        return state | {"next": "superseded", "reason": reason}
    wave = logic.wave_state(settings.waves, index, settings.poll_seconds)
    aws.update_wave(
        rollout_id,
        index,
        {"name": wave["name"], "index": index, "state": logic.INVOKING, "startedAt": _now(),
         "updatedAt": _now(), "executionArn": event.get("executionArn"),
         "accountFilter": wave["accountFilter"], "last": wave["last"]},
    )  # fmt: skip
    log(LOGGER, "wave begins", rolloutId=rollout_id, wave=wave["name"], waveIndex=index)
    return state | {"wave": wave, "polls": 0, "next": "fanout"}


def record_invocations(
    event: dict[str, Any], state: dict[str, Any], settings: logic.WavesSettings, aws: WavesAws
) -> dict[str, Any]:
    """Keep what the fan-out invoked on the wave's item; the state stays small."""
    wave = state["wave"]
    pairs = logic.invoked_pairs(state["fanout"]["accounts"])
    aws.update_wave(
        state["rolloutId"],
        wave["index"],
        {"state": logic.WATCHING, "invoked": [f"{a}#{r}" for a, r in pairs],
         "fanoutCounts": state["fanout"]["counts"], "updatedAt": _now()},
    )  # fmt: skip
    log(LOGGER, "wave invoked", rolloutId=state["rolloutId"], wave=wave["name"], pairs=len(pairs))
    return {k: v for k, v in state.items() if k != "fanout"} | {"polls": 0}


def check_wave(
    event: dict[str, Any], state: dict[str, Any], settings: logic.WavesSettings, aws: WavesAws
) -> dict[str, Any]:
    stage = event.get("stage")
    if stage not in ("settle", "soak"):
        raise logic.MalformedInputError(f"check stage {stage!r} is not 'settle' or 'soak'")
    rollout_id, wave = state["rolloutId"], state["wave"]
    item = aws.wave_item(rollout_id, wave["index"]) or {}
    invoked = [str(pair).split("#", 1) for pair in item.get("invoked", [])]
    records = (parse_item(i) for i in aws.rollout_items(rollout_id))
    summary = logic.wave_summary(records, invoked, str(item.get("startedAt", "")))
    polls = int(state.get("polls", 0)) + (1 if stage == "settle" else 0)
    verdict = logic.judge(summary, wave, stage, polls)
    fields: dict[str, Any] = {"counts": verdict.counts, "updatedAt": _now()}
    if verdict.next == "soak":
        fields["state"] = logic.SOAKING
    elif verdict.next in ("approve", "continue", "done"):
        fields["state"] = logic.PASSED
    if verdict.failures:
        fields["failures"] = list(verdict.failures[:50])
    aws.update_wave(rollout_id, wave["index"], fields)
    log(
        LOGGER, "wave checked", rolloutId=rollout_id, wave=wave["name"], stage=stage,
        next=verdict.next, counts=verdict.counts, failures=len(verdict.failures),
    )  # fmt: skip
    state = state | {"polls": polls, "next": verdict.next}
    if verdict.next == "halt":
        state["reason"] = logic.halt_reason(wave, verdict.failures)
    if verdict.next in ("approve", "continue"):
        state["waveIndex"] = wave["index"] + 1
    return state


def halt(
    event: dict[str, Any], state: dict[str, Any], settings: logic.WavesSettings, aws: WavesAws
) -> dict[str, Any]:
    """Record why the rollout stops and tell the alarm topic; the state machine then fails."""
    rollout_id, wave = state["rolloutId"], state["wave"]
    reason = state.get("reason") or logic.task_failure_reason(wave, state.get("error") or {})
    aws.update_wave(
        rollout_id,
        wave["index"],
        {"state": logic.HALTED, "reason": reason, "updatedAt": _now(),
         "executionArn": event.get("executionArn")},
    )  # fmt: skip
    log(LOGGER, "rollout halted", logging.ERROR, rolloutId=rollout_id, reason=reason)
    if settings.alarm_topic_arn:
        aws.notify(
            settings.alarm_topic_arn,
            f"Golden AMI rollout {rollout_id} halted at wave {wave['name']}",
            f"{reason}\n\nNo further wave is invoked. Once the cause is understood: "
            f"python -m rollout resume {rollout_id} (continues with the next wave), "
            f"or let a newer image supersede it.",
        )
    return {k: v for k, v in state.items() if k != "error"} | {"next": "halt", "reason": reason}


def await_approval(
    event: dict[str, Any], state: dict[str, Any], settings: logic.WavesSettings, aws: WavesAws
) -> dict[str, Any]:
    """Keep the task token where `python -m rollout approve` finds it; the execution waits."""
    rollout_id, wave = state["rolloutId"], state["wave"]
    token = event.get("taskToken")
    if not isinstance(token, str) or not token:
        raise logic.MalformedInputError("await-approval needs the task token ($$.Task.Token)")
    next_name = settings.waves[wave["index"] + 1].name
    aws.update_wave(
        rollout_id,
        wave["index"],
        {"state": logic.AWAITING_APPROVAL, "taskToken": token, "updatedAt": _now(),
         "nextWave": next_name},
    )  # fmt: skip
    log(LOGGER, "wave awaits approval", rolloutId=rollout_id, wave=wave["name"], next=next_name)
    if settings.alarm_topic_arn:
        aws.notify(
            settings.alarm_topic_arn,
            f"Golden AMI rollout {rollout_id}: wave {wave['name']} passed, approval needed",
            f"Wave {wave['name']!r} passed its soak. The rollout waits before wave "
            f"{next_name!r}: python -m rollout approve {rollout_id}",
        )
    return {"awaiting": True}


STEPS = {
    "begin": begin_wave,
    "record": record_invocations,
    "check": check_wave,
    "halt": halt,
    "await-approval": await_approval,
}
