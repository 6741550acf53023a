"""The time budget (DESIGN.md, "Time budget"): a function that times out fails its whole batch, so
each handler starts a record only while the remaining time covers one record's worst case, and
returns the records it did not start as batch item failures. One record's worst case, computed
from the clients' own timeouts and attempts, is well inside the function's timeout in the
template."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from conftest import FakeContext, load_handler, sqs_event
from send_email_harness import Stack, env, order_body
from test_ses_feedback_processor import aws, feedback, put_item, table  # noqa: F401  (fixtures)

FUNCTIONS = {"send_order_email": "LambdaSendOrderEmail",
             "ses_feedback_processor": "LambdaSesFeedbackProcessor"}


class RunningClock(FakeContext):
    """A Lambda context whose remaining time shrinks by `seconds_per_call` at each look."""

    def __init__(self, remaining_ms: int, seconds_per_call: float):
        super().__init__(remaining_ms=remaining_ms)
        self.seconds_per_call = seconds_per_call

    def get_remaining_time_in_millis(self) -> int:
        remaining = self._remaining_ms
        self._remaining_ms -= int(self.seconds_per_call * 1000)
        return remaining


def worst_case(client) -> float:
    """One call's worst case from the client's effective config, as botocore applies it: every
    attempt times out connecting and reading; standard mode backs off up to 2**(n-1) s (<= 20)."""
    config = client.meta.config
    attempts = config.retries["total_max_attempts"]
    backoff = sum(min(2 ** n, 20) for n in range(attempts - 1))
    return attempts * (config.connect_timeout + config.read_timeout) + backoff


@pytest.fixture
def sender(monkeypatch):
    for name, value in env(production=True).items():
        monkeypatch.setenv(name, value)
    return load_handler("send_order_email")


@pytest.fixture
def processor(monkeypatch):
    monkeypatch.setenv("EMAIL_DELIVERIES_TABLE", "test-email-deliveries")
    monkeypatch.setenv("METRICS_NAMESPACE", "test/EmailNotifications")
    return load_handler("ses_feedback_processor")


# --- the arithmetic -----------------------------------------------------------------------------

def test_send_record_worst_case_is_its_clients_worst_case_and_well_inside_the_timeout(
        template, sender):
    # claim + record (DynamoDB), SendEmail (SES), and a second for the CPU work
    expected = 2 * worst_case(sender.dynamodb) + worst_case(sender.ses) + 1
    assert sender.RECORD_WORST_CASE_SECONDS == expected == 13
    timeout = template["Resources"]["LambdaSendOrderEmail"]["Properties"]["Timeout"]
    assert sender.RECORD_WORST_CASE_SECONDS <= timeout / 2
    # SES: one attempt (a resend could be a second email); DynamoDB: one retry
    assert sender.ses.meta.config.retries["total_max_attempts"] == 1
    assert sender.dynamodb.meta.config.retries["total_max_attempts"] == 2


def test_feedback_record_worst_case_is_its_clients_worst_case_and_well_inside_the_timeout(
        template, processor):
    # apply the status + append to the history: two writes, and half a second of CPU work
    expected = 2 * worst_case(processor.dynamodb) + 0.5
    assert processor.RECORD_WORST_CASE_SECONDS == expected == 2.5
    timeout = template["Resources"]["LambdaSesFeedbackProcessor"]["Properties"]["Timeout"]
    assert processor.RECORD_WORST_CASE_SECONDS <= timeout / 2


def test_the_claim_always_outlives_a_started_record(sender):
    # A record starts with at least its worst case left, and its claim lives 10 s longer than the
    # invocation can: no other attempt can take the claim over while this one may still send.
    assert sender.CLAIM_MARGIN_SECONDS > 0
    assert sender.MAX_CLAIM_SECONDS >= sender.RECORD_WORST_CASE_SECONDS + sender.CLAIM_MARGIN_SECONDS


# --- behaviour ----------------------------------------------------------------------------------

def test_a_send_invocation_short_of_time_starts_no_record(monkeypatch):
    with mock_aws():
        stack = Stack.start(monkeypatch, production=True)
        # GIVEN less time left than one record's worst case
        context = FakeContext(remaining_ms=12_900)
        assert stack.handler.RECORD_WORST_CASE_SECONDS * 1000 > 12_900
        # WHEN a batch of three orders arrives
        run = stack.invoke(order_body(orderId="A"), order_body(orderId="B"), "not json",
                           context=context)
        # THEN no record was started: no claim, no email, every record back to the queue
        assert run.failures == ["msg-0", "msg-1", "msg-2"]
        assert stack.api_calls == [] and stack.emails == []
        assert stack.item("A") is None and stack.item("B") is None
        for line in run.logs:
            assert (line["level"], line["outcome"]) == ("WARNING", "not_started")
            assert line["reason"].startswith("not started: 12.9 s left, a record may need 13")
        assert run.emf_lines == []


def test_a_send_invocation_stops_starting_records_when_its_time_runs_low(monkeypatch):
    with mock_aws():
        stack = Stack.start(monkeypatch, production=True)
        # GIVEN 30 s and records that take 6 s each (a brownout): the clock advances 3 s at
        # each of the two looks per record (the budget check and the claim's lifetime)
        context = RunningClock(remaining_ms=30_000, seconds_per_call=3)
        bodies = [order_body(orderId=f"ORD-{n}") for n in range(10)]
        run = stack.invoke(*bodies, context=context)
        # THEN the records started while >= 13 s were left went out (at 30, 24 and 18 s left),
        # the others were not started and go back to the queue untouched
        sent = [line["orderId"] for line in run.logs if line["outcome"] == "sent"]
        assert sent == ["ORD-0", "ORD-1", "ORD-2"]
        assert run.failures == [f"msg-{n}" for n in range(3, 10)]
        assert len(stack.emails) == 3
        assert all(stack.item(f"ORD-{n}") is None for n in range(3, 10))


def test_a_feedback_invocation_short_of_time_starts_no_record(table, processor, capsys):
    # GIVEN a sent email and less time left than one record's worst case
    put_item(table, status="SENT")
    context = FakeContext(remaining_ms=2_499)
    # WHEN its Delivery event arrives
    result = processor.lambda_handler(sqs_event(json.dumps(feedback("delivery"))), context)
    # THEN it is returned untouched, for SQS to retry
    assert result == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (line["level"], line["outcome"]) == ("WARNING", "not_started")
    item = table.get_item(TableName="test-email-deliveries", Key={
        "orderId": {"S": "ORD-20261127-0001"}, "messageId": {"S": "order-confirmation"}})["Item"]
    assert item["status"]["S"] == "SENT" and "events" not in item
