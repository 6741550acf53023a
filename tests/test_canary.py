"""The end-to-end canary (DESIGN.md, "Self-watching"; infra/canary.py): the schedule that
publishes it, the alarm that says none got through, and what both handlers do with it."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from conftest import FakeContext, resources_of_type, sqs_event
from send_email_harness import Stack, body
from test_ses_feedback_processor import (  # noqa: F401  (fixtures are used by name)
    aws, b64, feedback, get_item, handler, metric_values, output, put_item, table,
)

CANARY_ID = "canary-2026-12-02T10:30:00Z"
SIMULATOR = "success+canary@simulator.amazonses.com"


def props(template: dict, logical: str) -> dict:
    return template["Resources"][logical]["Properties"]


# --- the template ---------------------------------------------------------------------------------

def test_the_schedule_publishes_a_canary_order_to_the_order_topic_on_time(template):
    schedule = template["Resources"]["CanarySchedule"]
    assert schedule["Condition"] == "HasCanary"
    p = schedule["Properties"]
    assert p["ScheduleExpression"] == {"Fn::Sub": "rate(${CanaryIntervalMinutes} minutes)"}
    assert p["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = p["Target"]
    assert target["Arn"] == {"Ref": "SNSTopicOrderConfirmations"}
    assert target["RoleArn"] == {"Fn::GetAtt": ["CanaryScheduleRole", "Arn"]}
    # never replays a stale canary: one attempt, dropped after a minute
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 0}
    order = json.loads(target["Input"])
    assert order["orderId"] == "canary-<aws.scheduler.scheduled-time>"
    assert order["customerEmail"] == SIMULATOR


def test_the_canary_order_is_a_valid_order_for_the_send_function(monkeypatch, template):
    # Scheduler replaces the context attribute; what arrives must pass the order contract.
    order = json.loads(props(template, "CanarySchedule")["Target"]["Input"].replace(
        "<aws.scheduler.scheduled-time>", "2026-12-02T10:30:00Z"))
    with mock_aws():
        stack = Stack.start(monkeypatch, production=True)
        assert stack.handler.parse_order(body(order))["orderId"] == CANARY_ID
        assert stack.handler.is_canary(order)


def test_the_schedule_role_may_only_publish_to_the_order_topic_with_its_key(template):
    role = template["Resources"]["CanaryScheduleRole"]
    assert role["Condition"] == "HasCanary"
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    [policy] = role["Properties"]["Policies"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert statements["PublishCanaryOrders"]["Action"] == ["sns:Publish"]
    assert statements["PublishCanaryOrders"]["Resource"] == [{"Ref": "SNSTopicOrderConfirmations"}]
    assert statements["UseTopicKey"]["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"]
    assert statements["UseTopicKey"]["Resource"] == [
        {"Fn::GetAtt": ["EmailNotificationsKey", "Arn"]}]
    assert set(statements) == {"PublishCanaryOrders", "UseTopicKey"}


def test_the_alarm_fires_when_no_canary_was_delivered_for_three_intervals(template):
    alarm = template["Resources"]["AlarmCanaryNotDelivered"]
    assert alarm["Condition"] == "HasCanary"
    p = alarm["Properties"]
    assert p["AlarmName"] == {"Fn::Sub": "${EnvironmentSuffix}-canary-not-delivered"}
    assert (p["MetricName"], p["Statistic"]) == ("CanaryDelivered", "Sum")
    assert p["Namespace"] == {"Fn::Sub": "${EnvironmentSuffix}/EmailNotifications"}
    assert (p["ComparisonOperator"], p["Threshold"]) == ("LessThanThreshold", 1)
    assert p["EvaluationPeriods"] == p["DatapointsToAlarm"] == 3
    # no data at all is exactly the failure: missing data is breaching
    assert p["TreatMissingData"] == "breaching"
    # the period is the canary interval
    assert p["Period"] == {"Fn::FindInMap": ["CanaryIntervals",
                                             {"Ref": "CanaryIntervalMinutes"}, "PeriodSeconds"]}
    intervals = template["Mappings"]["CanaryIntervals"]
    choices = template["Parameters"]["CanaryIntervalMinutes"]["AllowedValues"]
    assert {int(m): v["PeriodSeconds"] for m, v in intervals.items()} == {
        m: m * 60 for m in choices if m}


def test_an_interval_of_zero_turns_the_canary_off(template):
    assert template["Conditions"]["HasCanary"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CanaryIntervalMinutes"}, 0]}]}
    assert 0 in template["Parameters"]["CanaryIntervalMinutes"]["AllowedValues"]
    conditional = {name for name, r in template["Resources"].items()
                   if r.get("Condition") == "HasCanary"}
    assert conditional == {"CanarySchedule", "CanaryScheduleRole", "AlarmCanaryNotDelivered"}


def test_the_dashboard_shows_canaries_sent_delivered_and_their_latency(template):
    body_text = props(template, "CloudWatchDashboard")["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(body_text)["widgets"]
    titles = {w["properties"]["title"]: json.dumps(w) for w in widgets}
    assert '"CanarySent"' in titles["Canary: sent and delivered"]
    assert '"CanaryDelivered"' in titles["Canary: sent and delivered"]
    assert '"CanaryLatency"' in titles["Canary: scheduled -> delivered (s)"]


# --- the send function ----------------------------------------------------------------------------

def canary_body() -> str:
    return body({"orderId": CANARY_ID, "customerEmail": SIMULATOR, "customerName": "Canary",
                 "items": [{"name": "End-to-end check", "quantity": 1, "unitPrice": "0.00"}],
                 "total": "0.00", "currency": "USD"})


@pytest.mark.parametrize("production", [False, True], ids=["sandbox-mode", "production-mode"])
def test_a_canary_goes_to_its_simulator_address_and_counts_canary_sent(monkeypatch, production):
    with mock_aws():
        stack = Stack.start(monkeypatch, production=production)
        # GIVEN the canary order (sandbox mode redirects every other email to the test inbox)
        run = stack.invoke(canary_body())
        # THEN it goes to the simulator, not to the test inbox, unredirected
        [email] = stack.emails
        assert email.destinations["ToAddresses"] == [SIMULATOR]
        [request] = stack.ses_requests
        assert not request["Message"]["Subject"]["Data"].startswith("[Redirected test]")
        # AND counts CanarySent, never EmailsSent (it must not dilute the bounce rate)
        assert run.metrics == {"CanarySent": 1}
        line = run.log_for("msg-0")
        assert (line["outcome"], line["canary"]) == ("sent", True)
        # AND its item expires after a day, not after RecordRetentionDays
        item = stack.item(CANARY_ID)
        assert item["status"] == "SENT"
        assert 86400 - 1 <= item["ttl"] - item["timestamp"] <= 86400


def test_an_order_that_only_looks_like_a_canary_is_an_ordinary_order(monkeypatch):
    with mock_aws():
        stack = Stack.start(monkeypatch, production=False)
        # a canary- order id to a real customer, and a simulator address without the prefix
        run = stack.invoke(body({"orderId": "canary-2026", "customerEmail": "ada@example.com",
                                 "customerName": "Ada"}),
                           body({"orderId": "ORD-1", "customerEmail": SIMULATOR,
                                 "customerName": "Ada"}))
        assert run.metrics == {"EmailsSent": 2}
        assert [e.destinations["ToAddresses"] for e in stack.emails] == [
            ["qa-inbox@shop.example.com"]] * 2


# --- the feedback processor ---------------------------------------------------------------------

def canary_event(name: str) -> dict:
    """A fixture as SES publishes it for the canary: its tags, its simulator recipient."""
    event = feedback(name, CANARY_ID)
    event["mail"]["destination"] = [SIMULATOR]
    event["mail"]["timestamp"] = "2026-12-02T10:30:01.200Z"
    if name == "delivery":
        event["delivery"]["timestamp"] = "2026-12-02T10:30:04.750Z"
        event["delivery"]["recipients"] = [SIMULATOR]
    return event


def test_a_canary_delivery_counts_canary_delivered_and_its_latency(handler, table, capsys):
    put_item(table, order_id=CANARY_ID, status="SENT")
    capsys.readouterr()
    result = handler.lambda_handler(
        sqs_event(json.dumps(canary_event("send")), json.dumps(canary_event("delivery"))),
        FakeContext())
    assert result == {"batchItemFailures": []}
    logs, emf_lines = output(capsys)
    # THEN the item is tracked like any email
    assert get_item(table, CANARY_ID)["status"] == "DELIVERED"
    assert all(log["canary"] is True for log in logs)
    # AND the Delivery counts CanaryDelivered (not Deliveries) with the time from the scheduled
    # time in its order id to the delivery: 10:30:00 -> 10:30:04.750
    [document] = emf_lines
    units = {m["Name"]: m["Unit"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"CanaryDelivered": "Count", "CanaryLatency": "Seconds"}
    assert document["CanaryDelivered"] == 1
    assert document["CanaryLatency"] == [4.75]


def test_a_duplicated_canary_delivery_is_counted_once(handler, table, capsys):
    put_item(table, order_id=CANARY_ID, status="SENT")
    capsys.readouterr()
    delivery = json.dumps(canary_event("delivery"))
    handler.lambda_handler(sqs_event(delivery, delivery), FakeContext())
    _, emf_lines = output(capsys)
    assert emf_lines[0]["CanaryDelivered"] == 1 and emf_lines[0]["CanaryLatency"] == [4.75]


def test_other_canary_events_count_nothing(handler, table, capsys):
    # a canary's bounce (impossible for success@, but a broken setup could show one) must not
    # reach the bounce metrics the alarms and the rates read
    put_item(table, order_id=CANARY_ID, status="SENT")
    capsys.readouterr()
    handler.lambda_handler(sqs_event(json.dumps(canary_event("bounce_permanent"))), FakeContext())
    logs, emf_lines = output(capsys)
    assert logs[0]["outcome"] == "applied" and logs[0]["canary"] is True
    assert emf_lines == []
