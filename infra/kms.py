"""The stack's one customer-managed KMS key and its alias.

SES, CloudWatch alarms and AWS Budgets can publish to an encrypted SNS topic only when the topic's
key is customer-managed and its policy lets them use it (the original spec's `alias/aws/sns` key
silently dropped every feedback event and every alarm). The same key encrypts the queues, the
table, the log groups and the functions' environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from awacs import kms as kms_actions
from awacs.aws import (
    Allow, Condition, PolicyDocument, Principal, Statement, StringEquals, StringLike,
)
from troposphere import AccountId, Sub, Template
from troposphere.kms import Alias, Key

from infra.common import ENV, add, tags
from infra.parameters import Params

# A key whose table is retained must be retained too: deleting the key would make the retained
# table unreadable once the pending-deletion window ends.
RETAIN = "Retain"
USE_ACTIONS = [kms_actions.GenerateDataKey, kms_actions.Decrypt]


@dataclass(frozen=True)
class EncryptionKey:
    key: Key
    alias: Alias


def _account_root_statement() -> Statement:
    # The account administers the key and may delegate use through IAM policies (the AWS default;
    # without it the key could become unmanageable). "*" in a key policy means "this key".
    return Statement(
        Sid="AccountAdministersKey",
        Effect=Allow,
        Principal=Principal("AWS", Sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")),
        Action=[kms_actions.Action("*")],
        Resource=["*"],
    )


def _publishers_statement() -> Statement:
    """SES (feedback events), CloudWatch (alarms) and Budgets publish to the encrypted topics."""
    return Statement(
        Sid="ServicesPublishToStackTopics",
        Effect=Allow,
        Principal=Principal("Service", [
            "ses.amazonaws.com", "cloudwatch.amazonaws.com", "budgets.amazonaws.com",
        ]),
        Action=USE_ACTIONS,
        Resource=["*"],
        Condition=Condition(StringEquals("aws:SourceAccount", AccountId)),
    )


def _sns_to_queues_statement() -> Statement:
    # SNS delivering to an encrypted queue asks KMS for a data key in the queue's encryption
    # context; only this stack's queues qualify.
    return Statement(
        Sid="SnsDeliversToStackQueues",
        Effect=Allow,
        Principal=Principal("Service", "sns.amazonaws.com"),
        Action=USE_ACTIONS,
        Resource=["*"],
        Condition=Condition(StringLike(
            "kms:EncryptionContext:aws:sqs:arn",
            Sub(f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:${{{ENV}}}-*"),
        )),
    )


def _logs_statement() -> Statement:
    return Statement(
        Sid="LogsEncryptStackLogGroups",
        Effect=Allow,
        Principal=Principal("Service", Sub("logs.${AWS::Region}.amazonaws.com")),
        Action=[
            kms_actions.Encrypt, kms_actions.Decrypt, kms_actions.ReEncryptFrom,
            kms_actions.ReEncryptTo, kms_actions.GenerateDataKey, kms_actions.DescribeKey,
        ],
        Resource=["*"],
        Condition=Condition(StringLike(
            "kms:EncryptionContext:aws:logs:arn",
            Sub(
                "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
                f"/aws/lambda/${{{ENV}}}-*"
            ),
        )),
    )


def key_policy() -> PolicyDocument:
    return PolicyDocument(
        Version="2012-10-17",
        Statement=[
            _account_root_statement(),
            _publishers_statement(),
            _sns_to_queues_statement(),
            _logs_statement(),
        ],
    )


def add_key(t: Template, params: Params) -> EncryptionKey:
    key = add(t, Key(
        "EmailNotificationsKey",
        EnableKeyRotation=True,
        KeyPolicy=key_policy(),
        Tags=tags(params.env),
        DeletionPolicy=RETAIN,
        UpdateReplacePolicy=RETAIN,
    ))
    alias = add(t, Alias(
        "EmailNotificationsKeyAlias",
        AliasName=Sub(f"alias/${{{ENV}}}-email-notifications"),
        TargetKeyId=key.ref(),
    ))
    return EncryptionKey(key=key, alias=alias)

