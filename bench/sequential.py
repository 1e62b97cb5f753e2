"""The seed's fan-out, as the baseline: list the accounts, then for each one assume the role
and invoke the function in every region, one call after the other."""

from __future__ import annotations

import json
from typing import Any

import boto3


def sequential_fanout(
    session: boto3.Session,
    payload: dict[str, Any],
    role_name: str,
    function_name: str,
) -> int:
    """Returns the number of invocations made."""
    sts = session.client("sts")
    infra_account_id = sts.get_caller_identity()["Account"]
    organizations = session.client("organizations")
    invocations = 0
    for page in organizations.get_paginator("list_accounts").paginate():
        for account in page["Accounts"]:
            if account["Status"] != "ACTIVE" or account["Id"] == infra_account_id:
                continue
            credentials = sts.assume_role(
                RoleArn=f"arn:aws:iam::{account['Id']}:role/{role_name}",
                RoleSessionName="seed-fanout",
            )["Credentials"]
            for region in payload["amis"]:
                client = session.client(
                    "lambda",
                    region_name=region,
                    aws_access_key_id=credentials["AccessKeyId"],
                    aws_secret_access_key=credentials["SecretAccessKey"],
                    aws_session_token=credentials["SessionToken"],
                )
                client.invoke(
                    FunctionName=f"arn:aws:lambda:{region}:{account['Id']}:function:{function_name}",
                    InvocationType="Event",
                    Payload=json.dumps(payload).encode(),
                )
                invocations += 1
    return invocations
