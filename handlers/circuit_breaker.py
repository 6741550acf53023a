"""Pause this stack's sending when its SES reputation is at risk; resume only when asked to.

This module is the Lambda function `<env>-email-circuit-breaker`. The template embeds this very
file as the function's ZipFile code (it runs as the module `index`), so it uses only the standard
library and boto3, and everything it needs comes from environment variables set by the template.

Two switches let this stack send email, and the breaker turns both:

- the SES configuration set (SES v2 PutConfigurationSetSendingOptions): while its sending is
  disabled, SES refuses every email sent through it;
- the send function's event source mapping (Lambda UpdateEventSourceMapping): while it is
  disabled, Lambda stops reading the send queue, so new orders wait in the queue, not in its
  dead-letter queue.

The story of one invocation:

1. Who asks. CloudWatch invokes the function asynchronously as the alarm action of the
   reputation alarm of this stack's configuration set (`<env>-breaker-config-set-reputation`),
   with the alarm's new state. An operator invokes it with {"action": "resume"} or
   {"action": "status"} (README, Operations runbook). Anything else is refused with a ValueError
   that says what was expected.
2. What it does. An alarm that went to ALARM pauses both switches. An alarm that went to OK or
   INSUFFICIENT_DATA changes nothing: the breaker never resumes by itself, because rates that fall
   once sending has stopped do not mean that the cause is fixed. "resume" enables both switches,
   the configuration set first so that no order meets a paused set; "status" reads both.
3. Each switch is read first and set only when it is not already where it should be, so a
   repeated alarm or resume changes nothing and reports "already paused" or "already running".
4. Both switches are always tried. When a call fails, the other switch is still set, the failure
   is logged with AWS's error code, and the invocation ends with BreakerFailed naming what failed:
   it counts as a Lambda error, CloudWatch's asynchronous invocation is retried (the retry finds
   the switch that worked already set), and an operator's resume shows a FunctionError. A failure
   is reported, never swallowed.

Each switch logs one JSON line: its state before and after, and whether this invocation changed
it. Each invocation prints at most one CloudWatch Embedded Metric Format line with the non-zero
counts: SendingPaused (invocations whose pause changed a switch), SendingResumed (the same for a
resume) and CircuitBreakerFailures (switches whose call failed).
"""

import json
import os
import time
from typing import Callable, NamedTuple

import boto3
from botocore.config import Config

CONFIGURATION_SET = os.environ["SES_CONFIG_SET"]
SEND_MAPPING_UUID = os.environ["SEND_EVENT_SOURCE_MAPPING"]
ENVIRONMENT = os.environ["ENVIRONMENT"]
METRICS_NAMESPACE = os.environ["METRICS_NAMESPACE"]

# Clients are created once per container. Every call the breaker makes is idempotent (it reads a
# switch, or sets it to a value), so botocore may resend it safely: three attempts ride out a
# throttled control-plane API or a dropped connection, which matters most when an alarm asks for a
# pause. These calls answer in well under a second, so short timeouts give up on a hung
# connection quickly, and the worst case stays inside the function's timeout (WORST_CASE_SECONDS).
AWS_CONFIG = Config(connect_timeout=1, read_timeout=2,
                    retries={"mode": "standard", "total_max_attempts": 3})
sesv2 = boto3.client("sesv2", config=AWS_CONFIG)
lambda_client = boto3.client("lambda", config=AWS_CONFIG)


def worst_case_seconds(config):
    """The longest one call with this client config can take: every attempt times out on
    connecting and on reading, and botocore's standard mode waits up to 1 s, 2 s, 4 s ... (random
    jitter, at most 20 s) before each retry."""
    attempts = config.retries["total_max_attempts"]
    backoff = sum(min(2 ** retry, 20) for retry in range(attempts - 1))
    return attempts * (config.connect_timeout + config.read_timeout) + backoff


# An invocation reads and sets each of the two switches: 4 x 12 s = 48 s at worst, inside the
# function's 60 s timeout.
CALLS_PER_INVOCATION = 4
WORST_CASE_SECONDS = CALLS_PER_INVOCATION * worst_case_seconds(AWS_CONFIG)

# What an invocation can ask for.
PAUSE, RESUME, STATUS, IGNORE = "pause", "resume", "status", "ignore"
OPERATOR_ACTIONS = (RESUME, STATUS)
EXPECTED = ('a CloudWatch alarm event (source "aws.cloudwatch", alarmData.state.value ALARM, OK '
            'or INSUFFICIENT_DATA), {"action": "resume"} or {"action": "status"}')

# What happened to one switch.
PAUSED, ALREADY_PAUSED = "paused", "already paused"
RESUMED, ALREADY_RUNNING = "resumed", "already running"
FAILED = "failed"


class Switch(NamedTuple):
    """One of the two things that let this stack send, and how to read and set it."""

    name: str  # in the log lines and the result
    resource: str  # the configuration set's name, or the mapping's UUID
    read: Callable[[], str]  # its state as AWS reports it
    turn: Callable[[bool], str]  # enable (True) or disable (False) it; returns its new state
    paused_states: tuple  # states in which it stops this stack's sending, or is about to
    running_states: tuple  # states in which it lets this stack send, or is about to


class BreakerFailed(RuntimeError):
    """A call to SES or Lambda failed: the invocation must end as an error, after both switches
    were tried and the failure was logged."""


def log(**fields):
    """Print one JSON line (a log line or an EMF document)."""
    print(json.dumps(fields))


def error_code(error):
    """AWS's error code (AccessDeniedException, ThrottlingException, ...), or the exception's
    class name when the request never got an answer (EndpointConnectionError, ...)."""
    response = getattr(error, "response", None) or {}
    return response.get("Error", {}).get("Code") or type(error).__name__


# --- The two switches ---------------------------------------------------------------------------

def read_configuration_set():
    """'enabled' or 'disabled': whether SES sends email through the configuration set."""
    response = sesv2.get_configuration_set(ConfigurationSetName=CONFIGURATION_SET)
    # A set whose sending was never changed may come without SendingOptions: it sends.
    enabled = response.get("SendingOptions", {}).get("SendingEnabled", True)
    return "enabled" if enabled else "disabled"


def turn_configuration_set(enabled):
    """Enable or disable sending through the configuration set; returns its new state."""
    sesv2.put_configuration_set_sending_options(
        ConfigurationSetName=CONFIGURATION_SET, SendingEnabled=enabled)
    return "enabled" if enabled else "disabled"


def read_send_mapping():
    """The send mapping's state as Lambda reports it: Enabled, Disabling, Disabled, Enabling,
    Creating, Updating or Deleting."""
    return lambda_client.get_event_source_mapping(UUID=SEND_MAPPING_UUID)["State"]


def turn_send_mapping(enabled):
    """Enable or disable the send mapping; returns the state Lambda answers with (Enabling or
    Disabling: the change takes effect within seconds)."""
    return lambda_client.update_event_source_mapping(
        UUID=SEND_MAPPING_UUID, Enabled=enabled)["State"]


SWITCHES = (
    Switch(name="configurationSet", resource=CONFIGURATION_SET,
           read=read_configuration_set, turn=turn_configuration_set,
           paused_states=("disabled",), running_states=("enabled",)),
    # A mapping that is Disabling already stops polling; one that is Enabling will poll. In any
    # other state (Creating, Updating) it is set again: Lambda refuses that while it is busy, and
    # the failure is reported and retried.
    Switch(name="sendMapping", resource=SEND_MAPPING_UUID,
           read=read_send_mapping, turn=turn_send_mapping,
           paused_states=("Disabling", "Disabled"), running_states=("Enabling", "Enabled")),
)


# --- What the event asks for ---------------------------------------------------------------------

def refusal(event, problem):
    """Log the refusal of an event the breaker does not understand, and return the ValueError
    to raise: it says what was expected and what came."""
    received = json.dumps(event, default=str)[:300]
    message = f"{problem}: expected {EXPECTED}; got {received}"
    log(level="ERROR", message="circuit breaker", environment=ENVIRONMENT, action="refused",
        reason=message)
    return ValueError(message)


def alarm_change(event):
    """The alarm's name, its new and previous state and the reason, from the event CloudWatch
    sends to a Lambda alarm action."""
    alarm_data = event.get("alarmData")
    state = alarm_data.get("state") if type(alarm_data) is dict else None
    if type(state) is not dict or type(state.get("value")) is not str:
        raise refusal(event, "an aws.cloudwatch event without alarmData.state.value")
    previous = alarm_data.get("previousState")
    return {
        "alarm": alarm_data.get("alarmName") or event.get("alarmArn"),
        "state": state["value"],
        "previousState": previous.get("value") if type(previous) is dict else None,
        "stateReason": str(state.get("reason", ""))[:300],
        "stateTimestamp": state.get("timestamp"),
    }


def requested_action(event):
    """What the event asks for (PAUSE, IGNORE, RESUME or STATUS) and, for an alarm event, the
    alarm change behind it."""
    if type(event) is not dict:
        raise refusal(event, "not a JSON object")
    if event.get("source") == "aws.cloudwatch":
        change = alarm_change(event)
        if change["state"] == "ALARM":
            return PAUSE, change
        if change["state"] in ("OK", "INSUFFICIENT_DATA"):
            return IGNORE, change
        raise refusal(event, f"an unknown alarm state {change['state']!r}")
    if event.get("action") in OPERATOR_ACTIONS:
        return event["action"], {}
    raise refusal(event, "neither an alarm event nor an operator action")


# --- Pause, resume, status -----------------------------------------------------------------------

def pause_or_resume(switch, action):
    """Set `switch` as `action` (PAUSE or RESUME) wants it, unless it is there already; returns
    its state before and after, and the outcome."""
    before = switch.read()
    if action == PAUSE and before in switch.paused_states:
        return {"before": before, "after": before, "outcome": ALREADY_PAUSED}
    if action == PAUSE:
        return {"before": before, "after": switch.turn(False), "outcome": PAUSED}
    if before in switch.running_states:
        return {"before": before, "after": before, "outcome": ALREADY_RUNNING}
    return {"before": before, "after": switch.turn(True), "outcome": RESUMED}


def status_of(switch):
    """The state of `switch` as AWS reports it, and whether it lets this stack send: 'paused',
    'running', or the state itself while it is between the two (Creating, Updating)."""
    state = switch.read()
    if state in switch.paused_states:
        return {"state": state, "sending": "paused"}
    if state in switch.running_states:
        return {"state": state, "sending": "running"}
    return {"state": state, "sending": state}


def apply(switch, action):
    """Pause, resume or read one switch, and log what it found and did as one JSON line. A failed
    call is logged and returned as the FAILED outcome, never raised, so that the other switch is
    still tried."""
    result = {"switch": switch.name, "resource": switch.resource}
    try:
        if action == STATUS:
            result.update(status_of(switch))
        else:
            result.update(pause_or_resume(switch, action))
        level = "INFO"
    except Exception as error:  # AWS refused, the network failed, or a bug: reported by the caller
        result.update(outcome=FAILED, error=error_code(error),
                      operation=getattr(error, "operation_name", None),
                      errorMessage=str(error)[:500])
        level = "ERROR"
    log(level=level, message="circuit breaker", environment=ENVIRONMENT, action=action,
        **result)
    return result


def failed(result):
    """Whether the call to this result's switch failed."""
    return result.get("outcome") == FAILED


def sending(results):
    """How this stack's sending stands after the invocation: 'paused' (both switches stop it),
    'running' (both let it send) or 'partly paused'."""
    states = [result.get("after", result.get("state")) for result in results]
    paused = [state in switch.paused_states for switch, state in zip(SWITCHES, states)]
    if all(paused):
        return "paused"
    return "partly paused" if any(paused) else "running"


def failure_message(action, results):
    """What BreakerFailed says: for each switch, what failed or what happened to it."""
    parts = []
    for result in results:
        if failed(result):
            what = f"{result['operation'] or 'the call'} failed ({result['error']})"
        else:
            what = result.get("outcome") or result["sending"]
        parts.append(f"{result['switch']} {result['resource']}: {what}")
    return f"{action} did not complete: " + "; ".join(parts)


def count(action, results):
    """The non-zero metrics of this invocation."""
    metrics = {}
    outcomes = [result.get("outcome") for result in results]
    if action == PAUSE and PAUSED in outcomes:
        metrics["SendingPaused"] = 1
    if action == RESUME and RESUMED in outcomes:
        metrics["SendingResumed"] = 1
    failures = outcomes.count(FAILED)
    if failures:
        metrics["CircuitBreakerFailures"] = failures
    return metrics


def metrics_line(metrics):
    """One CloudWatch Embedded Metric Format document. No dimensions: every combination of
    dimension values would be a separately billed metric."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [{"Name": name, "Unit": "Count"} for name in metrics],
            }],
        },
        **metrics,
    }


def lambda_handler(event, context):
    """An alarm event or an operator action in; what the breaker found and did out."""
    action, alarm = requested_action(event)
    if action == IGNORE:
        log(level="INFO", message="circuit breaker", environment=ENVIRONMENT, action=action,
            reason="the breaker never resumes by itself: an operator resumes with "
                   '{"action": "resume"}', **alarm)
        return {"action": action, **alarm}

    results = [apply(switch, action) for switch in SWITCHES]
    metrics = count(action, results)
    if metrics:
        print(json.dumps(metrics_line(metrics)))
    if any(failed(result) for result in results):
        raise BreakerFailed(failure_message(action, results))
    return {"action": action, **alarm, "sending": sending(results), "switches": results}
