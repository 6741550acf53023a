"""Behaviour of `handlers/circuit_breaker.py`, run from the template's ZipFile under moto.

The alarm event (`tests/events/breaker/`) has the shape of AWS's example of what CloudWatch sends
to a Lambda alarm action ("Invoke a Lambda function from an alarm": `source`, `alarmArn`,
`alarmData.state.value`, `previousState`, `configuration`), filled in for this stack's alarm.

SES v2 `GetConfigurationSet` / `PutConfigurationSetSendingOptions` are answered by the SES model
(`simulation/ses_model.py`), as moto lacks them. The send mapping is moto's own Lambda event
source mapping (Get/UpdateEventSourceMapping need no docker); on top of it, an update answers with
the state real Lambda moves through (`Disabling`, `Enabling`) rather than moto's final one.
Failures are injected as AWS sends them: `AccessDeniedException`, HTTP 403, AWS's message.
"""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from moto import mock_aws

from conftest import FakeContext, load_event, load_handler
from simulation.ses_model import SesModel

ENV = "dev"
CONFIG_SET = f"{ENV}-ses-config-set"
NAMESPACE = f"{ENV}/EmailNotifications"
ACCOUNT = "123456789012"
ROLE_SESSION = (f"arn:aws:sts::{ACCOUNT}:assumed-role/order-emails-dev-LambdaEmailCircuitBreakerRole"
                f"-1A2B3C4D5E6F/{ENV}-email-circuit-breaker")
WRITES = ("PutConfigurationSetSendingOptions", "UpdateEventSourceMapping")


# --- the world the breaker acts on ----------------------------------------------------------------

@pytest.fixture
def aws():
    with mock_aws():
        yield


@pytest.fixture
def send_mapping(aws) -> str:
    """The send queue, the send function and its event source mapping, enabled; its UUID."""
    role = boto3.client("iam").create_role(
        RoleName="send-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}),
    )["Role"]["Arn"]
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{ENV}-send-order-email")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def lambda_handler(event, context):\n    return {}\n")
    lambda_client = boto3.client("lambda")
    lambda_client.create_function(
        FunctionName=f"{ENV}-send-order-email", Runtime="python3.13", Role=role,
        Handler="index.lambda_handler", Code={"ZipFile": code.getvalue()})
    return lambda_client.create_event_source_mapping(
        EventSourceArn=queue_arn, FunctionName=f"{ENV}-send-order-email", BatchSize=10)["UUID"]


@pytest.fixture
def ses() -> SesModel:
    """The SES account: this stack's configuration set exists and sends."""
    model = SesModel()
    model.add_configuration_set(CONFIG_SET)
    return model


class Calls:
    """The operations a breaker's clients made, in order."""

    def __init__(self, *clients):
        self.names: list[str] = []
        for client in clients:
            client.meta.events.register("before-parameter-build", self.record)

    def record(self, model, **_):
        """Remember one operation (botocore calls this before building each request)."""
        self.names.append(model.name)

    def writes(self) -> list[str]:
        return [name for name in self.names if name in WRITES]


@pytest.fixture
def breaker(monkeypatch, send_mapping, ses):
    """The embedded handler, its SES v2 client in front of the SES model."""
    for name, value in {
        "SES_CONFIG_SET": CONFIG_SET,
        "SEND_EVENT_SOURCE_MAPPING": send_mapping,
        "ENVIRONMENT": ENV,
        "METRICS_NAMESPACE": NAMESPACE,
    }.items():
        monkeypatch.setenv(name, value)
    module = load_handler("circuit_breaker")
    ses.attach(module.sesv2)
    answer_updates_in_transition(module.lambda_client)
    module.calls = Calls(module.sesv2, module.lambda_client)
    return module


def answer_updates_in_transition(lambda_client) -> None:
    """Real Lambda answers UpdateEventSourceMapping with the state it moves through (Enabling,
    Disabling); moto answers with the final one."""
    def in_transition(parsed, **_):
        parsed["State"] = {"Enabled": "Enabling", "Disabled": "Disabling"}[parsed["State"]]
    lambda_client.meta.events.register("after-call.lambda.UpdateEventSourceMapping",
                                       in_transition)


def read_mapping_as(lambda_client, state: str) -> None:
    """GetEventSourceMapping answers `state`, as real Lambda does for a few seconds after an
    update (Disabling, Enabling)."""
    def answer(parsed, **_):
        parsed["State"] = state
    lambda_client.meta.events.register("after-call.lambda.GetEventSourceMapping", answer)


def deny(client, operation: str, action: str, resource: str) -> None:
    """`operation` fails as AWS answers a role that lacks the permission (HTTP 403)."""
    service = client.meta.service_model.service_name
    message = (f"User: {ROLE_SESSION} is not authorized to perform: {action} on resource: "
               f"{resource} because no identity-based policy allows the {action} action")

    def refuse(**_):
        response = {"Error": {"Code": "AccessDeniedException", "Message": message},
                    "ResponseMetadata": {"HTTPStatusCode": 403}}
        raise client.exceptions.from_code("AccessDeniedException")(response, operation)
    # First: the SES model answers this operation in a before-call handler of its own.
    client.meta.events.register_first(f"before-call.{service}.{operation}", refuse)


def mapping_state(uuid: str) -> str:
    return boto3.client("lambda").get_event_source_mapping(UUID=uuid)["State"]


def alarm_event(state: str = "ALARM") -> dict:
    event = load_event("breaker/alarm_config_set_reputation.json")
    event["alarmData"]["state"]["value"] = state
    return event


def invoke(breaker, event) -> dict:
    return breaker.lambda_handler(event, FakeContext())


def printed(capsys) -> list[dict]:
    """Every JSON line the handler printed since the last call."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def log_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if "_aws" not in line]


def metrics_of(lines: list[dict]) -> dict:
    """The EMF document's values by metric name ({} when none was printed)."""
    documents = [line for line in lines if "_aws" in line]
    assert len(documents) <= 1
    if not documents:
        return {}
    names = [m["Name"] for m in documents[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    return {name: documents[0][name] for name in names}


def by_switch(result: dict) -> dict[str, dict]:
    return {switch["switch"]: switch for switch in result["switches"]}


# --- ALARM: pause ---------------------------------------------------------------------------------

def test_an_alarm_pauses_the_configuration_set_and_disables_the_send_mapping(
        breaker, ses, send_mapping, capsys):
    # GIVEN a stack that sends WHEN its reputation alarm goes to ALARM
    result = invoke(breaker, alarm_event("ALARM"))
    # THEN SES refuses the configuration set's emails and Lambda stops reading the send queue
    assert ses.configuration_sets[CONFIG_SET] is False
    assert mapping_state(send_mapping) == "Disabled"
    assert result["action"] == "pause" and result["sending"] == "paused"
    assert result["alarm"] == f"{ENV}-breaker-config-set-reputation"
    switches = by_switch(result)
    assert switches["configurationSet"] == {
        "switch": "configurationSet", "resource": CONFIG_SET,
        "before": "enabled", "after": "disabled", "outcome": "paused"}
    assert switches["sendMapping"]["before"] == "Enabled"
    assert switches["sendMapping"]["after"] == "Disabling"
    assert switches["sendMapping"]["outcome"] == "paused"
    # AND it read each switch before it changed it, the configuration set first
    assert breaker.calls.names == ["GetConfigurationSet", "PutConfigurationSetSendingOptions",
                                   "GetEventSourceMapping", "UpdateEventSourceMapping"]
    lines = printed(capsys)
    assert metrics_of(lines) == {"SendingPaused": 1}
    logged = log_lines(lines)
    assert [(line["switch"], line["outcome"]) for line in logged] == [
        ("configurationSet", "paused"), ("sendMapping", "paused")]
    assert all(line["level"] == "INFO" and line["environment"] == ENV for line in logged)


def test_a_repeated_alarm_changes_nothing_and_says_already_paused(breaker, ses, capsys):
    # GIVEN a stack the breaker paused
    invoke(breaker, alarm_event("ALARM"))
    capsys.readouterr()
    writes_before = breaker.calls.writes()
    # WHEN the same alarm event comes again (CloudWatch's asynchronous invocation is retried)
    result = invoke(breaker, alarm_event("ALARM"))
    # THEN nothing is written a second time, and no pause is counted
    assert breaker.calls.writes() == writes_before
    assert {name: switch["outcome"] for name, switch in by_switch(result).items()} == {
        "configurationSet": "already paused", "sendMapping": "already paused"}
    assert result["sending"] == "paused"
    assert metrics_of(printed(capsys)) == {}


def test_a_mapping_that_is_still_disabling_counts_as_paused(breaker, send_mapping):
    # GIVEN Lambda reports the mapping as Disabling (for seconds after an update)
    read_mapping_as(breaker.lambda_client, "Disabling")
    # WHEN an alarm comes
    result = invoke(breaker, alarm_event("ALARM"))
    # THEN the mapping is not updated again (Lambda would refuse it while it is busy)
    assert by_switch(result)["sendMapping"]["outcome"] == "already paused"
    assert "UpdateEventSourceMapping" not in breaker.calls.names
    assert mapping_state(send_mapping) == "Enabled"  # moto: nothing was changed


# --- OK and INSUFFICIENT_DATA: never resume by itself --------------------------------------------

@pytest.mark.parametrize("state", ["OK", "INSUFFICIENT_DATA"])
def test_an_alarm_that_clears_changes_nothing_because_only_an_operator_resumes(
        breaker, ses, send_mapping, state, capsys):
    # GIVEN a paused stack
    invoke(breaker, alarm_event("ALARM"))
    capsys.readouterr()
    calls_before = list(breaker.calls.names)
    # WHEN the alarm goes back to OK or to INSUFFICIENT_DATA
    result = invoke(breaker, alarm_event(state))
    # THEN no call is made: it stays paused
    assert breaker.calls.names == calls_before
    assert ses.configuration_sets[CONFIG_SET] is False
    assert mapping_state(send_mapping) == "Disabled"
    assert result == {"action": "ignore", "alarm": f"{ENV}-breaker-config-set-reputation",
                      "state": state, "previousState": "OK",
                      "stateReason": alarm_event()["alarmData"]["state"]["reason"][:300],
                      "stateTimestamp": "2026-11-27T12:05:15.490+0000"}
    lines = printed(capsys)
    assert metrics_of(lines) == {}
    (line,) = log_lines(lines)
    assert line["action"] == "ignore" and "never resumes by itself" in line["reason"]


# --- resume and status ----------------------------------------------------------------------------

def test_resume_enables_the_configuration_set_first_then_the_mapping(
        breaker, ses, send_mapping, capsys):
    # GIVEN a paused stack
    invoke(breaker, alarm_event("ALARM"))
    capsys.readouterr()
    breaker.calls.names.clear()
    # WHEN an operator resumes
    result = invoke(breaker, {"action": "resume"})
    # THEN both switches let the stack send again, the configuration set before any order can
    # reach it
    assert ses.configuration_sets[CONFIG_SET] is True
    assert mapping_state(send_mapping) == "Enabled"
    assert breaker.calls.writes() == ["PutConfigurationSetSendingOptions",
                                      "UpdateEventSourceMapping"]
    assert {name: (s["before"], s["after"], s["outcome"])
            for name, s in by_switch(result).items()} == {
        "configurationSet": ("disabled", "enabled", "resumed"),
        "sendMapping": ("Disabled", "Enabling", "resumed"),
    }
    assert result["action"] == "resume" and result["sending"] == "running"
    assert metrics_of(printed(capsys)) == {"SendingResumed": 1}


def test_resume_of_a_running_stack_changes_nothing(breaker, capsys):
    result = invoke(breaker, {"action": "resume"})
    assert breaker.calls.writes() == []
    assert {s["outcome"] for s in result["switches"]} == {"already running"}
    assert metrics_of(printed(capsys)) == {}


def test_status_reports_both_switches_and_changes_nothing(breaker, ses, send_mapping, capsys):
    # GIVEN a paused stack
    invoke(breaker, alarm_event("ALARM"))
    capsys.readouterr()
    breaker.calls.names.clear()
    # WHEN an operator asks for the status
    result = invoke(breaker, {"action": "status"})
    # THEN it reads both switches, writes nothing, counts nothing
    assert breaker.calls.names == ["GetConfigurationSet", "GetEventSourceMapping"]
    assert result == {"action": "status", "sending": "paused", "switches": [
        {"switch": "configurationSet", "resource": CONFIG_SET, "state": "disabled",
         "sending": "paused"},
        {"switch": "sendMapping", "resource": send_mapping, "state": "Disabled",
         "sending": "paused"},
    ]}
    lines = printed(capsys)
    assert metrics_of(lines) == {}
    assert [line["state"] for line in log_lines(lines)] == ["disabled", "Disabled"]


def test_status_of_a_stack_paused_by_hand_halfway_says_partly_paused(breaker, ses):
    ses.pause_configuration_set(CONFIG_SET)  # someone paused the set, not the mapping
    result = invoke(breaker, {"action": "status"})
    assert result["sending"] == "partly paused"
    assert [s["sending"] for s in result["switches"]] == ["paused", "running"]


# --- failures are reported, never swallowed -------------------------------------------------------

def test_a_failed_pause_of_the_configuration_set_still_disables_the_mapping_and_raises(
        breaker, ses, send_mapping, capsys):
    # GIVEN the role may not change the configuration set
    deny(breaker.sesv2, "PutConfigurationSetSendingOptions",
         "ses:PutConfigurationSetSendingOptions",
         f"arn:aws:ses:us-east-1:{ACCOUNT}:configuration-set/{CONFIG_SET}")
    # WHEN the alarm comes THEN the invocation fails, naming what failed and what worked
    with pytest.raises(breaker.BreakerFailed) as failure:
        invoke(breaker, alarm_event("ALARM"))
    assert str(failure.value) == (
        f"pause did not complete: configurationSet {CONFIG_SET}: "
        "PutConfigurationSetSendingOptions failed (AccessDeniedException); "
        f"sendMapping {send_mapping}: paused")
    # AND the other switch was still turned
    assert mapping_state(send_mapping) == "Disabled"
    assert ses.configuration_sets[CONFIG_SET] is True
    lines = printed(capsys)
    errors = [line for line in log_lines(lines) if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["switch"] == "configurationSet"
    assert errors[0]["error"] == "AccessDeniedException"
    assert errors[0]["operation"] == "PutConfigurationSetSendingOptions"
    assert "is not authorized to perform: ses:PutConfigurationSetSendingOptions" in errors[0][
        "errorMessage"]
    assert metrics_of(lines) == {"SendingPaused": 1, "CircuitBreakerFailures": 1}


def test_a_failed_update_of_the_mapping_still_pauses_the_configuration_set_and_raises(
        breaker, ses, send_mapping, capsys):
    deny(breaker.lambda_client, "UpdateEventSourceMapping", "lambda:UpdateEventSourceMapping",
         f"arn:aws:lambda:us-east-1:{ACCOUNT}:event-source-mapping:{send_mapping}")
    with pytest.raises(breaker.BreakerFailed, match=(
            f"sendMapping {send_mapping}: UpdateEventSourceMapping failed "
            r"\(AccessDeniedException\)")):
        invoke(breaker, alarm_event("ALARM"))
    assert ses.configuration_sets[CONFIG_SET] is False
    assert mapping_state(send_mapping) == "Enabled"
    assert metrics_of(printed(capsys)) == {"SendingPaused": 1, "CircuitBreakerFailures": 1}


def test_a_failed_resume_raises_so_the_operator_sees_a_function_error(
        breaker, ses, send_mapping, capsys):
    # GIVEN a paused stack and a role that may not read the mapping
    invoke(breaker, alarm_event("ALARM"))
    capsys.readouterr()
    deny(breaker.lambda_client, "GetEventSourceMapping", "lambda:GetEventSourceMapping",
         f"arn:aws:lambda:us-east-1:{ACCOUNT}:event-source-mapping:{send_mapping}")
    # WHEN the operator resumes THEN the configuration set is enabled, and the invocation fails
    with pytest.raises(breaker.BreakerFailed, match="GetEventSourceMapping failed"):
        invoke(breaker, {"action": "resume"})
    assert ses.configuration_sets[CONFIG_SET] is True
    assert mapping_state(send_mapping) == "Disabled"
    assert metrics_of(printed(capsys)) == {"SendingResumed": 1, "CircuitBreakerFailures": 1}


# --- anything else is a clear error ---------------------------------------------------------------

@pytest.mark.parametrize("event, problem", [
    ({}, "neither an alarm event nor an operator action"),
    ({"action": "pause"}, "neither an alarm event nor an operator action"),
    ({"action": "Resume"}, "neither an alarm event nor an operator action"),
    ("resume", "not a JSON object"),
    ({"source": "aws.cloudwatch", "alarmArn": "arn:aws:cloudwatch:us-east-1:1:alarm:x"},
     "an aws.cloudwatch event without alarmData.state.value"),
    ({"source": "aws.cloudwatch", "alarmData": {"state": {"value": "WARNING"}}},
     "an unknown alarm state 'WARNING'"),
])
def test_an_event_it_does_not_understand_is_refused_with_what_it_expected(
        breaker, event, problem, capsys):
    with pytest.raises(ValueError) as refused:
        invoke(breaker, event)
    message = str(refused.value)
    assert message.startswith(problem)
    assert 'expected a CloudWatch alarm event' in message
    assert '{"action": "resume"} or {"action": "status"}' in message
    assert breaker.calls.names == []
    (line,) = printed(capsys)
    assert line["level"] == "ERROR" and line["reason"] == message


# --- time -----------------------------------------------------------------------------------------

def test_the_worst_case_of_an_invocation_fits_the_function_timeout(breaker, template):
    timeout = template["Resources"]["LambdaEmailCircuitBreaker"]["Properties"]["Timeout"]
    assert breaker.WORST_CASE_SECONDS == 48
    assert breaker.WORST_CASE_SECONDS < timeout
