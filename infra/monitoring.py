"""Alarms, the dashboard, the monthly budget and the on-call e-mail subscription.

The dashboard's and the budget's names are global to the account, so they end with the region;
the budget exists only in the regions whose CloudFormation has the budget resource type
(`settings.BUDGET_REGIONS`, condition `RegionHasBudgets`).

Every alarm notifies the alarms topic when it fires. `TreatMissingData` is chosen per alarm:
the handlers publish a metric only when it is non-zero (custom metrics are billed per hour in
which they are published), and idle queues stop reporting, so for most alarms "no data" means
"nothing happened" (`notBreaching`). SES reputation alarms `ignore` gaps: a reputation problem must
not clear itself just because sending stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from troposphere import Ref, Sub, Template
from troposphere.budgets import (
    Budget, BudgetData, Notification, NotificationWithSubscribers, ResourceTag, Spend, Subscriber,
)
from troposphere.cloudwatch import (
    Alarm, Dashboard, Metric, MetricDataQuery, MetricDimension, MetricStat,
)
from troposphere.sns import SubscriptionResource
from troposphere.sqs import Queue

from infra import settings
from infra.common import ENV, add, physical, region_is_one_of, regional, tag_pairs, tags
from infra.functions import Functions
from infra.parameters import Params
from infra.queues import Queues
from infra.topics import Topics

NAMESPACE = f"${{{ENV}}}/EmailNotifications"  # inside Sub; the handlers' METRICS_NAMESPACE
REGION_HAS_BUDGETS = "RegionHasBudgets"  # condition of the budget
NOT_BREACHING = "notBreaching"
IGNORE = "ignore"


@dataclass(frozen=True)
class Monitoring:
    alarms: list[Alarm]
    dashboard: Dashboard
    budget: Budget


RUNBOOK = "README.md, Operations runbook"


def alarm_name(slug: str) -> Sub:
    """`<env>-<slug>`: what the on-call engineer sees in the notification and the console."""
    return physical(slug)


def alarm(t: Template, params: Params, title: str, *, slug: str, meaning: str, missing: str,
          actions: list, **props) -> Alarm:
    """An alarm named `<env>-<slug>` whose description says what it means and names its runbook
    entry (the README heading `slug`); `actions` run when it fires."""
    return add(t, Alarm(
        title,
        AlarmName=alarm_name(slug),
        AlarmDescription=f"{meaning} Runbook: {RUNBOOK}, entry '{slug}'.",
        AlarmActions=actions,
        TreatMissingData=missing,
        Tags=tags(params.env),
        **props,
    ))


def _alarm(t: Template, params: Params, topics: Topics, title: str, **props) -> Alarm:
    """An alarm that notifies the alarms topic (and so the on-call e-mail) when it fires."""
    return alarm(t, params, title, actions=[topics.alarms.ref()], **props)


def _metric_alarm(t, params, topics, title, *, slug: str, meaning: str, namespace, metric, stat,
                  dimensions: dict | None = None, threshold, period=settings.ALARM_PERIOD_S,
                  evaluation_periods=1, missing=NOT_BREACHING) -> Alarm:
    extra = {}
    if dimensions:
        extra["Dimensions"] = [MetricDimension(Name=k, Value=v) for k, v in dimensions.items()]
    return _alarm(
        t, params, topics, title, slug=slug, meaning=meaning, missing=missing,
        Namespace=namespace,
        MetricName=metric,
        Statistic=stat,
        Period=period,
        EvaluationPeriods=evaluation_periods,
        Threshold=threshold,
        ComparisonOperator="GreaterThanThreshold",
        **extra,
    )


def _reputation_alarm(t, params, topics) -> Alarm:
    """SES's own account-wide rates (`AWS/SES Reputation.*`, fractions), each divided by the rate
    at which AWS reviews the account: the alarm fires when either passes its share."""
    def metric(metric_id: str, name: str) -> MetricDataQuery:
        return MetricDataQuery(
            Id=metric_id,
            MetricStat=MetricStat(Metric=Metric(Namespace="AWS/SES", MetricName=name),
                                  Period=settings.SES_REPUTATION_PERIOD_S, Stat="Maximum"),
            ReturnData=False,
        )
    bounce, complaint = settings.SES_REVIEW_BOUNCE_RATE, settings.SES_REVIEW_COMPLAINT_RATE
    share = settings.SES_REPUTATION_ALARM_SHARE
    return _alarm(
        t, params, topics, "AlarmSesReputation", slug="ses-reputation-at-risk",
        meaning=(f"The account's SES bounce rate passed {share * bounce:.1%} or its complaint "
                 f"rate {share * complaint:.2%} ({share:.0%} of the {bounce:.0%} and "
                 f"{complaint:.1%} at which AWS reviews the account). It covers every sender in "
                 "the account and does not clear itself when sending stops."),
        # A reputation problem must not clear itself because sending stopped.
        missing=IGNORE,
        Metrics=[metric("bounce", "Reputation.BounceRate"),
                 metric("complaint", "Reputation.ComplaintRate"),
                 MetricDataQuery(Id="share",
                                 Expression=f"MAX([bounce/{bounce},complaint/{complaint}])",
                                 ReturnData=True)],
        EvaluationPeriods=1,
        Threshold=share,
        ComparisonOperator="GreaterThanThreshold",
    )


def _dlq_alarm(t, params, topics, dlq: Queue, *, label: str, slug: str, meaning: str) -> Alarm:
    """Any message in a dead-letter queue pages: whatever cannot be processed ends there."""
    return _metric_alarm(
        t, params, topics, f"Alarm{label}DeadLetterQueueNotEmpty", slug=f"{slug}-dlq-not-empty",
        meaning=meaning, namespace="AWS/SQS", metric="ApproximateNumberOfMessagesVisible",
        stat="Maximum", dimensions={"QueueName": dlq.get_att("QueueName")}, threshold=0,
    )


def add_alarms(t: Template, params: Params, *, topics: Topics, queues: Queues,
               functions: Functions) -> list[Alarm]:
    """The alarms that notify the on-call. Chosen for what each one alone can tell, because each
    metric an alarm watches costs $0.10 a month (README "Cost"): a broken feedback path or a
    stalled feedback queue is told by the canary (infra/canary.py) and the feedback DLQ alarm, a
    stack's bounce or complaint rate by the circuit breaker's alarm on its configuration set's
    SES reputation (infra/breaker.py) and, earlier, by the account's (below)."""
    return [
        _reputation_alarm(t, params, topics),
        _metric_alarm(
            t, params, topics, "AlarmEmailSendFailures", slug="send-failures",
            meaning=(f"More than {settings.SEND_FAILURES_THRESHOLD} SES send attempts failed "
                     f"in {settings.ALARM_PERIOD_S // 60} minutes: throttling, an account or "
                     "setup problem (retried), or emails SES refused for good (FAILED)."),
            namespace=Sub(NAMESPACE), metric="SendFailures", stat="Sum",
            threshold=settings.SEND_FAILURES_THRESHOLD,
        ),
        _dlq_alarm(t, params, topics, queues.send_dlq, label="Send", slug="send",
                   meaning=("Orders that could not be emailed after 5 attempts, or invalid order "
                            "messages, wait in the send dead-letter queue for an operator.")),
        _dlq_alarm(t, params, topics, queues.feedback_dlq, label="Feedback", slug="feedback",
                   meaning=("SES events that could not be recorded after 5 attempts wait in the "
                            "feedback dead-letter queue: the emails went out, their status "
                            "lags.")),
        _metric_alarm(
            t, params, topics, "AlarmSendQueueMessageAge", slug="send-queue-backlog",
            meaning=(f"The oldest order in the send queue has waited more than "
                     f"{settings.SEND_QUEUE_MAX_AGE_S // 60} minutes: confirmations are late."),
            namespace="AWS/SQS", metric="ApproximateAgeOfOldestMessage", stat="Maximum",
            dimensions={"QueueName": queues.send.get_att("QueueName")},
            threshold=settings.SEND_QUEUE_MAX_AGE_S,
        ),
        # Errors only: throttling of an SQS-driven function shows as a backlog (above) and on the
        # dashboard; a crash or a timeout fails whole batches and must be seen within minutes.
        _metric_alarm(
            t, params, topics, "AlarmSendFunctionErrors", slug="send-function-errors",
            meaning=("The send function crashed or timed out (record-level failures are retried "
                     "per record and do not count)."),
            namespace="AWS/Lambda", metric="Errors", stat="Sum",
            dimensions={"FunctionName": functions.send.ref()}, threshold=0,
        ),
    ]


# --- Dashboard ----------------------------------------------------------------------------------

def _widget(title: str, metrics: list, *, stat: str = "Sum", **extra) -> dict:
    # No x/y/height: CloudWatch lays widgets out in order, two per row at width 12; no period:
    # 300 s is the default.
    properties = {"title": title, "region": "${AWS::Region}", "stat": stat, "metrics": metrics,
                  **extra}
    return {"type": "metric", "width": 12, "properties": properties}


def _ours(*names: str) -> list:
    first, *rest = names
    return [[NAMESPACE, first]] + [[".", name] for name in rest]


def _per(namespace: str, metric: str, dimension: str, values: list[str]) -> list:
    """One line per dimension value; "." repeats the line above (shorter dashboard body)."""
    first, *rest = values
    return [[namespace, metric, dimension, first]] + [[".", ".", ".", value] for value in rest]


def dashboard_body() -> dict:
    """The dashboard as a dict whose strings hold `${...}` for `Fn::Sub`."""
    send_fn = f"${{{ENV}}}-{settings.SEND_FUNCTION_NAME}"
    feedback_fn = f"${{{ENV}}}-{settings.FEEDBACK_FUNCTION_NAME}"
    queues = [f"${{{ENV}}}-{name}" for name in
              ("send-order-email", "send-order-email-dlq", "ses-feedback", "ses-feedback-dlq")]
    hidden = {"visible": False}
    widgets = [
        _widget("Emails", _ours("EmailsSent", "Deliveries", "Bounces", "Complaints", "Rejects",
                                "RenderingFailures", "DeliveryDelays")),
        # Ours per hour, and the account's as SES computes it for its review (x 100: percent).
        _widget("Bounce and complaint rate (%)", [
            [NAMESPACE, "EmailsSent", dict(hidden, id="s")],
            [".", "Bounces", dict(hidden, id="b")],
            [".", "Complaints", dict(hidden, id="c")],
            ["AWS/SES", "Reputation.BounceRate", dict(hidden, id="rb", stat="Maximum")],
            [".", "Reputation.ComplaintRate", dict(hidden, id="rc", stat="Maximum")],
            [{"expression": "100*FILL(b,0)/s", "label": "Bounces"}],
            [{"expression": "100*FILL(c,0)/s", "label": "Complaints"}],
            [{"expression": "100*rb", "label": "SES bounce rate"}],
            [{"expression": "100*rc", "label": "SES complaint rate"}],
        ], period=3600),
        _widget("Problems", _ours("SendFailures", "RecordFailures", "InvalidMessages",
                                  "DuplicatesSkipped", "UnmatchedFeedback")),
        # The end-to-end canary (infra/canary.py): one sent and one delivered per interval.
        _widget("Canary: sent and delivered", _ours("CanarySent", "CanaryDelivered")),
        _widget("Canary: scheduled -> delivered (s)", [
            [NAMESPACE, "CanaryLatency", {"stat": "Maximum", "label": "slowest"}],
            [".", ".", {"stat": "p50", "label": "median"}],
        ]),
        _widget("Function duration p95 (ms)", [
            ["AWS/Lambda", "Duration", "FunctionName", send_fn],
            [".", ".", ".", feedback_fn],
        ], stat="p95"),
        _widget("Queue depth", _per("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName",
                                    queues), stat="Maximum"),
        _widget("Age of oldest message (s)", _per("AWS/SQS", "ApproximateAgeOfOldestMessage",
                                                  "QueueName", [queues[0], queues[2]]),
                stat="Maximum"),
        _widget("Functions", [
            ["AWS/Lambda", "Invocations", "FunctionName", send_fn], [".", "Errors", ".", "."],
            [".", "Throttles", ".", "."], [".", "Invocations", ".", feedback_fn],
            [".", "Errors", ".", "."], [".", "Throttles", ".", "."],
        ]),
        _widget("Table", [
            ["AWS/DynamoDB", "ConsumedWriteCapacityUnits", "TableName",
             f"${{{ENV}}}-{settings.TABLE_NAME}"],
            [".", "ConsumedReadCapacityUnits", ".", "."],
            [".", "WriteThrottleEvents", ".", "."],
        ]),
    ]
    return {"widgets": widgets}


def add_dashboard(t: Template, params: Params) -> Dashboard:
    # Indented, so that the deploy file shows it as a readable block and a diff shows which
    # widget changed.
    body = json.dumps(dashboard_body(), sort_keys=True, indent=2)
    return add(t, Dashboard(
        "CloudWatchDashboard",
        DashboardName=regional(settings.DASHBOARD_NAME),
        DashboardBody=Sub(body),
        Tags=tags(params.env),
    ))


# --- Budget and on-call subscription ------------------------------------------------------------

def _budget_notification(kind: str, percent: int, topics: Topics) -> NotificationWithSubscribers:
    return NotificationWithSubscribers(
        Notification=Notification(
            NotificationType=kind, ComparisonOperator="GREATER_THAN", Threshold=percent,
            ThresholdType="PERCENTAGE",
        ),
        Subscribers=[Subscriber(SubscriptionType="SNS", Address=topics.alarms.ref())],
    )


def add_budget(t: Template, params: Params, *, topics: Topics) -> Budget:
    # The budget covers the account's whole monthly cost (SES sending is not attributable to a
    # stack's tags): deploy into a dedicated account, as AWS recommends per workload.
    # AWS::Budgets::Budget is missing from CloudFormation in some regions, SES ones among them:
    # there the stack has no budget instead of failing to deploy.
    t.add_condition(REGION_HAS_BUDGETS, region_is_one_of(settings.BUDGET_REGIONS))
    return add(t, Budget(
        "MonthlyCostBudget",
        Condition=REGION_HAS_BUDGETS,
        Budget=BudgetData(
            BudgetName=regional(settings.BUDGET_NAME),
            BudgetType="COST",
            TimeUnit="MONTHLY",
            BudgetLimit=Spend(Amount=Ref(params.monthly_budget), Unit="USD"),
        ),
        NotificationsWithSubscribers=[
            _budget_notification("ACTUAL", 80, topics),
            _budget_notification("FORECASTED", 100, topics),
        ],
        ResourceTags=[ResourceTag(Key=key, Value=value) for key, value in tag_pairs(params.env)],
        DependsOn=[topics.policy],
    ))


def add_alarm_email(t: Template, params: Params, *, topics: Topics) -> SubscriptionResource:
    return add(t, SubscriptionResource(
        "SNSSubscriptionAlarmEmail",
        Condition=params.has_alarm_email,
        TopicArn=topics.alarms.ref(),
        Protocol="email",
        Endpoint=Ref(params.alarm_email),
    ))


def add_monitoring(t: Template, params: Params, *, topics: Topics, queues: Queues,
                   functions: Functions) -> Monitoring:
    add_alarm_email(t, params, topics=topics)
    return Monitoring(
        alarms=add_alarms(t, params, topics=topics, queues=queues, functions=functions),
        dashboard=add_dashboard(t, params),
        budget=add_budget(t, params, topics=topics),
    )
