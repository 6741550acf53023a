#!/usr/bin/env python3
"""Run the order-confirmation pipeline end to end, locally, from the generated template.

    python simulate.py [--orders 2000] [--seed 1] [--faults 0.1] [--duplicates 0.3] [--json]

It checks three claims that a template alone cannot show: no email sent twice, no order lost,
every email tracked to its final status. Everything runs in this process under moto (no network,
no AWS account):

1. The data plane is read from `dist/template.json`: the key, topics, queues (redrive policies),
   subscriptions, table, SES configuration set, identity and event destinations are created with
   boto3 from the template's properties, with its intrinsics resolved. Edit the template and the
   simulation changes with it.
2. Both Lambda functions run from the template's `ZipFile` code, with the environment variables
   the template gives them, loaded as module `index` like Lambda loads them.
3. N orders are published to the order topic. Recipients are SES mailbox-simulator addresses
   (`bounce+17@simulator.amazonses.com`), which choose each email's outcome; a share of the orders
   is published 2-3 times and a share is invalid.
4. The event source mappings are played on a virtual clock: batches, partial batch failures,
   visibility timeouts, receive counts and dead-letter queues (moto moves a message to the DLQ).
   SES is played too: every email SES accepted produces the event records a real SES publishes
   (Send, Delivery, DeliveryDelay, Bounce, Complaint) to the topics the event destinations name,
   shuffled, some duplicated, some late.
5. `--faults RATE` throttles SES, fails DynamoDB calls, and kills the send function between SES
   accepting an email and the function recording it.
6. Once nothing is in flight, the on-call runbook's redrive is played (every DLQ moved back to
   its queue once) and the run goes on until it settles again (`--no-redrive` skips it).
7. The end state (emails SES accepted, table items, DLQ contents) is checked against the
   invariants; exit code 1 names the one that broke, with examples of what happened.

moto is single-threaded: `--workers 2` (the default) splits the orders over two copies of the
stack, one process each (every copy of an order stays in one).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import functools
import heapq
import io
import json
import multiprocessing
import os
import random
import re
import sys
import time as _real_time
import traceback
import types
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from infra.code import load_as_index

ROOT = Path(__file__).resolve().parent
DEFAULT_TEMPLATE = ROOT / "dist" / "template.json"

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
STACK_NAME = "email-sim"

# Values the simulation gives the template's parameters (any other parameter takes its Default).
# Production mode, so each email goes to its order's mailbox-simulator address.
SIM_PARAMETERS = {
    "EnvironmentSuffix": "sim",
    "VerifiedDomain": "shop.example.com",
    "SesFromAddress": "orders@shop.example.com",
    "EnableProductionSES": "true",
    "TestEmailAddress": "success@simulator.amazonses.com",
    "AlarmEmail": "",
}

# --- Virtual time -------------------------------------------------------------------------------
START_EPOCH = 1795780800  # 2026-11-27T12:00:00Z
TICK_S = 1  # one polling slot: an invocation of a batch takes about a second
SES_EVENT_DELAY_S = (1, 5)  # SES publishes an email's events seconds after accepting it
LATE_DUPLICATE_S = (0, 600)  # SNS/SQS may deliver a copy of an event minutes later
MAX_VIRTUAL_S = 7 * 24 * 3600  # a run that has not settled after a week of virtual time is stuck
# moto counts visibility in real time; receive with a long one so that only the virtual clock
# decides when a failed message comes back (ChangeMessageVisibility 0 when its timeout passed).
SQS_HOLD_S = 43200
DEFAULT_MAX_CONCURRENCY = 10  # an event source mapping without ScalingConfig

# --- Orders and outcomes ------------------------------------------------------------------------
SIMULATOR_DOMAIN = "simulator.amazonses.com"
OUTCOME_WEIGHTS = {"success": 70, "ooto": 10, "bounce": 8, "complaint": 6, "suppressionlist": 6}
# The status an email's item must end in, by mailbox-simulator outcome.
EXPECTED_STATUS = {
    "success": "DELIVERED",
    "ooto": "DELIVERED",
    "bounce": "BOUNCED",
    "suppressionlist": "BOUNCED",
    "complaint": "COMPLAINED",
}
# SES event type -> (field of its data object, `MatchingEventTypes` name in an event destination).
SES_EVENT_TYPES = {
    "Send": ("send", "send"),
    "Delivery": ("delivery", "delivery"),
    "DeliveryDelay": ("deliveryDelay", "deliveryDelay"),
    "Bounce": ("bounce", "bounce"),
    "Complaint": ("complaint", "complaint"),
    "Reject": ("reject", "reject"),
    "Rendering Failure": ("failure", "renderingFailure"),
}
# Natural order of an email's events: an arrival below an earlier one is "out of order".
EVENT_ORDER = {"Send": 1, "DeliveryDelay": 2, "Delivery": 3, "Bounce": 4, "Complaint": 5}
CRASH_SHARE = 0.5  # --faults RATE kills the send function after an accepted send at RATE x this
EXAMPLES = 5  # orders shown per broken invariant

# (report field, what it must be, what a broken value means)
INVARIANTS = (
    ("duplicate_emails", "0", "an order was emailed more than once"),
    ("lost_orders", "0", "a valid order was neither emailed nor dead-lettered"),
    ("tracked_pct", "100", "an email's item did not reach the status its outcome implies"),
    ("invalid_dropped", "0", "an invalid order was acknowledged instead of dead-lettered"),
)


class TemplateError(Exception):
    """The template cannot be simulated: missing file, bad JSON, missing value, unknown
    intrinsic."""


class SimulatedCrash(BaseException):
    """The send function died mid-invocation (timeout, out of memory, runtime crash).

    A BaseException, so the handler's per-record `except Exception` cannot swallow it, just as it
    could not swallow a real crash: the invocation fails and its whole batch comes back.
    """


# ================================================================================================
# Template: loading, parameters, intrinsics
# ================================================================================================

def load_template(source: str | Path | dict) -> dict:
    """The template as a dict: a copy of `source` if it is one, else the JSON file it names."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if not path.is_file():
        hint = " (run `python build_template.py` first)" if path == DEFAULT_TEMPLATE else ""
        raise TemplateError(f"template file not found: {path}{hint}")
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TemplateError(f"cannot read {path} as a JSON template: {exc}") from None
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return template


def choose_parameters(template: dict, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """A value for every template parameter: override, else simulation value, else Default."""
    declared = template.get("Parameters", {})
    unknown = sorted(set(overrides or {}) - set(declared))
    if unknown:
        raise TemplateError(f"unknown template parameter(s): {', '.join(unknown)}")
    chosen = {}
    for name, spec in declared.items():
        if overrides and name in overrides:
            value = overrides[name]
        elif name in SIM_PARAMETERS:
            value = SIM_PARAMETERS[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default: pass --param {name}=VALUE")
        value = str(value)
        allowed = spec.get("AllowedValues")
        if allowed and value not in [str(v) for v in allowed]:
            raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
        chosen[name] = value
    return chosen


NO_VALUE = object()  # AWS::NoValue: the property is removed
SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class Resolver:
    """Resolves CloudFormation intrinsics to the values of this simulation.

    Parameters resolve to the chosen values, pseudo parameters to moto's region and account, and
    resources to the physical ids moto gave them (`physical[logical]` maps "Ref" and each
    `GetAtt` attribute to a value). A resource that is not simulated resolves to a placeholder.
    """

    def __init__(self, template: dict, parameters: dict[str, str]):
        self.template = template
        self.parameters = parameters
        self.physical: dict[str, dict[str, Any]] = {}
        self._conditions: dict[str, bool] = {}
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK_NAME,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/sim",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        self._functions: dict[str, Callable[[Any], Any]] = {
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::If": self._if,
            "Fn::Select": lambda arg: self.resolve(arg[1])[int(self.resolve(arg[0]))],
            "Fn::Split": lambda arg: str(self.resolve(arg[1])).split(arg[0]),
            "Fn::Base64": lambda arg: base64.b64encode(str(self.resolve(arg)).encode()).decode(),
            "Fn::GetAZs": lambda arg: [f"{REGION}{zone}" for zone in "abcdef"],
        }

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not NO_VALUE]
        if isinstance(value, dict):
            if len(value) == 1:
                (key, arg), = value.items()
                if key == "Ref":
                    return self.ref(arg)
                if key.startswith("Fn::"):
                    function = self._functions.get(key)
                    if function is None:
                        raise TemplateError(f"intrinsic {key} is not supported by simulate.py")
                    return function(arg)
            resolved = {key: self.resolve(item) for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        return value

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name]["Ref"]
        if name in self.template.get("Resources", {}):
            return f"{name}-not-simulated"
        raise TemplateError(f"Ref to unknown name {name}")

    def get_att(self, name: str, attribute: str) -> Any:
        if name in self.physical:
            if attribute not in self.physical[name]:
                raise TemplateError(f"Fn::GetAtt {name}.{attribute} is not simulated")
            return self.physical[name][attribute]
        if name in self.template.get("Resources", {}):
            return f"{name}-{attribute}-not-simulated"
        raise TemplateError(f"Fn::GetAtt of unknown resource {name}")

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.get("Conditions", {})
            if name not in conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self._evaluate(conditions[name]))
        return self._conditions[name]

    def _evaluate(self, expression: Any) -> Any:
        """A condition expression (Fn::Equals / Not / And / Or / Condition) or a plain value."""
        if isinstance(expression, dict) and len(expression) == 1:
            (key, arg), = expression.items()
            if key == "Fn::Equals":
                return str(self.resolve(arg[0])) == str(self.resolve(arg[1]))
            if key == "Fn::Not":
                return not self._evaluate(arg[0])
            if key == "Fn::And":
                return all(self._evaluate(item) for item in arg)
            if key == "Fn::Or":
                return any(self._evaluate(item) for item in arg)
            if key == "Condition":
                return self.condition(arg)
        return self.resolve(expression)

    def _get_att(self, arg: Any) -> Any:
        name, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
        return self.get_att(name, self.resolve(attribute))

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        values = {name: self.resolve(value) for name, value in variables.items()}

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the literal text ${Literal}
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name and name not in self.pseudo:
                return str(self.get_att(*name.split(".", 1)))
            return str(self.ref(name))

        return SUB_VARIABLE.sub(replace, text)

    def _join(self, arg: Any) -> str:
        delimiter, items = arg
        return delimiter.join(str(item) for item in self.resolve(items))

    def _if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)


def references(value: Any, found: set[str] | None = None) -> set[str]:
    """Logical ids a property value refers to (Ref, Fn::GetAtt, Fn::Sub variables)."""
    found = set() if found is None else found
    if isinstance(value, list):
        for item in value:
            references(item, found)
    elif isinstance(value, dict):
        if len(value) == 1 and "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        elif len(value) == 1 and "Fn::GetAtt" in value:
            arg = value["Fn::GetAtt"]
            found.add(arg.split(".", 1)[0] if isinstance(arg, str) else arg[0])
        elif len(value) == 1 and "Fn::Sub" in value:
            arg = value["Fn::Sub"]
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            for name in SUB_VARIABLE.findall(text):
                if not name.startswith("!") and name not in variables:
                    found.add(name.split(".", 1)[0])
            references(variables, found)
        else:
            for item in value.values():
                references(item, found)
    return found


def creation_order(resources: dict[str, dict]) -> list[str]:
    """Logical ids in an order where every resource comes after the ones it refers to."""
    depends = {}
    for logical, resource in resources.items():
        needed = references(resource.get("Properties", {}))
        explicit = resource.get("DependsOn", [])
        needed.update([explicit] if isinstance(explicit, str) else explicit)
        depends[logical] = {name for name in needed if name in resources and name != logical}
    order, done = [], set()
    while len(order) < len(resources):
        ready = sorted(name for name in resources if name not in done and depends[name] <= done)
        if not ready:
            raise TemplateError("the template's resources depend on each other in a cycle")
        order.extend(ready)
        done.update(ready)
    return order


# ================================================================================================
# Stack: the template's data plane, created in moto
# ================================================================================================

@dataclass
class QueueInfo:
    logical: str
    name: str
    url: str
    arn: str
    visibility_timeout: int
    max_receive_count: int | None
    dead_letter_arn: str | None


@dataclass
class FunctionInfo:
    logical: str
    name: str
    code: str
    entry_point: str
    environment: dict[str, str]
    timeout_s: int


@dataclass
class MappingInfo:
    logical: str
    function_name: str
    queue_arn: str
    batch_size: int
    max_concurrency: int
    report_batch_item_failures: bool
    enabled: bool


@dataclass
class Stack:
    """What `deploy` created, by logical id, plus what the simulation needs to play it."""

    resolver: Resolver
    topics: dict[str, str] = field(default_factory=dict)  # logical -> ARN
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    subscriptions: list[tuple[str, str, bool]] = field(default_factory=list)  # topic, queue, raw
    tables: dict[str, str] = field(default_factory=dict)  # logical -> table name
    event_routes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    functions: dict[str, FunctionInfo] = field(default_factory=dict)
    mappings: dict[str, MappingInfo] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # logical -> why
    not_simulated: Counter = field(default_factory=Counter)  # resource type -> count

    def queue_by_arn(self, arn: str | None) -> QueueInfo | None:
        return next((queue for queue in self.queues.values() if queue.arn == arn), None)


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _truthy(value: Any) -> bool:
    return str(value).lower() == "true"


def _create_key(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    # The key policy is not simulated: moto does not enforce KMS grants.
    description = stack.resolver.resolve(props.get("Description", logical))
    metadata = aws["kms"].create_key(Description=str(description))["KeyMetadata"]
    return {"Ref": metadata["KeyId"], "Arn": metadata["Arn"], "KeyId": metadata["KeyId"]}


def _create_alias(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    name = stack.resolver.resolve(props["AliasName"])
    target = stack.resolver.resolve(props["TargetKeyId"])
    aws["kms"].create_alias(AliasName=name, TargetKeyId=target)
    return {"Ref": name}


def _create_topic(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    props = stack.resolver.resolve(props)
    name = props.get("TopicName") or f"{STACK_NAME}-{logical}"
    attributes = {key: str(props[key]) for key in ("KmsMasterKeyId", "DisplayName") if key in props}
    arn = aws["sns"].create_topic(Name=name, Attributes=attributes)["TopicArn"]
    stack.topics[logical] = arn
    return {"Ref": arn, "TopicArn": arn, "TopicName": name}


QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                    "MaximumMessageSize", "ReceiveMessageWaitTimeSeconds", "KmsMasterKeyId")


def _create_queue(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    props = stack.resolver.resolve(props)
    name = props.get("QueueName") or f"{STACK_NAME}-{logical}"
    attributes = {key: str(props[key]) for key in QUEUE_ATTRIBUTES if key in props}
    redrive = props.get("RedrivePolicy")
    if redrive:  # moto moves a message to this DLQ once it was received maxReceiveCount times
        attributes["RedrivePolicy"] = json.dumps(redrive)
    url = aws["sqs"].create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
    stack.queues[logical] = QueueInfo(
        logical=logical, name=name, url=url, arn=arn,
        visibility_timeout=_int(props.get("VisibilityTimeout"), 30),
        max_receive_count=_int(redrive.get("maxReceiveCount"), 0) if redrive else None,
        dead_letter_arn=redrive.get("deadLetterTargetArn") if redrive else None,
    )
    return {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}


def _create_subscription(stack: Stack, aws: dict, logical: str, props: dict) -> dict | None:
    props = stack.resolver.resolve(props)
    if props.get("Protocol") != "sqs":  # nobody reads an e-mail or HTTP subscriber here
        return None
    attributes = {}
    if _truthy(props.get("RawMessageDelivery")):
        attributes["RawMessageDelivery"] = "true"
    for key in ("RedrivePolicy", "FilterPolicy"):
        if props.get(key):
            attributes[key] = json.dumps(props[key])
    arn = aws["sns"].subscribe(TopicArn=props["TopicArn"], Protocol="sqs",
                               Endpoint=props["Endpoint"], Attributes=attributes,
                               ReturnSubscriptionArn=True)["SubscriptionArn"]
    raw = "RawMessageDelivery" in attributes
    stack.subscriptions.append((props["TopicArn"], props["Endpoint"], raw))
    return {"Ref": arn}


def _create_table(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    props = stack.resolver.resolve(props)
    name = props.get("TableName") or f"{STACK_NAME}-{logical}"
    billing = props.get("BillingMode", "PROVISIONED")
    request = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": billing,
    }
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            request[key] = [{k: v for k, v in index.items() if k in (
                "IndexName", "KeySchema", "Projection", "ProvisionedThroughput")}
                for index in props[key]]
    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = props.get(
            "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    aws["dynamodb"].create_table(**request)
    stack.tables[logical] = name
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
    return {"Ref": name, "Arn": arn, "StreamArn": f"{arn}/stream/sim"}


def _create_config_set(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    props = stack.resolver.resolve(props)
    name = props.get("Name") or f"{STACK_NAME}-{logical}"
    request = {key: props[key] for key in ("DeliveryOptions", "ReputationOptions",
                                           "SendingOptions", "SuppressionOptions") if key in props}
    aws["sesv2"].create_configuration_set(ConfigurationSetName=name, **request)
    return {"Ref": name}


def _create_identity(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    # moto verifies an identity at once; DKIM is not simulated.
    props = stack.resolver.resolve(props)
    identity = props["EmailIdentity"]
    config_set = props.get("ConfigurationSetAttributes", {}).get("ConfigurationSetName")
    request = {"ConfigurationSetName": config_set} if config_set else {}
    aws["sesv2"].create_email_identity(EmailIdentity=identity, **request)
    physical = {"Ref": identity}
    for number in (1, 2, 3):
        physical[f"DkimDNSTokenName{number}"] = f"sim{number}._domainkey.{identity}"
        physical[f"DkimDNSTokenValue{number}"] = f"sim{number}.dkim.amazonses.com"
    return physical


def _create_event_destination(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    """Also records which SNS topics each SES event type goes to: the SES player publishes there."""
    props = stack.resolver.resolve(props)
    destination = props["EventDestination"]
    topic = destination.get("SnsDestination", {}).get("TopicARN")
    request = {"Name": destination.get("Name", logical),
               "Enabled": destination.get("Enabled", False),
               "MatchingEventTypes": destination["MatchingEventTypes"]}
    if topic:
        request["SNSDestination"] = {"TopicARN": topic}
    aws["ses"].create_configuration_set_event_destination(
        ConfigurationSetName=props["ConfigurationSetName"], EventDestination=request)
    if topic and request["Enabled"]:
        for event_type in destination["MatchingEventTypes"]:
            stack.event_routes[event_type].append(topic)
    return {"Ref": request["Name"]}


def _register_function(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    """Not created in moto: the simulation runs the code itself (see `Function`)."""
    resolve = stack.resolver.resolve
    name = resolve(props.get("FunctionName")) or f"{STACK_NAME}-{logical}"
    code = resolve(props.get("Code", {}).get("ZipFile"))
    if not isinstance(code, str):
        raise TemplateError(f"{logical} has no inline Code.ZipFile: simulate.py runs inline code")
    variables = resolve(props.get("Environment", {}).get("Variables", {}))
    stack.functions[logical] = FunctionInfo(
        logical=logical, name=name, code=code,
        entry_point=str(resolve(props.get("Handler", "index.lambda_handler"))).rsplit(".", 1)[-1],
        environment={key: str(value) for key, value in variables.items()},
        timeout_s=_int(resolve(props.get("Timeout")), 3),
    )
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
    return {"Ref": name, "Arn": arn}


def _register_mapping(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    """Played by `EventSourceMapping`, not created in moto."""
    props = stack.resolver.resolve(props)
    function = str(props["FunctionName"]).rsplit(":", 1)[-1]  # a name or an ARN
    scaling = props.get("ScalingConfig", {})
    stack.mappings[logical] = MappingInfo(
        logical=logical, function_name=function, queue_arn=props["EventSourceArn"],
        batch_size=_int(props.get("BatchSize"), 10),
        max_concurrency=_int(scaling.get("MaximumConcurrency"), DEFAULT_MAX_CONCURRENCY),
        report_batch_item_failures="ReportBatchItemFailures" in props.get(
            "FunctionResponseTypes", []),
        enabled=_truthy(props.get("Enabled", True)),
    )
    return {"Ref": f"sim-{logical}"}


BUILDERS: dict[str, Callable[[Stack, dict, str, dict], dict | None]] = {
    "AWS::KMS::Key": _create_key,
    "AWS::KMS::Alias": _create_alias,
    "AWS::SNS::Topic": _create_topic,
    "AWS::SQS::Queue": _create_queue,
    "AWS::SNS::Subscription": _create_subscription,
    "AWS::DynamoDB::Table": _create_table,
    "AWS::SES::ConfigurationSet": _create_config_set,
    "AWS::SES::EmailIdentity": _create_identity,
    "AWS::SES::ConfigurationSetEventDestination": _create_event_destination,
    "AWS::Lambda::Function": _register_function,
    "AWS::Lambda::EventSourceMapping": _register_mapping,
}


def deploy(template: dict, parameters: dict[str, str], aws: dict) -> Stack:
    """Create the template's data plane in moto, resource by resource, in dependency order.

    moto's CloudFormation cannot deploy SES resources or subscriptions with these properties, so
    every supported type is created with boto3 from its resolved properties. Alarms, the dashboard,
    the budget, roles, policies and log groups are counted as not simulated.
    """
    stack = Stack(resolver=Resolver(template, parameters))
    resources = template["Resources"]
    for logical in creation_order(resources):
        resource = resources[logical]
        condition = resource.get("Condition")
        if condition and not stack.resolver.condition(condition):
            stack.skipped[logical] = f"condition {condition} is false"
            continue
        builder = BUILDERS.get(resource["Type"])
        physical = builder(stack, aws, logical, resource.get("Properties", {})) if builder else None
        if physical is None:
            stack.not_simulated[resource["Type"]] += 1
        else:
            stack.resolver.physical[logical] = physical
    return stack


# ================================================================================================
# Virtual clock, handler loading, instrumentation, faults
# ================================================================================================

class VirtualClock:
    """Simulated epoch seconds: a visibility timeout or a claim expiry passes instantly."""

    def __init__(self, start: float = START_EPOCH):
        self.now = float(start)


class TimeShim:
    """Stands in for a handler module's `time`: `time()` is the virtual clock, local time is UTC
    (as in Lambda), the rest is the real module."""

    def __init__(self, clock: VirtualClock):
        self._clock = clock

    def time(self) -> float:
        return self._clock.now

    def time_ns(self) -> int:
        return int(self._clock.now * 1e9)

    def sleep(self, seconds: float) -> None:
        self._clock.now += seconds

    def gmtime(self, seconds: float | None = None):
        return _real_time.gmtime(self._clock.now if seconds is None else seconds)

    localtime = gmtime

    def strftime(self, fmt: str, moment=None) -> str:
        return _real_time.strftime(fmt, self.gmtime() if moment is None else moment)

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_time, name)


class Faults:
    """Seeded fault injection: SES throttling and DynamoDB errors (before the real call), and a
    crash of the send function after SES accepted an email. `counts` says what was injected."""

    def __init__(self, rate: float, rng: random.Random):
        self.rate = rate
        self.rng = rng
        self.counts: Counter = Counter()

    def hit(self, name: str, rate: float) -> bool:
        if rate > 0 and self.rng.random() < rate:
            self.counts[name] += 1
            return True
        return False


class Instrument:
    """Hooks on the botocore clients a handler module created at import (found by type, not by
    name): counts every API call the handler makes, injects faults, and hands each email SES
    accepted to the SES player."""

    def __init__(self, faults: Faults, on_email: Callable[[dict, dict], Any]):
        self.faults = faults
        self.on_email = on_email
        self.calls: Counter = Counter()  # (function, operation) -> calls

    def attach(self, label: str, module: types.ModuleType) -> None:
        from botocore.client import BaseClient

        for value in list(vars(module).values()):
            if isinstance(value, BaseClient):
                self._hook(label, value)

    def _hook(self, label: str, client) -> None:
        events, service = client.meta.events, client.meta.service_model.service_name

        def before_call(model, context, **_):
            self.calls[(label, model.name)] += 1
            if service == "ses" and model.name in ("SendEmail", "SendRawEmail"):
                if self.faults.hit("ses_throttling", self.faults.rate):
                    raise _client_error(client, "Throttling", "Maximum sending rate exceeded.",
                                        model.name)
            elif service == "dynamodb":
                if self.faults.hit("dynamodb_errors", self.faults.rate):
                    raise _client_error(client, "ProvisionedThroughputExceededException",
                                        "The level of configured provisioned throughput for the "
                                        "table was exceeded.", model.name)

        def keep_params(params, context, **_):
            context["simulate_params"] = copy.deepcopy(params)

        def after_send(http_response, parsed, context, **_):
            if http_response.status_code >= 300:
                return
            email = self.on_email(context.get("simulate_params", {}), parsed)
            if self.faults.hit("crashes_after_send", self.faults.rate * CRASH_SHARE):
                email.crashed = True
                raise SimulatedCrash("send function died after SES accepted the email")

        events.register("before-call", before_call)
        if service == "ses":
            for operation in ("SendEmail", "SendRawEmail"):
                events.register(f"before-parameter-build.ses.{operation}", keep_params)
                events.register(f"after-call.ses.{operation}", after_send)


def _client_error(client, code: str, message: str, operation: str) -> Exception:
    """The exception botocore raises for `code` (its modeled class when the service has one)."""
    response = {"Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": 400}}
    return client.exceptions.from_code(code)(response, operation)


@contextlib.contextmanager
def environment(variables: dict[str, str]):
    """`os.environ` with `variables` set; restored afterwards."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LambdaContext:
    """The parts of the Lambda context object a handler may use."""

    def __init__(self, function: FunctionInfo, request_id: str):
        self.function_name = function.name
        self.aws_request_id = request_id
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function.name}"
        self._timeout_ms = function.timeout_s * 1000

    def get_remaining_time_in_millis(self) -> int:
        return self._timeout_ms


@dataclass
class Invocation:
    failed: set[str]  # message ids the response reported as batch item failures
    crashed: bool  # died mid-invocation (SimulatedCrash)
    errored: bool  # crashed or raised: Lambda retries the whole batch
    seconds: float


class Function:
    """One Lambda function of the template, running its `ZipFile` code in this process.

    The module is loaded with the template's environment set (handlers read it at import), its
    `time` is the virtual clock, and its clients are instrumented.
    """

    def __init__(self, info: FunctionInfo, clock: VirtualClock, instrument: Instrument,
                 on_load: Callable[[str, types.ModuleType], None] | None):
        self.info = info
        with environment(info.environment):
            self.module = load_as_index(info.code, f"<ZipFile of {info.logical}>")
        self.module.time = TimeShim(clock)
        instrument.attach(info.logical, self.module)
        self.entry = getattr(self.module, info.entry_point)
        self.invocations = 0
        self.errors = 0
        self.emf: Counter = Counter()
        self.outcomes: Counter = Counter()
        if on_load:
            on_load(info.logical, self.module)

    def invoke(self, event: dict) -> Invocation:
        """Run the handler on an SQS event; a crash or an error fails the whole batch."""
        self.invocations += 1
        context = LambdaContext(self.info, f"sim-{self.info.logical}-{self.invocations}")
        out = io.StringIO()
        crashed = False
        started = _real_time.perf_counter()
        with environment(self.info.environment), contextlib.redirect_stdout(out):
            try:
                result = self.entry(event, context)
            except SimulatedCrash:
                crashed, result = True, None
            except Exception as exc:  # a function error: Lambda retries the whole batch
                self.errors += 1
                print(json.dumps({"level": "ERROR", "message": f"function error: {exc!r}"}))
                result = None
        seconds = _real_time.perf_counter() - started
        ids = {record["messageId"] for record in event["Records"]}
        errored = result is None
        failed = ids if errored else self._failed_ids(result, ids)
        self._read_output(out.getvalue())
        return Invocation(failed=failed, crashed=crashed, errored=errored, seconds=seconds)

    @staticmethod
    def _failed_ids(result: Any, ids: set[str]) -> set[str]:
        """Lambda's rule: an itemIdentifier that is empty or not in the batch fails it all."""
        failures = result.get("batchItemFailures", []) if isinstance(result, dict) else []
        failed = {item.get("itemIdentifier") for item in failures if isinstance(item, dict)}
        return ids if failed - ids else failed

    def _read_output(self, text: str) -> None:
        """Sum the EMF metric lines and count the per-record log outcomes."""
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "_aws" in doc:
                for metric in doc["_aws"].get("CloudWatchMetrics", [{}])[0].get("Metrics", []):
                    value = doc.get(metric.get("Name"))
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.emf[metric["Name"]] += value
                    elif isinstance(value, list) and metric.get("Unit") == "Count":
                        self.emf[metric["Name"]] += sum(value)
            elif "outcome" in doc:
                self.outcomes[str(doc["outcome"])] += 1


# ================================================================================================
# Playing SQS event source mappings
# ================================================================================================

class EventSourceMapping:
    """Plays one AWS::Lambda::EventSourceMapping against its queue in moto.

    Each tick runs up to MaximumConcurrency invocations. An invocation receives up to BatchSize
    messages (moto counts each receive and moves a message to the DLQ after maxReceiveCount),
    deletes the acknowledged ones, and schedules the failed ones to become visible again when the
    queue's VisibilityTimeout has passed on the virtual clock.
    """

    def __init__(self, info: MappingInfo, queue: QueueInfo, function: Function, role: str,
                 sqs, clock: VirtualClock, observe: Callable[[list[dict]], None] | None = None):
        self.info, self.queue, self.function, self.role = info, queue, function, role
        self.sqs, self.clock, self.observe = sqs, clock, observe
        self.returning: list[tuple[float, str]] = []  # (visible again at, receipt handle)
        self.stats: Counter = Counter()
        self.ms_per_record: list[float] = []

    def next_due(self) -> float | None:
        return min((due for due, _ in self.returning), default=None)

    def tick(self) -> bool:
        """Release the messages whose visibility timeout passed, then poll; True if any work."""
        self._release_due()
        worked = False
        for _ in range(max(1, self.info.max_concurrency)):
            if not self._invoke_once():
                break
            worked = True
        return worked

    def _release_due(self) -> None:
        now = self.clock.now
        due = [handle for when, handle in self.returning if when <= now]
        if not due:
            return
        self.returning = [(when, handle) for when, handle in self.returning if when > now]
        for start in range(0, len(due), 10):
            entries = [{"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                       for i, handle in enumerate(due[start:start + 10])]
            self.sqs.change_message_visibility_batch(QueueUrl=self.queue.url, Entries=entries)

    def _receive(self) -> list[dict]:
        batch: list[dict] = []
        while len(batch) < self.info.batch_size:
            wanted = min(10, self.info.batch_size - len(batch))
            messages = self.sqs.receive_message(
                QueueUrl=self.queue.url, MaxNumberOfMessages=wanted, AttributeNames=["All"],
                VisibilityTimeout=SQS_HOLD_S).get("Messages", [])
            self.stats["receive_calls"] += 1
            batch.extend(messages)
            if len(messages) < wanted:
                break
        return batch

    def _invoke_once(self) -> bool:
        messages = self._receive()
        if not messages:
            return False
        self.stats["deliveries"] += len(messages)
        self.stats["invocations"] += 1
        records = [self._record(message) for message in messages]
        if self.observe:
            self.observe(records)
        result = self.function.invoke({"Records": records})
        self.ms_per_record.append(result.seconds * 1000 / len(records))
        self.stats["crashed_invocations"] += result.crashed
        if result.errored or self.info.report_batch_item_failures:
            failed = result.failed
        else:
            # Without ReportBatchItemFailures Lambda ignores the response: a batch that returned
            # is deleted whole, its failures included. Only an error retries it.
            failed = set()
        self.stats["failed_records"] += len(failed)
        handles = {r["messageId"]: r["receiptHandle"] for r in records}
        due = self.clock.now + self.queue.visibility_timeout
        self.returning.extend((due, handles[message_id]) for message_id in sorted(failed))
        done = [handles[m] for m in handles if m not in failed]
        for start in range(0, len(done), 10):
            entries = [{"Id": str(i), "ReceiptHandle": handle}
                       for i, handle in enumerate(done[start:start + 10])]
            self.sqs.delete_message_batch(QueueUrl=self.queue.url, Entries=entries)
        return True

    def _record(self, message: dict) -> dict:
        attributes = message.get("Attributes", {})
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {key: attributes[key] for key in (
                "ApproximateReceiveCount", "SentTimestamp", "SenderId",
                "ApproximateFirstReceiveTimestamp") if key in attributes},
            "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue.arn,
            "awsRegion": REGION,
        }


# ================================================================================================
# Playing SES: the emails it accepted and the events it publishes about them
# ================================================================================================

@dataclass
class Email:
    """One email SES (moto) accepted, as the send function asked for it."""

    seq: int
    ses_id: str
    source: str
    destination: list[str]
    subject: str
    tags: dict[str, str]
    config_set: str | None
    accepted_at: float
    outcome: str
    order_id: str | None  # decoded from the orderId tag (None: missing or undecodable)
    message_id: str | None
    crashed: bool = False  # the send function died right after SES accepted it


def decode_tag(value: Any) -> str | None:
    """A tag value as the sender encoded it: base64url without padding (handler contract)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError
        return None


def outcome_of(address: str) -> str:
    """The mailbox-simulator outcome of a recipient (`bounce+17@simulator...` -> bounce)."""
    local, _, domain = address.rpartition("@")
    name = local.split("+", 1)[0].lower()
    if domain.lower() == SIMULATOR_DOMAIN and name in EXPECTED_STATUS:
        return name
    return "success"  # any other address: delivered


def iso(epoch: float) -> str:
    """`2026-11-27T12:00:01.250Z`, the timestamp format of SES event records."""
    whole = int(epoch)
    millis = int(round((epoch - whole) * 1000))
    return _real_time.strftime("%Y-%m-%dT%H:%M:%S", _real_time.gmtime(whole)) + f".{millis:03d}Z"


def ses_event(kind: str, email: Email, offset_ms: int) -> dict:
    """The event record SES publishes to SNS for `email` (AWS docs: "Examples of event data that
    Amazon SES publishes to Amazon SNS"), `offset_ms` after it accepted the email."""
    at = iso(email.accepted_at + offset_ms / 1000)
    domain = email.source.rpartition("@")[2]
    recipient = email.destination[0] if email.destination else ""
    tags = {"ses:source-ip": ["192.0.2.10"], "ses:from-domain": [domain],
            "ses:caller-identity": ["send-order-email"]}
    if email.config_set:
        tags["ses:configuration-set"] = [email.config_set]
    if kind != "Send":
        tags["ses:outgoing-ip"] = ["198.51.100.7"]
    tags.update({name: [value] for name, value in email.tags.items()})
    mail = {
        "timestamp": iso(email.accepted_at),
        "source": email.source,
        "sourceArn": f"arn:aws:ses:{REGION}:{ACCOUNT_ID}:identity/{domain}",
        "sendingAccountId": ACCOUNT_ID,
        "messageId": email.ses_id,
        "destination": email.destination,
        "headersTruncated": False,
        "headers": [{"name": "From", "value": email.source},
                    {"name": "To", "value": ", ".join(email.destination)},
                    {"name": "Subject", "value": email.subject},
                    {"name": "MIME-Version", "value": "1.0"},
                    {"name": "Content-Type", "value": "multipart/alternative"}],
        "commonHeaders": {"from": [email.source], "to": email.destination,
                          "messageId": email.ses_id, "subject": email.subject},
        "tags": tags,
    }
    feedback_id = f"0100{email.seq:012x}-{kind.lower()}-sim-000000"
    if kind == "Send":
        data: dict = {}
    elif kind == "Delivery":
        data = {"timestamp": at, "processingTimeMillis": offset_ms, "recipients": email.destination,
                "smtpResponse": "250 2.6.0 Message received", "remoteMtaIp": "203.0.113.25",
                "reportingMTA": "a8-70.smtp-out.amazonses.com"}
    elif kind == "DeliveryDelay":
        data = {"timestamp": at, "delayType": "TransientCommunicationFailure",
                "expirationTime": iso(email.accepted_at + 86400),
                "delayedRecipients": [{"emailAddress": recipient, "status": "4.4.1",
                                       "diagnosticCode": "smtp; 421 4.4.1 Unable to connect"}]}
    elif kind == "Bounce" and email.outcome == "suppressionlist":
        data = {"bounceType": "Permanent", "bounceSubType": "OnAccountSuppressionList",
                "bouncedRecipients": [{"emailAddress": recipient, "action": "failed",
                                       "status": "5.1.1", "diagnosticCode":
                                       "Amazon SES did not send the message to this address "
                                       "because it is on the suppression list for your account."}],
                "timestamp": at, "feedbackId": feedback_id, "reportingMTA": "dns; amazonses.com"}
    elif kind == "Bounce":
        data = {"bounceType": "Permanent", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": recipient, "action": "failed",
                                       "status": "5.1.1",
                                       "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                "timestamp": at, "feedbackId": feedback_id, "reportingMTA": "dns; amazonses.com"}
    elif kind == "Complaint":
        data = {"complainedRecipients": [{"emailAddress": recipient}], "timestamp": at,
                "feedbackId": feedback_id, "userAgent": "Mozilla/5.0 (mailbox simulator)",
                "complaintFeedbackType": "abuse", "arrivalDate": at}
    else:
        raise ValueError(f"no SES event model for {kind}")
    return {"eventType": kind, "mail": mail, SES_EVENT_TYPES[kind][0]: data}


class SesPlayer:
    """Plays SES after it accepted an email.

    For the recipient's mailbox-simulator outcome it builds the event records a real SES
    publishes (success: Send, Delivery; bounce and suppressionlist: Send, Bounce; complaint: Send,
    Delivery, Complaint; ooto: Send, sometimes DeliveryDelay, Delivery) and schedules each for
    1-5 virtual seconds later (so they arrive in any order, and long before any 180 s retry), to
    every SNS topic the template's event destinations name for its type. A share is published
    twice, the copy up to ten minutes late. Due events are published in random order.
    """

    def __init__(self, routes: dict[str, list[str]], sns, clock: VirtualClock,
                 rng: random.Random, duplicate_share: float):
        self.routes, self.sns, self.clock, self.rng = routes, sns, clock, rng
        self.duplicate_share = duplicate_share
        self.emails: list[Email] = []
        self._due: list[tuple[float, int, str, str]] = []  # heap of (due, seq, topic, body)
        self._seq = 0
        self.stats: Counter = Counter()

    def accept(self, params: dict, response: dict) -> Email:
        """Instrument callback: SES accepted the email `params` describes."""
        addresses = params.get("Destination", {})
        destination = [address for key in ("ToAddresses", "CcAddresses", "BccAddresses")
                       for address in addresses.get(key, [])] + params.get("Destinations", [])
        tags = {tag["Name"]: tag["Value"] for tag in params.get("Tags", [])}
        email = Email(
            seq=len(self.emails), ses_id=response.get("MessageId", ""),
            source=str(params.get("Source", "")), destination=destination,
            subject=params.get("Message", {}).get("Subject", {}).get("Data", ""), tags=tags,
            config_set=params.get("ConfigurationSetName"), accepted_at=self.clock.now,
            outcome=outcome_of(destination[0]) if destination else "success",
            order_id=decode_tag(tags.get("orderId")), message_id=decode_tag(tags.get("messageId")),
        )
        self.emails.append(email)
        self._schedule(email)
        return email

    def events_for(self, email: Email) -> list[tuple[str, int]]:
        """(event type, milliseconds after acceptance) of the events SES publishes for it."""
        events = [("Send", self.rng.randint(10, 300))]
        if email.outcome == "ooto" and self.rng.random() < 0.5:
            events.append(("DeliveryDelay", self.rng.randint(500, 1500)))
        if email.outcome in ("success", "ooto", "complaint"):
            events.append(("Delivery", self.rng.randint(1600, 4000)))
        if email.outcome in ("bounce", "suppressionlist"):
            events.append(("Bounce", self.rng.randint(50, 3000)))
        if email.outcome == "complaint":
            events.append(("Complaint", self.rng.randint(4000, 60000)))
        return events

    def _schedule(self, email: Email) -> None:
        for kind, offset_ms in self.events_for(email):
            topics = self.routes.get(SES_EVENT_TYPES[kind][1], [])
            if not topics:  # no event destination takes this type: SES publishes nothing
                self.stats[f"unrouted_{kind}"] += 1
                continue
            body = json.dumps(ses_event(kind, email, offset_ms))
            due = email.accepted_at + self.rng.randint(*SES_EVENT_DELAY_S)
            for topic in topics:
                self._push(due, topic, body)
                if self.rng.random() < self.duplicate_share:
                    self._push(due + self.rng.randint(*LATE_DUPLICATE_S), topic, body)
                    self.stats["duplicates"] += 1

    def _push(self, due: float, topic: str, body: str) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due, self._seq, topic, body))

    def next_due(self) -> float | None:
        return self._due[0][0] if self._due else None

    def publish_due(self) -> None:
        """Publish every event due by now, shuffled across emails and within each email."""
        due = []
        while self._due and self._due[0][0] <= self.clock.now:
            due.append(heapq.heappop(self._due))
        self.rng.shuffle(due)
        by_topic: dict[str, list[str]] = defaultdict(list)
        for _, _, topic, body in due:
            by_topic[topic].append(body)
        for topic, bodies in by_topic.items():
            for start in range(0, len(bodies), 10):
                entries = [{"Id": str(i), "Message": body}
                           for i, body in enumerate(bodies[start:start + 10])]
                self.sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
        self.stats["published"] += len(due)


def unwrap(body: str) -> Any:
    """The JSON a queue message carries: raw, or the Message of an SNS envelope."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("Type") == "Notification" and "Message" in doc:
            return json.loads(doc["Message"])
        return doc
    except (TypeError, ValueError):
        return None


class ArrivalLog:
    """What the feedback function was handed, in order: shows the events really came shuffled."""

    def __init__(self, clock: VirtualClock):
        self.clock = clock
        self.kinds: dict[str, list[str]] = defaultdict(list)
        self.times: dict[str, list[int]] = defaultdict(list)
        self.received: Counter = Counter()

    def observe(self, records: list[dict]) -> None:
        for record in records:
            self.received[hash(record["body"])] += 1
            doc = unwrap(record["body"])
            if isinstance(doc, dict) and isinstance(doc.get("mail"), dict):
                ses_id = str(doc["mail"].get("messageId"))
                self.kinds[ses_id].append(str(doc.get("eventType")))
                self.times[ses_id].append(int(self.clock.now - START_EPOCH))

    def timeline(self, ses_id: str) -> list[str]:
        """`["12s Send", "13s Delivery", ...]`: when the feedback function was handed each event."""
        return [f"{at}s {kind}" for at, kind in zip(self.times[ses_id], self.kinds[ses_id])]

    def out_of_order(self) -> int:
        """Emails one of whose events arrived after an event that SES sends later."""
        count = 0
        for kinds in self.kinds.values():
            ranks = [EVENT_ORDER.get(kind, 0) for kind in dict.fromkeys(kinds)]
            count += ranks != sorted(ranks)
        return count

    def redeliveries(self) -> int:
        """Records received more than once (duplicated by SNS/SQS, or retried after a failure)."""
        return sum(n - 1 for n in self.received.values())


# ================================================================================================
# Orders
# ================================================================================================

@dataclass
class Order:
    body: str
    valid: bool
    order_id: str | None
    kind: str  # "valid" or the rule an invalid order breaks
    copies: int = 1


CUSTOMER_NAMES = ("Ada Lovelace", "Grace Hopper", "Zoë O'Brien", "Åsa Öberg", "José Ñúñez",
                  "<b>Bobby</b> & \"Tables\"", "李小龍", "Chidi Anagonye")
CATALOGUE = (("Widget", "9.99"), ("Gadget", "1250.00"), ("Gizmo <deluxe> & co", "0.50"),
             ("Thingamajig", "19.95"), ("Sprocket", "3.10"))
INVALID_KINDS = ("not-json", "missing-orderId", "bad-email", "header-injection", "bad-quantity",
                 "bad-money", "not-an-object")


def valid_order(index: int, rng: random.Random) -> Order:
    """An order that satisfies the order contract; its recipient picks the email's outcome."""
    outcome = rng.choices(list(OUTCOME_WEIGHTS), weights=list(OUTCOME_WEIGHTS.values()))[0]
    # Every 25th id holds characters SES tags refuse: the sender must encode it reversibly.
    order_id = f"ORD/ß#{index:06d}" if index % 25 == 7 else f"ORD-20261127-{index:06d}"
    items = [{"name": name, "quantity": rng.randint(1, 3), "unitPrice": price}
             for name, price in rng.sample(CATALOGUE, rng.randint(1, 3))]
    total = sum(Decimal(item["unitPrice"]) * item["quantity"] for item in items)
    body = json.dumps({
        "orderId": order_id,
        "customerEmail": f"{outcome}+{index}@{SIMULATOR_DOMAIN}",
        "customerName": rng.choice(CUSTOMER_NAMES),
        "items": items,
        "total": f"{total:.2f}",
        "currency": rng.choice(("USD", "EUR", "GBP")),
        "orderDate": "2026-11-27T12:00:00Z",
    }, ensure_ascii=False)
    return Order(body=body, valid=True, order_id=order_id, kind="valid")


def invalid_order(index: int, kind: str) -> Order:
    """An order that breaks one rule of the contract: it must end in the send DLQ."""
    base = {"orderId": f"BAD-{index:06d}", "customerEmail": f"success+{index}@{SIMULATOR_DOMAIN}",
            "customerName": "Mallory"}
    if kind == "not-json":
        return Order(f"order {index} is not JSON", False, None, kind)
    if kind == "not-an-object":
        return Order(json.dumps([base]), False, None, kind)
    if kind == "missing-orderId":
        base.pop("orderId")
        base["note"] = index
    elif kind == "bad-email":
        base["customerEmail"] = f"customer-{index}-at-example.com"
    elif kind == "header-injection":
        base["customerName"] = "Eve\r\nBcc: everyone@example.com"
    elif kind == "bad-quantity":
        base["items"] = [{"name": "Widget", "quantity": 0, "unitPrice": "9.99"}]
    elif kind == "bad-money":
        base["total"] = "12,50"
    return Order(json.dumps(base), False, base.get("orderId"), kind)


def make_orders(count: int, rng: random.Random, duplicates: float,
                invalid: float) -> tuple[list[Order], list[str]]:
    """`count` distinct orders and the sequence they are published in.

    A share `invalid` breaks the contract; a share `duplicates` of the valid ones is published
    2-3 times, the copy either right after the original (same or next batch: a race between two
    claims) or anywhere later (the original is long done).
    """
    orders = []
    for index in range(count):
        if rng.random() < invalid:
            orders.append(invalid_order(index, INVALID_KINDS[index % len(INVALID_KINDS)]))
        else:
            orders.append(valid_order(index, rng))
    keyed = []
    for index, order in enumerate(orders):
        keyed.append((float(index), order.body))
        if order.valid and rng.random() < duplicates:
            for _ in range(rng.choice((1, 2))):
                order.copies += 1
                later = rng.uniform(0, 30) if rng.random() < 0.5 else rng.uniform(0, count)
                keyed.append((index + later, order.body))
    keyed.sort()
    return orders, [body for _, body in keyed]


# ================================================================================================
# The run
# ================================================================================================

@dataclass
class Wiring:
    """Which of the template's resources play which part, found from the template itself."""

    order_topic: str
    send_queue: QueueInfo
    feedback_queues: list[QueueInfo]
    dead_letter_queues: list[QueueInfo]
    table: str | None


def wire(stack: Stack, template: dict) -> Wiring:
    """The order topic is the `OrderTopicArn` output (the contract the order service uses); the
    send queue subscribes to it; feedback queues subscribe to the SES event topics."""
    output = template.get("Outputs", {}).get("OrderTopicArn")
    if not output:
        raise TemplateError("the template has no OrderTopicArn output: where do orders go?")
    order_topic = stack.resolver.resolve(output["Value"])
    send = [stack.queue_by_arn(queue) for topic, queue, _ in stack.subscriptions
            if topic == order_topic]
    if not send or send[0] is None:
        raise TemplateError("no SQS queue subscribes to the order topic")
    event_topics = {topic for topics in stack.event_routes.values() for topic in topics}
    feedback = []
    for topic, queue_arn, _ in stack.subscriptions:
        queue = stack.queue_by_arn(queue_arn)
        if topic in event_topics and queue and queue not in feedback:
            feedback.append(queue)
    dlqs = []
    for queue in stack.queues.values():
        dlq = stack.queue_by_arn(queue.dead_letter_arn)
        if dlq and dlq not in dlqs:
            dlqs.append(dlq)
    tables = list(stack.tables.values())
    return Wiring(order_topic=order_topic, send_queue=send[0], feedback_queues=feedback,
                  dead_letter_queues=dlqs, table=tables[0] if tables else None)


class Progress:
    """Progress on stderr: one updating line on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._pending_newline = False

    def phase(self, text: str) -> None:
        if self.enabled:
            self._end_line()
            print(f"simulate: {text}", file=self.stream, flush=True)

    def status(self, text: str) -> None:
        now = _real_time.monotonic()
        if not self.enabled or now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        if self.tty:
            print(f"\rsimulate: {text}\033[K", end="", file=self.stream, flush=True)
            self._pending_newline = True
        else:
            print(f"simulate: {text}", file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self._pending_newline:
            print(file=self.stream)
            self._pending_newline = False

    def done(self) -> None:
        self._end_line()


@contextlib.contextmanager
def faster_moto():
    """Two moto hot spots, replaced for the run by code that gives the same answers faster.

    - SQS checks a received message's retention by computing every queue attribute (each
      approximate count walks the whole queue): receiving is quadratic in the queue length. Read
      the retention period directly instead.
    - DynamoDB parses an UpdateExpression twice per UpdateItem. Parse each distinct expression
      once: moto's validator deep-copies the tree before it resolves or executes anything, so a
      cached tree is never modified.
    A moto version without these internals simply runs unpatched (slower, same result).
    """
    from moto.core.utils import unix_time
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser
    from moto.sqs.models import SQSBackend

    patches = []

    def still_retained(backend, queue_name, message):
        period = int(backend.get_queue(queue_name).message_retention_period)
        return period + message.sent_timestamp / 1000 > unix_time()

    if hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        patches.append((SQSBackend, "is_message_valid_based_on_retention_period", still_retained))
    if isinstance(vars(UpdateExpressionParser).get("make"), classmethod):
        parse = UpdateExpressionParser.make.__func__
        cached = functools.lru_cache(maxsize=256)(lambda text: parse(UpdateExpressionParser, text))
        patches.append((UpdateExpressionParser, "make", staticmethod(cached)))
    saved = [(owner, name, vars(owner)[name]) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@contextlib.contextmanager
def sandbox():
    """Fake credentials and region (nothing can reach AWS); os.environ restored afterwards."""
    saved = dict(os.environ)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                       "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Simulation:
    """One stack deployed in moto, its functions loaded, SES and the mappings played on it."""

    def __init__(self, template: dict, parameters: dict[str, str], *, seed: str, faults: float,
                 feedback_duplicates: float, progress: Progress,
                 on_load: Callable[[str, types.ModuleType], None] | None):
        import boto3

        session = boto3.session.Session(region_name=REGION)
        self.aws = {name: session.client(name) for name in ("kms", "sns", "sqs", "dynamodb", "ses",
                                                            "sesv2")}
        self.progress = progress
        self.clock = VirtualClock()
        self.stack = deploy(template, parameters, self.aws)
        self.wiring = wire(self.stack, template)
        self.faults = Faults(faults, random.Random(f"{seed}:faults"))
        self.ses = SesPlayer(self.stack.event_routes, self.aws["sns"], self.clock,
                             random.Random(f"{seed}:ses"), feedback_duplicates)
        self.instrument = Instrument(self.faults, self.ses.accept)
        self.arrivals = ArrivalLog(self.clock)
        self.functions: dict[str, Function] = {}
        self.mappings = self._mappings(on_load)

    def role_of(self, queue: QueueInfo) -> str:
        if queue is self.wiring.send_queue:
            return "send"
        return "feedback" if queue in self.wiring.feedback_queues else "other"

    def _mappings(self, on_load) -> list[EventSourceMapping]:
        """One player per enabled mapping, send first; each function loaded once."""
        by_name = {info.name: info for info in self.stack.functions.values()}
        players = []
        for info in self.stack.mappings.values():
            queue = self.stack.queue_by_arn(info.queue_arn)
            function = by_name.get(info.function_name)
            if not info.enabled or queue is None or function is None:
                continue
            if function.logical not in self.functions:
                self.functions[function.logical] = Function(function, self.clock, self.instrument,
                                                            on_load)
            role = self.role_of(queue)
            players.append(EventSourceMapping(
                info, queue, self.functions[function.logical], role, self.aws["sqs"], self.clock,
                self.arrivals.observe if role == "feedback" else None))
        order = {"send": 0, "feedback": 1, "other": 2}
        return sorted(players, key=lambda player: (order[player.role], player.info.logical))

    def play(self, bodies: list[str]) -> None:
        """Tick the virtual clock until no order, event or retry is left in flight."""
        pending = deque(bodies)
        deadline = self.clock.now + MAX_VIRTUAL_S
        per_tick = self.order_rate()
        while True:
            if pending:
                count = min(per_tick, len(pending))
                self._publish_orders([pending.popleft() for _ in range(count)])
            self.ses.publish_due()
            worked = False
            for mapping in self.mappings:
                worked = mapping.tick() or worked
            self.progress.status(self._status(len(bodies) - len(pending), len(bodies)))
            if pending or worked:
                self.clock.now += TICK_S
                continue
            upcoming = [due for due in [self.ses.next_due()] +
                        [mapping.next_due() for mapping in self.mappings] if due is not None]
            if not upcoming:
                return
            self.clock.now = max(self.clock.now + TICK_S, min(upcoming))
            if self.clock.now > deadline:
                raise RuntimeError("the simulation did not settle within a week of virtual time")

    def order_rate(self) -> int:
        """Orders published per tick: as many as the send mapping takes (MaximumConcurrency x
        BatchSize), so every batch is full. (A longer backlog shows nothing more, and moto's SQS
        works in time proportional to the queue length for every message it hands out.)"""
        send = [m for m in self.mappings if m.role == "send"]
        if not send:
            return 10 * TICK_S
        return max(1, send[0].info.max_concurrency) * send[0].info.batch_size * TICK_S

    def _publish_orders(self, bodies: list[str]) -> None:
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "Message": body}
                       for i, body in enumerate(bodies[start:start + 10])]
            self.aws["sns"].publish_batch(TopicArn=self.wiring.order_topic,
                                          PublishBatchRequestEntries=entries)

    def _status(self, published: int, total: int) -> str:
        elapsed = int(self.clock.now - START_EPOCH)
        retrying = sum(len(mapping.returning) for mapping in self.mappings)
        return (f"t+{elapsed // 60:d}m{elapsed % 60:02d}s virtual | orders published "
                f"{published}/{total} | emails sent {len(self.ses.emails)} | SES events "
                f"published {self.ses.stats['published']} | retries pending {retrying}")

    def redrive(self) -> dict[str, int]:
        """The on-call runbook's last step: move every message in each DLQ back to the queue whose
        redrive policy names it (StartMessageMoveTask, which moto lacks: receive, send, delete).
        Returns the messages moved, by DLQ."""
        moved = {}
        for dlq in self.wiring.dead_letter_queues:
            sources = [q for q in self.stack.queues.values() if q.dead_letter_arn == dlq.arn]
            if len(sources) != 1:  # no single source queue to move them back to
                continue
            moved[dlq.name] = 0
            while True:
                messages = self.aws["sqs"].receive_message(
                    QueueUrl=dlq.url, MaxNumberOfMessages=10,
                    VisibilityTimeout=SQS_HOLD_S).get("Messages", [])
                if not messages:
                    break
                self.aws["sqs"].send_message_batch(QueueUrl=sources[0].url, Entries=[
                    {"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(messages)])
                self.aws["sqs"].delete_message_batch(QueueUrl=dlq.url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)])
                moved[dlq.name] += len(messages)
        return moved

    # --- end state ------------------------------------------------------------------------------

    def drain(self, queue: QueueInfo) -> list[str]:
        """Every message body left in `queue` (read once, for the report)."""
        bodies = []
        while True:
            messages = self.aws["sqs"].receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10,
                VisibilityTimeout=SQS_HOLD_S).get("Messages", [])
            if not messages:
                return bodies
            bodies.extend(message["Body"] for message in messages)

    def tally_dlqs(self) -> dict[str, int]:
        """Messages in each DLQ now (before the redrive)."""
        return {queue.name: int(self.aws["sqs"].get_queue_attributes(
                    QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessages"])
                    ["Attributes"]["ApproximateNumberOfMessages"])
                for queue in self.wiring.dead_letter_queues}

    def statuses(self) -> dict[tuple[str, str], str | None]:
        """Each table item's status by (orderId, messageId)."""
        if not self.wiring.table:
            return {}
        statuses = {}
        for page in self.aws["dynamodb"].get_paginator("scan").paginate(
                TableName=self.wiring.table, ProjectionExpression="orderId, messageId, #status",
                ExpressionAttributeNames={"#status": "status"}):
            for item in page["Items"]:
                key = (item.get("orderId", {}).get("S"), item.get("messageId", {}).get("S"))
                statuses[key] = item.get("status", {}).get("S")
        return statuses

    def explain(self, order_id: str | None) -> dict:
        """What happened to an order that broke an invariant: its emails (virtual seconds after
        the start, whether the function crashed right after), when the feedback function got
        each of their events, and the item's history."""
        emails = [email for email in self.ses.emails if email.order_id == order_id]
        story: dict[str, Any] = {"orderId": order_id, "emails": [], "items": []}
        for email in emails:
            story["emails"].append({
                "accepted_s": int(email.accepted_at - START_EPOCH), "crashed": email.crashed,
                "feedback_received_s": self.arrivals.timeline(email.ses_id)})
        for message_id in dict.fromkeys(email.message_id for email in emails):
            item = self.aws["dynamodb"].get_item(
                TableName=self.wiring.table,
                Key={"orderId": {"S": order_id}, "messageId": {"S": message_id}}).get("Item", {})
            entries = [entry["M"] for entry in item.get("events", {}).get("L", [])]
            history = [" ".join(entry[key]["S"] for key in ("time", "type", "detail")
                                if key in entry) for entry in entries]
            story["items"].append({"messageId": message_id,
                                   "status": item.get("status", {}).get("S"), "history": history})
        return story

    def tally(self) -> dict:
        """The run's raw results as plain data (mergeable, and it crosses process boundaries)."""
        statuses = self.statuses()
        sends: Counter = Counter()
        untracked = []
        for email in self.ses.emails:
            sends[email.order_id if email.order_id is not None else f"?{email.ses_id}"] += 1
            status = statuses.get((email.order_id, email.message_id))
            if status != EXPECTED_STATUS[email.outcome]:
                untracked.append({"orderId": email.order_id, "outcome": email.outcome,
                                  "expected": EXPECTED_STATUS[email.outcome], "status": status})
        twice = [order_id for order_id, n in sends.items() if n > 1][:EXAMPLES]
        send_dlq = self.stack.queue_by_arn(self.wiring.send_queue.dead_letter_arn)
        unrouted = {f"unrouted_{key[len('unrouted_'):]}": n for key, n in self.ses.stats.items()
                    if key.startswith("unrouted_")}
        return {
            "emails": len(self.ses.emails),
            "sends": sends,
            "email_outcomes": Counter(email.outcome for email in self.ses.emails),
            "untracked": untracked,
            "duplicate_examples": [self.explain(order_id) for order_id in twice],
            "dlq": {queue.name: self.drain(queue) for queue in self.wiring.dead_letter_queues},
            "send_dlq": send_dlq.name if send_dlq else None,
            "status_counts": Counter(statuses.values()),
            "ses_accepted_per_moto": int(self.aws["ses"].get_send_quota()["SentLast24Hours"]),
            "feedback": Counter({
                "events_published": self.ses.stats["published"],
                "duplicated_events": self.ses.stats["duplicates"],
                "emails_with_out_of_order_events": self.arrivals.out_of_order(),
                "redelivered_records": self.arrivals.redeliveries(), **unrouted}),
            "faults": Counter(self.faults.counts),
            "functions": {mapping.function.info.logical: {
                "role": mapping.role, "queue": mapping.queue.name,
                "batch_size": mapping.info.batch_size,
                "max_concurrency": mapping.info.max_concurrency,
                "stats": Counter(mapping.stats), "function_errors": mapping.function.errors,
                "outcomes": Counter(mapping.function.outcomes),
                "metrics": Counter(mapping.function.emf)} for mapping in self.mappings},
            "queues": {queue.logical: {"name": queue.name,
                                       "visibility_timeout_s": queue.visibility_timeout,
                                       "max_receive_count": queue.max_receive_count}
                       for queue in self.stack.queues.values()},
            "api_calls": Counter({f"{function}.{operation}": n for (function, operation), n
                                  in self.instrument.calls.items()}),
            "timings": [ms for mapping in self.mappings for ms in mapping.ms_per_record],
            "virtual_s": int(self.clock.now - START_EPOCH),
            "not_simulated": dict(self.stack.not_simulated),
            "skipped": dict(self.stack.skipped),
        }


# ================================================================================================
# Running: one stack, or several copies in parallel processes
# ================================================================================================

def simulate_shard(template: dict, parameters: dict[str, str], bodies: list[str], *, seed: str,
                   faults: float, feedback_duplicates: float, redrive: bool, progress: Progress,
                   on_load: Callable[[str, types.ModuleType], None] | None) -> dict:
    """Deploy one copy of the stack in a fresh moto, play `bodies` through it until it settles,
    then (if `redrive`) redrive the DLQs once and play until it settles again; return its tally."""
    from moto import mock_aws  # heavy import: only when a run starts

    with sandbox(), mock_aws(), faster_moto():
        simulation = Simulation(template, parameters, seed=seed, faults=faults,
                                feedback_duplicates=feedback_duplicates, progress=progress,
                                on_load=on_load)
        simulation.play(bodies)
        before = simulation.tally_dlqs()
        moved = simulation.redrive() if redrive else {}
        if any(moved.values()):
            simulation.play([])
        progress.done()
        return {**simulation.tally(), "before_redrive": before, "redriven": moved}


def _shard_process(connection, arguments: dict) -> None:
    """Body of a worker process: run one shard, send back ("ok" | "template" | "error", value)."""
    try:
        result = ("ok", simulate_shard(**arguments))
    except TemplateError as exc:
        result = ("template", str(exc))
    except BaseException:  # report anything, including a crash the simulation did not expect
        result = ("error", traceback.format_exc())
    connection.send(result)
    connection.close()


def run_shards(shards: list[dict]) -> list[dict]:
    """Run each shard (keyword arguments of `simulate_shard`): in forked worker processes when
    there are several and the platform can fork, else one after the other in this process."""
    if len(shards) == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [simulate_shard(**arguments) for arguments in shards]
    context = multiprocessing.get_context("fork")  # no pickling: workers inherit the arguments
    workers = []
    for arguments in shards:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_shard_process, args=(sender, arguments), daemon=True)
        process.start()
        sender.close()
        workers.append((receiver, process))
    results = []
    for receiver, process in workers:
        try:
            status, value = receiver.recv()
        except EOFError:
            status, value = "error", "a worker process died without a result"
        process.join()
        if status == "template":
            raise TemplateError(value)
        if status == "error":
            raise RuntimeError(f"a simulation worker failed:\n{value}")
        results.append(value)
    return results


def split(orders: list[Order], bodies: list[str], workers: int) -> list[list[str]]:
    """The publish sequence cut into `workers` shards by order (order i goes to shard i mod
    workers): every copy of an order stays in one shard, in its original place in the sequence."""
    shard_of = {order.body: index % workers for index, order in enumerate(orders)}
    shards: list[list[str]] = [[] for _ in range(workers)]
    for body in bodies:
        shards[shard_of[body]].append(body)
    return [shard for shard in shards if shard]


def merge(tallies: list[dict]) -> dict:
    """One tally from several shards' (counts add up, lists concatenate)."""
    total = copy.deepcopy(tallies[0])
    for tally in tallies[1:]:
        total["emails"] += tally["emails"]
        total["ses_accepted_per_moto"] += tally["ses_accepted_per_moto"]
        total["virtual_s"] = max(total["virtual_s"], tally["virtual_s"])
        for key in ("sends", "email_outcomes", "status_counts", "feedback", "faults", "api_calls"):
            total[key].update(tally[key])
        for key in ("untracked", "duplicate_examples", "timings"):
            total[key].extend(tally[key])
        for name, bodies in tally["dlq"].items():
            total["dlq"].setdefault(name, []).extend(bodies)
        for key in ("before_redrive", "redriven"):
            for name, n in tally[key].items():
                total[key][name] = total[key].get(name, 0) + n
        for logical, function in tally["functions"].items():
            into = total["functions"].setdefault(logical, copy.deepcopy(function))
            if into is not function and into != function:
                into["function_errors"] += function["function_errors"]
                for key in ("stats", "outcomes", "metrics"):
                    into[key].update(function[key])
    total["duplicate_examples"] = total["duplicate_examples"][:EXAMPLES]
    return total


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * pct // 100) - 1)]


def run(template: str | Path | dict = DEFAULT_TEMPLATE, *, orders: int = 200, seed: int = 1,
        faults: float = 0.0, duplicates: float = 0.1, invalid: float = 0.05,
        feedback_duplicates: float = 0.1, parameters: dict[str, str] | None = None,
        redrive: bool = True, workers: int = 2, progress: Progress | None = None,
        on_load: Callable[[str, types.ModuleType], None] | None = None) -> dict:
    """Simulate `orders` orders through the stack `template` describes; returns the report.

    `workers` > 1 splits the orders over that many copies of the stack, each in its own process
    (moto is single-threaded); the same seed and workers repeat a run. `on_load(logical_id,
    module)` is called with each loaded handler module (a test can break a handler with it).
    Raises TemplateError when the template cannot be simulated.
    """
    started = _real_time.perf_counter()
    progress = progress or Progress(enabled=False)
    template = load_template(template)
    chosen = choose_parameters(template, parameters)
    order_list, bodies = make_orders(orders, random.Random(f"{seed}:orders"), duplicates, invalid)
    shards = split(order_list, bodies, max(1, workers))
    progress.phase(f"deploying the template's data plane in moto ({len(shards)} "
                   f"cop{'y' if len(shards) == 1 else 'ies'}), loading the handlers, publishing "
                   f"{len(bodies)} order messages ({orders} orders), playing the mappings and SES")
    tallies = run_shards([
        {"template": template, "parameters": chosen, "bodies": shard, "seed": f"{seed}:{index}",
         "faults": faults, "feedback_duplicates": feedback_duplicates, "redrive": redrive,
         "on_load": on_load,
         "progress": progress if index == 0 else Progress(enabled=False)}
        for index, shard in enumerate(shards)])
    progress.phase("checked the end state: emails SES accepted, table items, dead-letter queues")
    report = build_report(merge(tallies), order_list, bodies)
    report["settings"] = {"seed": seed, "orders": orders, "faults": faults,
                          "duplicates": duplicates, "invalid": invalid,
                          "feedback_duplicates": feedback_duplicates, "redrive": redrive,
                          "workers": len(shards),
                          "parameters": chosen}
    report["wall_s"] = round(_real_time.perf_counter() - started, 2)
    return report


def build_report(tally: dict, orders: list[Order], bodies: list[str]) -> dict:
    """Figures and invariants from the end state: what SES accepted, the table, the DLQs."""
    sends = tally["sends"]
    by_body = {order.body: order for order in orders}
    dead = [by_body.get(body) or by_body.get(_envelope_message(body))
            for body in tally["dlq"].get(tally["send_dlq"], [])]
    dead_valid = {order.order_id for order in dead if order and order.valid}
    dead_invalid = {order.body for order in dead if order and not order.valid}
    valid = [order for order in orders if order.valid]
    invalid = [order for order in orders if not order.valid]
    lost = [order.order_id for order in valid
            if order.order_id not in sends and order.order_id not in dead_valid]
    emails, untracked = tally["emails"], tally["untracked"]
    api_calls = tally["api_calls"]
    report = {
        "orders_published": len(bodies),
        "valid_orders": len(valid),
        "invalid_orders": len(invalid),
        "duplicated_orders": sum(order.copies > 1 for order in valid),
        "emails_sent": emails,
        "duplicate_emails": sum(n - 1 for n in sends.values() if n > 1),
        "lost_orders": len(lost),
        "orders_in_dlq": len(dead_valid),
        "orders_in_dlq_already_emailed": len(dead_valid & set(sends)),
        "invalid_in_dlq": len(dead_invalid),
        "invalid_dropped": len(invalid) - len(dead_invalid),
        "dlq_messages": sum(len(found) for found in tally["dlq"].values()),
        "dlq_by_queue": {name: len(found) for name, found in tally["dlq"].items()},
        "dlq_before_redrive": tally["before_redrive"],
        "redriven": tally["redriven"],
        "status_counts": dict(sorted(tally["status_counts"].items(), key=str)),
        "tracked_pct": round(100 * (emails - len(untracked)) / emails, 2) if emails else None,
        "untracked_emails": len(untracked),
        "email_outcomes": dict(sorted(tally["email_outcomes"].items())),
        "ses_accepted_per_moto": tally["ses_accepted_per_moto"],
        "feedback": dict(tally["feedback"]),
        "faults_injected": {name: tally["faults"][name] for name in
                            ("ses_throttling", "dynamodb_errors", "crashes_after_send")},
        "functions": {logical: {
            key: (dict(sorted(value.items())) if isinstance(value, Counter) else value)
            for key, value in function.items()}
            for logical, function in tally["functions"].items()},
        "queues": tally["queues"],
        "api_calls": dict(sorted(api_calls.items())),
        "api_calls_per_email": round(sum(api_calls.values()) / emails, 2) if emails else None,
        "handler_ms_p50": _round(percentile(tally["timings"], 50)),
        "handler_ms_p95": _round(percentile(tally["timings"], 95)),
        "virtual_s": tally["virtual_s"],
        "not_simulated": dict(sorted(tally["not_simulated"].items())),
        "skipped": dict(sorted(tally["skipped"].items())),
        "examples": {"duplicate_emails": tally["duplicate_examples"],
                     "lost_orders": lost[:EXAMPLES], "untracked": untracked[:EXAMPLES]},
    }
    report["invariants_broken"] = broken_invariants(report)
    return report


def _envelope_message(body: str) -> str | None:
    """The Message of an SNS envelope (a queue without raw message delivery), else None."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get("Message") if isinstance(doc, dict) and doc.get("Type") == "Notification" \
        else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def broken_invariants(report: dict) -> list[str]:
    """Names of the invariants the report breaks (see INVARIANTS)."""
    broken = []
    for name, _, _ in INVARIANTS:
        value = report[name]
        ok = value is None or (value >= 100 if name == "tracked_pct" else value == 0)
        if not ok:
            broken.append(name)
    return broken


# ================================================================================================
# Output and CLI
# ================================================================================================

def format_report(report: dict, template_label: str = "") -> str:
    """The report as a readable table (the JSON form carries every field)."""
    settings = report["settings"]
    send = next((f for f in report["functions"].values() if f["role"] == "send"), {})
    send_queue = next((q for q in report["queues"].values() if q["name"] == send.get("queue")), {})
    lines = [
        f"Local end-to-end simulation{' of ' + template_label if template_label else ''}",
        f"  {settings['orders']} orders, seed {settings['seed']}, faults {settings['faults']}, "
        f"duplicates {settings['duplicates']:.0%}, invalid {settings['invalid']:.0%}, "
        f"duplicated SES events {settings['feedback_duplicates']:.0%}, "
        f"{settings['workers']} stack cop{'y' if settings['workers'] == 1 else 'ies'}",
        f"  send queue {send_queue.get('name')}: visibility "
        f"{send_queue.get('visibility_timeout_s')} s, maxReceiveCount "
        f"{send_queue.get('max_receive_count')}, batch {send.get('batch_size')}, concurrency "
        f"{send.get('max_concurrency')}",
        "  not simulated: " + ", ".join(f"{n} {kind}" for kind, n in
                                        report["not_simulated"].items()),
        "",
    ]
    feedback = report["feedback"]
    faults = report["faults_injected"]
    rows = [
        ("orders_published", report["orders_published"],
         f"{report['valid_orders']} valid ({report['duplicated_orders']} published 2-3x), "
         f"{report['invalid_orders']} invalid"),
        ("emails_sent", report["emails_sent"],
         ", ".join(f"{n} {kind}" for kind, n in report["email_outcomes"].items())),
        ("duplicate_emails", report["duplicate_emails"], "orders emailed more than once"),
        ("lost_orders", report["lost_orders"], "valid orders neither emailed nor in the DLQ"),
        ("orders_in_dlq", report["orders_in_dlq"], "valid orders an operator must redrive"),
        ("invalid_in_dlq", report["invalid_in_dlq"], f"of {report['invalid_orders']} invalid"),
        ("dlq_messages", report["dlq_messages"],
         ", ".join(f"{name} {n}" for name, n in report["dlq_by_queue"].items())),
        ("redriven", sum(report["redriven"].values()) if report["settings"]["redrive"] else "off",
         "DLQ messages the runbook moved back once the run settled"),
        ("tracked_pct", report["tracked_pct"], "emails whose item reached the expected status"),
        ("status_counts", "", ", ".join(f"{k} {v}" for k, v in report["status_counts"].items())),
        ("SES events", feedback["events_published"],
         f"{feedback['duplicated_events']} duplicated, "
         f"{feedback['emails_with_out_of_order_events']} emails' events out of order"),
        ("faults injected", sum(faults.values()),
         ", ".join(f"{name} {n}" for name, n in faults.items())),
        ("api_calls_per_email", report["api_calls_per_email"], "handler AWS calls / emails sent"),
        ("handler_ms_p50", report["handler_ms_p50"], "per record, in-process under moto"),
        ("handler_ms_p95", report["handler_ms_p95"], ""),
        ("virtual time", f"{report['virtual_s']} s", "simulated span incl. retry timeouts"),
        ("wall_s", report["wall_s"], "this run"),
    ]
    width = max(len(str(name)) for name, _, _ in rows)
    for name, value, note in rows:
        lines.append(f"  {name:<{width}}  {str(value):>8}  {note}".rstrip())
    lines.append("")
    lines.append("invariants")
    for name, target, meaning in INVARIANTS:
        broken = name in report["invariants_broken"]
        lines.append(f"  {'FAIL' if broken else 'ok  '}  {name} = {report[name]}  (must be "
                     f"{target}{'; ' + meaning if broken else ''})")
    examples = {name: found for name, found in report["examples"].items() if found}
    if examples:
        lines.append("")
        lines.append("what happened (first examples; --json has them all)")
        lines.extend("  " + line for line in json.dumps(examples, indent=2).splitlines())
    return "\n".join(lines)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction from 0 to 1, not {text!r}")
    return value


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"must look like Name=Value, not {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="simulate.py",
        description="Run the order-confirmation pipeline end to end, locally under moto, from the "
                    "generated template, with faults; exit 1 if an email is sent twice, an order "
                    "is lost or an email is not tracked to its final status.",
    )
    parser.add_argument("--orders", type=_count, default=200, help="orders to publish (200)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed: the same seed repeats the run (default: a random one, "
                             "printed in the report)")
    parser.add_argument("--faults", type=_fraction, default=0.0, metavar="RATE",
                        help="probability of SES throttling and of a DynamoDB error per call; "
                             "the send function crashes after an accepted send at RATE/2 (0)")
    parser.add_argument("--duplicates", type=_fraction, default=0.1, metavar="FRACTION",
                        help="share of valid orders published 2-3 times (0.1)")
    parser.add_argument("--invalid", type=_fraction, default=0.05, metavar="FRACTION",
                        help="share of orders that break the order contract (0.05)")
    parser.add_argument("--feedback-duplicates", type=_fraction, default=0.1, metavar="FRACTION",
                        help="share of SES events published twice, the copy up to 10 min late "
                             "(0.1)")
    parser.add_argument("--no-redrive", dest="redrive", action="store_false",
                        help="do not play the runbook's redrive of the DLQs once the run settles "
                             "(the report then shows what waits in them)")
    parser.add_argument("--workers", type=_count, default=2,
                        help="split the orders over this many copies of the stack, one process "
                             "each (moto is single-threaded; 2 uses both cores of a small "
                             "machine). A run repeats with the same --seed and --workers (2)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, metavar="PATH",
                        help="template to simulate (dist/template.json)")
    parser.add_argument("--param", type=_parameter, action="append", default=[],
                        metavar="NAME=VALUE", help="override a template parameter (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object instead of a table")
    return parser.parse_args(argv)


def _display_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None, *,
         on_load: Callable[[str, types.ModuleType], None] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 100000)
    try:
        report = run(args.template, orders=args.orders, seed=seed, faults=args.faults,
                     duplicates=args.duplicates, invalid=args.invalid,
                     feedback_duplicates=args.feedback_duplicates, parameters=dict(args.param),
                     redrive=args.redrive, workers=args.workers, progress=Progress(sys.stderr),
                     on_load=on_load)
    except TemplateError as exc:
        print(f"simulate.py: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report, _display_path(args.template)))
    for name, _, meaning in INVARIANTS:
        if name in report["invariants_broken"]:
            print(f"simulate.py: FAIL: invariant {name} broken: {name} = {report[name]} "
                  f"({meaning})", file=sys.stderr)
    return 1 if report["invariants_broken"] else 0


if __name__ == "__main__":
    sys.exit(main())
