"""EventBridge between accounts, as AWS does it, on top of moto (DESIGN §10 Testing).

moto forwards across accounts only through its own delivery and leaves `account` empty on
events put with `PutEvents`. Here:

- `PutEvents` of every client created inside `installed()` is answered by the sandbox: each
  entry becomes an event with the `id`, `account` (the caller's, from its credentials),
  `region` and `time` EventBridge sets, and is matched against the rules of the named bus
  (the default bus when none is named) through that account's `EventBridgeEmulator`. Naming
  another account's bus is refused, as the API does for a bus you do not own.
- A rule target that is an event bus (`arn:aws:events:<region>:<account>:event-bus/<name>`)
  delivers the event unchanged (same `account`, `region`, `id`) to that bus, when the bus
  exists and its policy admits the sender: a statement allowing `events:PutEvents` to the
  sender's account, or to `*` with `aws:PrincipalOrgID` equal to the sender's Organization.
  A bus that admits an Organization needs a role on the target (PutPermission API reference):
  a target without `RoleArn` delivers nothing, and the refusal is recorded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from sandbox.service_models import builtin_hooks

_EVENT_IDS = uuid.UUID("5a0c6a7e-0f43-4b63-9d1c-52b7c9a3e2f1")


@dataclass
class EventBuses:
    """Every account's and region's `EventBridgeEmulator`, and the Organization they are in."""

    clock: Callable[[], datetime]
    organization_of: Callable[[str], str | None]  # account id -> its Organization id, if any
    emulators: dict[tuple[str, str], Any] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    _count: int = 0

    def register(self, account: str, region: str, emulator: Any) -> None:
        self.emulators[account, region] = emulator

    @contextmanager
    def installed(self, base_session: boto3.Session) -> Iterator[EventBuses]:
        self._sts = base_session
        hooks = [
            ("before-parameter-build.events.PutEvents", self._stash_params),
            ("before-call.events.PutEvents", self._answer_put_events),
        ]
        with builtin_hooks(hooks):
            yield self

    # --- PutEvents ------------------------------------------------------------------------------

    @staticmethod
    def _stash_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["sandbox_put_events"] = params

    def _answer_put_events(
        self, model: Any, params: dict[str, Any], request_signer: Any, context: dict, **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]]:
        account = self._account_of(request_signer)
        region = request_signer._region_name
        answered = []
        for entry in context["sandbox_put_events"]["Entries"]:
            bus = entry.get("EventBusName", "default")
            if bus.startswith("arn:") and bus.split(":")[4] != account:
                answered.append(
                    {"ErrorCode": "NotAuthorizedForSourceException",
                     "ErrorMessage": "PutEvents names another account's bus"}
                )  # fmt: skip
                continue
            self._count += 1
            event_id = str(uuid.uuid5(_EVENT_IDS, f"{account}/{region}/{self._count}"))
            time = entry.get("Time") or self.clock()
            event = {
                "version": "0",
                "id": event_id,
                "detail-type": entry["DetailType"],
                "source": entry["Source"],
                "account": account,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": region,
                "resources": entry.get("Resources", []),
                "detail": json.loads(entry["Detail"]),
            }
            self.put(account, region, bus.rsplit("/", 1)[-1], event)
            answered.append({"EventId": event_id})
        failed = sum(1 for entry in answered if "ErrorCode" in entry)
        response = AWSResponse("https://events.amazonaws.com/", 200, {}, None)
        return response, {"FailedEntryCount": failed, "Entries": answered}

    def _account_of(self, request_signer: Any) -> str:
        credentials = request_signer._credentials.get_frozen_credentials()
        sts = self._sts.client(
            "sts",
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            aws_session_token=credentials.token,
        )
        return sts.get_caller_identity()["Account"]

    # --- delivery -------------------------------------------------------------------------------

    def put(self, account: str, region: str, bus: str, event: dict[str, Any]) -> list[Any]:
        emulator = self.emulators.get((account, region))
        if emulator is None:
            return []
        return emulator.put_event(event, self.clock(), bus=bus)

    def forward(self, target: dict[str, Any], event: dict[str, Any]) -> None:
        """A rule's event-bus target: the event, unchanged, on the other bus (or refused)."""
        arn = target["Arn"]
        region, account, bus = arn.split(":")[3], arn.split(":")[4], arn.rsplit("/", 1)[-1]
        emulator = self.emulators.get((account, region))
        policy = emulator.bus_policy(bus) if emulator else None
        if policy is None:
            self.refused.append(f"{arn}: no such bus")
            return
        sender = event["account"]
        admits_organization = self._admits(policy, sender)
        if admits_organization is None:
            self.refused.append(f"{arn}: the bus policy does not admit account {sender}")
            return
        if admits_organization and not target.get("RoleArn"):
            self.refused.append(f"{arn}: a bus that admits an Organization needs a target role")
            return
        self.put(account, region, bus, event)

    def _admits(self, policy: dict[str, Any], sender: str) -> bool | None:
        """True: admitted as an Organization member; False: by account; None: not admitted."""
        organization = self.organization_of(sender)
        for statement in policy.get("Statement", []):
            actions = statement.get("Action")
            if statement.get("Effect") != "Allow" or "events:PutEvents" not in (
                [actions] if isinstance(actions, str) else actions or []
            ):
                continue
            principal = statement.get("Principal")
            condition = statement.get("Condition", {}).get("StringEquals", {})
            if (
                principal == "*"
                and organization
                and condition.get("aws:PrincipalOrgID") == organization
            ):
                return True
            if isinstance(principal, dict) and sender in json.dumps(principal.get("AWS", "")):
                return False
        return None
