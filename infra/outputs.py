"""Stack outputs: what the order service, operators and DNS need (names are a contract)."""

from __future__ import annotations

from troposphere import GetAtt, Output, Sub, Template

from infra.functions import Functions
from infra.kms import EncryptionKey
from infra.monitoring import Monitoring
from infra.parameters import Params
from infra.queues import Queues
from infra.ses import DKIM_RECORDS, Ses, dkim_record
from infra.table import DeliveryTable
from infra.topics import Topics


def add_outputs(t: Template, params: Params, *, key: EncryptionKey, topics: Topics,
                queues: Queues, table: DeliveryTable, ses: Ses, monitoring: Monitoring,
                functions: Functions) -> None:
    outputs = [
        ("OrderTopicArn", topics.orders.ref(), "Publish one JSON order per message here"),
        ("EncryptionKeyArn", GetAtt(key.key, "Arn"),
         "Publishers need kms:GenerateDataKey and kms:Decrypt on it"),
        ("EmailDeliveriesTableName", table.table.ref(), "Status and history per order email"),
        ("SendQueueUrl", queues.send.ref(), "Orders waiting to be emailed"),
        ("SendDeadLetterQueueUrl", queues.send_dlq.ref(), "Orders that failed or were invalid"),
        ("FeedbackDeadLetterQueueUrl", queues.feedback_dlq.ref(),
         "SES events that could not be recorded"),
        ("AlarmTopicArn", topics.alarms.ref(), "Alarms and budget notifications"),
        ("DashboardUrl", Sub(
            "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}"
            "#dashboards:name=${Dashboard}", Dashboard=monitoring.dashboard.ref()),
         "CloudWatch dashboard"),
        ("ConfigurationSetName", ses.configuration_set.ref(), "SES configuration set of every email"),
    ]
    for title, value, description in outputs:
        t.add_output(Output(title, Value=value, Description=description))
    for number in range(1, DKIM_RECORDS + 1):
        t.add_output(Output(
            f"DkimRecord{number}",
            Condition=params.creates_email_identity,
            Value=dkim_record(ses.identity, number),
            Description=f"Easy DKIM DNS record {number} of {DKIM_RECORDS}",
        ))
