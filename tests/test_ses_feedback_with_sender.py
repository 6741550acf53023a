"""The feedback processor against the real sender (`handlers/send_order_email.py`), when it exists:
SES events that overtake the sender, and the crash window the Send event closes (DESIGN.md,
"Idempotency"). SES itself is a fake on the sender's module-level `ses` client that hands the
tags the sender set to the feedback processor, as SES -> SNS -> SQS would.
"""

from __future__ import annotations

import json

import pytest

from conftest import FakeContext, load_handler, sqs_event
from infra.code import handler_path
from test_ses_feedback_processor import (  # noqa: F401  (fixtures are used by name)
    ORDER_ID,
    SES_ID,
    TABLE,
    aws,
    deliver,
    feedback,
    get_item,
    handler,
    table,
)

pytestmark = pytest.mark.skipif(
    not handler_path("send_order_email").exists(), reason="sender not built yet"
)
ORDER = {"orderId": ORDER_ID, "customerEmail": "ada@example.com", "customerName": "Ada Lovelace"}


class SenderDied(BaseException):
    """The sender's invocation dying right after SES accepted the email (not an Exception)."""


class FakeSes:
    """SES SendEmail that accepts the email, then runs `after(tags)` before answering."""

    def __init__(self, after):
        self.after = after
        self.calls = 0

    def send_email(self, **kwargs):
        self.calls += 1
        self.after({tag["Name"]: [tag["Value"]] for tag in kwargs["Tags"]})
        return {"MessageId": SES_ID}


@pytest.fixture
def sender(table, monkeypatch):
    """The real sender, configured as the template does, sharing the moto table."""
    for name, value in {
        "SES_FROM_ADDRESS": "orders@shop.example.com", "SES_CONFIG_SET": "test-ses-config-set",
        "ENABLE_PRODUCTION_SES": "false", "TEST_EMAIL_ADDRESS": "qa-inbox@shop.example.com",
        "RECORD_TTL_DAYS": "90",
    }.items():
        monkeypatch.setenv(name, value)
    return load_handler("send_order_email")


def ses_event(name: str, tags: dict) -> dict:
    """Fixture `name` carrying exactly the tags the sender gave SES."""
    event = feedback(name)
    event["mail"]["tags"] = {"ses:configuration-set": ["test-ses-config-set"], **tags}
    return event


def test_a_delivery_that_overtakes_the_senders_sent_write_is_kept(
    sender, handler, table, monkeypatch
):
    # GIVEN SES delivers so fast that the Delivery is processed before the sender records SENT
    fake = FakeSes(lambda tags: deliver(handler, ses_event("delivery", tags)))
    monkeypatch.setattr(sender, "ses", fake)
    # WHEN the sender sends the order's email
    result = sender.lambda_handler(sqs_event(json.dumps(ORDER)), FakeContext())
    # THEN the sender acknowledges, and the item stays DELIVERED (its SENT write lost the race)
    assert result == {"batchItemFailures": []}
    item = get_item(table)
    assert (item["status"], item["sesMessageId"]) == ("DELIVERED", SES_ID)
    assert "Delivery" in [entry["type"] for entry in item["events"]]


def test_the_send_event_closes_the_crash_window_so_a_retry_does_not_send_again(
    sender, handler, table, monkeypatch
):
    # GIVEN a sender that dies right after SES accepted the email (item left SENDING)
    sent_tags = {}

    def die(tags):
        sent_tags.update(tags)
        raise SenderDied

    fake = FakeSes(die)
    monkeypatch.setattr(sender, "ses", fake)
    with pytest.raises(SenderDied):
        sender.lambda_handler(sqs_event(json.dumps(ORDER)), FakeContext())
    assert get_item(table)["status"] == "SENDING"
    # WHEN the SES Send event arrives, and later SQS redelivers the order after the claim expired
    assert deliver(handler, ses_event("send", sent_tags)) == {"batchItemFailures": []}
    table.update_item(
        TableName=TABLE,
        Key={"orderId": {"S": ORDER_ID}, "messageId": {"S": "order-confirmation"}},
        UpdateExpression="SET claimExpiresAt = :past",
        ExpressionAttributeValues={":past": {"N": "0"}},
    )
    result = sender.lambda_handler(sqs_event(json.dumps(ORDER)), FakeContext())
    # THEN the item is SENT from the Send event and the retry is a duplicate: one email only
    assert result == {"batchItemFailures": []}
    assert fake.calls == 1
    item = get_item(table)
    assert (item["status"], item["sesMessageId"]) == ("SENT", SES_ID)
