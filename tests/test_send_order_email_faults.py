"""Failures at each step of claim -> send -> record, injected into the handler's own clients.

Before SES accepts the email, a retryable failure releases the claim and the record is retried, so
the order is emailed exactly once in the end. When it is unknown whether SES accepted it (a lost
response, a 5xx, an unknown error), the claim is kept: the retry comes after it expired, when the
SES Send event has set SENT if SES did accept. After SES accepted it, nothing may cause a second
email. One broken record never fails the batch. What each answer of SES itself means for the order
is in test_send_order_email_ses_errors.py.
"""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from moto import mock_aws

from send_email_harness import Stack, client_error, order_body

ORDER_ID = "ORD-20261127-0001"


@pytest.fixture
def stack(monkeypatch):
    with mock_aws():
        yield Stack.start(monkeypatch, production=True)


def expire_claim(stack):
    """Time passes: the SQS retry comes after the visibility timeout, when any claim has expired."""
    stack.set_item(ORDER_ID, claimExpiresAt=int(time.time()) - 1)


# --- retryable, before SES accepted ------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        client_error("ProvisionedThroughputExceededException", "UpdateItem"),
        client_error("ThrottlingException", "UpdateItem"),
        client_error("InternalServerError", "UpdateItem", status=500),
        EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ],
    ids=["throughput", "throttling", "internal-500", "connection"],
)
def test_failed_claim_is_retried_and_the_order_is_then_emailed_once(stack, monkeypatch, error):
    # GIVEN DynamoDB fails the claim once
    stack.inject(monkeypatch, "dynamodb", "update_item", error)
    # WHEN the order arrives
    first = stack.invoke(order_body(), order_body(orderId="ORD-OTHER"))
    # THEN only that record is reported for retry; no email, no claim left behind
    assert first.failures == ["msg-0"]
    assert first.log_for("msg-0")["outcome"] == "retry"
    assert stack.item(ORDER_ID) is None
    assert [e.destinations["ToAddresses"] for e in stack.emails] == [["ada@example.com"]]
    # WHEN SQS redelivers it THEN it is emailed, once
    retry = stack.invoke(order_body())
    assert retry.failures == []
    assert len(stack.emails) == 2 and stack.item(ORDER_ID)["status"] == "SENT"


# SES definitely did not take the email: throttled (codes of other SES APIs and SDKs), or no
# connection before the request was sent. Every answer of SES v1 SendEmail itself, played by the
# SES model, is in test_send_order_email_ses_errors.py.
DEFINITE = [
    (client_error("ThrottlingException", "SendEmail"), "ThrottlingException"),
    (client_error("LimitExceeded", "SendEmail"), "LimitExceeded"),
    (EndpointConnectionError(endpoint_url="https://email.us-east-1.amazonaws.com"),
     "EndpointConnectionError"),
    (ConnectTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com"),
     "ConnectTimeoutError"),
]

# SES may have accepted the email: the response was lost, SES failed on its side, or the error is
# one we do not know. Unknown codes are deliberately not FAILED: a wrong FAILED loses the order.
AMBIGUOUS = [
    (ReadTimeoutError(endpoint_url="https://email.us-east-1.amazonaws.com"), "ReadTimeoutError"),
    (ConnectionClosedError(endpoint_url="https://email.us-east-1.amazonaws.com"),
     "ConnectionClosedError"),
    (NoCredentialsError(), "NoCredentialsError"),
    (client_error("ServiceUnavailable", "SendEmail", status=503), "ServiceUnavailable"),
    (client_error("InternalFailure", "SendEmail", status=500), "InternalFailure"),
    (client_error("SomethingNewFromAws", "SendEmail"), "SomethingNewFromAws"),
    (RuntimeError("bug in a client plugin"), "RuntimeError"),
]


@pytest.mark.parametrize("error, code", DEFINITE, ids=[code for _, code in DEFINITE])
def test_send_that_definitely_failed_releases_the_claim_so_the_retry_sends_exactly_once(
        stack, monkeypatch, error, code):
    # GIVEN SES refuses the send once, in a way that proves it did not take the email
    stack.inject(monkeypatch, "ses", "send_email", error)
    # WHEN the order arrives
    first = stack.invoke(order_body())
    # THEN the record is retried, the failure counted, and the claim released (it expires now)
    assert first.failures == ["msg-0"]
    assert first.metrics == {"SendFailures": 1}
    assert first.log_for("msg-0")["error"] == code
    released = stack.item(ORDER_ID)
    assert released["status"] == "SENDING" and released["claimExpiresAt"] <= time.time()
    assert released["error"].startswith(f"{code}: ")
    assert [event["type"] for event in released["events"]] == ["Claimed", "Released"]
    assert released["events"][1]["detail"] == code
    assert stack.emails == []
    # WHEN SQS redelivers it (no waiting: the claim was released)
    retry = stack.invoke(order_body())
    # THEN the order is emailed exactly once
    assert retry.failures == []
    assert len(stack.emails) == 1
    item = stack.item(ORDER_ID)
    assert item["status"] == "SENT" and item["attempts"] == 2


@pytest.mark.parametrize("error, code", AMBIGUOUS, ids=[code for _, code in AMBIGUOUS])
def test_ambiguous_send_failure_keeps_the_claim_and_the_retry_sends_only_after_it_expires(
        stack, monkeypatch, error, code):
    # GIVEN the SES call fails in a way that does not prove SES refused the email
    stack.inject(monkeypatch, "ses", "send_email", error)
    # WHEN the order arrives
    first = stack.invoke(order_body())
    # THEN the record is retried and the failure counted, but the claim is NOT released: SES may
    # have accepted the email
    assert first.failures == ["msg-0"]
    assert first.metrics == {"SendFailures": 1}
    line = first.log_for("msg-0")
    assert (line["level"], line["outcome"], line["error"]) == ("WARNING", "retry", code)
    kept = stack.item(ORDER_ID)
    assert kept["status"] == "SENDING" and kept["claimExpiresAt"] > time.time()
    assert [event["type"] for event in kept["events"]] == ["Claimed"]
    # WHEN a copy arrives while the claim is live THEN it sends nothing
    assert stack.invoke(order_body()).logs[0]["outcome"] == "duplicate"
    assert stack.emails == []
    # WHEN the retry arrives after the visibility timeout (claim expired) and SES had NOT sent it
    expire_claim(stack)
    retry = stack.invoke(order_body())
    # THEN the retry takes the claim over and sends, once
    assert retry.failures == []
    assert len(stack.emails) == 1
    assert stack.item(ORDER_ID)["status"] == "SENT"


def test_ses_accepting_an_email_whose_response_was_lost_never_leads_to_a_second_email(
        stack, monkeypatch):
    # GIVEN SES accepts the email but its response is lost (read timeout after the request went)
    attempts = []

    def lose_the_response(request, event_name, **kwargs):
        if event_name.endswith(".SendEmail"):
            attempts.append(request.url)
            raise ReadTimeoutError(endpoint_url=request.url)

    # Registered last on the generic event, so it runs after moto has accepted the request:
    # exactly SES accepting it and the answer being lost on the way back.
    stack.handler.ses.meta.events.register_last("before-send", lose_the_response)
    # WHEN the order arrives
    first = stack.invoke(order_body())
    # THEN botocore did not resend SendEmail (one attempt only: a resend would be a 2nd email)
    assert len(attempts) == 1 and len(stack.emails) == 1
    # AND the record is retried with the claim kept, since the outcome is unknown
    assert first.failures == ["msg-0"]
    assert first.log_for("msg-0")["error"] == "ReadTimeoutError"
    assert stack.item(ORDER_ID)["claimExpiresAt"] > time.time()
    stack.handler.ses.meta.events.unregister("before-send", lose_the_response)
    # WHEN the SES Send event reaches the feedback processor (it sets SENT, ends the claim) and
    # SQS redelivers the record after the visibility timeout
    stack.set_item(ORDER_ID, status="SENT", sesMessageId=stack.emails[0].id)
    expire_claim(stack)
    retry = stack.invoke(order_body())
    # THEN the retry is a duplicate: one email, ever
    assert retry.failures == []
    assert retry.logs[0]["existingStatus"] == "SENT"
    assert len(stack.emails) == 1


def test_a_failed_release_still_retries_and_the_claim_expires_on_its_own(stack, monkeypatch):
    # GIVEN SES throttles AND the claim release fails too (second UpdateItem)
    stack.inject(monkeypatch, "ses", "send_email", client_error("Throttling", "SendEmail"))
    stack.inject(monkeypatch, "dynamodb", "update_item",
                 client_error("ProvisionedThroughputExceededException", "UpdateItem"), calls={2})
    # WHEN the order arrives THEN the record is still reported for retry
    first = stack.invoke(order_body())
    assert first.failures == ["msg-0"]
    line = first.log_for("msg-0")
    assert (line["error"], line["writeError"]) == (
        "Throttling", "ProvisionedThroughputExceededException")
    assert stack.item(ORDER_ID)["claimExpiresAt"] > time.time()
    # WHEN the retry comes after the claim expired THEN it sends, once
    expire_claim(stack)
    assert stack.invoke(order_body()).failures == []
    assert len(stack.emails) == 1


# --- after SES accepted ------------------------------------------------------------------------


def test_failure_recording_sent_never_leads_to_a_second_email(stack, monkeypatch):
    # GIVEN SES accepts the email but writing SENT fails (second UpdateItem)
    stack.inject(monkeypatch, "dynamodb", "update_item",
                 client_error("ProvisionedThroughputExceededException", "UpdateItem"), calls={2})
    # WHEN the order arrives
    run = stack.invoke(order_body())
    # THEN the record is acknowledged (the email is out) and the failure is counted and logged
    assert run.failures == []
    assert len(stack.emails) == 1
    assert run.metrics["EmailsSent"] == 1 and run.metrics["RecordFailures"] == 1
    line = run.log_for("msg-0")
    assert line["level"] == "ERROR" and line["outcome"] == "sent"
    assert line["sesMessageId"] == stack.emails[0].id
    assert stack.item(ORDER_ID)["status"] == "SENDING"
    # WHEN a copy arrives while the claim is live THEN nothing is sent
    assert stack.invoke(order_body()).logs[0]["outcome"] == "duplicate"
    # WHEN the SES Send event reaches the feedback processor (it sets SENT and ends the claim)
    stack.set_item(ORDER_ID, status="SENT", sesMessageId=stack.emails[0].id)
    expire_claim(stack)
    # THEN copies arriving later are duplicates too: one email, ever
    assert stack.invoke(order_body()).logs[0]["existingStatus"] == "SENT"
    assert len(stack.emails) == 1


def test_feedback_event_recorded_first_is_not_overwritten_by_sent(stack, monkeypatch):
    # GIVEN the SES Delivery event reaches the feedback processor before the sender records SENT
    real_send = stack.handler.ses.send_email

    def send_then_feedback_arrives(**kwargs):
        response = real_send(**kwargs)
        stack.set_item(ORDER_ID, status="DELIVERED", sesMessageId=response["MessageId"])
        return response

    monkeypatch.setattr(stack.handler.ses, "send_email", send_then_feedback_arrives)
    # WHEN the order is handled
    run = stack.invoke(order_body())
    # THEN DELIVERED (rank 4) stays; the email counts as sent; nothing is logged as a failure
    assert run.failures == []
    assert stack.item(ORDER_ID)["status"] == "DELIVERED"
    assert run.metrics["EmailsSent"] == 1 and "RecordFailures" not in run.metrics
    assert run.log_for("msg-0")["level"] == "INFO"
    assert len(stack.emails) == 1


# --- permanent SES errors (every answer of SES itself: test_send_order_email_ses_errors.py) -----


def test_when_recording_failed_fails_the_record_is_retried_and_failed_later(stack, monkeypatch):
    # GIVEN SES rejects the email AND writing FAILED fails
    stack.inject(monkeypatch, "ses", "send_email",
                 client_error("MessageRejected", "SendEmail", message="Illegal address"),
                 calls={1, 2})
    stack.inject(monkeypatch, "dynamodb", "update_item",
                 client_error("ProvisionedThroughputExceededException", "UpdateItem"), calls={2})
    # WHEN the order arrives THEN it is retried rather than left SENDING for ever
    assert stack.invoke(order_body()).failures == ["msg-0"]
    # WHEN the retry comes after the claim expired THEN FAILED is recorded
    expire_claim(stack)
    assert stack.invoke(order_body()).failures == []
    assert stack.item(ORDER_ID)["status"] == "FAILED"
    assert stack.emails == []


# --- one broken record, configuration --------------------------------------------------------


def test_an_unexpected_error_in_one_record_never_fails_the_batch(stack, monkeypatch):
    # GIVEN a bug that breaks rendering for one particular order
    real_render = stack.handler.render_email

    def render(order, sandbox):
        if order["orderId"] == "ORD-BROKEN":
            raise KeyError("template bug")
        return real_render(order, sandbox)

    monkeypatch.setattr(stack.handler, "render_email", render)
    # WHEN it arrives between two good orders
    run = stack.invoke(order_body(orderId="ORD-1"), order_body(orderId="ORD-BROKEN"),
                       order_body(orderId="ORD-2"))
    # THEN only it is retried, its reason is logged, and the others go out
    assert run.failures == ["msg-1"]
    assert run.log_for("msg-1") | {"error": "KeyError"} == run.log_for("msg-1")
    assert run.log_for("msg-1")["outcome"] == "retry"
    assert len(stack.emails) == 2
    # AND it left no claim behind (rendering happens before the claim)
    assert stack.item("ORD-BROKEN") is None


def test_sandbox_without_a_test_address_retries_instead_of_emailing_the_customer(
        monkeypatch):
    # GIVEN sandbox mode with TEST_EMAIL_ADDRESS empty (a misconfigured stack)
    with mock_aws():
        stack = Stack.start(monkeypatch, production=False, TEST_EMAIL_ADDRESS="")
        run = stack.invoke(order_body())
        # THEN nothing is sent to anyone and the order stays on the queue (then the DLQ)
        assert run.failures == ["msg-0"]
        assert stack.emails == [] and stack.item(ORDER_ID) is None
        assert "TEST_EMAIL_ADDRESS" in run.log_for("msg-0")["reason"]
