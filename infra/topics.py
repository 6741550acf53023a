"""The five SNS topics and their access policies.

A topic policy replaces the topic's default policy, so each one names every publisher explicitly:
the account's own principals on the order topic, SES on the three feedback topics (only from this
stack's configuration set), CloudWatch and Budgets on the alarms topic (only for this account),
and every policy denies requests made without TLS.
"""

from __future__ import annotations

from dataclasses import dataclass

from awacs import sns as sns_actions
from awacs.aws import (
    Allow, ArnLike, Bool, Condition, Deny, PolicyDocument, Principal, Statement,
    StringEquals,
)
from troposphere import AccountId, GetAtt, Sub, Template
from troposphere.sns import Topic, TopicPolicy

from infra.common import ENV, add, physical, tags
from infra.kms import EncryptionKey
from infra.parameters import Params
from infra.settings import CONFIG_SET_NAME


@dataclass(frozen=True)
class Topics:
    orders: Topic
    delivery: Topic
    bounce: Topic
    complaint: Topic
    alarms: Topic
    # Publishers that check their permission when they are created depend on it.
    policy: TopicPolicy

    @property
    def feedback(self) -> list[Topic]:
        return [self.delivery, self.bounce, self.complaint]


def deny_without_tls(topics: list[Topic]) -> Statement:
    return Statement(
        Sid="DenyPublishWithoutTls",
        Effect=Deny,
        Principal=Principal("*"),
        Action=[sns_actions.Publish],
        Resource=[topic.ref() for topic in topics],
        Condition=Condition(Bool("aws:SecureTransport", "false")),
    )


def allow_account_publish(topic: Topic) -> Statement:
    return Statement(
        Sid="AccountPublishesOrders",
        Effect=Allow,
        Principal=Principal("AWS", Sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")),
        Action=[sns_actions.Publish],
        Resource=[topic.ref()],
    )


def allow_service_publish(sid: str, service: str, topics: list[Topic], source_arn: Sub) -> Statement:
    """`service` may publish, only on behalf of this account and of `source_arn` (confused deputy)."""
    return Statement(
        Sid=sid,
        Effect=Allow,
        Principal=Principal("Service", service),
        Action=[sns_actions.Publish],
        Resource=[topic.ref() for topic in topics],
        Condition=Condition([
            StringEquals("aws:SourceAccount", AccountId),
            ArnLike("aws:SourceArn", source_arn),
        ]),
    )


def _topic(t: Template, params: Params, key: EncryptionKey, title: str, name: str,
           **extra) -> Topic:
    return add(t, Topic(
        title,
        TopicName=physical(name),
        KmsMasterKeyId=GetAtt(key.key, "Arn"),
        Tags=tags(params.env),
        **extra,
    ))


def add_topics(t: Template, params: Params, *, key: EncryptionKey) -> Topics:
    orders = _topic(t, params, key, "SNSTopicOrderConfirmations", "order-confirmations")
    delivery = _topic(t, params, key, "SNSTopicSesDelivery", "ses-delivery-notifications")
    bounce = _topic(t, params, key, "SNSTopicSesBounce", "ses-bounce-notifications")
    complaint = _topic(t, params, key, "SNSTopicSesComplaint", "ses-complaint-notifications")
    # The display name is the sender name of the alarm e-mails.
    alarms = _topic(t, params, key, "SNSTopicAlarms", "email-alarms",
                    DisplayName="Order email alarms")
    feedback = [delivery, bounce, complaint]
    everything = [orders, *feedback, alarms]

    # One policy document for the five topics (one resource keeps the template small); each
    # statement names exactly the topics it applies to.
    policy = add(t, TopicPolicy(
        "SNSTopicPolicy",
        Topics=[topic.ref() for topic in everything],
        PolicyDocument=PolicyDocument(Version="2012-10-17", Statement=[
            allow_account_publish(orders),
            allow_service_publish(
                "SesPublishesFromStackConfigSet", "ses.amazonaws.com", feedback,
                Sub(
                    "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:"
                    f"configuration-set/${{{ENV}}}-{CONFIG_SET_NAME}"
                ),
            ),
            # The alarms are named `<env>-...` (infra/monitoring.py), in this region.
            allow_service_publish(
                "CloudWatchPublishesStackAlarms", "cloudwatch.amazonaws.com", [alarms],
                Sub(
                    "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:"
                    f"alarm:${{{ENV}}}-*"
                ),
            ),
            allow_service_publish(
                "BudgetsPublishesAccountBudgets", "budgets.amazonaws.com", [alarms],
                Sub("arn:${AWS::Partition}:budgets::${AWS::AccountId}:*"),
            ),
            deny_without_tls(everything),
        ]),
    ))
    return Topics(orders=orders, delivery=delivery, bounce=bounce, complaint=complaint,
                  alarms=alarms, policy=policy)
