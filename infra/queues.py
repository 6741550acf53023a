"""SQS queues between the topics and the functions, their dead-letter queues, policies and the
SNS subscriptions that feed them.

Why queues at all: SES has a hard send-rate quota. A queue absorbs a 10x burst, the event source
mapping's `MaximumConcurrency` keeps sends under the quota, partial batch failures retry only the
failed orders, and whatever cannot be processed ends in a dead-letter queue with an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

from awacs import sqs as sqs_actions
from awacs.aws import (
    Allow, ArnEquals, Bool, Condition, Deny, PolicyDocument, Principal, Statement,
)
from troposphere import GetAtt, Template
from troposphere.sns import SubscriptionResource, Topic
from troposphere.sqs import Queue, QueuePolicy, RedrivePolicy

from infra import settings
from infra.common import add, physical, tags
from infra.kms import EncryptionKey
from infra.parameters import Params
from infra.topics import Topics


# Deliberate: messages are transient and the names are fixed, so a retained queue would block
# re-creating the stack. Drain the DLQs before deleting a stack (README runbook).
DELETE_WITH_STACK = {"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"}


@dataclass(frozen=True)
class Queues:
    send: Queue
    send_dlq: Queue
    feedback: Queue
    feedback_dlq: Queue

    @property
    def dead_letter_queues(self) -> list[Queue]:
        return [self.send_dlq, self.feedback_dlq]


def allow_topics_send(sid: str, queues: list[Queue], topics: list[Topic]) -> Statement:
    """SNS may deliver to `queues` only on behalf of `topics` (confused deputy)."""
    return Statement(
        Sid=sid,
        Effect=Allow,
        Principal=Principal("Service", "sns.amazonaws.com"),
        Action=[sqs_actions.SendMessage],
        Resource=[GetAtt(queue, "Arn") for queue in queues],
        Condition=Condition(ArnEquals("aws:SourceArn", [topic.ref() for topic in topics])),
    )


def deny_without_tls(queues: list[Queue]) -> Statement:
    return Statement(
        Sid="DenyWithoutTls",
        Effect=Deny,
        Principal=Principal("*"),
        Action=[sqs_actions.Action("*")],
        Resource=[GetAtt(queue, "Arn") for queue in queues],
        Condition=Condition(Bool("aws:SecureTransport", "false")),
    )


def _queue_pair(t: Template, params: Params, key: EncryptionKey, title: str, name: str,
                function_timeout_s: int) -> tuple[Queue, Queue]:
    dlq = add(t, Queue(
        f"{title}DeadLetterQueue",
        QueueName=physical(f"{name}-dlq"),
        MessageRetentionPeriod=settings.DLQ_RETENTION_S,
        KmsMasterKeyId=GetAtt(key.key, "Arn"),
        KmsDataKeyReusePeriodSeconds=settings.KMS_DATA_KEY_REUSE_S,
        Tags=tags(params.env),
        **DELETE_WITH_STACK,
    ))
    queue = add(t, Queue(
        f"{title}Queue",
        QueueName=physical(name),
        VisibilityTimeout=settings.VISIBILITY_TIMEOUT_FACTOR * function_timeout_s,
        MessageRetentionPeriod=settings.QUEUE_RETENTION_S,
        KmsMasterKeyId=GetAtt(key.key, "Arn"),
        KmsDataKeyReusePeriodSeconds=settings.KMS_DATA_KEY_REUSE_S,
        RedrivePolicy=RedrivePolicy(
            deadLetterTargetArn=GetAtt(dlq, "Arn"),
            maxReceiveCount=settings.MAX_RECEIVE_COUNT,
        ),
        Tags=tags(params.env),
        **DELETE_WITH_STACK,
    ))
    return queue, dlq


def _subscribe(t: Template, title: str, topic: Topic, queue: Queue, dlq: Queue,
               policy: QueuePolicy) -> SubscriptionResource:
    # Raw delivery: the queue holds the publisher's JSON, not an SNS envelope. The subscription's
    # own redrive policy catches deliveries SNS could not make (e.g. a KMS error on the queue).
    return add(t, SubscriptionResource(
        title,
        TopicArn=topic.ref(),
        Protocol="sqs",
        Endpoint=GetAtt(queue, "Arn"),
        RawMessageDelivery=True,
        RedrivePolicy={"deadLetterTargetArn": GetAtt(dlq, "Arn")},
        DependsOn=[policy],
    ))


def add_queues(t: Template, params: Params, *, key: EncryptionKey, topics: Topics) -> Queues:
    send, send_dlq = _queue_pair(t, params, key, "SendOrderEmail", settings.SEND_FUNCTION_NAME,
                                 settings.SEND_TIMEOUT_S)
    feedback, feedback_dlq = _queue_pair(t, params, key, "SesFeedback", "ses-feedback",
                                         settings.FEEDBACK_TIMEOUT_S)
    everything = [send, send_dlq, feedback, feedback_dlq]
    # A DLQ accepts SNS too: it is the target of its subscription's redrive policy.
    policy = add(t, QueuePolicy(
        "SQSQueuePolicy",
        Queues=[queue.ref() for queue in everything],
        PolicyDocument=PolicyDocument(Version="2012-10-17", Statement=[
            allow_topics_send("OrderTopicDelivers", [send, send_dlq], [topics.orders]),
            allow_topics_send("FeedbackTopicsDeliver", [feedback, feedback_dlq], topics.feedback),
            deny_without_tls(everything),
        ]),
    ))

    _subscribe(t, "SNSSubscriptionOrderConfirmations", topics.orders, send, send_dlq, policy)
    for title, topic in [
        ("SNSSubscriptionSesDelivery", topics.delivery),
        ("SNSSubscriptionSesBounce", topics.bounce),
        ("SNSSubscriptionSesComplaint", topics.complaint),
    ]:
        _subscribe(t, title, topic, feedback, feedback_dlq, policy)
    return Queues(send=send, send_dlq=send_dlq, feedback=feedback, feedback_dlq=feedback_dlq)
