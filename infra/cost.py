"""Monthly cost estimate of a deployed stack, from the generated template plus volume assumptions.

What the stack is made of (function memory and architecture, alarms and the metrics they watch,
dashboards, keys, queues, topics, table indexes, custom metrics) is read from the template;
how much it is used comes from `Assumptions`; prices are a dated us-east-1 table. The free tier is
excluded. `python build_template.py --cost [--emails-per-day N]` prints the result.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

PRICES_DATE = "2026-11-01"
# us-east-1 list prices, USD.
PRICES = {
    "ses_per_1000_emails": 0.10,
    "lambda_per_million_requests": 0.20,
    "lambda_gb_second": {"arm64": 0.0000133334, "x86_64": 0.0000166667},
    "sqs_per_million_requests": 0.40,
    "sns_per_million_publishes": 0.50,  # deliveries to SQS are free
    "dynamodb_per_million_wru": 0.625,  # on-demand
    "dynamodb_gb_month": 0.25,
    "dynamodb_pitr_gb_month": 0.20,
    "kms_key_month": 1.00,
    "kms_per_10000_requests": 0.03,
    "cloudwatch_custom_metric_month": 0.30,  # prorated by the hour it is published in
    "cloudwatch_alarm_metric_month": 0.10,  # standard resolution, per metric in the alarm
    "cloudwatch_dashboard_month": 3.00,
    "scheduler_per_million_invocations": 1.00,
    "logs_ingestion_per_gb": 0.50,
    "logs_storage_gb_month": 0.03,
}
HOURS = 30 * 24
SECONDS = HOURS * 3600
SNS_DATA_KEY_REUSE_S = 300  # SNS reuses a data key for up to 5 minutes
# An idle SQS event source mapping keeps 5 long polls (20 s) open: requests with no messages.
IDLE_POLL_REQUESTS = 5 * (SECONDS / 20)


@dataclass(frozen=True)
class Assumptions:
    emails_per_day: int = 2_000
    days: int = 30
    bounce_rate: float = 0.01
    complaint_rate: float = 0.0005
    delay_rate: float = 0.005
    duplicate_rate: float = 0.005  # orders delivered more than once (SNS/SQS at least once)
    send_ms: int = 200  # per order: claim + SendEmail + record
    feedback_ms: int = 50  # per SES event
    item_kb: float = 1.0  # one delivery item with its short history (<= 1 KB: 1 WRU)
    log_bytes_per_invocation: int = 1_100  # START/END/REPORT + one JSON line + one EMF line
    # Storage at steady state: the template's RecordRetentionDays and LogRetentionDays defaults
    # unless given here.
    retention_days: int | None = None
    log_retention_days: int | None = None

    @property
    def emails(self) -> int:
        return self.emails_per_day * self.days

    @property
    def events_per_email(self) -> float:
        # Send + (Delivery or Bounce) + occasional DeliveryDelay and Complaint.
        return 2 + self.delay_rate + self.complaint_rate


@dataclass
class Estimate:
    assumptions: Assumptions
    lines: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, service: str, usd: float, note: str) -> None:
        self.lines[service] = self.lines.get(service, 0.0) + usd
        self.notes[service] = "; ".join(filter(None, [self.notes.get(service), note]))

    @property
    def total(self) -> float:
        return sum(self.lines.values())


def _of_type(template: dict, kind: str) -> dict[str, dict]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == kind}


def _active_hours(events_per_month: float) -> float:
    """Share of the month's hours in which at least one such event happens (Poisson)."""
    return 1 - math.exp(-events_per_month / HOURS)


def _custom_metrics(template: dict) -> list[str]:
    """Names of our custom metrics: those the alarms and the dashboard use."""
    names = set()
    for alarm in _of_type(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if "EmailNotifications" in json.dumps(props.get("Namespace", "")):
            names.add(props["MetricName"])
        for query in props.get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if "EmailNotifications" in json.dumps(metric.get("Namespace", "")):
                names.add(metric["MetricName"])
    for dashboard in _of_type(template, "AWS::CloudWatch::Dashboard").values():
        body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
        for row in json.loads(body)["widgets"]:
            namespace = None
            for metric in row["properties"].get("metrics", []):
                strings = [m for m in metric if isinstance(m, str)]
                if strings and strings[0] != ".":
                    namespace = strings[0]
                if namespace and namespace.endswith("/EmailNotifications") and len(strings) > 1:
                    names.add(strings[1])
    return sorted(names)


def _default(template: dict, parameter: str) -> int:
    return int(template["Parameters"][parameter]["Default"])


def canaries_per_month(template: dict) -> float:
    """Canary orders a month: each schedule's rate (`rate(N minutes)`, N literal or the default
    of the parameter it names), over DAYS; 0 without a schedule or with the canary off."""
    total = 0.0
    for schedule in _of_type(template, "AWS::Scheduler::Schedule").values():
        expression = schedule["Properties"]["ScheduleExpression"]
        text = expression["Fn::Sub"] if isinstance(expression, dict) else expression
        match = re.fullmatch(r"rate\((?:(\d+)|\$\{(\w+)\}) minutes?\)", text)
        if not match:
            raise ValueError(f"cannot estimate the schedule expression {text!r}")
        minutes = int(match.group(1) or template["Parameters"][match.group(2)]["Default"])
        if minutes:
            total += SECONDS / (minutes * 60)
    return total


def metric_events(a: Assumptions, canaries: float = 0.0) -> dict[str, float]:
    """How many data points per month each custom metric gets (drives the hourly proration)."""
    e = a.emails
    return {
        "CanarySent": canaries, "CanaryDelivered": canaries, "CanaryLatency": canaries,
        "EmailsSent": e, "Deliveries": e * (1 - a.bounce_rate), "Bounces": e * a.bounce_rate,
        "Complaints": e * a.complaint_rate, "DeliveryDelays": e * a.delay_rate,
        "DuplicatesSkipped": e * a.duplicate_rate,
        # Rare by design: an alarm or a DLQ follows each of these.
        "SendFailures": 0.0, "RecordFailures": 0.0, "InvalidMessages": 0.0, "Rejects": 0.0,
        "RenderingFailures": 0.0, "UnmatchedFeedback": 0.0,
    }


def estimate(template: dict, a: Assumptions = Assumptions()) -> Estimate:
    est = Estimate(a)
    p = PRICES
    canaries = canaries_per_month(template)
    # A canary travels the whole path like an order (its item expires after a day: no storage).
    emails = a.emails + canaries
    events = emails * a.events_per_email
    functions = _of_type(template, "AWS::Lambda::Function")
    send_fn = next(f for n, f in functions.items() if "Send" in n)
    feedback_fn = next(f for n, f in functions.items() if "Feedback" in n)

    canary_note = f" + {canaries:,.0f} canaries" if canaries else ""
    est.add("SES", emails / 1000 * p["ses_per_1000_emails"],
            f"{a.emails:,} emails{canary_note}")
    if canaries:
        est.add("EventBridge Scheduler",
                canaries / 1e6 * p["scheduler_per_million_invocations"],
                f"{canaries:,.0f} canary schedules")

    def compute(fn: dict, invocations: float, ms: int) -> float:
        props = fn["Properties"]
        rate = p["lambda_gb_second"][props.get("Architectures", ["x86_64"])[0]]
        return invocations * ms / 1000 * props["MemorySize"] / 1024 * rate
    invocations = emails * (1 + a.duplicate_rate) + events  # worst case: one record each
    est.add("Lambda", invocations / 1e6 * p["lambda_per_million_requests"]
            + compute(send_fn, emails * (1 + a.duplicate_rate), a.send_ms)
            + compute(feedback_fn, events, a.feedback_ms),
            f"{invocations:,.0f} invocations, {send_fn['Properties']['MemorySize']} MB "
            f"{send_fn['Properties']['Architectures'][0]}")

    mappings = len(_of_type(template, "AWS::Lambda::EventSourceMapping"))
    messages = emails * (1 + a.duplicate_rate) + events
    sqs_requests = mappings * IDLE_POLL_REQUESTS + 2 * messages  # send by SNS + delete
    est.add("SQS", sqs_requests / 1e6 * p["sqs_per_million_requests"],
            f"{sqs_requests / 1e6:.2f} M requests ({mappings} event source mappings long-poll)")

    publishes = emails * (1 + a.duplicate_rate) + events
    est.add("SNS", publishes / 1e6 * p["sns_per_million_publishes"],
            f"{publishes:,.0f} publishes")

    table = next(iter(_of_type(template, "AWS::DynamoDB::Table").values()))["Properties"]
    indexes = len(table.get("GlobalSecondaryIndexes", []))
    # Per email: the claim (a new item), SENT, the Send event (its status write is refused, as the
    # item is SENT already: 1 WRU, then a history-only write), the Delivery event. A write that
    # changes an index key costs a delete and a put in that index; with ALL projection any other
    # write updates the index item once.
    status_changes = 3  # claim, SENT, Delivery
    wru = a.item_kb * (5 + indexes * (1 + 2 * (status_changes - 1) + 1))
    wru_month = emails * wru * (1 + a.duplicate_rate)
    retention_days = a.retention_days or _default(template, "RecordRetentionDays")
    items = a.emails_per_day * retention_days  # customers' items; a canary's lives a day
    storage_gb = items * a.item_kb * (1 + indexes) / 1024 / 1024
    est.add("DynamoDB", wru_month / 1e6 * p["dynamodb_per_million_wru"]
            + storage_gb * p["dynamodb_gb_month"]
            + storage_gb / (1 + indexes) * p["dynamodb_pitr_gb_month"],
            f"{wru:.0f} WRU/email, {storage_gb:.2f} GB with {indexes} indexes")

    keys = len(_of_type(template, "AWS::KMS::Key"))
    # AWS's formulas: per busy topic (B / D) x 2 per publisher; per queue (B / D) x (2 x
    # producers + consumers), D being the queue's KmsDataKeyReusePeriodSeconds (default 300).
    busy = [n for n in _of_type(template, "AWS::SNS::Topic") if "Order" in n or "Delivery" in n]
    kms_requests = SECONDS / SNS_DATA_KEY_REUSE_S * 2 * len(busy)
    for name, queue in _of_type(template, "AWS::SQS::Queue").items():
        if "DeadLetter" not in name:
            reuse = queue["Properties"].get("KmsDataKeyReusePeriodSeconds", 300)
            kms_requests += SECONDS / reuse * 3
    kms_requests += 5_000  # bounce topic, Lambda environment, DynamoDB and Logs data keys
    est.add("KMS", keys * p["kms_key_month"] + kms_requests / 10_000 * p["kms_per_10000_requests"],
            f"{keys} key, {kms_requests:,.0f} requests")

    alarms = _of_type(template, "AWS::CloudWatch::Alarm").values()
    alarm_metrics = sum(
        sum(1 for q in al["Properties"].get("Metrics", []) if "MetricStat" in q) or 1
        for al in alarms)
    est.add("CloudWatch alarms", alarm_metrics * p["cloudwatch_alarm_metric_month"],
            f"{len(alarms)} alarms watching {alarm_metrics} metrics")
    dashboards = len(_of_type(template, "AWS::CloudWatch::Dashboard"))
    est.add("CloudWatch dashboard", dashboards * p["cloudwatch_dashboard_month"],
            f"{dashboards} dashboard")
    counts = metric_events(a, canaries)
    names = _custom_metrics(template)
    metric_months = sum(_active_hours(counts.get(name, 0.0)) for name in names)
    est.add("CloudWatch metrics", metric_months * p["cloudwatch_custom_metric_month"],
            f"{len(names)} custom metrics, {metric_months:.2f} metric-months (EMF, hourly)")
    log_gb = invocations * a.log_bytes_per_invocation / 1e9
    est.add("CloudWatch Logs", log_gb * p["logs_ingestion_per_gb"]
            + log_gb * (a.log_retention_days or _default(template, "LogRetentionDays")) / 30
            * p["logs_storage_gb_month"],
            f"{log_gb:.2f} GB/month")
    return est


def report(est: Estimate) -> str:
    a = est.assumptions
    width = max(len(s) for s in est.lines)
    rows = [f"Monthly cost estimate, us-east-1 list prices of {PRICES_DATE}, free tier excluded",
            f"Assumptions: {a.emails_per_day:,} emails/day x {a.days} days, bounce "
            f"{a.bounce_rate:.1%}, complaint {a.complaint_rate:.2%}, delay {a.delay_rate:.1%}, "
            f"duplicates {a.duplicate_rate:.1%}, every record in its own invocation",
            "", f"{'service':<{width}}  {'USD':>7}  basis", f"{'-' * width}  {'-' * 7}  -----"]
    for service, usd in sorted(est.lines.items(), key=lambda kv: -kv[1]):
        rows.append(f"{service:<{width}}  {usd:>7.2f}  {est.notes[service]}")
    rows += [f"{'-' * width}  {'-' * 7}", f"{'total':<{width}}  {est.total:>7.2f}"]
    return "\n".join(rows) + "\n"


def markdown_table(est: Estimate) -> str:
    rows = ["| Service | USD / month | Basis |", "|---|---:|---|"]
    for service, usd in sorted(est.lines.items(), key=lambda kv: -kv[1]):
        rows.append(f"| {service} | {usd:.2f} | {est.notes[service]} |")
    rows.append(f"| **Total** | **{est.total:.2f}** | |")
    return "\n".join(rows)
