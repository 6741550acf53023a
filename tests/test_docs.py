"""Generated docs and the cost report: derived from the template, so they cannot drift."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import build_template
from conftest import resources_of_type
from infra import cost, docs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_alarm_names_a_runbook_entry_that_exists_so_on_call_knows_what_to_do(
        template, readme):
    runbook = readme.split("## Operations runbook", 1)[1].split("\n## ", 1)[0]
    headings = set(re.findall(r"^### (\S+)$", runbook, re.MULTILINE))
    for name, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        entry = re.search(r"Runbook: README.md, Operations runbook, entry '([^']+)'\.$",
                          properties["AlarmDescription"])
        assert entry, f"{name}: its description names no runbook entry"
        assert entry.group(1) in headings, f"{name}: no README heading '### {entry.group(1)}'"
        # The heading is the alarm's name without the environment prefix.
        assert properties["AlarmName"]["Fn::Sub"] == "${EnvironmentSuffix}-" + entry.group(1)


def test_runbook_entries_say_what_it_means_and_what_to_do_first(readme):
    runbook = readme.split("## Operations runbook", 1)[1].split("\n## ", 1)[0]
    for entry in re.split(r"^### ", runbook, flags=re.MULTILINE)[1:]:
        name, text = entry.split("\n", 1)[0], " ".join(entry.split())
        assert "**Means:**" in text, name
        assert "**First steps:**" in text, name


def test_parameters_and_outputs_tables_list_every_parameter_and_output(template):
    parameters = docs.parameters_table(template)
    outputs = docs.outputs_table(template)
    for name in template["Parameters"]:
        assert f"| `{name}` |" in parameters
    for name in template["Outputs"]:
        assert f"| `{name}` |" in outputs


def test_readme_holds_the_generated_sections_of_the_current_template(readme):
    assert build_template.render()["README.md"] == readme


def test_a_missing_marker_is_a_clear_error():
    with pytest.raises(docs.MissingMarker, match="BEGIN GENERATED: outputs"):
        docs.replace_section("no markers here", "outputs", "body")


def test_diagram_follows_the_data_path_from_the_template(template):
    diagram = docs.architecture_mermaid(template)
    for edge in (
        "OrderService -->|publish| SNSTopicOrderConfirmations",
        "SNSTopicOrderConfirmations -->|raw| SendOrderEmailQueue",
        "SendOrderEmailQueue -->|batches of 10| LambdaSendOrderEmail",
        "LambdaSendOrderEmail -->|SendEmail| SESConfigurationSet",
        "LambdaSendOrderEmail -->|conditional writes| EmailDeliveriesTable",
        "SESConfigurationSet -->|send, delivery, deliveryDelay| SNSTopicSesDelivery",
        "SNSTopicSesBounce -->|raw| SesFeedbackQueue",
        "SesFeedbackQueue -->|after 5 receives| SesFeedbackDeadLetterQueue",
        "LambdaSesFeedbackProcessor -->|conditional writes| EmailDeliveriesTable",
    ):
        assert edge in diagram, edge
    alarms = len(resources_of_type(template, "AWS::CloudWatch::Alarm"))
    assert f"Alarms[{alarms} CloudWatch alarms] -->|notify| SNSTopicAlarms" in diagram


def test_diagram_changes_when_the_template_changes(template):
    changed = json.loads(json.dumps(template))
    changed["Resources"]["SendOrderEmailQueue"]["Properties"]["RedrivePolicy"][
        "maxReceiveCount"] = 7
    assert "SendOrderEmailQueue -->|after 7 receives|" in docs.architecture_mermaid(changed)


def test_sample_order_of_the_readme_is_a_valid_order():
    order = json.loads((ROOT / "tests/events/send/sample_order.json").read_text())
    assert {"orderId", "customerEmail", "customerName"} <= set(order)
    assert order["customerEmail"].endswith("@simulator.amazonses.com")


# --- Cost ----------------------------------------------------------------------------------------

def hand_calculation_2000_per_day() -> float:
    """The 2,000 emails/day month worked out by hand from the price list (no code shared)."""
    canaries = 30 * 24 * 60 / 30  # one every 30 minutes: through the whole path like an order
    customers = 2_000 * 30
    emails = customers + canaries
    events = emails * (2 + 0.005 + 0.0005)  # Send + Delivery/Bounce + delays + complaints
    deliveries = emails * 1.005  # 0.5 % duplicate deliveries
    ses = emails / 1000 * 0.10
    dashboard = 3.00
    # single-metric alarms: send failures, two DLQs, send backlog, send errors, canary; on two
    # metrics: the account's reputation, and the circuit breaker's two (its configuration set's
    # reputation and the account's)
    alarms = (6 * 1 + 3 * 2) * 0.10
    hours = 720

    def metric(per_month):
        return 0.30 * (1 - math.exp(-per_month / hours))
    # EmailsSent, Deliveries, and the canary's three, published every hour; bounces, complaints,
    # delays and duplicates in some hours
    metrics = (2 * 0.30 + 3 * metric(canaries) + metric(customers * 0.01) + metric(30)
               + metric(300) + metric(300))
    kms = 1.00 + (2 * 2_592_000 / 300 * 2 / 2 + 2 * 2_592_000 / 3600 * 3 + 5_000) / 10_000 * 0.03
    dynamodb = deliveries * 17 / 1e6 * 0.625 + 0.515 * 0.25 + 0.172 * 0.20
    sqs = (2 * 5 * 2_592_000 / 20 + 2 * (deliveries + events)) / 1e6 * 0.40
    invocations = deliveries + events
    logs_gb = invocations * 1_100 / 1e9
    logs = logs_gb * 0.50 + logs_gb * 3 * 0.03  # 90 days of logs kept
    lam = invocations * 0.20 / 1e6 + (deliveries * 0.2 + events * 0.05) * 0.25 * 0.0000133334
    sns = (deliveries + events) * 0.50 / 1e6
    return ses + dashboard + alarms + metrics + kms + dynamodb + sqs + logs + lam + sns


def test_cost_estimate_matches_a_hand_calculation_within_10_percent(template):
    estimate = cost.estimate(template, cost.Assumptions(emails_per_day=2_000))
    hand = hand_calculation_2000_per_day()
    assert abs(estimate.total - hand) <= 0.10 * hand, (estimate.total, hand)


def test_monthly_cost_at_2000_emails_a_day_stays_under_15_dollars_with_ses_about_6(template):
    estimate = cost.estimate(template, cost.Assumptions(emails_per_day=2_000))
    # 60,000 customers' emails and the canary's, one every 30 minutes, at $0.10 per 1,000
    assert estimate.lines["SES"] == pytest.approx((60_000 + 1_440) / 1000 * 0.10)
    assert estimate.total <= 15.00


def test_cost_reads_the_template_so_a_second_dashboard_costs_3_more(template):
    changed = json.loads(json.dumps(template))
    changed["Resources"]["SecondDashboard"] = changed["Resources"]["CloudWatchDashboard"]
    base = cost.estimate(template).total
    assert cost.estimate(changed).total == pytest.approx(base + 3.00)


def test_cost_cli_prints_a_table_with_the_total():
    result = subprocess.run([sys.executable, "build_template.py", "--cost",
                             "--emails-per-day", "20000"], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "20,000 emails/day" in result.stdout
    assert re.search(r"^total\s+\d+\.\d\d$", result.stdout, re.MULTILINE)


def test_cost_cli_rejects_a_bad_volume_with_exit_code_2():
    result = subprocess.run([sys.executable, "build_template.py", "--cost",
                             "--emails-per-day", "-5"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "must be at least 1" in result.stderr
