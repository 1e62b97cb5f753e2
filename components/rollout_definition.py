"""The RolloutWaves state machine in Amazon States Language (DESIGN §10 "Waves").

A loop over the waves. Each step of the loop is the waves Lambda (state in, state out; the
decisions live in handlers/waves/logic.py); the state machine holds the order, the waiting
(Wait states cost nothing for hours), the retries and the approval task token:

    Begin ─► fanout? ─► FanOut ─► Record ─► Settle ◄─┐
      ▲        │                               │      │ wait: PollWait
      │        └─ done / superseded ─► end     ├──────┘
      │                                        ├─ halt ─► Halt ─► Halted (execution fails)
      │                                        └─ soak ─► SoakWait ─► Recheck
      │                                                       ├─ halt ─► Halt
      ├────────────── continue ───────────────────────────────┤
      └── AwaitApproval (.waitForTaskToken) ◄── approve ──────┘     done ─► Completed

The fan-out and the approval fail into Halt (their error becomes the halt reason), so nothing
goes on after a failure without a person deciding to `resume`.
"""

from __future__ import annotations

from typing import Any

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
# How long a manual gate waits for `python -m rollout approve` before the rollout halts.
APPROVAL_TIMEOUT_SECONDS = 7 * 24 * 3600
# Lambda's transient errors (the service integration's own names) and the fan-out's "some
# enrolled account was not reached", which its docstring declares safe to re-run.
RETRIED_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
FANOUT_FAILED_ERROR = "FanoutFailedError"
HALTED_ERROR = "RolloutHalted"


def _retry(errors: list[str], attempts: int) -> list[dict[str, Any]]:
    return [
        {
            "ErrorEquals": errors,
            "IntervalSeconds": 5,
            "MaxAttempts": attempts,
            "BackoffRate": 2.0,
            "JitterStrategy": "FULL",
        }
    ]


def _step(waves_function_arn: str, action: str, next_state: str, **extra: Any) -> dict[str, Any]:
    """A waves-Lambda step: the whole state in, the next state out."""
    return {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {
            "FunctionName": waves_function_arn,
            "Payload": {
                "action": action,
                "state.$": "$",
                "executionArn.$": "$$.Execution.Id",
                **extra,
            },
        },
        "OutputPath": "$.Payload",
        "Retry": _retry(RETRIED_ERRORS, 3),
        "Next": next_state,
    }


def _branch(on: str, choices: dict[str, str], default: str) -> dict[str, Any]:
    return {
        "Type": "Choice",
        "Choices": [{"Variable": on, "StringEquals": value, "Next": target}
                    for value, target in choices.items()],
        "Default": default,
    }  # fmt: skip


def state_machine_definition(
    waves_function_arn: str,
    fanout_function_arn: str,
    approval_timeout_seconds: int = APPROVAL_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    halt_on_error = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Halt"}]
    return {
        "Comment": "Golden AMI progressive rollout: one execution per image, wave by wave "
        "(DESIGN §10). Halts on failure; manual gates wait for python -m rollout approve.",
        "StartAt": "Begin",
        "States": {
            "Begin": _step(waves_function_arn, "begin", "AfterBegin"),
            "AfterBegin": _branch(
                "$.next", {"fanout": "FanOut", "superseded": "Superseded"}, "Completed"
            ),
            "FanOut": {
                "Type": "Task",
                "Resource": LAMBDA_INVOKE,
                "Parameters": {
                    "FunctionName": fanout_function_arn,
                    "Payload": {
                        "rolloutId.$": "$.rolloutId",
                        "imageMessage.$": "$.imageMessage",
                        "correlationId.$": "$.correlationId",
                        "accountFilter.$": "$.wave.accountFilter",
                    },
                },
                # Only what Record needs: the state must stay under Step Functions' 256 KB.
                "ResultSelector": {
                    "accounts.$": "$.Payload.accounts",
                    "counts.$": "$.Payload.counts",
                },
                "ResultPath": "$.fanout",
                "Retry": _retry([*RETRIED_ERRORS, FANOUT_FAILED_ERROR], 2),
                "Catch": halt_on_error,
                "Next": "Record",
            },
            "Record": _step(waves_function_arn, "record", "Settle"),
            "Settle": _step(waves_function_arn, "check", "AfterSettle", stage="settle"),
            "AfterSettle": _branch(
                "$.next", {"wait": "PollWait", "soak": "SoakWait", "halt": "Halt"}, "Halt"
            ),
            "PollWait": {"Type": "Wait", "SecondsPath": "$.wave.pollSeconds", "Next": "Settle"},
            "SoakWait": {"Type": "Wait", "SecondsPath": "$.wave.soakSeconds", "Next": "Recheck"},
            "Recheck": _step(waves_function_arn, "check", "AfterRecheck", stage="soak"),
            "AfterRecheck": _branch(
                "$.next",
                {"continue": "Begin", "approve": "AwaitApproval", "done": "Completed"},
                "Halt",
            ),
            "AwaitApproval": {
                "Type": "Task",
                "Resource": f"{LAMBDA_INVOKE}.waitForTaskToken",
                "Parameters": {
                    "FunctionName": waves_function_arn,
                    "Payload": {
                        "action": "await-approval",
                        "state.$": "$",
                        "taskToken.$": "$$.Task.Token",
                        "executionArn.$": "$$.Execution.Id",
                    },
                },
                "TimeoutSeconds": approval_timeout_seconds,
                "ResultPath": "$.approval",
                "Retry": _retry(RETRIED_ERRORS, 3),
                "Catch": halt_on_error,
                "Next": "Begin",
            },
            "Halt": _step(waves_function_arn, "halt", "Halted"),
            "Halted": {"Type": "Fail", "Error": HALTED_ERROR, "CausePath": "$.reason"},
            "Superseded": {"Type": "Succeed"},
            "Completed": {"Type": "Succeed"},
        },
    }
