"""Lambda entry point of the workload refresh handler (DESIGN §4/§5).

The decision logic lands in `rules.py`; this module only reads the environment so the
package exists for packaging while the rules are written.
"""

from __future__ import annotations

import json
import os
from typing import Any

from handlers.common.log import get_logger, log

LOGGER = get_logger("golden-ami.refresh")


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    targets = json.loads(os.environ["TARGETS_JSON"])
    log(LOGGER, "refresh handler invoked", targets=len(targets), eventKeys=sorted(event))
    return {"results": []}
