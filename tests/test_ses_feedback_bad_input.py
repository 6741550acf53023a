"""Bad input and failures in `handlers/ses_feedback_processor.py`: every case logs a clear reason,
takes the right failure/ack decision, never crashes the batch and never creates an item.

- malformed (not an SES record we know): batch item failure, so it reaches the DLQ intact;
- unmatched (an SES record for an email this system did not send): acknowledged and counted
  as `UnmatchedFeedback` (retrying never helps);
- SES setup notices: acknowledged, not counted;
- DynamoDB errors: batch item failure (retried), the other records of the batch still processed.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from conftest import FakeContext, load_event
from test_ses_feedback_processor import (  # noqa: F401  (fixtures are used by name)
    ORDER_ID,
    aws,
    all_items,
    b64,
    deliver,
    feedback,
    get_item,
    handler,
    metric_values,
    output,
    put_item,
    sns_envelope,
    table,
)

MAX_BODY_BYTES = 256 * 1024


def without(path: str, name: str = "bounce_permanent") -> dict:
    """A fixture with the dotted `path` removed."""
    event = feedback(name)
    *parents, last = path.split(".")
    target = event
    for part in parents:
        target = target[part]
    del target[last]
    return event


def replaced(path: str, value, name: str = "bounce_permanent") -> dict:
    """A fixture with the dotted `path` set to `value`."""
    event = feedback(name)
    *parents, last = path.split(".")
    target = event
    for part in parents:
        target = target[part]
    target[last] = value
    return event


def padded_to(size: int) -> str:
    """A valid Delivery body of exactly `size` bytes (padding in smtpResponse)."""
    event = feedback("delivery")
    event["delivery"]["smtpResponse"] = ""
    base = len(json.dumps(event).encode("utf-8"))
    event["delivery"]["smtpResponse"] = "x" * (size - base)
    body = json.dumps(event)
    assert len(body.encode("utf-8")) == size
    return body


BAD_BODIES = load_event("feedback/bad_bodies.json")
MALFORMED = [
    (case, lambda body=spec["body"]: body, spec["reason"])
    for case, spec in BAD_BODIES["malformed"].items()
] + [
    ("deeply-nested-json", lambda: "[" * 100_000 + "]" * 100_000, "body not a JSON object"),
    ("over-256-kb", lambda: padded_to(MAX_BODY_BYTES + 1), "body over 256 KB"),
    ("no-event-type", lambda: without("eventType"), "unknown event type None"),
    ("unknown-event-type", lambda: replaced("eventType", "Bounced"),
     "unknown event type 'Bounced'"),
    ("event-type-not-a-string", lambda: replaced("eventType", 5), "unknown event type 5"),
    (
        "notification-type-without-that-format",
        lambda: {**without("eventType", "open"), "notificationType": "Open"},
        "unknown event type 'Open'",
    ),
    ("missing-mail", lambda: without("mail"), "mail.messageId missing"),
    ("mail-not-an-object", lambda: replaced("mail", "x"), "mail.messageId missing"),
    ("missing-mail-message-id", lambda: without("mail.messageId"), "mail.messageId missing"),
    ("empty-mail-message-id", lambda: replaced("mail.messageId", ""), "mail.messageId missing"),
    ("bounce-without-bounce-object", lambda: without("bounce"), "no Bounce object"),
    (
        "delivery-object-not-an-object",
        lambda: replaced("delivery", ["x"], "delivery"),
        "no Delivery object",
    ),
]


@pytest.mark.parametrize(("build", "reason"), [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_a_malformed_body_is_reported_for_the_dlq_with_its_reason(
    handler, table, capsys, build, reason
):
    # GIVEN a claimed item and a body that is not an SES record we know
    put_item(table)
    before = all_items(table)
    capsys.readouterr()
    # WHEN it arrives beside a good record
    result = deliver(handler, build(), feedback("send"))
    # THEN only it is a batch item failure (it reaches the DLQ intact), with a logged reason
    assert result == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}
    logs, emf_lines = output(capsys)
    assert logs[0]["level"] == "ERROR"
    assert logs[0]["outcome"] == "malformed"
    assert reason in logs[0]["reason"]
    # and it changed nothing: the good record was applied, no item was created
    assert [item["orderId"] for item in all_items(table)] == [item["orderId"] for item in before]
    assert get_item(table)["status"] == "SENT"
    assert metric_values(emf_lines) == {}


def test_a_body_of_exactly_256_kb_is_processed(handler, table):
    # GIVEN the largest body SQS can carry
    put_item(table, status="SENT")
    # WHEN it arrives THEN it is applied (the limit is inclusive)
    assert deliver(handler, padded_to(MAX_BODY_BYTES)) == {"batchItemFailures": []}
    assert get_item(table)["status"] == "DELIVERED"


UNMATCHED = [
    ("identity-notification-without-tags", lambda: _untagged("notification_bounce"),
     "tag orderId missing"),
    ("no-tags", lambda: without("mail.tags"), "tag orderId missing"),
    ("only-ses-tags", lambda: replaced("mail.tags", {"ses:configuration-set": ["config-set"]}),
     "tag orderId missing"),
    ("missing-message-id-tag", lambda: without("mail.tags.messageId"), "tag messageId missing"),
    ("empty-tag-list", lambda: replaced("mail.tags.orderId", []), "tag orderId missing"),
    ("tags-not-a-map", lambda: replaced("mail.tags", ["orderId"]), "tag orderId missing"),
    ("tag-not-base64", lambda: replaced("mail.tags.orderId", ["ORD@2026!"]),
     "tag orderId undecodable"),
    ("tag-impossible-length", lambda: replaced("mail.tags.orderId", ["abcde"]),
     "tag orderId undecodable"),
    ("tag-not-utf8", lambda: replaced("mail.tags.orderId", ["__79"]),
     "tag orderId undecodable"),
    ("tag-with-padding", lambda: replaced("mail.tags.orderId", [b64("ORD-1") + "="]),
     "tag orderId undecodable"),
    ("tag-in-standard-alphabet", lambda: replaced("mail.tags.orderId", ["Pz8+"]),
     "tag orderId undecodable"),
    ("tag-non-ascii", lambda: replaced("mail.tags.orderId", ["ÖRD"]),
     "tag orderId undecodable"),
    ("no-such-item", lambda: feedback("bounce_permanent", "ORD-NEVER-SENT"),
     "no item"),
    ("no-such-item-engagement", lambda: feedback("open", "ORD-NEVER-SENT"),
     "no item"),
    ("no-such-item-in-sns-envelope", lambda: sns_envelope(feedback("complaint", "ORD-NEVER-SENT")),
     "no item"),
]


def _untagged(name: str) -> dict:
    event = feedback(name)
    del event["mail"]["tags"]
    return event


@pytest.mark.parametrize(("build", "reason"), [case[1:] for case in UNMATCHED],
                         ids=[case[0] for case in UNMATCHED])
def test_an_event_for_an_email_we_did_not_send_is_acknowledged_and_counted(
    handler, table, capsys, build, reason
):
    # GIVEN a claimed item
    put_item(table)
    before = all_items(table)
    capsys.readouterr()
    # WHEN an SES record arrives whose tags are missing, undecodable or name no item
    result = deliver(handler, build())
    # THEN it is acknowledged (retrying never helps), logged with its reason and counted
    assert result == {"batchItemFailures": []}
    logs, emf_lines = output(capsys)
    assert (logs[0]["level"], logs[0]["outcome"], logs[0]["reason"]) == (
        "WARNING", "unmatched", reason,
    )
    assert metric_values(emf_lines) == {"UnmatchedFeedback": 1}
    # and no item was created or changed
    assert all_items(table) == before


@pytest.mark.parametrize("body", list(BAD_BODIES["ignored"].values()),
                         ids=list(BAD_BODIES["ignored"]))
def test_ses_setup_notices_are_acknowledged_not_dead_lettered(handler, table, capsys, body):
    # GIVEN the notice SES publishes when an event destination / identity topic is set up
    capsys.readouterr()
    # WHEN it arrives THEN it is acknowledged (else every deploy would fill the DLQ), not counted
    assert deliver(handler, body) == {"batchItemFailures": []}
    logs, emf_lines = output(capsys)
    assert logs[0]["outcome"] == "ignored"
    assert emf_lines == []
    assert all_items(table) == []


@pytest.mark.parametrize("event", [{"Records": []}, {}], ids=["empty-records", "no-records-key"])
def test_an_event_without_records_returns_no_failures(handler, table, capsys, event):
    # WHEN Lambda passes no records THEN nothing fails, a warning says so, no metric is published
    assert handler.lambda_handler(event, FakeContext()) == {"batchItemFailures": []}
    logs, emf_lines = output(capsys)
    assert logs == [{"level": "WARNING", "message": "no records in event", "outcome": "empty"}]
    assert emf_lines == []


def test_a_record_without_a_body_is_malformed(handler, table, capsys):
    # GIVEN a record with no body WHEN it arrives THEN it fails with a reason, nothing crashes
    event = {"Records": [{"messageId": "msg-0"}]}
    assert handler.lambda_handler(event, FakeContext()) == {
        "batchItemFailures": [{"itemIdentifier": "msg-0"}]
    }
    assert output(capsys)[0][0]["reason"] == "body not a JSON object"


# --- DynamoDB failures -------------------------------------------------------------------------


def failing_for(handler, patch, order_id: str, error: Exception) -> None:
    """Make UpdateItem raise `error` for `order_id` only; other items go to moto."""
    real = handler.dynamodb.update_item

    def update_item(**kwargs):
        if kwargs["Key"]["orderId"]["S"] == order_id:
            raise error
        return real(**kwargs)

    patch.setattr(handler.dynamodb, "update_item", update_item)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                "Message": "Rate exceeded"}}, "UpdateItem"), "retry"),
        (ClientError({"Error": {"Code": "InternalServerError", "Message": "boom"},
                      "ResponseMetadata": {"HTTPStatusCode": 500}}, "UpdateItem"), "retry"),
        (EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
         "retry"),
        (RuntimeError("unexpected for jane@example.com"), "retry"),
    ],
    ids=["throughput-exceeded", "internal-server-error", "network", "unexpected-exception"],
)
def test_a_dynamodb_failure_fails_only_that_record_so_it_is_retried(
    handler, table, capsys, monkeypatch, error, outcome
):
    # GIVEN two sent emails, and DynamoDB failing for the second one
    put_item(table, status="SENT")
    put_item(table, order_id="ORD-THROTTLED", status="SENT")
    failing_for(handler, monkeypatch, "ORD-THROTTLED", error)
    capsys.readouterr()
    # WHEN both get a Delivery in one batch
    result = deliver(handler, feedback("delivery"), feedback("delivery", "ORD-THROTTLED"))
    # THEN only the failed record is retried, the other is applied and counted
    assert result == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}
    assert get_item(table)["status"] == "DELIVERED"
    assert get_item(table, "ORD-THROTTLED")["status"] == "SENT"
    logs, emf_lines = output(capsys)
    assert (logs[1]["level"], logs[1]["outcome"]) == ("ERROR", outcome)
    assert type(error).__name__ in logs[1]["reason"]
    assert "jane@example.com" not in json.dumps(logs)
    assert metric_values(emf_lines) == {"Deliveries": 1}


def test_the_same_event_after_a_failed_attempt_is_applied_on_retry(handler, table, monkeypatch):
    # GIVEN a Bounce whose first attempt hit throttling
    put_item(table, status="SENT")
    throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}},
                            "UpdateItem")
    with monkeypatch.context() as patch:
        failing_for(handler, patch, ORDER_ID, throttled)
        assert deliver(handler, feedback("bounce_permanent"))["batchItemFailures"]
    # WHEN SQS redelivers it THEN it is applied (nothing was half-written the first time)
    assert deliver(handler, feedback("bounce_permanent")) == {"batchItemFailures": []}
    item = get_item(table)
    assert (item["status"], len(item["events"])) == ("BOUNCED", 1)
