"""Property tests per resource group: each asserts a property that matters, and says why."""

from __future__ import annotations

import json
import re

import pytest

from conftest import resources_of_type
from infra import settings

KEY = {"Fn::GetAtt": ["EmailNotificationsKey", "Arn"]}
FUNCTIONS = {
    "LambdaSendOrderEmail": "SendOrderEmailQueue",
    "LambdaSesFeedbackProcessor": "SesFeedbackQueue",
}


def props(template: dict, name: str) -> dict:
    return template["Resources"][name]["Properties"]


# --- Parameters ----------------------------------------------------------------------------------

@pytest.mark.parametrize("parameter, good, bad", [
    ("EnvironmentSuffix", ["dev", "prod", "staging-2", "a"],
     ["Dev", "-dev", "dev-", "dev_1", "a" * 21, ""]),
    ("VerifiedDomain", ["shop.example.com", "example.co.uk"],
     ["Shop.example.com", "example", "ex ample.com", "-x.example.com"]),
    ("SesFromAddress", ["orders@shop.example.com", "a.b+c@x.io"],
     ["orders", "a@b", "a@b.c d", "A <a@b.com>", "a@b.com,c@d.com"]),
    ("TestEmailAddress", ["qa@example.com"], ["qa@", "qa@example"]),
    ("AlarmEmail", ["", "oncall@example.com"], ["oncall", "x@y"]),
])
def test_parameter_patterns_reject_bad_input_before_anything_is_created(
        template, parameter, good, bad):
    pattern = re.compile(template["Parameters"][parameter]["AllowedPattern"])
    for value in good:
        assert pattern.fullmatch(value), value
    for value in bad:
        assert not pattern.fullmatch(value), value


def test_environment_suffix_keeps_the_longest_function_name_within_lambdas_64_chars(template):
    longest = "a" * 20 + "-" + settings.FEEDBACK_FUNCTION_NAME
    assert len(longest) <= 64
    assert re.fullmatch(template["Parameters"]["EnvironmentSuffix"]["AllowedPattern"], "a" * 20)


def test_boolean_parameters_accept_only_true_or_false(template):
    for name in ("EnableProductionSES", "CreateEmailIdentity"):
        assert template["Parameters"][name]["AllowedValues"] == ["true", "false"]
    assert template["Parameters"]["EnableProductionSES"]["Default"] == "false"


def test_send_concurrency_respects_the_event_source_minimum_of_2(template):
    parameter = template["Parameters"]["SendMaxConcurrency"]
    assert parameter["MinValue"] == 2 and parameter["MaxValue"] == 1000


def test_rate_share_is_a_percentage_of_at_least_ten(template):
    parameter = template["Parameters"]["SesRateSharePercent"]
    assert (parameter["Type"], parameter["Default"]) == ("Number", 100)
    assert parameter["MinValue"] == 10 and parameter["MaxValue"] == 100


def test_console_groups_and_labels_every_parameter(template):
    interface = template["Metadata"]["AWS::CloudFormation::Interface"]
    grouped = [p for group in interface["ParameterGroups"] for p in group["Parameters"]]
    assert sorted(grouped) == sorted(template["Parameters"])
    assert set(interface["ParameterLabels"]) == set(template["Parameters"])


# --- Queues and subscriptions --------------------------------------------------------------------

@pytest.mark.parametrize("function, queue", FUNCTIONS.items())
def test_visibility_timeout_is_at_least_six_function_timeouts_as_aws_requires(
        template, function, queue):
    assert props(template, queue)["VisibilityTimeout"] >= 6 * props(template, function)["Timeout"]


def test_a_failed_ses_event_is_retried_several_times_before_an_order_is_retried(template):
    # If the sender dies after SES accepted an email, the `Send` event must set SENT before the
    # order's retry takes over the expired claim: the feedback queue must get its retries in
    # first, or a failing status write could let the same order be emailed twice.
    feedback = props(template, "SesFeedbackQueue")
    send = props(template, "SendOrderEmailQueue")
    assert feedback["VisibilityTimeout"] * 5 <= send["VisibilityTimeout"]


@pytest.mark.parametrize("queue, dlq", [
    ("SendOrderEmailQueue", "SendOrderEmailDeadLetterQueue"),
    ("SesFeedbackQueue", "SesFeedbackDeadLetterQueue"),
])
def test_failed_messages_reach_a_dlq_after_five_receives_and_wait_there_14_days(
        template, queue, dlq):
    redrive = props(template, queue)["RedrivePolicy"]
    assert redrive == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}, "maxReceiveCount": 5}
    assert props(template, dlq)["MessageRetentionPeriod"] == 14 * 24 * 3600


@pytest.mark.parametrize("subscription, topic, queue, dlq", [
    ("SNSSubscriptionOrderConfirmations", "SNSTopicOrderConfirmations", "SendOrderEmailQueue",
     "SendOrderEmailDeadLetterQueue"),
    ("SNSSubscriptionSesDelivery", "SNSTopicSesDelivery", "SesFeedbackQueue",
     "SesFeedbackDeadLetterQueue"),
    ("SNSSubscriptionSesBounce", "SNSTopicSesBounce", "SesFeedbackQueue",
     "SesFeedbackDeadLetterQueue"),
    ("SNSSubscriptionSesComplaint", "SNSTopicSesComplaint", "SesFeedbackQueue",
     "SesFeedbackDeadLetterQueue"),
])
def test_subscriptions_deliver_raw_json_and_redrive_what_sns_cannot_deliver(
        template, subscription, topic, queue, dlq):
    resource = template["Resources"][subscription]
    p = resource["Properties"]
    assert p["TopicArn"] == {"Ref": topic}
    assert p["Protocol"] == "sqs"
    assert p["Endpoint"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert p["RawMessageDelivery"] is True
    assert p["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}}
    # SNS can deliver from the first message on only once the queue policy exists.
    assert resource["DependsOn"] == ["SQSQueuePolicy"]


def test_alarm_email_subscription_exists_only_when_an_address_is_given(template):
    resource = template["Resources"]["SNSSubscriptionAlarmEmail"]
    assert resource["Condition"] == "HasAlarmEmail"
    assert template["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


# --- Table ---------------------------------------------------------------------------------------

def test_table_key_is_order_and_deterministic_message_id_so_redeliveries_hit_one_item(template):
    p = props(template, "EmailDeliveriesTable")
    assert p["KeySchema"] == [{"AttributeName": "orderId", "KeyType": "HASH"},
                              {"AttributeName": "messageId", "KeyType": "RANGE"}]


def test_table_indexes_answer_by_recipient_and_by_status(template):
    p = props(template, "EmailDeliveriesTable")
    indexes = {i["IndexName"]: i for i in p["GlobalSecondaryIndexes"]}
    assert indexes["EmailIndex"]["KeySchema"] == [
        {"AttributeName": "to", "KeyType": "HASH"},
        {"AttributeName": "timestamp", "KeyType": "RANGE"}]
    assert indexes["StatusIndex"]["KeySchema"] == [
        {"AttributeName": "status", "KeyType": "HASH"},
        {"AttributeName": "timestamp", "KeyType": "RANGE"}]
    types = {a["AttributeName"]: a["AttributeType"] for a in p["AttributeDefinitions"]}
    assert types == {"orderId": "S", "messageId": "S", "to": "S", "status": "S",
                     "timestamp": "N"}


def test_table_is_on_demand_recoverable_encrypted_expiring_and_protected(template):
    resource = template["Resources"]["EmailDeliveriesTable"]
    p = resource["Properties"]
    assert p["BillingMode"] == "PAY_PER_REQUEST"
    assert p["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert p["SSESpecification"] == {"KMSMasterKeyId": KEY, "SSEEnabled": True, "SSEType": "KMS"}
    assert p["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert p["DeletionProtectionEnabled"] is True
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


# --- SES -----------------------------------------------------------------------------------------

def test_configuration_set_tracks_reputation_suppresses_and_requires_tls(template):
    p = props(template, "SESConfigurationSet")
    assert p["ReputationOptions"] == {"ReputationMetricsEnabled": True}
    assert p["SuppressionOptions"] == {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]}
    assert p["DeliveryOptions"] == {"TlsPolicy": "REQUIRE"}


def test_event_destinations_route_every_event_type_the_feedback_processor_handles(template):
    routes = {}
    for destination in resources_of_type(
            template, "AWS::SES::ConfigurationSetEventDestination").values():
        p = destination["Properties"]
        assert p["ConfigurationSetName"] == {"Ref": "SESConfigurationSet"}
        assert p["EventDestination"]["Enabled"] is True
        topic = p["EventDestination"]["SnsDestination"]["TopicARN"]["Ref"]
        for event in p["EventDestination"]["MatchingEventTypes"]:
            routes[event] = topic
        # SES checks it may publish when the destination is created.
        assert destination["DependsOn"] == ["SNSTopicPolicy"]
    assert routes == {
        # `send` closes the crash window between SES accepting an email and recording SENT.
        "send": "SNSTopicSesDelivery", "delivery": "SNSTopicSesDelivery",
        "deliveryDelay": "SNSTopicSesDelivery", "bounce": "SNSTopicSesBounce",
        "reject": "SNSTopicSesBounce", "renderingFailure": "SNSTopicSesBounce",
        "complaint": "SNSTopicSesComplaint",
    }


def test_optional_domain_identity_uses_2048_bit_easy_dkim_and_our_config_set(template):
    resource = template["Resources"]["SESEmailIdentity"]
    assert resource["Condition"] == "CreateEmailIdentity"
    # Other senders may use the domain: deleting the stack or replacing the identity keeps it.
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    p = resource["Properties"]
    assert p["EmailIdentity"] == {"Ref": "VerifiedDomain"}
    assert p["DkimSigningAttributes"] == {"NextSigningKeyLength": "RSA_2048_BIT"}
    # not the domain's default set: other senders of the domain keep their own settings, and a
    # pause or a deletion of this stack's set never stops their mail
    assert "ConfigurationSetAttributes" not in p


def test_dkim_outputs_are_ready_to_paste_as_cname_records(template):
    value = template["Outputs"]["DkimRecord1"]["Value"]["Fn::Sub"]
    assert value == ("${SESEmailIdentity.DkimDNSTokenName1} CNAME "
                     "${SESEmailIdentity.DkimDNSTokenValue1}")


# --- Functions -----------------------------------------------------------------------------------

SEND_ENV = {"EMAIL_DELIVERIES_TABLE", "SES_FROM_ADDRESS", "SES_CONFIG_SET",
            "ENABLE_PRODUCTION_SES", "TEST_EMAIL_ADDRESS", "ENVIRONMENT", "METRICS_NAMESPACE",
            "RECORD_TTL_DAYS", "SES_RATE_SHARE_PERCENT", "SEND_MAX_CONCURRENCY"}
FEEDBACK_ENV = {"EMAIL_DELIVERIES_TABLE", "ENVIRONMENT", "METRICS_NAMESPACE"}


@pytest.mark.parametrize("function, variables", [
    ("LambdaSendOrderEmail", SEND_ENV), ("LambdaSesFeedbackProcessor", FEEDBACK_ENV),
])
def test_functions_get_exactly_the_design_environment(template, function, variables):
    env = props(template, function)["Environment"]["Variables"]
    assert set(env) == variables
    assert env["METRICS_NAMESPACE"] == {"Fn::Sub": "${EnvironmentSuffix}/EmailNotifications"}
    assert env["EMAIL_DELIVERIES_TABLE"] == {"Ref": "EmailDeliveriesTable"}


def test_send_function_env_comes_from_parameters(template):
    env = props(template, "LambdaSendOrderEmail")["Environment"]["Variables"]
    assert env["ENABLE_PRODUCTION_SES"] == {"Ref": "EnableProductionSES"}
    assert env["TEST_EMAIL_ADDRESS"] == {"Ref": "TestEmailAddress"}
    assert env["SES_CONFIG_SET"] == {"Ref": "SESConfigurationSet"}
    assert env["RECORD_TTL_DAYS"] == {"Ref": "RecordRetentionDays"}
    # The pacer's inputs: the stack's share of the account's rate, split across the copies the
    # event source mapping may run at once (the same parameter as its MaximumConcurrency)
    assert env["SES_RATE_SHARE_PERCENT"] == {"Ref": "SesRateSharePercent"}
    assert env["SEND_MAX_CONCURRENCY"] == {"Ref": "SendMaxConcurrency"}
    mapping = props(template, "LambdaSendOrderEmailEventSourceMapping")
    assert mapping["ScalingConfig"]["MaximumConcurrency"] == env["SEND_MAX_CONCURRENCY"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_run_a_current_python_on_arm64_from_inline_code(template, function):
    p = props(template, function)
    assert p["Runtime"] in {"python3.13", "python3.14"}
    assert p["Architectures"] == ["arm64"]  # about 20 % cheaper than x86_64
    assert p["Handler"] == "index.lambda_handler"  # ZipFile code runs as module `index`
    assert set(p["Code"]) == {"ZipFile"}
    # No reserved concurrency: it fails deploys in accounts with a small concurrency quota.
    assert "ReservedConcurrentExecutions" not in p


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_log_to_their_own_group_with_retention_and_the_key(template, function):
    p = props(template, function)
    group = f"{function}LogGroup"
    assert p["LoggingConfig"]["LogGroup"] == {"Ref": group}
    log_group = props(template, group)
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    # Named from the environment (not the function's Ref) to avoid a dependency cycle.
    assert log_group["LogGroupName"]["Fn::Sub"].startswith("/aws/lambda/${EnvironmentSuffix}-")
    assert log_group["LogGroupName"]["Fn::Sub"].endswith(
        p["FunctionName"]["Fn::Sub"].removeprefix("${EnvironmentSuffix}"))


@pytest.mark.parametrize("function, queue", FUNCTIONS.items())
def test_event_source_mappings_retry_only_failed_records(template, function, queue):
    p = props(template, f"{function}EventSourceMapping")
    assert p["FunctionName"] == {"Ref": function}
    assert p["EventSourceArn"] == {"Fn::GetAtt": [queue, "Arn"]}
    assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= p["BatchSize"] <= 100
    assert p["MaximumBatchingWindowInSeconds"] <= 5


def test_send_concurrency_is_capped_by_the_parameter_to_stay_under_the_ses_rate(template):
    p = props(template, "LambdaSendOrderEmailEventSourceMapping")
    assert p["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "SendMaxConcurrency"}}


# --- Monitoring ----------------------------------------------------------------------------------

def _action_lists(actions) -> list[list]:
    """The alarm's action lists: one, or both branches of an Fn::If."""
    if isinstance(actions, dict) and "Fn::If" in actions:
        return [actions["Fn::If"][1], actions["Fn::If"][2]]
    return [actions]


def test_every_alarm_notifies_the_alarms_topic_and_treats_missing_data_deliberately(template):
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 7
    for name, alarm in alarms.items():
        p = alarm["Properties"]
        # the on-call is always told, whatever else the alarm does
        assert all({"Ref": "SNSTopicAlarms"} in actions
                   for actions in _action_lists(p["AlarmActions"])), name
        # `<env>-<what it watches>`, and a description that names the runbook entry
        assert re.fullmatch(r"\$\{EnvironmentSuffix\}-[a-z0-9-]+", p["AlarmName"]["Fn::Sub"]), name
        assert "Runbook: README.md" in p["AlarmDescription"], name
        # no data means "nothing happened", except where it is the failure itself (the canary)
        # or must not clear a problem (reputation)
        expected = {"AlarmCanaryNotDelivered": {"breaching"}}.get(name, {"notBreaching", "ignore"})
        assert p["TreatMissingData"] in expected, name


def test_ses_reputation_alarm_fires_at_half_of_either_review_threshold(template):
    p = props(template, "AlarmSesReputation")
    queries = {q["Id"]: q for q in p["Metrics"]}
    assert queries["bounce"]["MetricStat"]["Metric"] == {
        "MetricName": "Reputation.BounceRate", "Namespace": "AWS/SES"}
    assert queries["complaint"]["MetricStat"]["Metric"] == {
        "MetricName": "Reputation.ComplaintRate", "Namespace": "AWS/SES"}
    # AWS reviews an account at a 5 % bounce or 0.1 % complaint rate (fractions in AWS/SES).
    assert queries["share"]["Expression"] == "MAX([bounce/0.05,complaint/0.001])"
    assert (p["ComparisonOperator"], p["Threshold"]) == ("GreaterThanThreshold", 0.5)
    # A reputation problem must not clear itself because sending stopped.
    assert p["TreatMissingData"] == "ignore"


@pytest.mark.parametrize("alarm, queue", [
    ("AlarmSendDeadLetterQueueNotEmpty", "SendOrderEmailDeadLetterQueue"),
    ("AlarmFeedbackDeadLetterQueueNotEmpty", "SesFeedbackDeadLetterQueue"),
])
def test_any_message_in_a_dlq_pages(template, alarm, queue):
    p = props(template, alarm)
    assert p["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert p["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
    assert (p["ComparisonOperator"], p["Threshold"]) == ("GreaterThanThreshold", 0)


def test_a_stuck_send_queue_pages_before_customers_notice(template):
    p = props(template, "AlarmSendQueueMessageAge")
    assert p["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert p["Dimensions"] == [{"Name": "QueueName",
                                "Value": {"Fn::GetAtt": ["SendOrderEmailQueue", "QueueName"]}}]
    assert p["Threshold"] == 15 * 60


def test_a_crash_or_timeout_of_the_send_function_pages_within_minutes(template):
    p = props(template, "AlarmSendFunctionErrors")
    assert (p["Namespace"], p["MetricName"], p["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert p["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "LambdaSendOrderEmail"}}]
    assert (p["ComparisonOperator"], p["Threshold"], p["Period"]) == ("GreaterThanThreshold", 0,
                                                                    300)


def test_each_alarm_is_chosen_for_what_only_it_can_tell(template):
    # Each metric an alarm watches costs $0.10 a month (README "Cost"): the feedback path's
    # backlog and crashes are told by the canary and the feedback DLQ alarm, a stack's own
    # bounce and complaint rates by the circuit breaker's alarm on its configuration set.
    alarms = set(resources_of_type(template, "AWS::CloudWatch::Alarm"))
    assert {"AlarmCanaryNotDelivered", "AlarmFeedbackDeadLetterQueueNotEmpty",
            "AlarmSendDeadLetterQueueNotEmpty", "AlarmSesReputation", "AlarmEmailSendFailures",
            "AlarmSendQueueMessageAge", "AlarmSendFunctionErrors"} <= alarms
    assert not alarms & {"AlarmHighBounceRate", "AlarmHighComplaintRate",
                         "AlarmFeedbackQueueMessageAge", "AlarmFeedbackFunctionErrorsOrThrottles"}


def test_send_failures_alarm_watches_our_metric(template):
    p = props(template, "AlarmEmailSendFailures")
    assert p["MetricName"] == "SendFailures"
    assert p["Namespace"] == {"Fn::Sub": "${EnvironmentSuffix}/EmailNotifications"}


def _dashboard(template: dict) -> dict:
    body = props(template, "CloudWatchDashboard")["DashboardBody"]["Fn::Sub"]
    rendered = body.replace("${EnvironmentSuffix}", "prod").replace("${AWS::Region}", "us-east-1")
    assert "${" not in rendered
    return json.loads(rendered)


def test_dashboard_is_valid_json_once_substituted(template):
    assert len(_dashboard(template)["widgets"]) >= 8


def test_dashboard_shows_every_custom_metric_queue_function_and_the_table(template):
    text = json.dumps(_dashboard(template))
    for metric in ("EmailsSent", "Deliveries", "Bounces", "Complaints", "Rejects",
                   "RenderingFailures", "DeliveryDelays", "SendFailures", "RecordFailures",
                   "InvalidMessages", "DuplicatesSkipped", "UnmatchedFeedback", "CanarySent",
                   "CanaryDelivered", "CanaryLatency", "Reputation.BounceRate",
                   "Reputation.ComplaintRate"):
        assert f'"{metric}"' in text, metric
    for name in ("prod-send-order-email", "prod-send-order-email-dlq", "prod-ses-feedback",
                 "prod-ses-feedback-dlq", "prod-ses-feedback-processor", "prod-email-deliveries"):
        assert f'"{name}"' in text, name


def _regions_in(condition: dict) -> list[str]:
    """The regions a `RegionHasBudgets`-shaped condition is true in; asserts its shape on the way
    (Fn::Or takes 2 to 10 conditions; each leaf compares AWS::Region with one region)."""
    (function, arg), = condition.items()
    if function == "Fn::Equals":
        assert arg[0] == {"Ref": "AWS::Region"}
        return [arg[1]]
    assert function == "Fn::Or" and 2 <= len(arg) <= 10, condition
    return [region for item in arg for region in _regions_in(item)]


def test_budget_exists_only_in_regions_whose_cloudformation_has_budgets(template):
    # A template naming a resource type its region lacks fails to deploy ("Unrecognized resource
    # types"); AWS::Budgets::Budget is missing in some regions that have SES.
    assert template["Resources"]["MonthlyCostBudget"]["Condition"] == "RegionHasBudgets"
    regions = _regions_in(template["Conditions"]["RegionHasBudgets"])
    assert sorted(regions) == sorted(settings.BUDGET_REGIONS)
    assert len(regions) == len(set(regions))


def _references(value) -> set[str]:
    """Logical ids `value` refers to with Ref, Fn::GetAtt or a Fn::Sub variable."""
    if isinstance(value, list):
        return set().union(*map(_references, value))
    if not isinstance(value, dict):
        return set()
    if "Ref" in value:
        return {value["Ref"]}
    if "Fn::GetAtt" in value:
        return {value["Fn::GetAtt"][0]}
    if "Fn::Sub" in value:
        text, variables = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) \
            else value["Fn::Sub"]
        named = {name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text)}
        return (named - set(variables)) | _references(list(variables.values()))
    return _references(list(value.values()))


def _referrers(template: dict, logical_id: str) -> dict[str, str | None]:
    """Resources and outputs that refer to `logical_id` (Ref, GetAtt, Sub, DependsOn), with the
    condition each carries."""
    found = {}
    for name, resource in template["Resources"].items():
        depends = resource.get("DependsOn", [])
        depends = [depends] if isinstance(depends, str) else depends
        if logical_id in _references(resource.get("Properties", {})) or logical_id in depends:
            found[name] = resource.get("Condition")
    for name, output in template["Outputs"].items():
        if logical_id in _references(output["Value"]):
            found[f"Outputs.{name}"] = output.get("Condition")
    return found


def test_whatever_refers_to_a_conditional_resource_carries_its_condition(template):
    # A reference to a resource its condition left out fails the deploy; the DKIM outputs refer
    # to the identity, and nothing may refer to the budget outside the regions that have it.
    conditional = {name: resource["Condition"] for name, resource in
                   template["Resources"].items() if "Condition" in resource}
    assert {"MonthlyCostBudget", "SESEmailIdentity"} <= set(conditional)
    for logical_id, condition in conditional.items():
        for referrer, its_condition in _referrers(template, logical_id).items():
            assert its_condition == condition, (logical_id, referrer)
    # The check sees references at all: the DKIM outputs are found through their Fn::Sub.
    assert set(_referrers(template, "SESEmailIdentity")) == {
        "Outputs.DkimRecord1", "Outputs.DkimRecord2", "Outputs.DkimRecord3"}


def test_budget_warns_at_80_percent_actual_and_100_percent_forecast(template):
    p = props(template, "MonthlyCostBudget")
    assert p["Budget"]["BudgetLimit"] == {"Amount": {"Ref": "MonthlyBudgetUsd"}, "Unit": "USD"}
    assert (p["Budget"]["BudgetType"], p["Budget"]["TimeUnit"]) == ("COST", "MONTHLY")
    notifications = {(n["Notification"]["NotificationType"], n["Notification"]["Threshold"])
                     for n in p["NotificationsWithSubscribers"]}
    assert notifications == {("ACTUAL", 80), ("FORECASTED", 100)}
    for n in p["NotificationsWithSubscribers"]:
        assert n["Subscribers"] == [{"Address": {"Ref": "SNSTopicAlarms"},
                                     "SubscriptionType": "SNS"}]
