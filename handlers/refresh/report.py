"""The refresh handler's report to the rollout status (DESIGN §10): one event per group result.

The events go to this account's default bus (source `golden-ami.refresh`); a workload rule
forwards them to the infra account's rollout bus. EventBridge fills in `account` and `region`
from the sender, so the detail never names them. `imageArn` (and with it the rollout id, the
image build version) is known for a fan-out payload; for a convergence the recorder finds it
from the infra account's tags on `amiAfter`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from handlers.common.status import RESULT_DETAIL_TYPE, RESULT_SCHEMA_VERSION, RESULT_SOURCE

# PutEvents takes at most ten entries per call.
PUT_EVENTS_BATCH = 10


def result_entries(
    results: Sequence[Mapping[str, Any]], image_arn: str | None
) -> list[dict[str, Any]]:
    """PutEvents entries for the group results of one invocation (`GroupResult.as_dict()`).

    No `Time`: EventBridge stamps the event when it receives it, the clock the Auto Scaling
    refresh ends are stamped by too, so the recorder orders both on one clock.
    """
    entries = []
    for result in results:
        detail = {
            "schemaVersion": RESULT_SCHEMA_VERSION,
            "autoScalingGroupName": result["autoScalingGroupName"],
            "outcome": result["outcome"],
            "reason": result["reason"],
            "imageArn": image_arn,
            "amiBefore": result.get("amiBefore"),
            "amiAfter": result.get("amiId"),
            "instanceRefreshId": result.get("instanceRefreshId"),
        }
        entries.append(
            {
                "Source": RESULT_SOURCE,
                "DetailType": RESULT_DETAIL_TYPE,
                "Detail": json.dumps({k: v for k, v in detail.items() if v is not None}),
            }
        )
    return entries
