"""Behaviour of `handlers/ses_feedback_processor.py` under moto: statuses, ordering, idempotency,
metrics and logs. Bad input and error paths are in `test_ses_feedback_bad_input.py`, the race
with the real sender in `test_ses_feedback_with_sender.py`.

Fixtures in `tests/events/feedback/` are the samples of the SES developer guide ("Examples of event
data that Amazon SES publishes to Amazon SNS" and "Amazon SNS notification examples for Amazon
SES"), with our two message tags (`orderId`, `messageId`, base64url without padding) added to
`mail.tags` beside SES's own tags and one SES message id shared by the event-publishing samples.
The identity notifications (`notification_*.json`) are kept as published: without tags.
"""

from __future__ import annotations

import ast
import base64
import itertools
import json
import sys

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError
from moto import mock_aws

from conftest import REGION, FakeContext, load_event, load_handler, sqs_event
from infra.code import handler_path

TABLE = "test-email-deliveries"
NAMESPACE = "test/EmailNotifications"
ORDER_ID = "ORD-20261127-0001"
MESSAGE_ID = "order-confirmation"
SES_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
CREATED_AT = 1795780800  # 2026-11-27T12:00:00Z
CLAIM_TOKEN = "claim-token-1"


# --- helpers ---------------------------------------------------------------------------------


def b64(text: str) -> str:
    """The sender's tag encoding: base64url of the UTF-8 bytes, padding stripped."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def feedback(name: str, order_id: str = ORDER_ID) -> dict:
    """Fixture `feedback/<name>.json`, tagged for `order_id` (identity notifications get tags)."""
    event = load_event(f"feedback/{name}.json")
    if order_id != ORDER_ID or "tags" not in event["mail"]:
        event["mail"].setdefault("tags", {}).update(
            {"orderId": [b64(order_id)], "messageId": [b64(MESSAGE_ID)]}
        )
    return event


def sns_envelope(event: dict) -> dict:
    """The record as SNS delivers it without raw message delivery."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:test-ses-bounce-notifications",
        "Message": json.dumps(event),
        "Timestamp": "2026-11-27T12:00:05.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def put_item(client, order_id: str = ORDER_ID, status: str = "SENDING", **extra) -> None:
    """An item as the sender leaves it: claimed (`SENDING`) or further along."""
    item = {
        "orderId": {"S": order_id},
        "messageId": {"S": MESSAGE_ID},
        "to": {"S": "ada@example.com"},
        "sentTo": {"S": "ada@example.com"},
        "status": {"S": status},
        "timestamp": {"N": str(CREATED_AT)},
        "ttl": {"N": str(CREATED_AT + 90 * 86400)},
        "createdAt": {"S": "2026-11-27T12:00:00Z"},
        "updatedAt": {"S": "2026-11-27T12:00:00Z"},
        "attempts": {"N": "1"},
        "claimToken": {"S": CLAIM_TOKEN},
        "claimExpiresAt": {"N": str(CREATED_AT + 300)},
    }
    item.update(extra)
    client.put_item(TableName=TABLE, Item=item)


def get_item(client, order_id: str = ORDER_ID) -> dict | None:
    response = client.get_item(
        TableName=TABLE, Key={"orderId": {"S": order_id}, "messageId": {"S": MESSAGE_ID}}
    )
    if "Item" not in response:
        return None
    deserialize = TypeDeserializer().deserialize
    return {name: deserialize(value) for name, value in response["Item"].items()}


def all_items(client) -> list[dict]:
    return client.scan(TableName=TABLE)["Items"]


def deliver(handler, *events) -> dict:
    """Invoke the handler with one SQS record per event (dicts are JSON-encoded, str as-is)."""
    bodies = [event if isinstance(event, str) else json.dumps(event) for event in events]
    return handler.lambda_handler(sqs_event(*bodies), FakeContext())


def output(capsys) -> tuple[list[dict], list[dict]]:
    """(log lines, EMF lines) printed since the last call; every line must be JSON."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    logs = [line for line in lines if "_aws" not in line]
    return logs, [line for line in lines if "_aws" in line]


def metric_values(emf_lines: list[dict]) -> dict:
    assert len(emf_lines) <= 1, "one EMF line per invocation"
    if not emf_lines:
        return {}
    line = emf_lines[0]
    directive = line["_aws"]["CloudWatchMetrics"][0]
    names = [metric["Name"] for metric in directive["Metrics"]]
    return {name: line[name] for name in names}


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws():
    """One moto backend per module (a fresh boto3 session per test costs ~100 ms)."""
    with mock_aws():
        yield boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def table(aws, monkeypatch):
    """A fresh table mirroring the template schema (key, GSIs), with the handler's env vars set."""
    monkeypatch.setenv("EMAIL_DELIVERIES_TABLE", TABLE)
    monkeypatch.setenv("METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("ENVIRONMENT", "test")
    aws.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "orderId", "KeyType": "HASH"},
            {"AttributeName": "messageId", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": kind}
            for name, kind in [
                ("orderId", "S"), ("messageId", "S"), ("to", "S"), ("status", "S"),
                ("timestamp", "N"),
            ]
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": hash_key, "KeyType": "HASH"},
                    {"AttributeName": "timestamp", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index, hash_key in [("EmailIndex", "to"), ("StatusIndex", "status")]
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    yield aws
    aws.delete_table(TableName=TABLE)


@pytest.fixture
def handler(table):
    """The handler loaded as module `index` inside moto (its client is created at import)."""
    return load_handler("ses_feedback_processor")


# --- 1. each event type: status and details ----------------------------------------------------

EVENT_TYPES = [
    # fixture, status, failure attributes, history detail
    ("send", "SENT", {}, "Send"),
    ("delivery_delay", "DELAYED", {}, "TransientCommunicationFailure"),
    ("delivery", "DELIVERED", {}, "Delivery"),
    (
        "bounce_permanent",
        "BOUNCED",
        {"bounceType": "Permanent", "bounceSubType": "General",
         "diagnostic": "smtp; 550 5.1.1 user unknown"},
        "Permanent/General/smtp; 550 5.1.1 user unknown",
    ),
    (
        "bounce_transient",
        "BOUNCED",
        {"bounceType": "Transient", "bounceSubType": "MailboxFull",
         "diagnostic": "smtp; 552 5.2.2 mailbox full"},
        "Transient/MailboxFull/smtp; 552 5.2.2 mailbox full",
    ),
    ("complaint", "COMPLAINED", {"complaintFeedbackType": "abuse"}, "abuse"),
    ("reject", "REJECTED", {"error": "Bad content"}, "Bad content"),
    (
        "rendering_failure",
        "RENDERING_FAILED",
        {"error": "Attribute 'attributeName' is not present in the rendering data."},
        "Attribute 'attributeName' is not present in the rendering data.",
    ),
]
FAILURE_ATTRIBUTES = ("bounceType", "bounceSubType", "diagnostic", "complaintFeedbackType", "error")


@pytest.mark.parametrize(("name", "status", "details", "detail"), EVENT_TYPES,
                         ids=[case[0] for case in EVENT_TYPES])
def test_each_event_type_moves_a_sending_item_to_its_status_with_details(
    handler, table, name, status, details, detail
):
    # GIVEN an item the sender claimed (SENDING)
    put_item(table)
    event = feedback(name)
    # WHEN the SES event arrives
    result = deliver(handler, event)
    # THEN the item has the event's status, its details and one history entry with SES's time
    assert result == {"batchItemFailures": []}
    item = get_item(table)
    assert item["status"] == status
    assert {key: item[key] for key in FAILURE_ATTRIBUTES if key in item} == details
    assert item["sesMessageId"] == SES_ID
    (entry,) = item["events"]
    data = next((v for k, v in event.items() if isinstance(v, dict) and k != "mail"), {})
    assert entry == {
        "type": event["eventType"],
        "time": data.get("timestamp") or event["mail"]["timestamp"],
        "detail": detail,
    }
    assert len(item["eventIds"]) == 1
    # the status-change time moved (GSI range key) and the claim is over
    assert item["timestamp"] > CREATED_AT
    assert item["updatedAt"] != "2026-11-27T12:00:00Z"
    assert "claimExpiresAt" not in item


@pytest.mark.parametrize(
    ("name", "status", "details"),
    [
        ("notification_bounce", "BOUNCED",
         {"bounceType": "Permanent", "bounceSubType": "General",
          "diagnostic": "smtp; 550 5.1.1 <jane@example.com>... User"}),
        ("notification_complaint", "COMPLAINED", {"complaintFeedbackType": "abuse"}),
        ("notification_delivery", "DELIVERED", {}),
    ],
)
def test_identity_notifications_that_carry_our_tags_apply_like_event_publishing(
    handler, table, name, status, details
):
    # GIVEN the older notificationType format (here with our tags added)
    put_item(table, status="SENT")
    event = feedback(name)
    # WHEN it arrives
    assert deliver(handler, event) == {"batchItemFailures": []}
    # THEN it maps to the same status and details as eventType records
    item = get_item(table)
    assert item["status"] == status
    assert {key: item[key] for key in FAILURE_ATTRIBUTES if key in item} == details
    assert item["sesMessageId"] == event["mail"]["messageId"]
    assert [entry["type"] for entry in item["events"]] == [event["notificationType"]]


@pytest.mark.parametrize("name", ["send", "delivery", "bounce_permanent", "notification_complaint"])
def test_an_sns_envelope_is_unwrapped(handler, table, name):
    # GIVEN a subscription without raw message delivery: the record sits in an SNS envelope
    put_item(table)
    # WHEN it arrives
    assert deliver(handler, sns_envelope(feedback(name))) == {"batchItemFailures": []}
    # THEN it is applied as if raw
    assert get_item(table)["status"] == dict(
        send="SENT", delivery="DELIVERED", bounce_permanent="BOUNCED",
        notification_complaint="COMPLAINED",
    )[name]


@pytest.mark.parametrize("name", ["open", "click", "subscription"])
def test_engagement_events_are_history_only_and_acknowledged(handler, table, capsys, name):
    # GIVEN a delivered email
    put_item(table, status="DELIVERED")
    capsys.readouterr()
    # WHEN the recipient opens it, clicks, or changes a subscription
    result = deliver(handler, feedback(name))
    # THEN it is recorded in the history, the status and its timestamp stay, nothing is counted
    assert result == {"batchItemFailures": []}
    item = get_item(table)
    assert item["status"] == "DELIVERED"
    assert item["timestamp"] == CREATED_AT
    assert [entry["type"] for entry in item["events"]] == [name.capitalize()]
    logs, emf_lines = output(capsys)
    assert emf_lines == []
    assert logs[-1]["outcome"] == "recorded"


def test_engagement_history_is_capped_so_the_item_never_outgrows_dynamodb(handler, table, capsys):
    # GIVEN an item whose history already holds 50 entries
    entries = [
        {"M": {"type": {"S": "Open"}, "time": {"S": f"t{i}"}, "detail": {"S": "Open"}}}
        for i in range(50)
    ]
    put_item(table, status="DELIVERED", events={"L": entries})
    capsys.readouterr()
    # WHEN yet another Open arrives
    result = deliver(handler, feedback("open"))
    # THEN it is acknowledged but not appended
    assert result == {"batchItemFailures": []}
    assert len(get_item(table)["events"]) == 50
    assert output(capsys)[0][-1]["outcome"] == "history_full"


def test_a_lower_ranked_event_is_recorded_without_changing_the_status(handler, table):
    # GIVEN a complained-about email (rank 6)
    put_item(table, status="COMPLAINED")
    # WHEN a (late) Delivery arrives
    deliver(handler, feedback("delivery"))
    # THEN the status and its timestamp stay, the Delivery is in the history
    item = get_item(table)
    assert item["status"] == "COMPLAINED"
    assert item["timestamp"] == CREATED_AT
    assert [entry["type"] for entry in item["events"]] == ["Delivery"]
    assert item["updatedAt"] != "2026-11-27T12:00:00Z"


def test_equal_rank_never_replaces_the_first_failure(handler, table):
    # GIVEN a bounced email
    put_item(table, status="SENT")
    deliver(handler, feedback("bounce_permanent"))
    # WHEN a Reject (same rank 5) arrives
    deliver(handler, feedback("reject"))
    # THEN the first failure stands and the Reject's error is only in the history
    item = get_item(table)
    assert item["status"] == "BOUNCED"
    assert "error" not in item
    assert [entry["type"] for entry in item["events"]] == ["Bounce", "Reject"]


# --- 2. ordering and duplicates ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "final", "metrics"),
    [
        (("send", "delivery", "complaint"), "COMPLAINED", {"Deliveries": 1, "Complaints": 1}),
        (
            ("delivery_delay", "delivery", "bounce_permanent"),
            "BOUNCED",
            {"DeliveryDelays": 1, "Deliveries": 1, "Bounces": 1},
        ),
    ],
    ids=["send-delivery-complaint", "delay-delivery-bounce"],
)
def test_every_order_ends_in_the_highest_status_with_every_event_once(
    handler, table, capsys, names, final, metrics
):
    for number, order in enumerate(itertools.permutations(names)):
        order_id = f"ORD-PERMUTATION-{number}"
        # GIVEN a claimed item
        put_item(table, order_id=order_id)
        capsys.readouterr()
        # WHEN the events arrive in this order, one invocation each, then all again (at-least-once)
        events = [feedback(name, order_id) for name in order]
        results = [deliver(handler, event) for event in events]
        results.append(deliver(handler, *events))
        # THEN the highest-ranked status wins, every event is in the history exactly once
        assert all(result == {"batchItemFailures": []} for result in results), order
        item = get_item(table, order_id)
        assert item["status"] == final, order
        assert sorted(entry["type"] for entry in item["events"]) == sorted(
            feedback(name)["eventType"] for name in names
        ), order
        assert len(item["eventIds"]) == 3
        # and the metrics counted each event once, the redeliveries not at all
        logs, emf_lines = output(capsys)
        totals: dict = {}
        for line in emf_lines:
            for name, value in metric_values([line]).items():
                totals[name] = totals.get(name, 0) + value
        assert totals == metrics, order
        assert [log["outcome"] for log in logs[-3:]] == ["duplicate"] * 3


def test_the_same_event_twice_in_one_batch_is_recorded_and_counted_once(handler, table, capsys):
    # GIVEN a sent email
    put_item(table, status="SENT")
    capsys.readouterr()
    # WHEN SNS/SQS deliver the same Bounce twice in one batch
    result = deliver(handler, feedback("bounce_permanent"), feedback("bounce_permanent"))
    # THEN both records are acknowledged, the bounce is recorded and counted once
    assert result == {"batchItemFailures": []}
    assert len(get_item(table)["events"]) == 1
    logs, emf_lines = output(capsys)
    assert [log["outcome"] for log in logs] == ["applied", "duplicate"]
    assert metric_values(emf_lines) == {"Bounces": 1}


def test_the_same_event_raw_and_in_an_sns_envelope_is_recorded_once(handler, table):
    # GIVEN a sent email
    put_item(table, status="SENT")
    # WHEN one Delivery arrives raw and once more wrapped in an SNS envelope
    deliver(handler, feedback("delivery"))
    deliver(handler, sns_envelope(feedback("delivery")))
    # THEN it is one event
    assert len(get_item(table)["events"]) == 1


def test_two_distinct_delays_of_one_email_are_both_recorded(handler, table):
    # GIVEN a sent email
    put_item(table, status="SENT")
    first = feedback("delivery_delay")
    second = feedback("delivery_delay")
    second["deliveryDelay"]["timestamp"] = "2020-06-16T01:25:40.095Z"
    # WHEN SES reports two delays (different times)
    deliver(handler, first, second)
    # THEN they are two history entries: only true duplicates collapse
    assert [entry["time"] for entry in get_item(table)["events"]] == [
        "2020-06-16T00:25:40.095Z", "2020-06-16T01:25:40.095Z",
    ]


# --- 3. events that overtake the sender --------------------------------------------------------


def senders_sent_write(client, order_id: str = ORDER_ID) -> None:
    """The sender's `SENT` write as the contract describes it: only while it holds the claim."""
    client.update_item(
        TableName=TABLE,
        Key={"orderId": {"S": order_id}, "messageId": {"S": MESSAGE_ID}},
        UpdateExpression="SET #status = :sent, sesMessageId = :ses, #ts = :now",
        ConditionExpression="#status = :sending AND claimToken = :token",
        ExpressionAttributeNames={"#status": "status", "#ts": "timestamp"},
        ExpressionAttributeValues={
            ":sent": {"S": "SENT"}, ":sending": {"S": "SENDING"}, ":token": {"S": CLAIM_TOKEN},
            ":ses": {"S": SES_ID}, ":now": {"N": str(CREATED_AT + 1)},
        },
    )


@pytest.mark.parametrize("name", ["delivery", "bounce_permanent", "complaint", "send"])
def test_an_event_before_the_senders_sent_write_is_applied_and_not_overwritten(
    handler, table, name
):
    # GIVEN an item still SENDING: SES's event overtook the sender's SENT write
    put_item(table)
    # WHEN the event arrives first
    assert deliver(handler, feedback(name)) == {"batchItemFailures": []}
    applied = get_item(table)
    assert applied["status"] != "SENDING"
    # THEN the sender's conditional SENT write fails and leaves the item as the event set it
    with pytest.raises(ClientError) as error:
        senders_sent_write(table)
    assert error.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert get_item(table) == applied


def test_the_send_event_closes_the_crash_window(handler, table):
    # GIVEN a sender that died after SES accepted the email: SENDING with an expired claim
    put_item(table, claimExpiresAt={"N": str(CREATED_AT - 1)})
    # WHEN the Send event arrives
    deliver(handler, feedback("send"))
    # THEN the item is SENT with the SES id, so a retry's takeover (SENDING + expired) fails
    item = get_item(table)
    assert (item["status"], item["sesMessageId"]) == ("SENT", SES_ID)
    assert "claimExpiresAt" not in item
    with pytest.raises(ClientError):
        table.update_item(
            TableName=TABLE,
            Key={"orderId": {"S": ORDER_ID}, "messageId": {"S": MESSAGE_ID}},
            UpdateExpression="SET claimToken = :new",
            ConditionExpression="#status = :sending AND claimExpiresAt < :now",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":new": {"S": "claim-token-2"}, ":sending": {"S": "SENDING"},
                ":now": {"N": str(CREATED_AT + 600)},
            },
        )


def test_the_sender_keeps_its_own_ses_message_id(handler, table):
    # GIVEN an item the sender recorded SENT with its SES message id
    put_item(table, status="SENT", sesMessageId={"S": "sender-recorded-id"})
    # WHEN a Delivery arrives
    deliver(handler, feedback("delivery"))
    # THEN the id is not overwritten (if_not_exists)
    assert get_item(table)["sesMessageId"] == "sender-recorded-id"


# --- metrics and logs --------------------------------------------------------------------------


def test_one_emf_line_per_invocation_counts_each_kind(handler, table, capsys):
    # GIVEN seven sent emails, one per feedback kind, and an event for an order we never sent
    names = ["delivery", "bounce_permanent", "bounce_transient", "complaint", "reject",
             "rendering_failure", "delivery_delay"]
    for number, _ in enumerate(names):
        put_item(table, order_id=f"ORD-{number}", status="SENT")
    events = [feedback(name, f"ORD-{number}") for number, name in enumerate(names)]
    events.append(feedback("delivery", "ORD-NEVER-SENT"))
    capsys.readouterr()
    # WHEN they arrive in one batch
    assert deliver(handler, *events) == {"batchItemFailures": []}
    # THEN one EMF line, no dimensions, Count units, each metric counted
    _, emf_lines = output(capsys)
    assert len(emf_lines) == 1
    directive = emf_lines[0]["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [[]]
    assert {metric["Unit"] for metric in directive["Metrics"]} == {"Count"}
    assert metric_values(emf_lines) == {
        "Deliveries": 1, "Bounces": 2, "Complaints": 1, "Rejects": 1,
        "RenderingFailures": 1, "DeliveryDelays": 1, "UnmatchedFeedback": 1,
    }


def test_no_emf_line_when_nothing_was_counted(handler, table, capsys):
    # GIVEN a claimed item; WHEN only the Send event arrives (the sender counts EmailsSent)
    put_item(table)
    capsys.readouterr()
    deliver(handler, feedback("send"))
    # THEN no metric is published (zero-valued metrics are billed too)
    assert output(capsys)[1] == []


def test_logs_are_json_lines_with_masked_addresses(handler, table, capsys):
    # GIVEN a bounce whose diagnostic names the recipient
    put_item(table, status="SENT")
    capsys.readouterr()
    deliver(handler, feedback("notification_bounce"))
    out = capsys.readouterr().out
    # THEN no address appears in clear, the masked form does, and the line says what happened
    assert "jane@example.com" not in out
    assert "j***@example.com" in out
    (log,) = [line for line in map(json.loads, out.splitlines()) if "_aws" not in line]
    assert log["level"] == "INFO"
    assert log["outcome"] == "applied"
    assert log["orderId"] == ORDER_ID
    assert log["eventType"] == "Bounce"
    assert log["sqsMessageId"] == "msg-0"


def test_handler_imports_only_stdlib_and_boto3():
    # GIVEN the handler runs as ZipFile code: only the Lambda runtime's packages exist there
    tree = ast.parse(handler_path("ses_feedback_processor").read_text(encoding="utf-8"))
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    # THEN every import is stdlib or boto3/botocore
    assert imported - {"boto3", "botocore"} <= sys.stdlib_module_names
