"""Exactly one email per order under at-least-once delivery (DESIGN.md, "Idempotency").

The same order arrives three times in one batch, across invocations, and while another invocation
holds the claim; an invocation dies holding the claim and a retry takes over once it expires.
"""

from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from conftest import FakeContext
from send_email_harness import Crash, Stack, order_body

ORDER_ID = "ORD-20261127-0001"


@pytest.fixture
def stack(monkeypatch):
    with mock_aws():
        yield Stack.start(monkeypatch, production=True)


def test_same_order_three_times_in_one_batch_sends_one_email(stack):
    # GIVEN one order delivered three times in the same batch
    # WHEN the batch is handled
    run = stack.invoke(order_body(), order_body(), order_body())
    # THEN one email goes out; the copies are acknowledged (not retried) and counted
    assert len(stack.emails) == 1
    assert run.failures == []
    assert [line["outcome"] for line in run.logs] == ["sent", "duplicate", "duplicate"]
    assert run.metrics["EmailsSent"] == 1 and run.metrics["DuplicatesSkipped"] == 2
    assert stack.item(ORDER_ID)["attempts"] == 1


def test_redelivered_order_sends_one_email_because_messageid_is_deterministic(stack):
    # GIVEN one order delivered in three separate invocations (SQS at-least-once, SNS retries)
    runs = [stack.invoke(order_body()) for _ in range(3)]
    # THEN only the first sends; the later ones find the SENT item and skip
    assert len(stack.emails) == 1
    assert [run.logs[0]["outcome"] for run in runs] == ["sent", "duplicate", "duplicate"]
    assert runs[2].logs[0]["existingStatus"] == "SENT"
    assert all(run.failures == [] for run in runs)
    item = stack.item(ORDER_ID)
    assert item["status"] == "SENT" and item["attempts"] == 1
    assert [event["type"] for event in item["events"]] == ["Claimed", "Accepted"]


def test_a_uuid_message_id_per_attempt_would_send_duplicates(stack, monkeypatch):
    # GIVEN the seed's defect: a fresh uuid4 messageId per attempt
    monkeypatch.setattr(stack.handler, "message_id_for", lambda order_id: str(uuid.uuid4()))
    # WHEN the same order is delivered twice
    stack.invoke(order_body())
    stack.invoke(order_body())
    # THEN two emails go out: the tests above would catch that regression
    assert len(stack.emails) == 2


def test_duplicate_arriving_while_the_claim_is_live_is_acknowledged_without_sending(
        stack, monkeypatch):
    # GIVEN an invocation that has claimed the order and is inside its SES call
    real_send = stack.handler.ses.send_email
    concurrent = []

    def send_while_a_copy_arrives(**kwargs):
        # WHEN a copy of the order is handled by another invocation at that moment
        concurrent.append(stack.invoke(order_body()))
        return real_send(**kwargs)

    monkeypatch.setattr(stack.handler.ses, "send_email", send_while_a_copy_arrives)
    first = stack.invoke(order_body())
    # THEN the copy is acknowledged as a duplicate of an in-flight claim and sends nothing
    [copy] = concurrent
    assert copy.failures == []
    assert copy.logs[0]["outcome"] == "duplicate"
    assert copy.logs[0]["existingStatus"] == "SENDING"
    # AND the holder sends the one email
    assert first.failures == []
    assert len(stack.emails) == 1
    assert stack.item(ORDER_ID)["status"] == "SENT"


def test_claim_left_by_a_dead_invocation_is_taken_over_only_after_it_expires(stack, monkeypatch):
    # GIVEN an invocation that claimed the order and died inside the SES call (timeout, OOM)
    stack.inject(monkeypatch, "ses", "send_email", Crash("invocation died"))
    with pytest.raises(Crash):
        stack.invoke(order_body())
    stale = stack.item(ORDER_ID)
    assert stale["status"] == "SENDING" and stale["claimExpiresAt"] > time.time()
    assert stack.emails == []
    # WHEN a copy arrives while that claim is still live THEN it does not send
    early = stack.invoke(order_body())
    assert early.logs[0]["outcome"] == "duplicate" and stack.emails == []
    # WHEN the message is retried after the claim expired (SQS visibility timeout > claim lifetime)
    stack.set_item(ORDER_ID, claimExpiresAt=int(time.time()) - 1)
    retry = stack.invoke(order_body())
    # THEN the retry takes the claim over and sends exactly once
    assert retry.failures == [] and retry.logs[0]["outcome"] == "sent"
    assert len(stack.emails) == 1
    item = stack.item(ORDER_ID)
    assert item["status"] == "SENT" and item["attempts"] == 2
    assert item["claimToken"] != stale["claimToken"]
    assert item["createdAt"] == stale["createdAt"] and item["ttl"] == stale["ttl"]
    assert [event["type"] for event in item["events"]] == ["Claimed", "Claimed", "Accepted"]
    # AND later copies are duplicates of the SENT item
    assert stack.invoke(order_body()).logs[0]["outcome"] == "duplicate"
    assert len(stack.emails) == 1


@pytest.mark.parametrize(
    "remaining_ms, lifetime",
    [
        (30_000, 40),  # a fresh 30 s invocation: its remaining time + the 10 s margin
        (14_000, 24),  # close to the time budget's limit (13 s): the claim still outlives it
        (900_000, 180),  # a 15-minute function: capped at the queue's visibility timeout
    ],
)
def test_claim_outlives_its_invocation_but_never_the_queue_visibility_timeout(
        stack, monkeypatch, remaining_ms, lifetime):
    # GIVEN a warm container (its sending rate already read, so the record's time budget is
    # the 13 s worst case alone)
    stack.handler.pacer.read_rate({})
    # AND an invocation with `remaining_ms` left that claims the order and then dies
    stack.inject(monkeypatch, "ses", "send_email", Crash("invocation died"))
    before = int(time.time())
    with pytest.raises(Crash):
        stack.invoke(order_body(), context=FakeContext(remaining_ms=remaining_ms))
    after = int(time.time())
    # THEN its claim expires `lifetime` seconds after it was taken
    item = stack.item(ORDER_ID)
    assert before + lifetime <= item["claimExpiresAt"] <= after + lifetime
    assert item["events"][0] == {**item["events"][0], "type": "Claimed", "detail": "req-00000000"}


def test_a_claim_resent_by_botocore_after_a_lost_response_is_recognised_as_ours(
        stack, monkeypatch):
    # GIVEN DynamoDB applies the claim but its response is lost (read timeout), so botocore's
    # standard retries resend the same UpdateItem, which now fails its condition on our own item
    attempts = []

    def lose_the_first_response(request, event_name, **kwargs):
        if event_name.endswith(".UpdateItem"):
            attempts.append(event_name)
            if len(attempts) == 1:
                raise ReadTimeoutError(endpoint_url=request.url)

    # Registered last on the generic event, so it runs after moto has applied the request.
    stack.handler.dynamodb.meta.events.register_last("before-send", lose_the_first_response)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # botocore's retry back-off
    # WHEN the order arrives
    run = stack.invoke(order_body())
    # THEN the resend came back ConditionalCheckFailed with our own claim token, so the claim
    # is ours: the email is sent once, not skipped as a duplicate (which would lose the order)
    assert attempts[:2] == ["before-send.dynamodb.UpdateItem"] * 2
    assert run.failures == [] and run.logs[0]["outcome"] == "sent"
    assert "DuplicatesSkipped" not in run.metrics
    assert len(stack.emails) == 1
    item = stack.item(ORDER_ID)
    assert item["status"] == "SENT" and item["attempts"] == 1


def test_a_claim_that_failed_its_condition_on_another_attempts_token_is_a_duplicate(
        stack, monkeypatch):
    # GIVEN the claim write fails its condition and the item it returns holds ANOTHER token
    real_update = stack.handler.dynamodb.update_item
    calls = []

    def someone_else_holds_it(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            response = {"Error": {"Code": "ConditionalCheckFailedException", "Message": "x"},
                        "Item": {"claimToken": {"S": "another-attempt"},
                                 "status": {"S": "SENDING"}}}
            raise ClientError(response, "UpdateItem")
        return real_update(**kwargs)

    monkeypatch.setattr(stack.handler.dynamodb, "update_item", someone_else_holds_it)
    # WHEN the order arrives THEN it is acknowledged as a duplicate and nothing is sent
    run = stack.invoke(order_body())
    assert run.failures == [] and run.logs[0]["outcome"] == "duplicate"
    assert run.logs[0]["existingStatus"] == "SENDING"
    assert stack.emails == []
    # AND the claim asked for the item as it was, so no extra read was needed
    assert calls[0]["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
