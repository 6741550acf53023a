"""Pacing: the send handler spends its share of the account's SES sending rate and no more.

Time here is the test's own clock (simulation/runtime.py's VirtualClock behind the handler's
`time`): a sleep passes instantly and every figure is exact, so the tests measure what the
handler does, not how busy the machine is. SES is the SES model (simulation/ses_model.py) on the
same clock, so a send over the rate is refused with real SES's `Throttling`.
"""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from send_email_harness import Stack, order_body
from simulation.runtime import TimeShim, VirtualClock
from simulation.ses_model import SesModel


class ClockContext:
    """A Lambda context whose remaining time runs on the test's clock."""

    def __init__(self, clock: VirtualClock, timeout_s: float = 30):
        self.clock, self.deadline = clock, clock.time() + timeout_s
        self.aws_request_id = "req-pacing"
        self.function_name = "test-function"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - self.clock.time()) * 1000))


@pytest.fixture
def paced(monkeypatch):
    """A production stack whose handler and SES account run on one test clock, with a given
    account rate and rate share."""
    def start(account_rate: float, share_percent: int = 100, concurrency: int = 2):
        stack = Stack.start(monkeypatch, production=True,
                            SES_RATE_SHARE_PERCENT=str(share_percent),
                            SEND_MAX_CONCURRENCY=str(concurrency))
        clock = VirtualClock(start=time.time())
        stack.handler.time = TimeShim(clock)
        stack.ses.clock = clock.time
        stack.ses.max_send_rate = account_rate
        sends: list[float] = []
        real_send = stack.handler.ses.send_email

        def timed_send(**kwargs):
            sends.append(clock.time())
            return real_send(**kwargs)

        monkeypatch.setattr(stack.handler.ses, "send_email", timed_send)
        return stack, clock, sends

    with mock_aws():
        yield start


def batch(count: int, prefix: str = "ORD") -> list[str]:
    return [order_body(orderId=f"{prefix}-{n}") for n in range(count)]


# --- the share, under a batch of 10 ---------------------------------------------------------------

@pytest.mark.parametrize("account_rate, share_percent, concurrency", [
    (14, 100, 2),  # the usual first production rate, all of it: 7 a second per copy
    (14, 50, 2),  # half of it (another application sends too): 3.5 a second per copy
    (50, 100, 5),
])
def test_a_batch_of_ten_is_spaced_at_its_part_of_the_share(paced, account_rate, share_percent,
                                                          concurrency):
    stack, clock, sends = paced(account_rate, share_percent, concurrency)
    interval = concurrency / (account_rate * share_percent / 100)
    # WHEN a batch of 10 orders arrives
    run = stack.invoke(*batch(10), context=ClockContext(clock))
    # THEN all 10 are sent, exactly one interval apart on the test's clock
    assert run.failures == [] and len(stack.emails) == 10
    gaps = [later - earlier for earlier, later in zip(sends, sends[1:])]
    assert gaps == pytest.approx([interval] * 9, abs=1e-5)
    # AND this copy's rate is its part of the share, which the first record logs
    first = run.log_for("msg-0")
    assert first["accountSendRate"] == account_rate
    assert first["containerSendRate"] == pytest.approx(1 / interval, abs=1e-3)
    # AND every later record logs its wait for the turn
    assert [run.log_for(f"msg-{n}")["pacedMillis"] for n in range(1, 10)] == pytest.approx(
        [interval * 1000] * 9, abs=0.1)
    # AND SES throttled nothing
    assert stack.ses.refusals == []


def test_the_next_invocation_waits_for_the_turn_the_last_one_booked(paced):
    stack, clock, sends = paced(account_rate=14)
    stack.invoke(*batch(10, "A"), context=ClockContext(clock))
    # WHEN the next batch arrives at once on the same container
    stack.invoke(*batch(10, "B"), context=ClockContext(clock))
    # THEN its sends continue the spacing: 20 sends, 19 intervals of 1/7 s
    assert len(sends) == 20
    assert sends[-1] - sends[0] == pytest.approx(19 * 2 / 14, abs=1e-5)


def test_two_copies_at_their_part_of_the_share_are_never_throttled_together(paced):
    stack, clock, sends = paced(account_rate=14)
    # GIVEN two containers of the function (two concurrency slots), each with its own pacer
    first, second = stack.handler.pacer, type(stack.handler.pacer)()
    # WHEN both send three batches of 10 over the same seconds (the test plays them one after
    # the other from the same start, as the simulation does)
    start = clock.time()
    for pacer, name in ((first, "A"), (second, "B")):
        clock.now = start
        stack.handler.pacer = pacer
        for n in range(3):
            stack.invoke(*batch(10, f"{name}{n}"), context=ClockContext(clock))
    # THEN SES accepted all 60: together they sent at 14 a second, the account's rate
    assert len(stack.emails) == 60 and stack.ses.refusals == []


def test_a_pacer_that_ignored_the_other_copies_would_be_throttled(paced):
    # The model is strict enough to catch the mistake the pacer avoids: two copies each at the
    # whole rate (28 a second against 14) are throttled.
    stack, clock, sends = paced(account_rate=14, concurrency=1)
    start = clock.time()
    for n in range(2):
        stack.invoke(*batch(10, f"A{n}"), context=ClockContext(clock))
    clock.now = start
    stack.handler.pacer = type(stack.handler.pacer)()
    runs = [stack.invoke(*batch(10, f"B{n}"), context=ClockContext(clock)) for n in range(2)]
    throttled = [line for run in runs for line in run.logs if line.get("error") == "Throttling"]
    assert throttled and all(line["outcome"] == "retry" for line in throttled)
    assert {code for _, code, _ in stack.ses.refusals} == {"Throttling"}


# --- reading the rate -----------------------------------------------------------------------------

def test_the_rate_is_read_once_per_container(paced):
    stack, clock, sends = paced(account_rate=14)
    for n in range(3):
        stack.invoke(*batch(4, f"B{n}"), context=ClockContext(clock))
    assert stack.api_calls.count("GetSendQuota") == 1
    # AND a new rate (AWS raised the quota) reaches the next container, not this one
    stack.ses.max_send_rate = 50
    stack.invoke(*batch(2, "later"), context=ClockContext(clock))
    assert stack.api_calls.count("GetSendQuota") == 1
    assert stack.handler.pacer.interval == pytest.approx(2 / 14)


def test_an_invocation_that_sends_nothing_does_not_read_the_rate(paced):
    stack, clock, sends = paced(account_rate=14)
    stack.invoke("not json", order_body(customerEmail="not an address"),
                 context=ClockContext(clock))
    assert "GetSendQuota" not in stack.api_calls


@pytest.mark.parametrize("error", [
    ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized to perform: "
                           "ses:GetSendQuota"}}, "GetSendQuota"),
    ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "GetSendQuota"),
    EndpointConnectionError(endpoint_url="https://email.us-east-1.amazonaws.com/"),
], ids=["access-denied", "throttled", "no-connection"])
def test_a_failed_rate_read_sends_at_the_safe_rate_and_fails_nothing(paced, monkeypatch, error):
    stack, clock, sends = paced(account_rate=14)
    stack.inject(monkeypatch, "ses", "get_send_quota", error)
    # WHEN the container's first batch cannot read the account's rate
    run = stack.invoke(*batch(5), context=ClockContext(clock))
    # THEN the batch is sent all the same, at the safe rate (the sandbox's 1 a second, shared by
    # the 2 copies: one send every 2 s)
    assert run.failures == [] and len(stack.emails) == 5
    gaps = [later - earlier for earlier, later in zip(sends, sends[1:])]
    assert gaps == pytest.approx([2.0] * 4, abs=1e-5)
    first = run.log_for("msg-0")
    assert first["level"] == "WARNING" and first["outcome"] == "sent"
    assert first["quotaError"] in {"AccessDenied", "Throttling", "EndpointConnectionError"}
    assert first["accountSendRate"] == 1.0
    # AND the rate is read again once QUOTA_RETRY_SECONDS passed, then the real rate applies
    clock.now += stack.handler.QUOTA_RETRY_SECONDS
    run = stack.invoke(*batch(3, "later"), context=ClockContext(clock))
    assert run.log_for("msg-0")["accountSendRate"] == 14
    assert stack.handler.pacer.interval == pytest.approx(2 / 14)


def test_a_concurrency_too_high_for_the_rate_is_logged_as_a_warning(paced):
    # GIVEN 100 copies sharing 14 a second: each may send once every 7 s
    stack, clock, sends = paced(account_rate=14, concurrency=100)
    run = stack.invoke(*batch(10), context=ClockContext(clock))
    first = run.log_for("msg-0")
    assert first["level"] == "WARNING" and first["outcome"] == "sent"
    assert first["rateWarning"].startswith("one send every 7.1 s per copy: SendMaxConcurrency "
                                           "100 is too high for 14 emails a second")
    # AND only 3 of the batch's 10 records fit the 30 s (sent at 0, 7 and 14 s); the others go
    # back to the queue, their wait too long for the budget
    assert len(sends) == 3 and run.failures == [f"msg-{n}" for n in range(3, 10)]


def test_the_recommended_settings_draw_no_warning(paced):
    stack, clock, sends = paced(account_rate=1, concurrency=2)  # the sandbox: one send every 2 s
    assert "rateWarning" not in stack.invoke(order_body(), context=ClockContext(clock)).logs[0]


# --- the time budget still holds ------------------------------------------------------------------

def test_a_slow_share_never_runs_the_invocation_past_its_budget(paced):
    # GIVEN the sandbox's rate of 1 a second shared by 2 copies: one send every 2 s
    stack, clock, sends = paced(account_rate=1)
    start = clock.time()
    run = stack.invoke(*batch(10), context=ClockContext(clock, timeout_s=30))
    # THEN the records whose turn and worst case fit in the 30 s were sent: the first 9 (the
    # 9th at 16 s, with 14 s left >= 13 s); the 10th would start at 18 s with 12 s left, so it
    # goes back to the queue untouched
    assert len(sends) == 9 and stack.ses.refusals == []
    assert sends[-1] - start == pytest.approx(16.0, abs=1e-5)
    assert run.failures == ["msg-9"]
    last = run.log_for("msg-9")
    assert last["outcome"] == "not_started"
    assert last["reason"].endswith("after 2.0 s for its sending turn")
    assert stack.item("ORD-9") is None
    # AND the invocation ended well inside its timeout
    assert clock.time() - start < 30 - stack.handler.RECORD_WORST_CASE_SECONDS


def test_a_throttle_that_happens_anyway_releases_the_claim(paced):
    # GIVEN another sender took the whole rate in this second
    stack, clock, sends = paced(account_rate=14)
    for _ in range(14):
        stack.ses.record_accepted(clock.time())
    # WHEN an order is sent
    run = stack.invoke(order_body(), context=ClockContext(clock))
    # THEN SES throttled it, the claim is released and the queue retries the order
    line = run.log_for("msg-0")
    assert (line["outcome"], line["error"], line["decision"]) == ("retry", "Throttling",
                                                                  "release")
    assert run.failures == ["msg-0"]
    assert stack.item("ORD-20261127-0001")["events"][-1]["type"] == "Released"
    # AND its retry, once the rate has room again, takes the claim over and sends it
    clock.now += 1
    retry = stack.invoke(order_body(), context=ClockContext(clock))
    assert retry.log_for("msg-0")["outcome"] == "sent" and len(stack.emails) == 1


# --- the SES model's rate (what the tests above are judged by) --------------------------------

def test_the_model_accepts_a_burst_of_one_second_of_the_rate_and_refills_at_the_rate():
    now = [1000.0]
    ses = SesModel(clock=lambda: now[0], max_send_rate=14)
    for _ in range(14):
        assert ses.within_rate(1000.0)
        ses.record_accepted(1000.0)
    assert not ses.within_rate(1000.0)  # the 15th in the same instant
    assert not ses.within_rate(1000.05)  # 0.7 of a token refilled
    assert ses.within_rate(1000.0 + 1 / 14)  # one token refilled


def test_the_model_judges_sends_by_their_times_not_the_order_they_were_played():
    ses = SesModel(clock=lambda: 0.0, max_send_rate=2)
    # sends at 1.0 and 1.2 played first, then one at 0.9: three sends within 0.3 s at 2 a second
    ses.record_accepted(1.0)
    ses.record_accepted(1.2)
    assert not ses.within_rate(0.9)
    assert ses.within_rate(0.0)  # a full second earlier: refilled
