"""Lambda entry point of the release function: `{"action": "release", ...}` and nothing else.

A function of its own, beside the refresh function and with a role of its own, because the
fan-out's invoke role may invoke the refresh function: were `release` accepted there, a
compromised fan-out role could lift every quarantine in the Organization. The invoke role's
policy names the refresh function only; people release with their own credentials.

It runs the refresh handler's code (handlers/refresh/app.py) with the release allowed: the AMI
leaves the group's quarantine or hold tag and the group converges in the same run.
"""

from __future__ import annotations

import os
from typing import Any

import boto3

from handlers.refresh import app as refresh_app


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    return refresh_app.handle(event, os.environ, boto3.Session(), release=True)
