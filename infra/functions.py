"""The two Lambda functions, their log groups and their SQS event source mappings.

Log groups are created by the stack (named, with retention and the stack's key) and attached
through `LoggingConfig`, so the roles need no `logs:CreateLogGroup` and logs do not live forever.
They are named from the environment, not from the function's `Ref`, which would make a cycle
(role -> log group -> function -> role).
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import GetAtt, Ref, Sub, Template
from troposphere.awslambda import (
    Code, Environment, EventSourceMapping, Function, LoggingConfig, ScalingConfig,
)
from troposphere.iam import Role
from troposphere.logs import LogGroup
from troposphere.ses import ConfigurationSet
from troposphere.sqs import Queue

from infra import settings
from infra.code import embedded_code
from infra.common import ENV, add, physical, tags
from infra.iam import Roles
from infra.kms import EncryptionKey
from infra.parameters import Params
from infra.table import DeliveryTable

# checkov findings that do not apply to SQS-driven functions, with the reason (kept in Metadata).
CHECKOV_SKIPS = [
    ("CKV_AWS_116", "SQS-driven: the queue redrive is the DLQ"),
    ("CKV_AWS_115", "Capped by the ESM MaximumConcurrency"),
    ("CKV_AWS_117", "Public AWS APIs only: no VPC needed"),
]


# Each function's logical id -> its handler, `handlers/<name>.py`, embedded as its ZipFile code.
HANDLER_FILES = {
    "LambdaSendOrderEmail": "send_order_email",
    "LambdaSesFeedbackProcessor": "ses_feedback_processor",
    "LambdaEmailCircuitBreaker": "circuit_breaker",
}


@dataclass(frozen=True)
class LogGroups:
    send: LogGroup
    feedback: LogGroup


@dataclass(frozen=True)
class Functions:
    send: Function
    feedback: Function
    send_mapping: EventSourceMapping
    feedback_mapping: EventSourceMapping


def add_log_group(t: Template, params: Params, key: EncryptionKey, title: str,
                  function_name: str) -> LogGroup:
    return add(t, LogGroup(
        title,
        LogGroupName=Sub(f"/aws/lambda/${{{ENV}}}-{function_name}"),
        RetentionInDays=Ref(params.log_retention_days),
        KmsKeyId=GetAtt(key.key, "Arn"),
        Tags=tags(params.env),
        # Deliberate: retention already bounds the logs, and a retained group with this fixed
        # name would block re-creating the stack.
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
    ))


def add_log_groups(t: Template, params: Params, *, key: EncryptionKey) -> LogGroups:
    return LogGroups(
        send=add_log_group(t, params, key, "LambdaSendOrderEmailLogGroup",
                           settings.SEND_FUNCTION_NAME),
        feedback=add_log_group(t, params, key, "LambdaSesFeedbackProcessorLogGroup",
                               settings.FEEDBACK_FUNCTION_NAME),
    )


def add_function(t: Template, params: Params, *, title: str, name: str, timeout: int,
                 role: Role, log_group: LogGroup, key: EncryptionKey, variables: dict,
                 checkov_skips: list[tuple[str, str]] = CHECKOV_SKIPS) -> Function:
    return add(t, Function(
        title,
        FunctionName=physical(name),
        Runtime=settings.RUNTIME,
        Architectures=[settings.ARCHITECTURE],
        Handler=settings.HANDLER,
        MemorySize=settings.MEMORY_MB,
        Timeout=timeout,
        Role=GetAtt(role, "Arn"),
        Code=Code(ZipFile=embedded_code(HANDLER_FILES[title])),
        Environment=Environment(Variables=variables),
        KmsKeyArn=GetAtt(key.key, "Arn"),
        # Text format (the default): the handlers print their own JSON lines and EMF documents.
        LoggingConfig=LoggingConfig(LogGroup=log_group.ref()),
        Tags=tags(params.env),
        Metadata={"checkov": {"skip": [
            {"id": check, "comment": reason} for check, reason in checkov_skips
        ]}},
    ))


def _mapping(t: Template, params: Params, title: str, function: Function, queue: Queue, *,
             batch_size: int, window_s: int, max_concurrency) -> EventSourceMapping:
    return add(t, EventSourceMapping(
        title,
        FunctionName=function.ref(),
        EventSourceArn=GetAtt(queue, "Arn"),
        BatchSize=batch_size,
        MaximumBatchingWindowInSeconds=window_s,
        # Only the records a function reports as failed are retried, not the whole batch.
        FunctionResponseTypes=["ReportBatchItemFailures"],
        ScalingConfig=ScalingConfig(MaximumConcurrency=max_concurrency),
        Tags=tags(params.env),
    ))


def add_functions(t: Template, params: Params, *, key: EncryptionKey, roles: Roles,
                  log_groups: LogGroups, table: DeliveryTable, config_set: ConfigurationSet,
                  send_queue: Queue, feedback_queue: Queue) -> Functions:
    namespace = Sub(f"${{{ENV}}}/EmailNotifications")
    send = add_function(
        t, params, title="LambdaSendOrderEmail", name=settings.SEND_FUNCTION_NAME,
        timeout=settings.SEND_TIMEOUT_S,
        role=roles.send, log_group=log_groups.send, key=key,
        variables={
            "EMAIL_DELIVERIES_TABLE": table.table.ref(),
            "SES_FROM_ADDRESS": Ref(params.from_address),
            "SES_CONFIG_SET": config_set.ref(),
            "ENABLE_PRODUCTION_SES": Ref(params.enable_production_ses),
            "TEST_EMAIL_ADDRESS": Ref(params.test_email),
            "ENVIRONMENT": Ref(params.env),
            "METRICS_NAMESPACE": namespace,
            "RECORD_TTL_DAYS": Ref(params.record_retention_days),
            "SES_RATE_SHARE_PERCENT": Ref(params.ses_rate_share_percent),
            # The event source mapping's MaximumConcurrency: each copy paces itself to its part
            # of the stack's share of the rate.
            "SEND_MAX_CONCURRENCY": Ref(params.send_max_concurrency),
        },
    )
    feedback = add_function(
        t, params, title="LambdaSesFeedbackProcessor", name=settings.FEEDBACK_FUNCTION_NAME,
        timeout=settings.FEEDBACK_TIMEOUT_S,
        role=roles.feedback, log_group=log_groups.feedback, key=key,
        variables={
            "EMAIL_DELIVERIES_TABLE": table.table.ref(),
            "ENVIRONMENT": Ref(params.env),
            "METRICS_NAMESPACE": namespace,
        },
    )
    send_mapping = _mapping(
        t, params, "LambdaSendOrderEmailEventSourceMapping", send, send_queue,
        batch_size=settings.SEND_BATCH_SIZE, window_s=settings.SEND_BATCHING_WINDOW_S,
        max_concurrency=Ref(params.send_max_concurrency),
    )
    feedback_mapping = _mapping(
        t, params, "LambdaSesFeedbackProcessorEventSourceMapping", feedback, feedback_queue,
        batch_size=settings.FEEDBACK_BATCH_SIZE, window_s=settings.FEEDBACK_BATCHING_WINDOW_S,
        max_concurrency=settings.FEEDBACK_MAX_CONCURRENCY,
    )
    return Functions(send=send, feedback=feedback, send_mapping=send_mapping,
                     feedback_mapping=feedback_mapping)
