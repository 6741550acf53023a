"""The delivery-tracking table: one item per order email, its status and its event history.

Key and indexes as in the original spec: `orderId` + `messageId` (deterministic per order and
email kind, which is what makes the send idempotent), `EmailIndex` (to, timestamp) to answer "what
did we send this customer", `StatusIndex` (status, timestamp) to find failed or bounced emails.
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import GetAtt, Template
from troposphere.dynamodb import (
    AttributeDefinition, GlobalSecondaryIndex, KeySchema, PointInTimeRecoverySpecification,
    Projection, SSESpecification, Table, TimeToLiveSpecification,
)

from infra import settings
from infra.common import add, physical, tags
from infra.kms import EncryptionKey
from infra.parameters import Params

RETAIN = "Retain"  # delivery history outlives the stack: a delete or replacement keeps the table


@dataclass(frozen=True)
class DeliveryTable:
    table: Table


def _index(name: str, hash_key: str) -> GlobalSecondaryIndex:
    return GlobalSecondaryIndex(
        IndexName=name,
        KeySchema=[
            KeySchema(AttributeName=hash_key, KeyType="HASH"),
            KeySchema(AttributeName="timestamp", KeyType="RANGE"),
        ],
        Projection=Projection(ProjectionType="ALL"),
    )


def add_table(t: Template, params: Params, *, key: EncryptionKey) -> DeliveryTable:
    table = add(t, Table(
        "EmailDeliveriesTable",
        TableName=physical(settings.TABLE_NAME),
        BillingMode="PAY_PER_REQUEST",  # ~2,000 emails/day with 10x bursts: no capacity to plan
        AttributeDefinitions=[
            AttributeDefinition(AttributeName="orderId", AttributeType="S"),
            AttributeDefinition(AttributeName="messageId", AttributeType="S"),
            AttributeDefinition(AttributeName="to", AttributeType="S"),
            AttributeDefinition(AttributeName="status", AttributeType="S"),
            AttributeDefinition(AttributeName="timestamp", AttributeType="N"),
        ],
        KeySchema=[
            KeySchema(AttributeName="orderId", KeyType="HASH"),
            KeySchema(AttributeName="messageId", KeyType="RANGE"),
        ],
        GlobalSecondaryIndexes=[_index("EmailIndex", "to"), _index("StatusIndex", "status")],
        PointInTimeRecoverySpecification=PointInTimeRecoverySpecification(
            PointInTimeRecoveryEnabled=True,
        ),
        SSESpecification=SSESpecification(
            SSEEnabled=True, SSEType="KMS", KMSMasterKeyId=GetAtt(key.key, "Arn"),
        ),
        TimeToLiveSpecification=TimeToLiveSpecification(AttributeName="ttl", Enabled=True),
        DeletionProtectionEnabled=True,
        Tags=tags(params.env),
        DeletionPolicy=RETAIN,
        UpdateReplacePolicy=RETAIN,
    ))
    return DeliveryTable(table=table)
