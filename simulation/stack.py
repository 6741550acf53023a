"""The stack's data plane, stood up in moto from the template.

`deploy` creates the key, topics, queues (with their redrive policies), subscriptions, table, SES
configuration set, identity and event destinations with boto3, resource by resource in
dependency order, from their resolved properties. The Lambda functions and event source mappings
are only recorded (`FunctionInfo`, `MappingInfo`): the runtime plays them. `wire` then finds,
from the template itself, which resources play which part: the order topic, the send queue, the
feedback queues, the dead-letter queues and the table.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from simulation.alarms import AlarmInfo
from simulation.template import (ACCOUNT_ID, REGION, STACK_NAME, Resolver, TemplateError,
                                 creation_order)

DEFAULT_MAX_CONCURRENCY = 10  # an event source mapping without ScalingConfig


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
    batching_window_s: float
    max_concurrency: int
    report_batch_item_failures: bool
    enabled: bool


@dataclass
class ScheduleInfo:
    logical: str
    name: str
    expression: str
    target_arn: str
    body: str
    enabled: bool


@dataclass
class Stack:
    """What `deploy` created, by logical id, plus what the simulation needs to play it."""

    resolver: Resolver
    topics: dict[str, str] = field(default_factory=dict)  # logical -> ARN
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    subscriptions: list[tuple[str, str, bool]] = field(default_factory=list)  # topic, queue, raw
    tables: dict[str, str] = field(default_factory=dict)  # logical -> table name
    configuration_sets: list[str] = field(default_factory=list)  # names
    alarms: dict[str, AlarmInfo] = field(default_factory=dict)
    schedules: dict[str, ScheduleInfo] = field(default_factory=dict)
    identities: list[str] = field(default_factory=list)  # SES identities the stack created
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
    stack.configuration_sets.append(name)
    return {"Ref": name}


def _create_identity(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    # moto verifies an identity at once; DKIM is not simulated.
    props = stack.resolver.resolve(props)
    identity = props["EmailIdentity"]
    config_set = props.get("ConfigurationSetAttributes", {}).get("ConfigurationSetName")
    request = {"ConfigurationSetName": config_set} if config_set else {}
    aws["sesv2"].create_email_identity(EmailIdentity=identity, **request)
    stack.identities.append(identity)
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
        batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0) or 0),
        max_concurrency=_int(scaling.get("MaximumConcurrency"), DEFAULT_MAX_CONCURRENCY),
        report_batch_item_failures="ReportBatchItemFailures" in props.get(
            "FunctionResponseTypes", []),
        enabled=_truthy(props.get("Enabled", True)),
    )
    uuid = f"sim-{logical}"
    return {"Ref": uuid, "EventSourceMappingArn": mapping_arn(uuid)}


def mapping_arn(uuid: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:event-source-mapping:{uuid}"


def _register_alarm(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    """Played by `AlarmPlayer` (simulation/alarms.py) when the run produces its metrics."""
    props = stack.resolver.resolve(props)
    name = str(props.get("AlarmName") or f"{STACK_NAME}-{logical}")
    arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{name}"
    stack.alarms[logical] = AlarmInfo(logical=logical, name=name, arn=arn, props=props)
    return {"Ref": name, "Arn": arn}


def _register_schedule(stack: Stack, aws: dict, logical: str, props: dict) -> dict:
    """Played by the runner's scheduler on the virtual clock."""
    props = stack.resolver.resolve(props)
    name = str(props.get("Name") or f"{STACK_NAME}-{logical}")
    target = props.get("Target", {})
    stack.schedules[logical] = ScheduleInfo(
        logical=logical, name=name, expression=str(props.get("ScheduleExpression", "")),
        target_arn=str(target.get("Arn", "")), body=str(target.get("Input", "")),
        enabled=str(props.get("State", "ENABLED")) == "ENABLED")
    return {"Ref": name, "Arn": f"arn:aws:scheduler:{REGION}:{ACCOUNT_ID}:schedule/default/{name}"}


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
    "AWS::CloudWatch::Alarm": _register_alarm,
    "AWS::Scheduler::Schedule": _register_schedule,
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
