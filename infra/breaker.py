"""The reputation circuit breaker: an alarm on this stack's SES reputation and the function it
invokes, which pauses this stack's sending (DESIGN.md, "Self-watching").

The alarm watches SES's own bounce and complaint rates of this stack's configuration set
(`AWS/SES Reputation.BounceRate` and `Reputation.ComplaintRate`, fractions, dimension
`ses:configuration-set`), computes the larger of the two as a percentage of the rate at which AWS
reviews an account, and fires when it reaches `PauseAtPercentOfReview`. Firing always notifies
the alarms topic; with `AutoPauseSending=true` it also invokes `<env>-email-circuit-breaker`
(handlers/circuit_breaker.py) directly, which pauses the configuration set and disables the send
function's event source mapping. Nothing resumes by itself: an operator does (README, Operations
runbook). A breaker invocation that still fails after Lambda's retries is sent to the alarms
topic, so the on-call hears of a pause that did not happen.

The account-wide rates (every sender in the account) only notify (monitoring.py,
`ses-reputation-at-risk`): another sender's bounces must not stop this shop's order
confirmations, and pausing them would not lower that sender's rate.

The template sets neither the configuration set's `SendingOptions` nor the mapping's `Enabled`:
both are left to the breaker and the operator, so a stack update never resumes a paused stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import AccountId, GetAtt, If, Ref, Sub, Template
from troposphere.awslambda import (
    DestinationConfig, EventInvokeConfig, EventSourceMapping, Function, OnFailure, Permission,
)
from troposphere.cloudwatch import Alarm, Metric, MetricDataQuery, MetricDimension, MetricStat
from troposphere.iam import Role
from troposphere.logs import LogGroup
from troposphere.ses import ConfigurationSet

from infra import settings
from infra.common import add
from infra.functions import add_function, add_log_group
from infra.iam import (
    lambda_role, report_failures_to, switch_config_set_sending, switch_event_source_mapping,
    use_key, write_logs,
)
from infra.kms import EncryptionKey
from infra.monitoring import IGNORE, NAMESPACE, alarm
from infra.parameters import Params
from infra.topics import Topics

FUNCTION_TITLE = "LambdaEmailCircuitBreaker"
# SES publishes a configuration set's reputation metrics under its auto-tag name as dimension.
CONFIG_SET_DIMENSION = "ses:configuration-set"
# CloudWatch invokes a function that is an alarm action as this service principal.
ALARMS_PRINCIPAL = "lambda.alarms.cloudwatch.amazonaws.com"

# The checkov findings that do not apply to this function, with the reason (kept in Metadata).
CHECKOV_SKIPS = [
    ("CKV_AWS_116", "Alarm-invoked: a failed invocation goes to the alarms topic (on-failure "
                    "destination)"),
    ("CKV_AWS_115", "Invoked only by its alarm and by operators"),
    ("CKV_AWS_117", "Public AWS APIs only: no VPC needed"),
]


@dataclass(frozen=True)
class CircuitBreaker:
    function: Function
    role: Role
    log_group: LogGroup
    alarms: list[Alarm]
    permissions: list[Permission]


def percent_of_review(dimensions: list[MetricDimension]) -> list[MetricDataQuery]:
    """The larger of SES's bounce and complaint rates, each as a percentage of the rate at which
    AWS reviews an account (100: at the review rate)."""
    def rate(metric_id: str, name: str) -> MetricDataQuery:
        metric = Metric(Namespace="AWS/SES", MetricName=name)
        if dimensions:  # none: the account's metric
            metric.Dimensions = dimensions
        return MetricDataQuery(
            Id=metric_id,
            MetricStat=MetricStat(
                Metric=metric,
                Period=settings.CIRCUIT_BREAKER_ALARM_PERIOD_S,
                Stat="Maximum",
            ),
            ReturnData=False,
        )
    bounce, complaint = settings.SES_REVIEW_BOUNCE_RATE, settings.SES_REVIEW_COMPLAINT_RATE
    return [
        rate("bounce", "Reputation.BounceRate"),
        rate("complaint", "Reputation.ComplaintRate"),
        MetricDataQuery(Id="percent_of_review",
                        Expression=f"100*MAX([bounce/{bounce},complaint/{complaint}])",
                        ReturnData=True),
    ]


def _breaker_alarm(t: Template, params: Params, title: str, *, slug: str, meaning: str,
                   dimensions: list[MetricDimension], actions: If) -> Alarm:
    return alarm(
        t, params, title, slug=slug, meaning=meaning,
        # A reputation problem must not clear itself because sending stopped.
        missing=IGNORE,
        actions=actions,
        Metrics=percent_of_review(dimensions),
        EvaluationPeriods=1,
        Threshold=Ref(params.pause_at_percent_of_review),
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )


def _invoke_permission(t: Template, title: str, function: Function, source: Alarm) -> Permission:
    """Only `source`, an alarm of this account, may invoke the function."""
    return add(t, Permission(
        title,
        FunctionName=function.ref(),
        Action="lambda:InvokeFunction",
        Principal=ALARMS_PRINCIPAL,
        SourceArn=GetAtt(source, "Arn"),
        SourceAccount=AccountId,
    ))


def add_circuit_breaker(t: Template, params: Params, *, key: EncryptionKey, topics: Topics,
                        config_set: ConfigurationSet,
                        send_mapping: EventSourceMapping) -> CircuitBreaker:
    log_group = add_log_group(t, params, key, f"{FUNCTION_TITLE}LogGroup",
                              settings.CIRCUIT_BREAKER_FUNCTION_NAME)
    role = lambda_role(t, params, f"{FUNCTION_TITLE}Role", [
        switch_config_set_sending(config_set),
        switch_event_source_mapping(send_mapping),
        report_failures_to(topics.alarms),
        use_key(key),
        write_logs(log_group),
    ])
    function = add_function(
        t, params, title=FUNCTION_TITLE, name=settings.CIRCUIT_BREAKER_FUNCTION_NAME,
        timeout=settings.CIRCUIT_BREAKER_TIMEOUT_S, role=role, log_group=log_group, key=key,
        variables={
            "SES_CONFIG_SET": config_set.ref(),
            "SEND_EVENT_SOURCE_MAPPING": send_mapping.ref(),  # Ref: the mapping's UUID
            "ENVIRONMENT": Ref(params.env),
            "METRICS_NAMESPACE": Sub(NAMESPACE),
        },
        checkov_skips=CHECKOV_SKIPS,
    )

    # The on-call is always told; the breaker acts only while AutoPauseSending is true.
    actions = If(params.auto_pauses,
                 [GetAtt(function, "Arn"), topics.alarms.ref()],
                 [topics.alarms.ref()])
    share = (f"{settings.SES_REVIEW_BOUNCE_RATE:.0%} bounces, "
             f"{settings.SES_REVIEW_COMPLAINT_RATE:.1%} complaints")
    then = ("With AutoPauseSending=true the circuit breaker has paused this stack's sending (its "
            "configuration set and its send queue's consumer); nothing resumes by itself.")
    alarms = [
        _breaker_alarm(
            t, params, "AlarmBreakerConfigSetReputation", slug="breaker-config-set-reputation",
            meaning=("SES's bounce or complaint rate of this stack's configuration set reached "
                     f"PauseAtPercentOfReview % of the rates at which AWS reviews an account "
                     f"({share}). {then}"),
            dimensions=[MetricDimension(Name=CONFIG_SET_DIMENSION, Value=config_set.ref())],
            actions=actions),
    ]
    permissions = [
        _invoke_permission(t, f"{alarm_resource.title}InvokesCircuitBreaker", function,
                           alarm_resource)
        for alarm_resource in alarms
    ]
    # CloudWatch invokes the function asynchronously: Lambda retries a failed invocation twice,
    # then gives up. A pause that failed must not vanish into the logs: the failed event goes to
    # the alarms topic (and the on-call's e-mail). Stale requests are worth little: an hour.
    add(t, EventInvokeConfig(
        f"{FUNCTION_TITLE}InvokeConfig",
        FunctionName=function.ref(),
        Qualifier="$LATEST",
        MaximumRetryAttempts=2,
        MaximumEventAgeInSeconds=3600,
        DestinationConfig=DestinationConfig(OnFailure=OnFailure(
            Destination=topics.alarms.ref())),
    ))
    return CircuitBreaker(function=function, role=role, log_group=log_group, alarms=alarms,
                          permissions=permissions)
