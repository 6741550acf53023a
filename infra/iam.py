"""One execution role per function, composed from small statement builders (one `Sid` each).

No managed policies (AWSLambdaBasicExecutionRole grants `logs:CreateLogGroup` on `*`), no `*`
resources: every statement names the resources this stack created. The one exception is an
action that has no resource type in IAM (`ses:GetSendQuota`: IAM accepts only "*" for it, and it
reads the account's quota, nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass

from awacs import awslambda, dynamodb, kms, logs, ses, sns, sqs, sts
from awacs.aws import Action, Allow, Condition, PolicyDocument, Principal, Statement, StringEquals
from troposphere import GetAtt, Ref, Sub, Template
from troposphere.awslambda import EventSourceMapping
from troposphere.iam import Policy, Role
from troposphere.logs import LogGroup
from troposphere.ses import ConfigurationSet
from troposphere.sns import Topic
from troposphere.sqs import Queue

from infra import settings
from infra.common import ENV, add, tags
from infra.kms import EncryptionKey
from infra.parameters import Params
from infra.queues import Queues
from infra.table import DeliveryTable


@dataclass(frozen=True)
class Roles:
    send: Role
    feedback: Role


def _ses_identity(parameter) -> Sub:
    return Sub(
        f"arn:${{AWS::Partition}}:ses:${{AWS::Region}}:${{AWS::AccountId}}:identity/${{{parameter.title}}}"
    )


def ses_send(params: Params) -> Statement:
    """Send only from `SesFromAddress`, only through this stack's configuration set.

    The identities: the domain, the from address (when it is verified on its own) and, in sandbox
    mode, the test recipient (SES authorizes sandbox sends against the recipient identity too).
    """
    return Statement(
        Sid="SendFromAddressViaConfigSet",
        Effect=Allow,
        Action=[ses.SendEmail],
        Resource=[
            _ses_identity(params.verified_domain),
            _ses_identity(params.from_address),
            _ses_identity(params.test_email),
            Sub(
                "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:"
                f"configuration-set/${{{ENV}}}-{settings.CONFIG_SET_NAME}"
            ),
        ],
        Condition=Condition(StringEquals("ses:FromAddress", Ref(params.from_address))),
    )


def read_send_quota() -> Statement:
    """Read the account's SES sending rate, which the send handler paces itself to.

    The Service Authorization Reference lists no resource type for `ses:GetSendQuota`, so the
    statement must name "*"; the action only reads the account's quota.
    """
    return Statement(Sid="ReadSendingRate", Effect=Allow, Action=[ses.GetSendQuota],
                     Resource=["*"])


def table_access(sid: str, table: DeliveryTable, actions: list[Action]) -> Statement:
    # The table itself only: the functions never query the indexes.
    return Statement(Sid=sid, Effect=Allow, Action=actions,
                     Resource=[GetAtt(table.table, "Arn")])


def consume_queue(queue: Queue) -> Statement:
    """What the Lambda event source mapping needs to poll `queue` on the function's behalf."""
    return Statement(
        Sid="ConsumeOwnQueue",
        Effect=Allow,
        Action=[sqs.ReceiveMessage, sqs.DeleteMessage, sqs.GetQueueAttributes],
        Resource=[GetAtt(queue, "Arn")],
    )


def use_key(key: EncryptionKey) -> Statement:
    """Decrypt with the stack key (queue messages, environment variables, the encrypted table)
    and have it make data keys (writing the table; and publishing to a topic encrypted with it,
    where SNS asks for a data key on the publisher's behalf)."""
    return Statement(
        Sid="UseStackKey",
        Effect=Allow,
        Action=[kms.Decrypt, kms.GenerateDataKey],
        Resource=[GetAtt(key.key, "Arn")],
    )


def report_failures_to(topic: Topic) -> Statement:
    """Publish to `topic`: Lambda's on-failure destination publishes with the function's role."""
    return Statement(
        Sid="ReportFailedInvocations",
        Effect=Allow,
        Action=[sns.Publish],
        Resource=[topic.ref()],
    )


def switch_config_set_sending(config_set: ConfigurationSet) -> Statement:
    """Read this stack's configuration set and turn its sending off or on (SES v2
    GetConfigurationSet, PutConfigurationSetSendingOptions), on that set only."""
    return Statement(
        Sid="PauseAndResumeStackConfigSet",
        Effect=Allow,
        Action=[ses.GetConfigurationSet, ses.PutConfigurationSetSendingOptions],
        Resource=[Sub(
            "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:"
            "configuration-set/${ConfigurationSet}",
            ConfigurationSet=config_set.ref(),
        )],
    )


def switch_event_source_mapping(mapping: EventSourceMapping) -> Statement:
    """Read one event source mapping and enable or disable it, on that mapping only."""
    return Statement(
        Sid="PauseAndResumeSendMapping",
        Effect=Allow,
        Action=[awslambda.GetEventSourceMapping, awslambda.UpdateEventSourceMapping],
        Resource=[GetAtt(mapping, "EventSourceMappingArn")],
    )


def write_logs(log_group: LogGroup) -> Statement:
    return Statement(
        Sid="WriteOwnLogGroup",
        Effect=Allow,
        Action=[logs.CreateLogStream, logs.PutLogEvents],
        Resource=[GetAtt(log_group, "Arn")],
    )


def lambda_role(t: Template, params: Params, title: str, statements: list[Statement]) -> Role:
    """An execution role for one function, with exactly `statements` as its inline policy."""
    # No RoleName: IAM is global, so a fixed name would collide when the same environment is
    # deployed in a second region (and it would need CAPABILITY_NAMED_IAM).
    return add(t, Role(
        title,
        AssumeRolePolicyDocument=PolicyDocument(Version="2012-10-17", Statement=[Statement(
            Effect=Allow,
            Principal=Principal("Service", "lambda.amazonaws.com"),
            Action=[sts.AssumeRole],
        )]),
        Policies=[Policy(
            PolicyName="least-privilege",
            PolicyDocument=PolicyDocument(Version="2012-10-17", Statement=statements),
        )],
        Tags=tags(params.env),
    ))


def add_roles(t: Template, params: Params, *, key: EncryptionKey, table: DeliveryTable,
              queues: Queues, send_log_group: LogGroup, feedback_log_group: LogGroup) -> Roles:
    send = lambda_role(t, params, "LambdaSendOrderEmailRole", [
        ses_send(params),
        read_send_quota(),
        table_access("ClaimAndRecordDeliveries", table, [dynamodb.UpdateItem]),
        consume_queue(queues.send),
        use_key(key),
        write_logs(send_log_group),
    ])
    feedback = lambda_role(t, params, "LambdaSesFeedbackProcessorRole", [
        table_access("TrackDeliveryStatus", table, [dynamodb.UpdateItem]),
        consume_queue(queues.feedback),
        use_key(key),
        write_logs(feedback_log_group),
    ])
    return Roles(send=send, feedback=feedback)
