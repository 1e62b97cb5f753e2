"""Thin boto3 adapter of the waves Lambda: every AWS call it makes, and nothing else.

IAM actions used (the RolloutWaves function role must grant exactly these):
  dynamodb:Query, dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem   on the rollout table
  states:StartExecution                                                     on the state machine
  sns:Publish                                                               on the alarm topic
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
from boto3.dynamodb.conditions import Key
from botocore.config import Config

from handlers.common.status import rollout_key
from handlers.waves.logic import LATEST_ROLLOUT_KEY, wave_key

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=5, read_timeout=15
)


class WavesAws:
    def __init__(self, table_name: str, session: boto3.Session | None = None) -> None:
        self._session = session or boto3.Session()
        self._table = self._session.resource("dynamodb", config=CLIENT_CONFIG).Table(table_name)
        self._stepfunctions = self._session.client("stepfunctions", config=CLIENT_CONFIG)
        self._sns = self._session.client("sns", config=CLIENT_CONFIG)

    # --- the rollout table ---------------------------------------------------------------------

    def rollout_items(self, rollout_id: str) -> Iterator[dict[str, Any]]:
        """Every item of the rollout (groups, invocations, waves), page by page."""
        query: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(rollout_key(rollout_id)),
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**query)
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def wave_item(self, rollout_id: str, index: int) -> dict[str, Any] | None:
        key = {"pk": rollout_key(rollout_id), "sk": wave_key(index)}
        return self._table.get_item(Key=key, ConsistentRead=True).get("Item")

    def update_wave(self, rollout_id: str, index: int, fields: dict[str, Any]) -> None:
        """Set `fields` on the wave's item (created if absent); None values are removed."""
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        sets = [f"#f{i} = :v{i}" for i, value in enumerate(fields.values()) if value is not None]
        removes = [f"#f{i}" for i, value in enumerate(fields.values()) if value is None]
        expression = ("SET " + ", ".join(sets) if sets else "") + (
            " REMOVE " + ", ".join(removes) if removes else ""
        )
        request: dict[str, Any] = {
            "Key": {"pk": rollout_key(rollout_id), "sk": wave_key(index)},
            "UpdateExpression": expression.strip(),
            "ExpressionAttributeNames": names,
        }
        values = {f":v{i}": v for i, v in enumerate(fields.values()) if v is not None}
        if values:
            request["ExpressionAttributeValues"] = values
        self._table.update_item(**request)

    def latest_rollout(self) -> dict[str, Any] | None:
        return self._table.get_item(Key=LATEST_ROLLOUT_KEY, ConsistentRead=True).get("Item")

    def claim_latest(self, rollout_id: str, order: str, at: str) -> bool:
        """Record `rollout_id` as the newest rollout unless a newer one already is."""
        exceptions = self._table.meta.client.exceptions
        try:
            self._table.put_item(
                Item={**LATEST_ROLLOUT_KEY, "rolloutId": rollout_id, "order": order, "at": at},
                ConditionExpression="attribute_not_exists(pk) OR #order <= :order",
                ExpressionAttributeNames={"#order": "order"},
                ExpressionAttributeValues={":order": order},
            )
        except exceptions.ConditionalCheckFailedException:
            return False
        return True

    # --- Step Functions and SNS ----------------------------------------------------------------

    def start_execution(self, state_machine_arn: str, name: str, input_json: str) -> str:
        """The execution's ARN; raises ExecutionAlreadyExists for a name used before."""
        answer = self._stepfunctions.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=input_json
        )
        return answer["executionArn"]

    def execution_already_exists(self) -> type[Exception]:
        return self._stepfunctions.exceptions.ExecutionAlreadyExists

    def notify(self, topic_arn: str, subject: str, message: str) -> None:
        # SNS subjects: at most 100 printable ASCII characters, no line breaks.
        self._sns.publish(TopicArn=topic_arn, Subject=subject[:100], Message=message)
