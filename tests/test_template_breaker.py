"""The reputation circuit breaker in the template (infra/breaker.py): its function, its role's exact
permissions, its alarm, who may invoke it, where a failed pause is reported, and what the
template leaves to it."""

from __future__ import annotations

import fnmatch
import json

import pytest

from conftest import resources_of_type
from infra import docs, settings

FUNCTION = "LambdaEmailCircuitBreaker"
ALARMS = {
    "AlarmBreakerConfigSetReputation": "breaker-config-set-reputation",
}
CONFIG_SET_DIMENSION = [{"Name": "ses:configuration-set", "Value": {"Ref": "SESConfigurationSet"}}]
KEY = {"Fn::GetAtt": ["EmailNotificationsKey", "Arn"]}
TOPIC = {"Ref": "SNSTopicAlarms"}


def props(template: dict, name: str) -> dict:
    return template["Resources"][name]["Properties"]


def statements(template: dict, role: str) -> dict[str, dict]:
    (policy,) = props(template, role)["Policies"]
    return {statement["Sid"]: statement for statement in policy["PolicyDocument"]["Statement"]}


# --- The function ---------------------------------------------------------------------------------

def test_the_function_is_named_for_the_runbook_and_configured_only_by_its_environment(template):
    p = props(template, FUNCTION)
    assert p["FunctionName"] == {"Fn::Sub": "${EnvironmentSuffix}-email-circuit-breaker"}
    assert p["Environment"]["Variables"] == {
        "SES_CONFIG_SET": {"Ref": "SESConfigurationSet"},
        # Ref of an event source mapping is its UUID, what Get/UpdateEventSourceMapping take.
        "SEND_EVENT_SOURCE_MAPPING": {"Ref": "LambdaSendOrderEmailEventSourceMapping"},
        "ENVIRONMENT": {"Ref": "EnvironmentSuffix"},
        "METRICS_NAMESPACE": {"Fn::Sub": "${EnvironmentSuffix}/EmailNotifications"},
    }
    assert p["KmsKeyArn"] == KEY
    assert p["Role"] == {"Fn::GetAtt": [f"{FUNCTION}Role", "Arn"]}
    assert p["LoggingConfig"] == {"LogGroup": {"Ref": f"{FUNCTION}LogGroup"}}
    assert props(template, f"{FUNCTION}LogGroup")["LogGroupName"] == {
        "Fn::Sub": "/aws/lambda/${EnvironmentSuffix}-email-circuit-breaker"}


def test_the_timeout_is_short_but_covers_four_calls_with_their_retries(template):
    # The handler's worst case (4 calls x 12 s) is checked against it in test_circuit_breaker.py.
    assert props(template, FUNCTION)["Timeout"] == settings.CIRCUIT_BREAKER_TIMEOUT_S == 60


def test_its_checkov_skips_give_its_own_reasons_not_the_sqs_functions(template):
    skips = template["Resources"][FUNCTION]["Metadata"]["checkov"]["skip"]
    assert {skip["id"] for skip in skips} == {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117"}
    assert not any("SQS" in skip["comment"] or "ESM" in skip["comment"] for skip in skips)


# --- Least privilege -------------------------------------------------------------------------------

def test_the_role_may_switch_only_this_configuration_set_and_this_mapping(template):
    assert statements(template, f"{FUNCTION}Role") == {
        "PauseAndResumeStackConfigSet": {
            "Sid": "PauseAndResumeStackConfigSet",
            "Effect": "Allow",
            "Action": ["ses:GetConfigurationSet", "ses:PutConfigurationSetSendingOptions"],
            "Resource": [{"Fn::Sub": [
                "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:"
                "configuration-set/${ConfigurationSet}",
                {"ConfigurationSet": {"Ref": "SESConfigurationSet"}},
            ]}],
        },
        "PauseAndResumeSendMapping": {
            "Sid": "PauseAndResumeSendMapping",
            "Effect": "Allow",
            "Action": ["lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping"],
            # Not the feedback mapping: feedback keeps flowing while sending is paused.
            "Resource": [{"Fn::GetAtt": ["LambdaSendOrderEmailEventSourceMapping",
                                         "EventSourceMappingArn"]}],
        },
        # Lambda's on-failure destination publishes a failed invocation with the function's role.
        "ReportFailedInvocations": {
            "Sid": "ReportFailedInvocations",
            "Effect": "Allow",
            "Action": ["sns:Publish"],
            "Resource": [TOPIC],
        },
        # Its own environment, and the encrypted alarms topic's data keys.
        "UseStackKey": {
            "Sid": "UseStackKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": [KEY],
        },
        "WriteOwnLogGroup": {
            "Sid": "WriteOwnLogGroup",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [{"Fn::GetAtt": [f"{FUNCTION}LogGroup", "Arn"]}],
        },
    }


def test_only_its_alarm_of_this_account_may_invoke_it(template):
    permissions = {
        name: p["Properties"] for name, p in resources_of_type(
            template, "AWS::Lambda::Permission").items()
        if p["Properties"]["FunctionName"] == {"Ref": FUNCTION}
    }
    assert permissions == {
        f"{alarm}InvokesCircuitBreaker": {
            "FunctionName": {"Ref": FUNCTION},
            "Action": "lambda:InvokeFunction",
            "Principal": "lambda.alarms.cloudwatch.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": [alarm, "Arn"]},
            "SourceAccount": {"Ref": "AWS::AccountId"},
        }
        for alarm in ALARMS
    }


# --- The alarms ------------------------------------------------------------------------------------

@pytest.mark.parametrize("alarm, dimensions", [
    ("AlarmBreakerConfigSetReputation", CONFIG_SET_DIMENSION),
])
def test_each_alarm_watches_ses_reputation_as_a_share_of_the_review_rates(
        template, alarm, dimensions):
    p = props(template, alarm)
    queries = {query["Id"]: query for query in p["Metrics"]}
    assert set(queries) == {"bounce", "complaint", "percent_of_review"}
    for metric_id, name in (("bounce", "Reputation.BounceRate"),
                            ("complaint", "Reputation.ComplaintRate")):
        stat = queries[metric_id]["MetricStat"]
        expected = {"Namespace": "AWS/SES", "MetricName": name}
        if dimensions:
            expected["Dimensions"] = dimensions
        assert stat["Metric"] == expected
        assert stat["Stat"] == "Maximum" and stat["Period"] == 300
        assert queries[metric_id]["ReturnData"] is False
    # Reputation metrics are fractions; AWS reviews an account at 5 % bounces, 0.1 % complaints.
    assert queries["percent_of_review"] == {
        "Id": "percent_of_review", "ReturnData": True,
        "Expression": "100*MAX([bounce/0.05,complaint/0.001])"}
    assert p["Threshold"] == {"Ref": "PauseAtPercentOfReview"}
    assert p["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert p["EvaluationPeriods"] == 1
    # A reputation problem must not clear itself because sending stopped.
    assert p["TreatMissingData"] == "ignore"


@pytest.mark.parametrize("alarm, slug", sorted(ALARMS.items()))
def test_each_alarm_tells_the_on_call_and_invokes_the_breaker_only_when_auto_pause_is_on(
        template, alarm, slug):
    p = props(template, alarm)
    assert p["AlarmName"] == {"Fn::Sub": "${EnvironmentSuffix}-" + slug}
    assert p["AlarmDescription"].endswith(f"Runbook: README.md, Operations runbook, entry '{slug}'.")
    assert p["AlarmActions"] == {"Fn::If": [
        "AutoPausesSending",
        [{"Fn::GetAtt": [FUNCTION, "Arn"]}, TOPIC],
        [TOPIC],
    ]}
    # Only on ALARM: an alarm that clears never resumes anything.
    assert "OKActions" not in p and "InsufficientDataActions" not in p
    assert template["Conditions"]["AutoPausesSending"] == {
        "Fn::Equals": [{"Ref": "AutoPauseSending"}, "true"]}


def test_the_alarms_topic_policy_accepts_its_alarm(template):
    (policy,) = resources_of_type(template, "AWS::SNS::TopicPolicy").values()
    statement = next(s for s in policy["Properties"]["PolicyDocument"]["Statement"]
                     if s["Sid"] == "CloudWatchPublishesStackAlarms")
    pattern = statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].split(":alarm:")[1]
    for alarm in ALARMS:
        assert fnmatch.fnmatchcase(props(template, alarm)["AlarmName"]["Fn::Sub"], pattern)


# --- What the template leaves to the breaker -------------------------------------------------------

def test_no_stack_update_resumes_a_paused_stack_because_the_template_never_sets_the_switches(
        template):
    # The breaker and the operator own the two switches. A value in the template would be put
    # back by the next stack update, silently resuming a stack the breaker paused.
    for name, config_set in resources_of_type(template, "AWS::SES::ConfigurationSet").items():
        assert "SendingOptions" not in config_set["Properties"], name
    for name, mapping in resources_of_type(template, "AWS::Lambda::EventSourceMapping").items():
        assert "Enabled" not in mapping["Properties"], name


def test_the_diagram_shows_who_invokes_the_breaker_and_what_it_switches(template):
    diagram = docs.architecture_mermaid(template)
    alarms = len(resources_of_type(template, "AWS::CloudWatch::Alarm"))
    for edge in (
        f"Alarms[{alarms} CloudWatch alarms] -->|1 of them invokes, if AutoPausesSending| "
        "LambdaEmailCircuitBreaker",
        "LambdaEmailCircuitBreaker -->|pause / resume| SESConfigurationSet",
        "LambdaEmailCircuitBreaker -->|pause / resume its queue| LambdaSendOrderEmail",
    ):
        assert edge in diagram, edge
    assert "LambdaEmailCircuitBreaker -->|SendEmail|" not in diagram


def test_a_pause_that_still_fails_after_lambdas_retries_reaches_the_on_call(template):
    # CloudWatch invokes the breaker asynchronously: Lambda retries twice, then would drop it.
    config = props(template, f"{FUNCTION}InvokeConfig")
    assert config["FunctionName"] == {"Ref": FUNCTION} and config["Qualifier"] == "$LATEST"
    assert config["MaximumRetryAttempts"] == 2
    assert config["MaximumEventAgeInSeconds"] == 3600
    assert config["DestinationConfig"] == {"OnFailure": {"Destination": TOPIC}}


def test_the_account_wide_rates_only_notify(template):
    # Another sender's bounces must not stop this shop's confirmations: only this stack's
    # configuration set invokes the breaker; the account's rates page the on-call.
    invoking = [name for name, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items()
                if "Fn::If" in json.dumps(alarm["Properties"]["AlarmActions"])]
    assert invoking == ["AlarmBreakerConfigSetReputation"]
    assert props(template, "AlarmSesReputation")["AlarmActions"] == [TOPIC]
