"""Contract tests: the names other code, tests and users rely on (DESIGN.md "Contracts").

Renaming a logical ID replaces the resource on the next deploy (a new table, a new queue), and
renaming an output breaks whoever reads it, so both are pinned here on purpose.
"""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
import troposphere

from conftest import resources_of_type

EXPECTED_RESOURCES = {
    "AlarmBreakerConfigSetReputation": "AWS::CloudWatch::Alarm",
    "AlarmBreakerConfigSetReputationInvokesCircuitBreaker": "AWS::Lambda::Permission",
    "AlarmCanaryNotDelivered": "AWS::CloudWatch::Alarm",
    "AlarmEmailSendFailures": "AWS::CloudWatch::Alarm",
    "AlarmFeedbackDeadLetterQueueNotEmpty": "AWS::CloudWatch::Alarm",
    "AlarmSendDeadLetterQueueNotEmpty": "AWS::CloudWatch::Alarm",
    "AlarmSendFunctionErrors": "AWS::CloudWatch::Alarm",
    "AlarmSendQueueMessageAge": "AWS::CloudWatch::Alarm",
    "AlarmSesReputation": "AWS::CloudWatch::Alarm",
    "CloudWatchDashboard": "AWS::CloudWatch::Dashboard",
    "EmailDeliveriesTable": "AWS::DynamoDB::Table",
    "EmailNotificationsKey": "AWS::KMS::Key",
    "EmailNotificationsKeyAlias": "AWS::KMS::Alias",
    "LambdaEmailCircuitBreaker": "AWS::Lambda::Function",
    "LambdaEmailCircuitBreakerInvokeConfig": "AWS::Lambda::EventInvokeConfig",
    "LambdaEmailCircuitBreakerLogGroup": "AWS::Logs::LogGroup",
    "LambdaEmailCircuitBreakerRole": "AWS::IAM::Role",
    "LambdaSendOrderEmail": "AWS::Lambda::Function",
    "LambdaSendOrderEmailEventSourceMapping": "AWS::Lambda::EventSourceMapping",
    "LambdaSendOrderEmailLogGroup": "AWS::Logs::LogGroup",
    "LambdaSendOrderEmailRole": "AWS::IAM::Role",
    "LambdaSesFeedbackProcessor": "AWS::Lambda::Function",
    "LambdaSesFeedbackProcessorEventSourceMapping": "AWS::Lambda::EventSourceMapping",
    "LambdaSesFeedbackProcessorLogGroup": "AWS::Logs::LogGroup",
    "LambdaSesFeedbackProcessorRole": "AWS::IAM::Role",
    "MonthlyCostBudget": "AWS::Budgets::Budget",
    "CanarySchedule": "AWS::Scheduler::Schedule",
    "CanaryScheduleRole": "AWS::IAM::Role",
    "SESConfigurationSet": "AWS::SES::ConfigurationSet",
    "SESEmailIdentity": "AWS::SES::EmailIdentity",
    "SESEventDestinationBounce": "AWS::SES::ConfigurationSetEventDestination",
    "SESEventDestinationComplaint": "AWS::SES::ConfigurationSetEventDestination",
    "SESEventDestinationDelivery": "AWS::SES::ConfigurationSetEventDestination",
    "SNSSubscriptionAlarmEmail": "AWS::SNS::Subscription",
    "SNSSubscriptionOrderConfirmations": "AWS::SNS::Subscription",
    "SNSSubscriptionSesBounce": "AWS::SNS::Subscription",
    "SNSSubscriptionSesComplaint": "AWS::SNS::Subscription",
    "SNSSubscriptionSesDelivery": "AWS::SNS::Subscription",
    "SNSTopicAlarms": "AWS::SNS::Topic",
    "SNSTopicOrderConfirmations": "AWS::SNS::Topic",
    "SNSTopicPolicy": "AWS::SNS::TopicPolicy",
    "SNSTopicSesBounce": "AWS::SNS::Topic",
    "SNSTopicSesComplaint": "AWS::SNS::Topic",
    "SNSTopicSesDelivery": "AWS::SNS::Topic",
    "SQSQueuePolicy": "AWS::SQS::QueuePolicy",
    "SendOrderEmailDeadLetterQueue": "AWS::SQS::Queue",
    "SendOrderEmailQueue": "AWS::SQS::Queue",
    "SesFeedbackDeadLetterQueue": "AWS::SQS::Queue",
    "SesFeedbackQueue": "AWS::SQS::Queue",
}

CONTRACT_OUTPUTS = {
    "OrderTopicArn", "EmailDeliveriesTableName", "SendQueueUrl", "SendDeadLetterQueueUrl",
    "FeedbackDeadLetterQueueUrl", "AlarmTopicArn", "DashboardUrl", "ConfigurationSetName",
}
EXTRA_OUTPUTS = {"EncryptionKeyArn", "DkimRecord1", "DkimRecord2", "DkimRecord3"}

STATIC_TAGS = {
    "iac-rlhf-amazon": "true",
    "Service": "email-notifications",
    "CostCenter": "operations",
    "Owner": "platform-team",
}

PARAMETERS = {
    "EnvironmentSuffix", "VerifiedDomain", "SesFromAddress", "EnableProductionSES",
    "TestEmailAddress", "AlarmEmail", "MonthlyBudgetUsd", "SendMaxConcurrency",
    "SesRateSharePercent",
    "RecordRetentionDays", "LogRetentionDays", "CreateEmailIdentity", "CanaryIntervalMinutes",
    "AutoPauseSending", "PauseAtPercentOfReview",
}


def _troposphere_tag_properties() -> dict[str, str]:
    """Resource type -> the property that holds its tags, for every type troposphere knows."""
    found = {}
    for module_info in pkgutil.iter_modules(troposphere.__path__):
        try:
            module = importlib.import_module(f"troposphere.{module_info.name}")
        except Exception:  # a few helper modules need optional dependencies
            continue
        for value in vars(module).values():
            resource_type = getattr(value, "resource_type", None)
            props = getattr(value, "props", {})
            if isinstance(resource_type, str):
                for name in ("Tags", "ResourceTags"):
                    if name in props:
                        found[resource_type] = name
    return found


def test_logical_ids_and_types_are_pinned_because_a_rename_replaces_the_resource(template):
    actual = {name: resource["Type"] for name, resource in template["Resources"].items()}
    assert actual == EXPECTED_RESOURCES


def test_outputs_keep_their_contract_names_because_the_order_service_and_operators_read_them(
        template):
    outputs = set(template["Outputs"])
    assert CONTRACT_OUTPUTS <= outputs
    assert outputs - CONTRACT_OUTPUTS == EXTRA_OUTPUTS


def test_dkim_outputs_exist_only_when_the_identity_is_created(template):
    for number in (1, 2, 3):
        assert template["Outputs"][f"DkimRecord{number}"]["Condition"] == "CreateEmailIdentity"


def test_parameters_are_the_documented_set(template):
    assert set(template["Parameters"]) == PARAMETERS


def test_every_taggable_resource_carries_the_five_tags_for_cost_allocation(template):
    tag_property = _troposphere_tag_properties()
    tagged = 0
    for name, resource in template["Resources"].items():
        prop = tag_property.get(resource["Type"])
        if prop is None:
            continue
        tags = {tag["Key"]: tag["Value"] for tag in resource["Properties"].get(prop, [])}
        expected = dict(STATIC_TAGS, Environment={"Ref": "EnvironmentSuffix"})
        assert tags == expected, name
        tagged += 1
    # Untaggable: the key alias, the two policies, five subscriptions, three event destinations,
    # the canary schedule, the circuit breaker's two invoke permissions.
    assert tagged == len(EXPECTED_RESOURCES) - 14


def test_no_literal_partition_in_arns_so_the_stack_deploys_in_any_partition(template):
    assert "arn:aws:" not in json.dumps(template)


def test_physical_names_derive_from_the_environment_so_two_stacks_can_coexist(template):
    # Alarms carry no name: CloudFormation names them `<stack>-<logical id>-<suffix>`.
    named = {
        "AWS::SNS::Topic": "TopicName", "AWS::SQS::Queue": "QueueName",
        "AWS::DynamoDB::Table": "TableName", "AWS::Lambda::Function": "FunctionName",
        "AWS::SES::ConfigurationSet": "Name",
        "AWS::CloudWatch::Dashboard": "DashboardName",
    }
    for resource_type, prop in named.items():
        for name, resource in resources_of_type(template, resource_type).items():
            value = resource["Properties"][prop]
            assert value["Fn::Sub"].startswith("${EnvironmentSuffix}-"), name


@pytest.mark.parametrize("name, expected", [
    ("SNSTopicOrderConfirmations", "order-confirmations"),
    ("SNSTopicSesDelivery", "ses-delivery-notifications"),
    ("SNSTopicSesBounce", "ses-bounce-notifications"),
    ("SNSTopicSesComplaint", "ses-complaint-notifications"),
    ("SNSTopicAlarms", "email-alarms"),
    ("SendOrderEmailQueue", "send-order-email"),
    ("SendOrderEmailDeadLetterQueue", "send-order-email-dlq"),
    ("SesFeedbackQueue", "ses-feedback"),
    ("SesFeedbackDeadLetterQueue", "ses-feedback-dlq"),
    ("EmailDeliveriesTable", "email-deliveries"),
    ("LambdaSendOrderEmail", "send-order-email"),
    ("LambdaSesFeedbackProcessor", "ses-feedback-processor"),
    ("SESConfigurationSet", "ses-config-set"),
])
def test_physical_names_match_the_design(template, name, expected):
    properties = template["Resources"][name]["Properties"]
    value = next(v for k, v in properties.items()
                 if k in {"TopicName", "QueueName", "TableName", "FunctionName", "Name"})
    assert value == {"Fn::Sub": f"${{EnvironmentSuffix}}-{expected}"}


def test_names_global_to_the_account_end_with_the_region_so_two_regions_can_coexist(template):
    # Dashboard names are global to an account and budget names unique per account, so one
    # environment deployed in two regions of one account would collide without the region.
    resources = template["Resources"]
    dashboard = resources["CloudWatchDashboard"]["Properties"]["DashboardName"]
    budget = resources["MonthlyCostBudget"]["Properties"]["Budget"]["BudgetName"]
    expected = {"Fn::Sub": "${EnvironmentSuffix}-email-notifications-${AWS::Region}"}
    assert dashboard == budget == expected


def test_dashboard_url_output_follows_the_dashboard_name(template):
    value = template["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
    assert value[1] == {"Dashboard": {"Ref": "CloudWatchDashboard"}}
    assert value[0].endswith("?region=${AWS::Region}#dashboards:name=${Dashboard}")
