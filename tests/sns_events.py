"""The SNS→Lambda envelope of the Image Builder image-state topic, for the fan-out's tests."""

from __future__ import annotations

import json
from typing import Any

INFRA_ACCOUNT = "123456789012"  # moto's default identity: the infra (and management) account
HOME_REGION = "us-west-1"
MESSAGE_ID = "95df01b4-ee98-5cb9-9903-4c221d41eb5e"


def sns_event(message: Any, message_id: str = MESSAGE_ID) -> dict:
    """The SNS→Lambda envelope exactly as AWS documents it; a str message is sent as is."""
    topic = f"arn:aws:sns:{HOME_REGION}:{INFRA_ACCOUNT}:golden-ami-image-state"
    return {
        "Records": [
            {
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
                "EventSource": "aws:sns",
                "Sns": {
                    "SignatureVersion": "1",
                    "Timestamp": "2022-07-28T01:20:00.000Z",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": f"https://sns.{HOME_REGION}.amazonaws.com/cert.pem",
                    "MessageId": message_id,
                    "Message": message if isinstance(message, str) else json.dumps(message),
                    "MessageAttributes": {},
                    "Type": "Notification",
                    "UnsubscribeUrl": f"https://sns.{HOME_REGION}.amazonaws.com/?Action=Unsubscribe",
                    "TopicArn": topic,
                    "Subject": None,
                },
            }
        ]
    }
