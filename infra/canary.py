"""The end-to-end canary: a scheduled canary order and the alarm that says none got through.

Every `CanaryIntervalMinutes` an EventBridge Scheduler schedule publishes a canary order to the
order topic, through its own role. It travels the whole path a real order does (topic, queue,
send function, SES, event destinations, feedback queue and function, table) to the SES mailbox
simulator, which delivers it without touching the account's reputation or quota. The feedback
processor counts its Delivery as `CanaryDelivered`; the alarm `<env>-canary-not-delivered`
fires when none was delivered for CANARY_ALARM_INTERVALS intervals in a row, whatever broke
(DESIGN.md, "Self-watching"). With `CanaryIntervalMinutes=0` none of this exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from awacs import kms as kms_actions
from awacs import sns as sns_actions
from awacs import sts
from awacs.aws import (
    Allow, Condition, PolicyDocument, Principal, Statement, StringEquals,
)
from troposphere import AccountId, FindInMap, GetAtt, Ref, Sub, Template
from troposphere.cloudwatch import Alarm
from troposphere.iam import Policy, Role
from troposphere.scheduler import FlexibleTimeWindow, RetryPolicy, Schedule, Target

from infra import settings
from infra.common import add, physical, tags
from infra.kms import EncryptionKey
from infra.monitoring import NAMESPACE, alarm
from infra.parameters import Params
from infra.topics import Topics

# CanaryIntervalMinutes -> the canary alarm's period (CloudFormation cannot multiply a parameter).
INTERVALS_MAPPING = "CanaryIntervals"


@dataclass(frozen=True)
class Canary:
    schedule: Schedule
    role: Role
    alarm: Alarm


def canary_order() -> str:
    """The canary order the schedule publishes (DESIGN.md: `canary-<scheduled time>` to the
    mailbox simulator). Scheduler replaces `<aws.scheduler.scheduled-time>` when it fires, so each
    canary is a distinct order whose id says when it was due."""
    return json.dumps({
        "orderId": "canary-<aws.scheduler.scheduled-time>",
        "customerEmail": settings.CANARY_ADDRESS,
        "customerName": "Canary",
        "items": [{"name": "End-to-end check", "quantity": 1, "unitPrice": "0.00"}],
        "total": "0.00",
        "currency": "USD",
    }, sort_keys=True)


def _publish_role(t: Template, params: Params, key: EncryptionKey, topics: Topics) -> Role:
    """What the schedule may do: publish to the order topic, with the key that encrypts it."""
    return add(t, Role(
        "CanaryScheduleRole",
        Condition=params.has_canary,
        AssumeRolePolicyDocument=PolicyDocument(Version="2012-10-17", Statement=[Statement(
            Effect=Allow,
            Principal=Principal("Service", "scheduler.amazonaws.com"),
            Action=[sts.AssumeRole],
            # Confused deputy: only schedules of this account may use the role.
            Condition=Condition(StringEquals("aws:SourceAccount", AccountId)),
        )]),
        Policies=[Policy(
            PolicyName="publish-canary-orders",
            PolicyDocument=PolicyDocument(Version="2012-10-17", Statement=[
                Statement(Sid="PublishCanaryOrders", Effect=Allow, Action=[sns_actions.Publish],
                          Resource=[topics.orders.ref()]),
                # SNS encrypts the message with the topic's key on the publisher's behalf.
                Statement(Sid="UseTopicKey", Effect=Allow,
                          Action=[kms_actions.GenerateDataKey, kms_actions.Decrypt],
                          Resource=[GetAtt(key.key, "Arn")]),
            ]),
        )],
        Tags=tags(params.env),
    ))


def add_canary(t: Template, params: Params, *, key: EncryptionKey, topics: Topics) -> Canary:
    t.add_mapping(INTERVALS_MAPPING, {
        str(minutes): {"PeriodSeconds": minutes * 60}
        for minutes in settings.CANARY_INTERVAL_CHOICES if minutes})
    role = _publish_role(t, params, key, topics)
    schedule = add(t, Schedule(
        "CanarySchedule",
        Condition=params.has_canary,
        Name=physical("order-canary"),
        Description="Publishes a canary order to the order topic (README: canary-not-delivered)",
        ScheduleExpression=Sub(f"rate(${{{params.canary_interval_minutes.title}}} minutes)"),
        FlexibleTimeWindow=FlexibleTimeWindow(Mode="OFF"),  # on time: its latency is measured
        State="ENABLED",
        Target=Target(
            Arn=topics.orders.ref(),
            RoleArn=GetAtt(role, "Arn"),
            Input=canary_order(),
            # A canary that could not be published at its time is not replayed later: a stale
            # canary would hide the gap the alarm must see.
            RetryPolicy=RetryPolicy(MaximumEventAgeInSeconds=60, MaximumRetryAttempts=0),
        ),
    ))
    intervals = settings.CANARY_ALARM_INTERVALS
    canary_alarm = alarm(
        t, params, "AlarmCanaryNotDelivered", slug="canary-not-delivered",
        meaning=(f"No canary order was delivered end to end in {intervals} canary intervals in a "
                 "row: orders are probably not reaching customers (topic, queue, function, IAM, "
                 "KMS, SES identity, DKIM, configuration set or event destinations)."),
        # No data at all is the failure this alarm exists for.
        missing="breaching",
        actions=[topics.alarms.ref()],
        Condition=params.has_canary,
        Namespace=Sub(NAMESPACE),
        MetricName="CanaryDelivered",
        Statistic="Sum",
        Period=FindInMap(INTERVALS_MAPPING, Ref(params.canary_interval_minutes), "PeriodSeconds"),
        EvaluationPeriods=intervals,
        DatapointsToAlarm=intervals,
        Threshold=1,
        ComparisonOperator="LessThanThreshold",
    )
    return Canary(schedule=schedule, role=role, alarm=canary_alarm)

