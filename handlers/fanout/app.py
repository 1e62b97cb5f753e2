"""Lambda entry point of the Organization fan-out handler (DESIGN §4).

The account fan-out lands in `logic.py`/`aws.py`; this module already parses the SNS
envelope so the package can be built and deployed while they are written.
"""

from __future__ import annotations

import json
from typing import Any

from handlers.common.log import get_logger, log

LOGGER = get_logger("golden-ami.fanout")


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    log(LOGGER, "image state received", imageArn=message.get("arn"),
        status=message.get("state", {}).get("status"))
    return {"accounts": []}
