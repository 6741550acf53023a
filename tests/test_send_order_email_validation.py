"""Bad input: every case in `events/send/bad_orders.json` is refused with a precise, logged reason,
reported as a batch item failure (so it reaches the DLQ intact), counted as `InvalidMessages`, and
never emailed; valid records in the same batch still go out. Hostile-but-valid input (HTML in
names, unicode) is sent escaped: see `test_send_order_email.py`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from moto import mock_aws

from conftest import load_event, load_handler
from send_email_harness import Stack, body, env, order_body

CASES = load_event("send/bad_orders.json")
BASE_ORDER = load_event("send/order_full.json")


def expand(value: Any) -> Any:
    """`{"$repeat": [value, n]}` anywhere in a fixture stands for n copies (a string or a list)."""
    if isinstance(value, dict) and set(value) == {"$repeat"}:
        item, times = value["$repeat"]
        return item * times if isinstance(item, str) else [expand(item)] * times
    if isinstance(value, dict):
        return {key: expand(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [expand(inner) for inner in value]
    return value


def case_body(case: dict) -> str:
    if "body" in case:
        return expand(case["body"])
    order = {k: v for k, v in BASE_ORDER.items() if k not in case.get("remove", [])}
    order.update({k: expand(v) for k, v in case.get("set", {}).items()})
    return body(order)


_MODULES: dict[str, Any] = {}


@pytest.fixture
def handler(monkeypatch):
    """The handler for pure validation tests (no AWS call is made), loaded once."""
    if "send_order_email" not in _MODULES:
        for name, value in env(production=True).items():
            monkeypatch.setenv(name, value)
        _MODULES["send_order_email"] = load_handler("send_order_email")
    return _MODULES["send_order_email"]


def test_the_fixture_covers_at_least_twenty_distinct_bad_inputs():
    names = [case["name"] for case in CASES]
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert len({case_body(case) for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bad_input_is_refused_with_a_precise_reason(handler, case):
    # GIVEN a record body that breaks one rule WHEN it is parsed THEN the reason names that rule
    with pytest.raises(handler.InvalidOrder) as refused:
        handler.parse_order(case_body(case))
    assert case["reason"] in str(refused.value)


def test_every_bad_input_is_a_logged_batch_item_failure_and_valid_neighbours_still_go_out(
        monkeypatch):
    # GIVEN one batch: a valid order, every bad input, another valid order
    bodies = [order_body(orderId="ORD-FIRST"), *(case_body(c) for c in CASES),
              order_body(orderId="ORD-LAST")]
    with mock_aws():
        stack = Stack.start(monkeypatch)
        # WHEN it is handled (nothing may crash)
        run = stack.invoke(*bodies)
        emails = stack.emails
        items = stack.dynamodb.scan(TableName="test-email-deliveries")["Items"]
    bad_ids = [f"msg-{index}" for index in range(1, len(CASES) + 1)]
    # THEN exactly the bad records are reported for retry (-> DLQ), each with its reason logged
    assert run.failures == bad_ids
    for sqs_id, case in zip(bad_ids, CASES):
        line = run.log_for(sqs_id)
        assert (line["level"], line["outcome"]) == ("WARNING", "invalid"), case["name"]
        assert case["reason"] in line["reason"], case["name"]
    # AND they are counted, never emailed, never written; the two valid orders went out
    assert run.metrics["InvalidMessages"] == len(CASES)
    assert run.metrics["EmailsSent"] == 2
    assert len(emails) == 2
    assert sorted(item["orderId"]["S"] for item in items) == ["ORD-FIRST", "ORD-LAST"]
    # AND the logged reasons never echo the offending values (no log injection, no PII)
    for line in run.logs:
        assert "\n" not in json.dumps(line) and "victim@example.com" not in json.dumps(line)


@pytest.mark.parametrize(
    "changes",
    [
        {"customerEmail": "first.last+tag@mail.example.co.uk"},
        {"customerEmail": "o'brien@example.ie"},
        {"customerEmail": "x@" + "a" * 63 + ".com"},
        {"customerEmail": ("a" * 64 + "@" + ("b" * 61 + ".") * 3)[:250] + "b.io"},
        {"customerName": "Zoë Ångström-李 😀 O'Brien"},
        {"customerName": "A" * 200},
        {"orderId": "A" * 128},
        {"orderId": "ORD/2026#1 ü"},
        {"items": []},
        {"items": None, "total": None, "currency": None, "orderDate": None},
        {"items": [{"name": "Free sample", "quantity": 10000, "unitPrice": "0"}]},
        {"total": "999999999.99"},
        {"orderDate": "2026-11-27"},
        {"orderDate": "2026-11-27T12:00:00.123+05:30"},
    ],
    ids=lambda changes: ",".join(changes),
)
def test_unusual_but_valid_orders_are_accepted(handler, changes):
    # GIVEN an order at the edge of the rules WHEN it is parsed THEN it is accepted and renders
    order = handler.parse_order(body({**BASE_ORDER, **changes}))
    subject, page, text = handler.render_email(order, sandbox=False)
    assert order["orderId"] in subject and page.startswith("<!DOCTYPE html>") and text
