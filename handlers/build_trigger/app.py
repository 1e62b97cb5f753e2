"""Lambda entry point of the build trigger (work in progress: decision logic lands next)."""

from __future__ import annotations

import os
from typing import Any

from handlers.common.log import get_logger, log

LOGGER = get_logger(__name__)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records", [])
    log(LOGGER, "batch received", records=len(records), pipeline=os.environ.get("PIPELINE_ARN"))
    return {"records": len(records), "decision": "none"}
