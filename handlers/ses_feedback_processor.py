"""Record every SES event of an order-confirmation email in the delivery table.

This module is the Lambda function `<env>-ses-feedback-processor`. The template embeds this very
file as the function's ZipFile code (it runs as the module `index`), so it uses only the standard
library and boto3.

The story of one SQS record, from arrival to outcome:

1. Parse. The body is an SES event-publishing record (`eventType`: Send, Delivery, Bounce, ...)
   or an older identity notification (`notificationType`), raw or inside an SNS envelope.
2. Match. The sender tagged every email with the item's key (`orderId`, `messageId`: base64url
   without padding); SES returns the tags in every event as `mail.tags`. An event for an email
   this system did not send never creates an item: it is acknowledged as unmatched.
3. Apply. If the event's status ranks higher than the item's (DESIGN.md: SENDING < SENT < DELAYED
   < DELIVERED < FAILED / REJECTED / RENDERING_FAILED / BOUNCED < COMPLAINED), one conditional
   write sets the status and appends the event to the history. SES events arrive in any order, so
   a lower or equal rank never overwrites a higher one.
4. Record history. Otherwise a second conditional write appends the event to the history only.
   Every distinct event is appended once: its key is kept in `eventIds`, because SNS and SQS
   deliver at least once.

Outcomes, one JSON log line each (`outcome`, `reason`):
- acknowledged: applied (the status moved up), recorded (history only), duplicate, history_full
  (the engagement cap is reached), ignored (an SES setup notice), unmatched (tags missing or
  undecodable, or no such item; counted as `UnmatchedFeedback`);
- batch item failures, so SQS retries them and finally keeps them in the dead-letter queue:
  malformed (not an SES record we know: retrying cannot fix it, but it must reach the DLQ intact
  for an operator), retry (DynamoDB, network or any unexpected error), not_started (the
  invocation's remaining time did not cover one more record: a function that times out fails its
  whole batch, so a record is started only while the time covers its worst case).

Metrics count distinct events, not status changes: a Bounce after a Complaint still counts in
`Bounces`, which is what the bounce-rate alarm needs. Duplicates are not counted. The end-to-end
canary (an order id starting with `canary-`, sent to the SES mailbox simulator) counts only its
Delivery, as `CanaryDelivered` and `CanaryLatency` (scheduled -> delivered): it never counts in
`Deliveries`, `Bounces` or `Complaints`.

AWS calls: DynamoDB UpdateItem only, one per event in the common case.
ReturnValuesOnConditionCheckFailure=ALL_OLD tells "no such item", "already recorded" and "lower
rank" apart without a read.
"""

import base64
import collections
import datetime
import hashlib
import json
import os
import re
import time
from typing import NamedTuple

import boto3
from botocore.config import Config

# Set by the template. A missing one fails every record at import, so the records wait in the
# queue and then the dead-letter queue instead of being dropped.
TABLE_NAME = os.environ["EMAIL_DELIVERIES_TABLE"]
METRICS_NAMESPACE = os.environ["METRICS_NAMESPACE"]

# Created once per container. DynamoDB answers an UpdateItem in milliseconds: half a second for
# each of the connection and the answer, and ONE attempt: the queue retries a failed record every
# 30 s (six times this function's 5 s timeout), five times before the dead-letter queue, which is
# sooner than botocore's backoff would let a second attempt fit in this short function.
DYNAMODB_CONFIG = Config(connect_timeout=0.5, read_timeout=0.5,
                         retries={"mode": "standard", "total_max_attempts": 1})
dynamodb = boto3.client("dynamodb", config=DYNAMODB_CONFIG)

# The time budget (DESIGN.md, "Time budget"). A function that times out fails its whole batch, so
# a record is started only while the remaining time covers its worst case: two writes (apply the
# status, then the history only) of at most 1 s each (0.5 s to connect + 0.5 s to read, one
# attempt), and half a second for everything else: 2.5 s, half the function's 5 s timeout.
CPU_SECONDS_PER_RECORD = 0.5
WRITES_PER_RECORD = 2
RECORD_WORST_CASE_SECONDS = (
    WRITES_PER_RECORD * DYNAMODB_CONFIG.retries["total_max_attempts"]
    * (DYNAMODB_CONFIG.connect_timeout + DYNAMODB_CONFIG.read_timeout)
    + CPU_SECONDS_PER_RECORD)

# SQS's message size limit: a larger body did not come through SNS and SQS.
MAX_BODY_BYTES = 256 * 1024
# SES publishes this plain text when an event destination is (re)created: not an error.
SETUP_NOTICE = "Successfully validated SNS topic"
# The table key, read back from the message tags of the same names.
KEY_TAGS = ("orderId", "messageId")
# The end-to-end canary: its order id starts with this, its address is at the mailbox simulator.
CANARY_ORDER_PREFIX = "canary-"
MAILBOX_SIMULATOR_DOMAIN = "simulator.amazonses.com"

# A status only moves up this rank; an equal rank does not replace.
STATUS_RANK = {
    "SENDING": 1,
    "SENT": 2,
    "DELAYED": 3,
    "DELIVERED": 4,
    "FAILED": 5,
    "REJECTED": 5,
    "RENDERING_FAILED": 5,
    "BOUNCED": 5,
    "COMPLAINED": 6,
}


class EventKind(NamedTuple):
    """What one SES event type means for the item."""

    status: str | None  # the status it sets; None: history only (engagement events)
    metric: str | None  # the metric it counts, if any
    data_field: str  # the field of the event record that holds the event's own data


EVENT_KINDS = {
    "Send": EventKind(status="SENT", metric=None, data_field="send"),
    "Delivery": EventKind(status="DELIVERED", metric="Deliveries", data_field="delivery"),
    "DeliveryDelay": EventKind(status="DELAYED", metric="DeliveryDelays",
                               data_field="deliveryDelay"),
    "Bounce": EventKind(status="BOUNCED", metric="Bounces", data_field="bounce"),
    "Complaint": EventKind(status="COMPLAINED", metric="Complaints", data_field="complaint"),
    "Reject": EventKind(status="REJECTED", metric="Rejects", data_field="reject"),
    "Rendering Failure": EventKind(status="RENDERING_FAILED", metric="RenderingFailures",
                                   data_field="failure"),
    # Engagement: no status, no metric, and they can repeat without bound, so their history is
    # capped (ENGAGEMENT_HISTORY_CAP).
    "Open": EventKind(status=None, metric=None, data_field="open"),
    "Click": EventKind(status=None, metric=None, data_field="click"),
    "Subscription": EventKind(status=None, metric=None, data_field="subscription"),
}
# The older identity notifications exist for these three only. They carry no custom tags, so they
# stay unmatched unless tagged: the configuration set's event destinations are the primary path.
NOTIFICATION_KINDS = ("Bounce", "Complaint", "Delivery")


class Fact(NamedTuple):
    """One detail copied from an event's data object into the history entry's detail."""

    attribute: str | None  # also set on the item with the status (failure details); or None
    path: tuple  # where it is in the data object (an int indexes a list)


# Each data object carries only its own type's facts, so at most one `error` is found.
FACTS = (
    Fact("bounceType", ("bounceType",)),
    Fact("bounceSubType", ("bounceSubType",)),
    Fact("diagnostic", ("bouncedRecipients", 0, "diagnosticCode")),
    Fact("complaintFeedbackType", ("complaintFeedbackType",)),
    Fact("error", ("reason",)),  # Reject
    Fact("error", ("errorMessage",)),  # Rendering Failure
    Fact(None, ("delayType",)),  # DeliveryDelay: in the history only
)

# Status events never reach their cap; Open and Click can repeat without bound, and 50 entries
# keep an item far below DynamoDB's 400 KB.
STATUS_HISTORY_CAP = 99999
ENGAGEMENT_HISTORY_CAP = 50

# Append the history entry and remember the event's key...
APPEND_EVENT = (
    "ADD eventIds :event_id_set "
    "SET updatedAt = :now_iso, events = list_append(if_not_exists(events, :no_events), :entry)"
)
# ...only to an existing item (an event never creates one) that does not hold the event yet and
# whose history is below the cap.
IS_NEW_EVENT = (
    "attribute_exists(orderId) AND NOT contains(eventIds, :event_id)"
    " AND (attribute_not_exists(events) OR size(events) < :history_cap)"
)
# With the status: keep the sender's SES message id if it has one, and end the claim (any SES
# event means SES took the email).
APPLY_STATUS = (
    APPEND_EVENT + ", #status = :status, #timestamp = :now"
    ", sesMessageId = if_not_exists(sesMessageId, :ses_message_id)"
)


# The reasons a record is not recorded. Each names the record's outcome and its log level.
class Malformed(Exception):
    """Not an SES record we know: a batch item failure, so it reaches the DLQ intact."""

    outcome, level = "malformed", "ERROR"


class Unmatched(Exception):
    """Not an email we sent (or its item is gone): acknowledged, retrying never helps."""

    outcome, level = "unmatched", "WARNING"


class Ignored(Exception):
    """An SES setup notice: nothing to record."""

    outcome, level = "ignored", "INFO"


def log(**fields):
    """Print one JSON line (a log line or an EMF document), every e-mail address in it masked as
    `a***@example.com` (SES diagnostics quote the recipient)."""
    print(re.sub(r"(\w)[\w.+-]*@", r"\1***@", json.dumps(fields)))


# --- Parse and match ---------------------------------------------------------------------------

def parse_body(text, label="body"):
    """The SES record in `text`: the SQS body, or the Message of an SNS envelope in it."""
    try:
        document = json.loads(text)
    except (TypeError, ValueError, RecursionError):  # not a string, not JSON, absurdly nested
        document = None
    if type(document) is not dict:
        if str(text).startswith(SETUP_NOTICE):
            raise Ignored(text)
        raise Malformed(f"{label} not a JSON object")
    if "Message" in document:  # an SNS envelope
        return parse_body(document["Message"], label="SNS Message")
    # The SES record itself (an envelope adds its own fields and escaping around it): SES event
    # records are far smaller than what SNS and SQS can carry.
    if len(text.encode("utf-8")) > MAX_BODY_BYTES:
        raise Malformed(f"{label} over 256 KB")
    return document


def text_at(obj, path):
    """The text at `path` in `obj` (strings index objects, ints index lists), at most 500
    characters (a diagnostic can be long); '' if there is none or it is not a string."""
    for step in path:
        try:
            obj = obj[step]
        except (KeyError, IndexError, TypeError):
            return ""
    return obj[:500] if type(obj) is str else ""


def event_type_of(record):
    """The record's event type and what it means (EventKind); Ignored or Malformed otherwise."""
    if "eventType" in record:
        event_type, known = record["eventType"], EVENT_KINDS
    else:
        event_type, known = record.get("notificationType"), NOTIFICATION_KINDS
    if event_type == "AmazonSnsSubscriptionSucceeded":
        raise Ignored(event_type)
    if type(event_type) is not str or event_type not in known:
        raise Malformed(f"unknown event type {event_type!r}")
    return event_type, EVENT_KINDS[event_type]


def event_data(record, event_type, kind):
    """The event's own data object (e.g. `bounce`). A type that counts a metric must carry it
    (it holds what is counted); for the others it may be absent."""
    data = record.get(kind.data_field, None if kind.metric else {})
    if type(data) is not dict:
        raise Malformed(f"no {event_type} object")
    return data


def tag(record, name):
    """The value the sender put in the message tag `name`, decoded. Unmatched when it is missing
    or is not exactly the sender's encoding (base64url of UTF-8, padding stripped)."""
    value = text_at(record, ("mail", "tags", name, 0))
    if not value:
        raise Unmatched(f"tag {name} missing")
    try:
        # Lenient decoding; the round trip below checks the value was encoded by the sender.
        text = base64.urlsafe_b64decode(value + "==").decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        text = ""
    if not text or base64.urlsafe_b64encode(text.encode("utf-8")).decode().rstrip("=") != value:
        raise Unmatched(f"tag {name} undecodable")
    return text


# --- Apply and record --------------------------------------------------------------------------

def update_item(key, update, condition, values, names=None):
    """One conditional UpdateItem. Returns None when it applied, or the item as it was when the
    condition failed; Unmatched when there is no item (no write ever creates one)."""
    extra = {"ExpressionAttributeNames": names} if names else {}  # unused names are refused
    try:
        dynamodb.update_item(
            TableName=TABLE_NAME, Key=key, UpdateExpression=update,
            ConditionExpression=condition, ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD", **extra)
    except dynamodb.exceptions.ConditionalCheckFailedException as error:
        existing = error.response.get("Item")
        if existing:
            return existing
        raise Unmatched("no item") from None
    return None


def holds_event(item, event_id):
    """Whether the item's history already holds the event."""
    return event_id in item.get("eventIds", {}).get("SS", ())


def apply_status(key, status, event_id, values, failure_details, ses_message_id):
    """Set `status` and append the event, if `status` ranks higher than the item's. Returns
    None when applied, else the item as it was."""
    lower = {f":lower{index}": {"S": name}
             for index, name in enumerate(s for s in STATUS_RANK if STATUS_RANK[s] <
                                          STATUS_RANK[status])}
    names = {"#status": "status", "#timestamp": "timestamp"}
    details = {}
    update = APPLY_STATUS
    for attribute, text in failure_details.items():
        names[f"#{attribute}"] = attribute
        details[f":{attribute}"] = {"S": text}
        update += f", #{attribute} = :{attribute}"
    return update_item(
        key,
        update + " REMOVE claimExpiresAt",
        f"{IS_NEW_EVENT} AND #status IN ({', '.join(lower)})",
        {**values, **lower, **details, ":status": {"S": status},
         ":now": {"N": str(int(time.time()))}, ":ses_message_id": {"S": ses_message_id}},
        names,
    )


def record_event(key, status, event_id, values, failure_details, ses_message_id):
    """Apply the event's status (if it ranks higher) and append the event to the history once;
    returns the outcome: applied, recorded, duplicate or history_full."""
    if status:
        existing = apply_status(key, status, event_id, values, failure_details, ses_message_id)
        if existing is None:
            return "applied"
        if holds_event(existing, event_id):
            return "duplicate"
    # A lower or equal rank, or an engagement event: the history only.
    existing = update_item(key, APPEND_EVENT, IS_NEW_EVENT, values)
    if existing is None:
        return "recorded"
    return "duplicate" if holds_event(existing, event_id) else "history_full"


def event_id_of(record):
    """The event's key. SNS and SQS duplicates are identical copies (the same JSON, so the same
    dict); two real events of one email differ in their data (time, recipients, feedback id)."""
    return hashlib.md5(str(record).encode("utf-8")).hexdigest()  # a dedup key, not security


# --- One record ----------------------------------------------------------------------------------

class Event(NamedTuple):
    """One SES event, read from its record and matched to the item it is about."""

    type: str
    kind: EventKind
    record: dict  # the whole SES record (its key for deduplication is derived from it)
    data: dict  # the event's own data object
    ses_message_id: str
    order_id: str
    message_id: str
    canary: bool

    @property
    def key(self):
        """The item's key as DynamoDB takes it."""
        return {"orderId": {"S": self.order_id}, "messageId": {"S": self.message_id}}


def read_event(body, fields):
    """The Event in an SQS record body; Ignored, Malformed or Unmatched otherwise. Adds what it
    learns to `fields` (the record's log line) as it goes, so a refused record says how far it
    got."""
    record = parse_body(body)
    event_type, kind = event_type_of(record)
    ses_message_id = text_at(record, ("mail", "messageId"))
    if not ses_message_id:
        raise Malformed("mail.messageId missing")
    data = event_data(record, event_type, kind)
    fields.update(eventType=event_type, sesMessageId=ses_message_id)
    fields.update({name: tag(record, name) for name in KEY_TAGS})
    canary = is_canary(fields["orderId"], text_at(record, ("mail", "destination", 0)))
    if canary:
        fields["canary"] = True
    return Event(type=event_type, kind=kind, record=record, data=data,
                 ses_message_id=ses_message_id, order_id=fields["orderId"],
                 message_id=fields["messageId"], canary=canary)


def record_in_table(event, fields):
    """Apply the event to its item and append it to the history; returns the outcome."""
    facts = [(fact.attribute, text_at(event.data, fact.path)) for fact in FACTS]
    failure_details = {attribute: text for attribute, text in facts if attribute and text}
    fields["detail"] = "/".join(text for _, text in facts if text) or event.type
    event_id = event_id_of(event.record)
    entry = {
        "type": {"S": event.type},
        "time": {"S": event_time(event)},
        "detail": {"S": fields["detail"]},
    }
    history_cap = STATUS_HISTORY_CAP if event.kind.status else ENGAGEMENT_HISTORY_CAP
    values = {
        ":event_id": {"S": event_id},
        ":event_id_set": {"SS": [event_id]},
        ":no_events": {"L": []},
        ":entry": {"L": [{"M": entry}]},
        ":history_cap": {"N": str(history_cap)},
        ":now_iso": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    return record_event(event.key, event.kind.status, event_id, values, failure_details,
                        event.ses_message_id)


def event_time(event):
    """When the event happened (its own timestamp), else when SES accepted the email."""
    return text_at(event.data, ("timestamp",)) or text_at(event.record, ("mail", "timestamp"))


def count_event(event, outcome, metrics):
    """Count a distinct event (a duplicate counts nothing). A canary counts only its Delivery,
    as CanaryDelivered with its scheduled -> delivered latency: it must not dilute the rates."""
    if outcome == "duplicate":
        return
    if event.canary:
        if event.type == "Delivery":
            metrics.count("CanaryDelivered")
            latency = canary_latency_seconds(event.order_id, event_time(event))
            if latency is not None:
                metrics.measure("CanaryLatency", latency)
        return
    if event.kind.metric:
        metrics.count(event.kind.metric)


def process_record(sqs_record, metrics):
    """Handle one SQS record, counting into `metrics`; returns True when the record must be
    retried (a batch item failure)."""
    fields = {"message": "feedback", "sqsMessageId": sqs_record.get("messageId")}
    level = "INFO"
    try:
        event = read_event(sqs_record.get("body"), fields)
        outcome = record_in_table(event, fields)
        count_event(event, outcome, metrics)
    except (Malformed, Unmatched, Ignored) as problem:
        outcome, level, fields["reason"] = problem.outcome, problem.level, str(problem)
    except Exception as error:  # DynamoDB, the network, a bug: retried
        outcome, level, fields["reason"] = "retry", "ERROR", repr(error)
    if outcome == "unmatched":
        metrics.count("UnmatchedFeedback")
    log(level=level, outcome=outcome, **fields)
    return level == "ERROR"


# --- The canary ----------------------------------------------------------------------------------

def is_canary(order_id, recipient):
    """The end-to-end canary (DESIGN.md, "Self-watching"): an order id starting with `canary-`
    sent to the SES mailbox simulator."""
    domain = recipient.rpartition("@")[2].lower()
    return order_id.startswith(CANARY_ORDER_PREFIX) and domain == MAILBOX_SIMULATOR_DOMAIN


def canary_latency_seconds(order_id, delivered_at):
    """Seconds from the canary's scheduled time (`canary-2026-12-02T10:15:00Z`) to its delivery;
    None if either time cannot be read."""
    try:
        scheduled = datetime.datetime.fromisoformat(order_id[len(CANARY_ORDER_PREFIX):])
        delivered = datetime.datetime.fromisoformat(delivered_at)
    except ValueError:
        return None
    return round((delivered - scheduled).total_seconds(), 3)


# --- One batch -----------------------------------------------------------------------------------

class Metrics:
    """What one invocation counts and measures, printed as one Embedded Metric Format line."""

    def __init__(self):
        self.counts = collections.Counter()
        self.measurements = collections.defaultdict(list)

    def count(self, name):
        """One more of `name`."""
        self.counts[name] += 1

    def measure(self, name, seconds):
        """One measurement of `name`, in seconds."""
        self.measurements[name].append(seconds)

    def emf_line(self):
        """The EMF document, or None when there is nothing to publish (each metric is billed per
        hour in which it is published). No dimensions: each combination is a billed metric."""
        if not self.counts and not self.measurements:
            return None
        units = {name: "Count" for name in self.counts}
        units.update({name: "Seconds" for name in self.measurements})
        return {
            "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE, "Dimensions": [[]],
                "Metrics": [{"Name": name, "Unit": unit} for name, unit in units.items()]}]},
            **self.counts, **self.measurements,
        }


def has_time_for_a_record(context):
    """Whether the invocation's remaining time covers one record's worst case."""
    return context.get_remaining_time_in_millis() / 1000 >= RECORD_WORST_CASE_SECONDS


def not_started(sqs_record, context):
    """Log a record left for SQS to retry because the invocation is short of time."""
    remaining_seconds = context.get_remaining_time_in_millis() / 1000
    log(level="WARNING", message="feedback", outcome="not_started",
        sqsMessageId=sqs_record.get("messageId"),
        reason=(f"not started: {remaining_seconds:.1f} s left, a record may need "
                f"{RECORD_WORST_CASE_SECONDS} s"))


def lambda_handler(event, context):
    """SQS batch in, partial batch failures out, one EMF line for the whole batch."""
    records = event.get("Records")
    if not records:
        log(level="WARNING", message="no records in event", outcome="empty")
    metrics = Metrics()
    failures = []
    for record in records or ():
        if not has_time_for_a_record(context):
            not_started(record, context)
            failures.append({"itemIdentifier": record["messageId"]})
        elif process_record(record, metrics):
            failures.append({"itemIdentifier": record["messageId"]})
    emf = metrics.emf_line()
    if emf:
        log(**emf)
    return {"batchItemFailures": failures}
