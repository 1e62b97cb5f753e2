"""Thin boto3 adapter of the rollout recorder: the status table and the infra account's AMIs.

IAM actions used (the RolloutStatus role must grant exactly these):
  dynamodb:GetItem, dynamodb:PutItem, dynamodb:Query   on the status table
  ec2:DescribeImages                                   (no resource-level permission)
  ec2:CreateTags, ec2:DeleteTags                       the in-use tag, on this pipeline's AMIs
Metrics go out as CloudWatch embedded metric format log lines: no PutMetricData.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import boto3
from botocore.config import Config

from handlers.common import status
from handlers.recorder.logic import (
    IMAGE_BUILDER_ARN_TAG,
    IN_USE_TAG,
    IN_USE_TAG_VALUE,
    rollout_id_of_image,
)

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 5},
    connect_timeout=5,
    read_timeout=15,
)
NEWER_ONLY = "attribute_not_exists(pk) OR #order < :order"
# DescribeImages filters take at most 200 values.
_FILTER_VALUES_MAX = 200


class RecorderAws:
    def __init__(self, session: boto3.Session, table_name: str) -> None:
        self._session = session
        dynamodb = session.resource("dynamodb", config=CLIENT_CONFIG)
        self._table = dynamodb.Table(table_name)
        self._conditional_failed = dynamodb.meta.client.exceptions.ConditionalCheckFailedException
        self._ec2_clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- the status table -------------------------------------------------------------------

    def put_if_newer(self, item: Mapping[str, Any]) -> bool:
        """Write `item` unless the table holds one as new or newer; False when it did."""
        try:
            self._table.put_item(
                Item=dict(item),
                ConditionExpression=NEWER_ONLY,
                ExpressionAttributeNames={"#order": "order"},
                ExpressionAttributeValues={":order": item["order"]},
            )
        except self._conditional_failed:
            return False
        return True

    def put_if_absent(self, item: Mapping[str, Any]) -> bool:
        try:
            self._table.put_item(Item=dict(item), ConditionExpression="attribute_not_exists(pk)")
        except self._conditional_failed:
            return False
        return True

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        return self._table.get_item(Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item")

    def query(self, pk: str) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": pk},
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**request)
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def in_use_items(self, region: str) -> Iterator[dict[str, Any]]:
        return self.query(status.in_use_key(region))

    # --- the infra account's AMIs -----------------------------------------------------------

    def _ec2(self, region: str) -> Any:
        with self._lock:
            if region not in self._ec2_clients:
                self._ec2_clients[region] = self._session.client(
                    "ec2", region_name=region, config=CLIENT_CONFIG
                )
            return self._ec2_clients[region]

    def own_images(self, region: str, ami_ids: Iterable[str]) -> list[dict[str, Any]]:
        """This account's images among `ami_ids` (others' and missing ones are left out)."""
        ids = sorted(set(ami_ids))
        images: list[dict[str, Any]] = []
        for start in range(0, len(ids), _FILTER_VALUES_MAX):
            images += self._describe_own(
                region, [{"Name": "image-id", "Values": ids[start : start + _FILTER_VALUES_MAX]}]
            )
        return images

    def rollout_of_image(self, region: str, ami_id: str) -> str | None:
        """The image build version of one of this account's AMIs, from Image Builder's tag."""
        for image in self.own_images(region, [ami_id]):
            tags = {tag["Key"]: tag["Value"] for tag in image.get("Tags", [])}
            return rollout_id_of_image(tags.get(IMAGE_BUILDER_ARN_TAG, ""))
        return None

    def tagged_in_use(self, region: str) -> set[str]:
        images = self._describe_own(region, [{"Name": "tag-key", "Values": [IN_USE_TAG]}])
        return {image["ImageId"] for image in images}

    def _describe_own(self, region: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Deprecated AMIs drop out of DescribeImages unless asked for: they are still in use.
        pages = (
            self._ec2(region)
            .get_paginator("describe_images")
            .paginate(Owners=["self"], Filters=filters, IncludeDeprecated=True)
        )
        return [image for page in pages for image in page["Images"]]

    def tag_in_use(self, region: str, ami_ids: Iterable[str]) -> None:
        self._ec2(region).create_tags(
            Resources=sorted(ami_ids), Tags=[{"Key": IN_USE_TAG, "Value": IN_USE_TAG_VALUE}]
        )

    def untag_in_use(self, region: str, ami_ids: Iterable[str]) -> None:
        self._ec2(region).delete_tags(Resources=sorted(ami_ids), Tags=[{"Key": IN_USE_TAG}])
