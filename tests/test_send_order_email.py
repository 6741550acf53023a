"""Send-order-email handler: happy paths, the item it writes, rendering, SES request, metrics, logs,
API-call budget and embeddability. Idempotency, faults and bad input have their own files
(`test_send_order_email_{idempotency,faults,validation}.py`).

Every handler test runs the code exactly as the template embeds it (its ZipFile text, which
`test_code.py` proves is `handlers/send_order_email.py` byte for byte).
"""

from __future__ import annotations

import ast
import calendar
import json
import re
import sys
import time

import botocore.client
import pytest
from moto import mock_aws

from conftest import load_event, load_handler
from infra.code import handler_path
from send_email_harness import (
    CONFIG_SET,
    FROM_ADDRESS,
    MESSAGE_ID,
    NAMESPACE,
    TEST_INBOX,
    TTL_DAYS,
    Stack,
    body,
    decode_tag,
    env,
    order_body,
)


@pytest.fixture
def stack(monkeypatch):
    with mock_aws():
        yield Stack.start(monkeypatch, production=True)


@pytest.fixture
def sandbox(monkeypatch):
    with mock_aws():
        yield Stack.start(monkeypatch, production=False)


def epoch(iso: str) -> int:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


# --- happy paths -------------------------------------------------------------------------------


def test_valid_order_is_emailed_once_to_the_customer_and_recorded_sent(stack):
    # GIVEN production mode and a valid order
    order = load_event("send/order_full.json")
    before = int(time.time())
    # WHEN the order arrives
    run = stack.invoke(body(order))
    after = int(time.time())
    # THEN it is acknowledged and exactly one email went to the customer
    assert run.failures == []
    assert stack.api_calls.count("SendEmail") == 1
    [email] = stack.emails
    assert email.destinations["ToAddresses"] == ["ada@example.com"]
    assert email.source == FROM_ADDRESS
    # AND the item holds the contract's fields (handler-contract.md, "Table item")
    item = stack.item(order["orderId"])
    assert item["status"] == "SENT"
    assert item["to"] == item["sentTo"] == "ada@example.com"
    assert item["sesMessageId"] == email.id
    assert before <= item["timestamp"] <= after
    assert item["attempts"] == 1
    # AND the claim ended when SENT was recorded; no error
    assert before <= item["claimExpiresAt"] <= after and "error" not in item
    assert item["claimToken"]
    assert before <= epoch(item["createdAt"]) <= epoch(item["updatedAt"]) <= after
    assert item["ttl"] == epoch(item["createdAt"]) + TTL_DAYS * 86400
    assert [event["type"] for event in item["events"]] == ["Claimed", "Accepted"]
    assert item["events"][1]["detail"] == email.id
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]) for e in item["events"])


def test_sandbox_mode_redirects_to_the_test_inbox_and_says_so(sandbox):
    # GIVEN sandbox mode (ENABLE_PRODUCTION_SES is not "true")
    order = load_event("send/order_full.json")
    # WHEN the order arrives
    run = sandbox.invoke(body(order))
    # THEN the one email goes to the test inbox, and the subject and body say it was redirected
    assert run.failures == []
    [email] = sandbox.emails
    assert email.destinations["ToAddresses"] == [TEST_INBOX]
    [request] = sandbox.ses_requests
    assert request["Message"]["Subject"]["Data"].startswith("[Redirected test] ")
    assert "ada@example.com" not in request["Message"]["Subject"]["Data"]
    assert "addressed to ada@example.com" in request["Message"]["Body"]["Text"]["Data"]
    # AND the item keeps the customer as the intended recipient, the inbox as the actual one
    item = sandbox.item(order["orderId"])
    assert (item["status"], item["to"], item["sentTo"]) == ("SENT", "ada@example.com", TEST_INBOX)


@pytest.mark.parametrize(
    "flag, production",
    [("true", True), ("TRUE", True), (" True ", True), ("false", False), ("", False),
     ("yes", False), ("1", False)],
)
def test_only_the_word_true_enables_production_sending(monkeypatch, flag,
                                                       production):
    # GIVEN ENABLE_PRODUCTION_SES set to `flag` WHEN the module loads THEN only "true" (any case)
    # sends to customers: a typo must fail safe, into the sandbox.
    for name, value in env(production=True).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENABLE_PRODUCTION_SES", flag)
    assert load_handler("send_order_email").PRODUCTION is production


def test_sns_envelope_is_unwrapped(stack):
    # GIVEN a body that is an SNS Notification envelope (raw message delivery turned off)
    envelope = load_event("send/sns_envelope.json")
    # WHEN it arrives THEN the inner order is sent
    run = stack.invoke(json.dumps(envelope))
    assert run.failures == []
    assert [e.destinations["ToAddresses"] for e in stack.emails] == [["alan@example.com"]]
    assert stack.item("ORD-20261127-0003")["status"] == "SENT"


def test_order_with_only_the_required_fields_is_sent(stack):
    # GIVEN an order without items, total, currency or date WHEN it arrives THEN it is still sent
    run = stack.invoke(order_body("order_minimal.json"))
    assert run.failures == []
    assert len(stack.emails) == 1
    text = stack.ses_requests[0]["Message"]["Body"]["Text"]["Data"]
    assert "Grace Hopper" in text and "Total" not in text


def test_each_order_in_a_batch_is_handled_on_its_own(stack):
    # GIVEN a batch of three different orders WHEN it arrives THEN three emails, three SENT items
    ids = ["ORD-A", "ORD-B", "ORD-C"]
    run = stack.invoke(*(order_body(orderId=order_id) for order_id in ids))
    assert run.failures == []
    assert len(stack.emails) == 3
    assert [stack.item(order_id)["status"] for order_id in ids] == ["SENT"] * 3


# --- the SES request ---------------------------------------------------------------------------


def test_ses_request_uses_the_configuration_set_utf8_parts_and_reversible_tags(stack):
    # GIVEN an order id with characters SES tags do not allow
    order = load_event("send/order_hostile_but_valid.json")
    # WHEN it is sent
    stack.invoke(body(order))
    [request] = stack.ses_requests
    # THEN the configuration set routes its events to the feedback processor
    assert request["ConfigurationSetName"] == CONFIG_SET
    message = request["Message"]
    parts = (message["Subject"], *message["Body"].values())
    assert {part["Charset"] for part in parts} == {"UTF-8"}
    # AND the tags hold only SES-legal characters and decode back to the item's key
    tags = {tag["Name"]: tag["Value"] for tag in request["Tags"]}
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value) for value in tags.values())
    assert decode_tag(tags["orderId"]) == order["orderId"]
    assert decode_tag(tags["messageId"]) == MESSAGE_ID
    assert stack.item(order["orderId"])["status"] == "SENT"


def test_every_customer_value_is_html_escaped_in_the_html_part(stack):
    # GIVEN an order whose id, name and item names carry HTML and script, plus unicode
    order = load_event("send/order_hostile_but_valid.json")
    # WHEN it is sent
    run = stack.invoke(body(order))
    assert run.failures == []
    message = stack.ses_requests[0]["Message"]
    page = message["Body"]["Html"]["Data"]
    # THEN no customer-supplied markup survives in the HTML part...
    for raw in ("<script", "<img", "<i>", "<b>1</b>", "onerror=alert(1)>"):
        assert raw not in page
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "ORD/2026#&lt;b&gt;1&lt;/b&gt;&amp;&quot;&#x27;ü" in page
    assert "Café &quot;Crème&quot; &amp; &lt;i&gt;Co&lt;/i&gt;" in page
    # ...unicode names arrive intact, and the text part and subject carry the values as written
    assert "Zoë Ångström 李小龍 😀" in page
    assert order["customerName"] in message["Body"]["Text"]["Data"]
    assert message["Subject"]["Data"] == f"Your order {order['orderId']} is confirmed"


def test_money_is_exact_decimal_with_currency_and_the_order_date_is_shown(stack):
    # GIVEN prices that float arithmetic gets wrong (3 x 0.10, "0.2") and a large amount
    stack.invoke(order_body("order_hostile_but_valid.json"), order_body())
    hostile, full = (r["Message"]["Body"]["Text"]["Data"] for r in stack.ses_requests)
    # THEN line totals and totals are exact, two decimals, with the currency
    assert "3 at 0.10 EUR = 0.30 EUR" in hostile
    assert "1 at 0.20 EUR = 0.20 EUR" in hostile
    assert "Total: 0.50 EUR" in hostile
    assert "Gadget x 1 at 1,250.00 USD = 1,250.00 USD" in full
    assert "Total: 1,269.98 USD" in full
    assert "Order date: 27 November 2026" in full
    # AND the HTML part holds the same lines, one paragraph each
    page = stack.ses_requests[1]["Message"]["Body"]["Html"]["Data"]
    assert "<p>Widget x 2 at 9.99 USD = 19.98 USD<p>" in page


# --- metrics, logs, API calls ------------------------------------------------------------------


def test_one_valid_order_costs_three_api_calls_and_no_put_metric_data(stack):
    # GIVEN a container's first order WHEN it is handled
    stack.invoke(order_body(orderId="ORD-1"))
    # THEN claim, send and record are its calls, and once per container the account's sending
    # rate is read before the first send (the pacer): metrics cost no API call
    assert stack.api_calls == ["UpdateItem", "GetSendQuota", "SendEmail", "UpdateItem"]
    # AND every later order of the container costs exactly three calls
    stack.api_calls.clear()
    stack.invoke(order_body(orderId="ORD-2"))
    assert stack.api_calls == ["UpdateItem", "SendEmail", "UpdateItem"]
    assert "PutMetricData" not in stack.api_calls


def test_loading_the_module_makes_no_api_call(monkeypatch):
    # GIVEN every AWS call counted WHEN the handler module loads (cold start) THEN no call is made
    calls = []
    real = botocore.client.BaseClient._make_api_call
    def counting(client, name, params):
        calls.append(name)
        return real(client, name, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting)
    for name, value in env(production=True).items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        module = load_handler("send_order_email")
    assert calls == []
    # AND the two clients follow the contract: SES v1 and low-level DynamoDB, standard retries
    assert [c.meta.service_model.service_name for c in (module.ses, module.dynamodb)] == [
        "ses", "dynamodb"]
    for client in (module.ses, module.dynamodb):
        assert client.meta.config.retries["mode"] == "standard"
    # AND SES gets ONE attempt: botocore resending SendEmail after a read timeout could deliver a
    # second email. (Timeouts and DynamoDB's attempts: tests/test_time_budget.py.)
    assert module.ses.meta.config.retries["total_max_attempts"] == 1


def test_metrics_are_one_emf_line_per_invocation_with_only_non_zero_values(stack):
    # GIVEN a batch with two new orders, a duplicate and an invalid message
    run = stack.invoke(order_body(orderId="ORD-1"), order_body(orderId="ORD-2"),
                       order_body(orderId="ORD-1"), "not json")
    # THEN one EMF document aggregates the batch, in our namespace, without dimensions
    [document] = run.emf_lines
    [spec] = document["_aws"]["CloudWatchMetrics"]
    assert spec["Namespace"] == NAMESPACE
    assert spec["Dimensions"] == [[]]
    assert isinstance(document["_aws"]["Timestamp"], int)
    units = {metric["Name"]: metric["Unit"] for metric in spec["Metrics"]}
    assert units == {"EmailsSent": "Count", "DuplicatesSkipped": "Count",
                     "InvalidMessages": "Count"}
    # AND zero-valued metrics (SendFailures, RecordFailures) are not published at all
    assert run.metrics == {"EmailsSent": 2, "DuplicatesSkipped": 1, "InvalidMessages": 1}
    # AND the SES call's time is in each sent record's log line, not a (billed) metric
    sent = [line for line in run.logs if line["outcome"] == "sent"]
    assert len(sent) == 2 and all(line["sesMillis"] >= 0 for line in sent)


def test_an_empty_batch_prints_no_metrics(stack):
    # GIVEN an event without records WHEN handled THEN nothing is published and nothing fails
    run = stack.call({"Records": []})
    assert run.result == {"batchItemFailures": []}
    assert run.emf_lines == [] and run.logs == []


@pytest.mark.parametrize("production", [True, False])
def test_logs_are_one_json_line_per_record_with_masked_addresses(monkeypatch,
                                                                 production):
    # GIVEN production or sandbox mode, and a sent order, a duplicate and an invalid message
    with mock_aws():
        stack = Stack.start(monkeypatch, production=production)
        run = stack.invoke(order_body(), order_body(), order_body(customerEmail="ada@@example.com"))
        [email] = stack.emails
    # THEN each record has one JSON log line with its orderId and outcome
    assert [line["outcome"] for line in run.logs] == ["sent", "duplicate", "invalid"]
    sent = run.log_for("msg-0")
    assert sent["level"] == "INFO" and sent["orderId"] == "ORD-20261127-0001"
    assert sent["sesMessageId"] == email.id
    assert sent["to"] == "a***@example.com"
    assert sent["sentTo"] == ("a***@example.com" if production else "q***@shop.example.com")
    assert run.log_for("msg-1")["existingStatus"] == "SENT"
    assert run.log_for("msg-2")["level"] == "WARNING"
    # AND no full e-mail address appears anywhere in the output
    for address in ("ada@example.com", "ada@@example.com", TEST_INBOX):
        assert address not in run.output


@pytest.mark.parametrize(
    "address, masked",
    [("ada@example.com", "a***@example.com"), ("x@y.org", "x***@y.org"),
     ("first.last+tag@mail.example.co.uk", "f***@mail.example.co.uk"),
     # Not addresses (no local part before an @): nothing to mask. Only validated addresses and
     # the operator's TEST_EMAIL_ADDRESS are ever masked.
     ("no-at-sign", "no-at-sign"), ("@example.com", "@example.com"), ("", "")],
)
def test_mask_email_keeps_only_the_first_letter_and_the_domain(monkeypatch, address, masked):
    for name, value in env(production=True).items():
        monkeypatch.setenv(name, value)
    assert load_handler("send_order_email").mask_email(address) == masked


# --- the module ---------------------------------------------------------------------------------

ALLOWED_IMPORTS = set(sys.stdlib_module_names) | {"boto3", "botocore"}


def test_handler_imports_only_the_standard_library_and_boto3():
    # GIVEN the handler runs as ZipFile code: only the Lambda runtime's packages exist there
    source = handler_path("send_order_email").read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= ALLOWED_IMPORTS
