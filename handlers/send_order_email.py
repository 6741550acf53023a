"""Send exactly one order-confirmation email per order.

This module is the Lambda function `<env>-send-order-email`. The template embeds this very file as
the function's ZipFile code (it runs as the module `index`), so it uses only the standard library
and boto3, and everything it needs comes from environment variables set by the template.

The story of one SQS record, from arrival to outcome:

0. Budget. A record is started only while the invocation's remaining time covers its worst case
   (RECORD_WORST_CASE_SECONDS) and its wait for a sending turn; the others go back to the queue
   untouched, because a function that times out fails its whole batch.
1. Parse. The body is the order's JSON (the subscription uses raw message delivery) or an SNS
   envelope around it.
2. Validate the order contract (DESIGN.md, "Order message"). A message that breaks it is never
   sent and never dropped: it is reported as a batch item failure with the broken rule logged, so
   after five receives it waits in the dead-letter queue where an operator can read and replay it.
3. Render the email: a subject, an HTML part and a text part, every customer value HTML-escaped.
4. Claim the order in DynamoDB with a conditional write: create the item as SENDING, or take over
   a SENDING item whose claim has expired (its holder died). Any other item means the order was
   handled already: the record is acknowledged as a duplicate.
5. Wait for this copy's turn within the stack's share of the account's SES sending rate (Pacer),
   then send with SES SendEmail, through the stack's configuration set, tagged with the item's
   key so that the feedback processor finds the item from every SES event.
6. Record SENT and the SES message id, only while this attempt still holds the claim.

The guarantees:

- Never twice. The item key (orderId + a messageId that is the same for every copy of an order)
  makes every redelivery meet the same item, and only the holder of the claim sends. botocore
  never resends SendEmail (one attempt): when SES may have accepted an email but the answer was
  lost, the claim is kept and the retry comes after it expired, when the SES Send event has set
  SENT. After SES accepted an email, nothing leads to a second send.
- Never lost. A record that was not sent for a reason that may pass (DynamoDB or SES errors, an
  identity still pending, a throttled or paused account) is a batch item failure: SQS retries it,
  and after five receives the dead-letter queue keeps it for a redrive. An order is FAILED only
  when SES refuses that very email for good.

Each record logs one JSON line with its outcome (sent, duplicate, failed, retry, invalid or
not_started) and the reason; e-mail addresses are masked. Each invocation prints at most one CloudWatch Embedded
Metric Format line with the non-zero counts (no PutMetricData calls).
"""

import base64
import collections
import datetime
import decimal
import html
import json
import os
import re
import time
import uuid
from typing import Callable, NamedTuple

import boto3
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config

TABLE_NAME = os.environ["EMAIL_DELIVERIES_TABLE"]
FROM_ADDRESS = os.environ["SES_FROM_ADDRESS"]
CONFIGURATION_SET = os.environ["SES_CONFIG_SET"]
# Only the word "true" (any case) sends to customers: a typo fails safe, into the sandbox.
PRODUCTION = os.environ.get("ENABLE_PRODUCTION_SES", "").strip().lower() == "true"
TEST_ADDRESS = os.environ.get("TEST_EMAIL_ADDRESS")
METRICS_NAMESPACE = os.environ["METRICS_NAMESPACE"]
RECORD_TTL_SECONDS = int(os.environ["RECORD_TTL_DAYS"]) * 86400
# The share of the account's SES sending rate this stack may use (other senders may share the
# account), and how many copies of this function may run at once (the event source mapping's
# MaximumConcurrency): each copy sends at most its part of that share.
RATE_SHARE = int(os.environ.get("SES_RATE_SHARE_PERCENT", "100")) / 100
SEND_CONCURRENCY = max(1, int(os.environ.get("SEND_MAX_CONCURRENCY", "2")))

EMAIL_KIND = "order-confirmation"

# The end-to-end canary (DESIGN.md, "Self-watching"): a scheduled order whose id starts with
# `canary-` and whose address is at the SES mailbox simulator. It always goes to that address
# (sandbox mode too: the simulator never touches the account's reputation or quota), counts as
# CanarySent instead of EmailsSent (it must not dilute the bounce and complaint rates), and its
# item expires after a day.
CANARY_ORDER_PREFIX = "canary-"
MAILBOX_SIMULATOR_DOMAIN = "simulator.amazonses.com"
CANARY_TTL_SECONDS = 86400
# A claim outlives its invocation by this margin, so no other attempt takes over while the holder
# may still be sending...
CLAIM_MARGIN_SECONDS = 10
# ...but never outlives the send queue's visibility timeout (6 x the 30 s function timeout), so
# the retry of a message whose invocation died can take the claim over.
MAX_CLAIM_SECONDS = 180

# Clients are created once per container and reused by every invocation. Their timeouts and
# attempts bound how long one record can take (RECORD_WORST_CASE_SECONDS).
# SES gets ONE attempt: botocore resending SendEmail after a read timeout could deliver a second
# email (`total_max_attempts` counts the first attempt; `max_attempts` would count retries only).
# The queue retries instead, guarded by the claim. SendEmail usually answers in well under a
# second; 5 s of reading leaves room for a slow moment before the outcome becomes ambiguous.
SES_CONFIG = Config(connect_timeout=1, read_timeout=5,
                    retries={"mode": "standard", "total_max_attempts": 1})
# DynamoDB answers an UpdateItem in milliseconds: half a second for each of the connection and
# the answer, and one retry for a throttled or failed write; beyond that the queue retries.
DYNAMODB_CONFIG = Config(connect_timeout=0.5, read_timeout=0.5,
                         retries={"mode": "standard", "total_max_attempts": 2})
ses = boto3.client("ses", config=SES_CONFIG)
dynamodb = boto3.client("dynamodb", config=DYNAMODB_CONFIG)
to_attribute_value = TypeSerializer().serialize  # Python value -> DynamoDB attribute value


def worst_case_seconds(config):
    """The longest one call with this client config can take: every attempt times out on
    connecting and on reading, and botocore's standard mode waits up to 1 s, 2 s, 4 s ... (random
    jitter, at most 20 s) before each retry."""
    attempts = config.retries["total_max_attempts"]
    backoff = sum(min(2 ** retry, 20) for retry in range(attempts - 1))
    return attempts * (config.connect_timeout + config.read_timeout) + backoff


# The time budget (DESIGN.md, "Time budget"). A function that times out fails its whole batch, so
# a record is started only while the remaining time covers its worst case: the claim and the
# record SENT (or release) writes, 3 s each (2 x (0.5 + 0.5) + 1 s backoff), the SendEmail call,
# 6 s (1 + 5), and 1 s for everything else (parsing, rendering, logging): 13 s, well inside the
# function's 30 s timeout. The records not started are returned as batch item failures.
CPU_SECONDS_PER_RECORD = 1
RECORD_WORST_CASE_SECONDS = (2 * worst_case_seconds(DYNAMODB_CONFIG)
                             + worst_case_seconds(SES_CONFIG) + CPU_SECONDS_PER_RECORD)

# SES refuses a send over the account's maximum send rate (Throttling), and a throttled order
# waits out the queue's visibility timeout (180 s) before its retry. So each copy of this function
# spaces its sends: the account's rate (GetSendQuota, read once per container) times RATE_SHARE,
# divided by SEND_CONCURRENCY. When the rate cannot be read, the container sends at the SES
# sandbox's rate, which no account is below, and reads again after QUOTA_RETRY_SECONDS.
SAFE_SEND_RATE = 1.0
QUOTA_RETRY_SECONDS = 300
# A copy whose turn comes less often than this cannot send a batch of 10 within its time budget:
# its later records go back to the queue, and an order released five times waits in the DLQ.
# SendMaxConcurrency is then too high for the rate (README, "Capacity"); the first log line of
# each container says so.
SLOW_TURN_SECONDS = 2.0

# What can happen to a record. The last three are batch item failures: SQS retries them.
SENT, DUPLICATE, FAILED = "sent", "duplicate", "failed"
RETRY, INVALID, NOT_STARTED = "retry", "invalid", "not_started"
RETRIED_OUTCOMES = (RETRY, INVALID, NOT_STARTED)

# What a failed SendEmail means for the order (DESIGN.md, "SES errors: what each one means for the
# order"). The rule: an order is FAILED only for a reason that is about that order. Anything about
# the account, the identity or the setup is retried, and after five receives the dead-letter
# queue keeps the order until the operator fixed the cause and redrives it (a first deploy, with
# DKIM pending for hours, is the common case).
PERMANENT = "permanent"  # SES refused this email for good: record FAILED, acknowledge
RELEASE = "release"  # SES certainly did not take it: release the claim, retry
AMBIGUOUS = "ambiguous"  # SES may have accepted it: keep the claim, retry after it expired

# Codes that are about the account or the setup, or a request that never reached SES.
NOT_ABOUT_THE_ORDER = frozenset({
    "Throttling",  # "Maximum sending rate exceeded." or "Daily message quota exceeded."
    "ThrottlingException", "LimitExceeded", "LimitExceededException",
    "AccountSendingPausedException",  # sending disabled for the account
    "ConfigurationSetSendingPausedException",  # this stack's configuration set paused
    "ConfigurationSetDoesNotExist", "ConfigurationSetDoesNotExistException",
    "MailFromDomainNotVerifiedException",  # the custom MAIL FROM domain's DNS
    "EndpointConnectionError", "ConnectTimeoutError",  # no connection was ever made
})
# MessageRejected is about the account when SES says so in its message: an identity still pending
# (DKIM not yet in DNS), the wrong region, or an account in the SES sandbox sending to an
# unverified recipient ("Email address is not verified. The following identities failed the
# check in region ..."); or AWS paused the account ("Sending paused for this account. ...").
# Matched by the phrases that carry the meaning, in any case. With any other text (e.g. "Illegal
# address") the email can never be sent.
ACCOUNT_STATE_REJECTIONS = ("not verified", "sending paused")
ABOUT_THE_ORDER = frozenset({"MessageRejected", "InvalidParameterValue"})


# --- Validation --------------------------------------------------------------------------------

class InvalidOrder(ValueError):
    """The message breaks the order contract.

    The text is "<field>: <the rule it breaks>" and never holds the value itself: no customer
    data in the logs, and no way to inject lines into them.
    """


class TextRule(NamedTuple):
    """What one string field of an order must be."""

    max_length: int = 200
    accepts: Callable[[str], bool] = lambda value: True
    problem: str = ""  # the reason given when `accepts` refuses a value
    required: bool = True


def is_price(value):
    """A decimal string such as 9.99 (never a JSON number: floats round)."""
    return re.fullmatch(r"\d{1,9}(\.\d\d?)?", value, re.ASCII) is not None


def fits_in_a_tag(value):
    """The order id becomes an SES message tag as base64url of its UTF-8 bytes, and a tag value
    holds at most 256 characters: 192 bytes."""
    return len(value.encode("utf-8")) <= 192


# One plain address: an RFC 5322 dot-atom local part (at most 64 characters, no leading, trailing
# or doubled dot) @ LDH domain labels (no leading or trailing hyphen) and a top-level domain of
# letters or in punycode. ASCII only: SendEmail needs non-ASCII addresses encoded. No display name, quotes,
# comma or space. RFC 5321 caps the whole address at 254 characters (the TextRule's length).
EMAIL_ADDRESS = re.compile(
    r"""
    (?!\.)                              # no leading dot
    (?!.*\.[.@])                        # no two dots in a row, no dot right before the @
    [\w!#$%&'*+/=?^`{|}~.-]{1,64}       # the local part
    @
    ([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+  # domain labels
    ([a-z]{2,}|xn--[a-z0-9-]*[a-z0-9])  # the top-level domain: letters, or punycode (xn--p1ai)
    """,
    re.ASCII | re.IGNORECASE | re.VERBOSE,
)


def is_plain_address(value):
    """Exactly one e-mail address, nothing around it."""
    return EMAIL_ADDRESS.fullmatch(value) is not None


def is_currency_code(value):
    """An ISO 4217 style code such as USD."""
    return re.fullmatch("[A-Z]{3}", value) is not None


def is_iso_date(value):
    """A date or date-time that Python's ISO-8601 parser reads (2026-11-27T12:00:00Z)."""
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:  # not a date, or an impossible one such as 2026-13-45
        return False
    return True


ORDER_FIELDS = {
    "orderId": TextRule(max_length=128, accepts=fits_in_a_tag, problem="over 192 bytes"),
    "customerEmail": TextRule(max_length=254, accepts=is_plain_address,
                              problem="not one plain address"),
    "customerName": TextRule(),
    "total": TextRule(accepts=is_price, problem="not a price like 9.99", required=False),
    "currency": TextRule(accepts=is_currency_code, problem="not a code like USD", required=False),
    "orderDate": TextRule(accepts=is_iso_date, problem="not an ISO-8601 date", required=False),
}
ITEM_FIELDS = {
    "name": TextRule(),
    "unitPrice": TextRule(accepts=is_price, problem="not a price like 9.99"),
}
MAX_ITEMS = 100
MAX_QUANTITY = 10000

# C0 and C1 control characters (CR/LF would let a value inject e-mail headers), the line and
# paragraph separators, bidi overrides and isolates, and lone surrogates. Not str.isprintable():
# that also refuses the zero-width joiners that many names need.
UNSAFE_CHARACTERS = re.compile("[\0-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def text_problem(value, rule):
    """Why `value` breaks `rule`, or None if it is fine. Checked in this order so that the rule's
    own test only ever sees a short, single-line string."""
    if value is None:
        return "missing" if rule.required else None
    if type(value) is not str:
        return "not a string"
    if not value.strip():
        return "empty"
    if len(value) > rule.max_length:
        return f"over {rule.max_length} chars"
    if UNSAFE_CHARACTERS.search(value):
        return "control characters"
    if not rule.accepts(value):
        return rule.problem
    return None


def check_fields(obj, rules, location=""):
    """Raise InvalidOrder for the first field of `obj` that breaks its rule."""
    for field, rule in rules.items():
        problem = text_problem(obj.get(field), rule)
        if problem:
            raise InvalidOrder(f"{location}{field}: {problem}")


def check_items(items):
    """Raise InvalidOrder for the first line item that breaks the contract."""
    if type(items) is not list or len(items) > MAX_ITEMS:
        raise InvalidOrder(f"items: not an array of <= {MAX_ITEMS}")
    for index, item in enumerate(items):
        location = f"items[{index}]"
        if type(item) is not dict:
            raise InvalidOrder(f"{location}: not an object")
        quantity = item.get("quantity")
        # type(), not isinstance(): JSON true is a bool, and bool is a subclass of int.
        if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
            raise InvalidOrder(f"{location}.quantity: not an integer 1-{MAX_QUANTITY}")
        check_fields(item, ITEM_FIELDS, location + ".")


def parse_order(body, label="body"):
    """The validated order in an SQS record body: raw JSON, or an SNS envelope around it.

    Raises InvalidOrder naming the first broken rule. The body itself has no size limit: every
    field has one, and there are at most MAX_ITEMS items. Fields the contract does not name are
    ignored.
    """
    try:
        order = json.loads(body)
    except (TypeError, ValueError, RecursionError):  # not a string, not JSON, absurdly nested
        raise InvalidOrder(f"{label}: not JSON text") from None
    if type(order) is dict and order.get("Type") == "Notification":
        return parse_order(order.get("Message"), label="SNS Message")
    if type(order) is not dict:
        raise InvalidOrder("order: not a JSON object")
    check_fields(order, ORDER_FIELDS)
    check_items(order.get("items") or [])  # null or absent: no items
    return order


# --- The email ---------------------------------------------------------------------------------

def format_money(amount, currency):
    """`1,250.00 USD`; just the amount when the order names no currency."""
    return f"{amount:,.2f} {currency}".rstrip()


def render_email(order, sandbox):
    """(subject, html_body, text_body) of a validated order.

    Both parts hold the same lines; in the HTML part every line is escaped and becomes one
    paragraph. Money is Decimal from the decimal strings, never float: 3 x 0.10 must print 0.30.
    In sandbox mode the email goes to the operator's test inbox, so it may name the customer.
    """
    currency = order.get("currency") or ""
    lines = []
    if sandbox:
        lines.append(f"Test mode: addressed to {order['customerEmail']}.")
    lines.append(f"Hello {order['customerName']},")
    lines.append(f"Thank you for your order {order['orderId']}.")
    if order.get("orderDate"):
        order_date = datetime.datetime.fromisoformat(order["orderDate"])
        lines.append(f"Order date: {order_date:%d %B %Y}")
    for item in order.get("items") or []:
        unit_price = decimal.Decimal(item["unitPrice"])
        quantity = item["quantity"]
        lines.append(f"{item['name']} x {quantity} at {format_money(unit_price, currency)}"
                     f" = {format_money(unit_price * quantity, currency)}")
    if order.get("total"):
        lines.append(f"Total: {format_money(decimal.Decimal(order['total']), currency)}")

    subject = f"Your order {order['orderId']} is confirmed"
    if sandbox:
        subject = "[Redirected test] " + subject
    # HTML5 lets a paragraph end where the next one starts.
    html_body = "<!DOCTYPE html><p>" + "<p>".join(html.escape(line) for line in lines)
    text_body = "\n".join(lines)
    return subject, html_body, text_body


# --- Small helpers -----------------------------------------------------------------------------

def is_canary(order):
    """Whether a validated order is the end-to-end canary (see CANARY_ORDER_PREFIX)."""
    domain = order["customerEmail"].rpartition("@")[2].lower()
    return order["orderId"].startswith(CANARY_ORDER_PREFIX) and domain == MAILBOX_SIMULATOR_DOMAIN


def message_id_for(order_id):
    """The item's range key: the same for every copy of an order, so redeliveries collide."""
    return EMAIL_KIND


def mask_email(address):
    """`ada@example.com` -> `a***@example.com`: logs never hold a full address."""
    return re.sub(r"(?<=.)[^@]*(?=@)", "***", str(address), count=1)


def error_code(error):
    """The AWS error code of a ClientError, else the exception's class name (some botocore errors
    carry a `response` of None)."""
    response = getattr(error, "response", None) or {}
    return response.get("Error", {}).get("Code") or type(error).__name__


def error_message(error):
    """The message AWS sent with a ClientError ('' for other errors)."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Message") or "")


def mask_addresses(text):
    """`text` with every e-mail address in it masked (SES messages name identities)."""
    return re.sub(r"([\w.+-])[\w.+-]*@", r"\1***@", text)


def tag_value(text):
    """`text` as an SES message tag value. Tags allow only A-Z a-z 0-9 _ and -, which is exactly
    the alphabet of base64url without padding."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def iso_time(epoch_seconds):
    """`2026-11-27T12:00:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


# --- The delivery item -------------------------------------------------------------------------

class Delivery(NamedTuple):
    """One attempt at emailing one order: the item it works on and its claim token."""

    order_id: str
    message_id: str
    to: str  # the customer
    sent_to: str  # the customer, or the test inbox in sandbox mode
    claim_token: str
    ttl_seconds: int  # how long the item is kept (RecordRetentionDays; a day for a canary)

    @property
    def key(self):
        """The item's key as DynamoDB takes it."""
        return {"orderId": {"S": self.order_id}, "messageId": {"S": self.message_id}}


# Every write sets the status and the time of the change (`timestamp`, the indexes' range key),
# sets when the claim expires, and appends one entry to the `events` history.
STATUS_CHANGE = (
    "SET events = list_append(if_not_exists(events, :no_events), :event), "
    "#status = :status, #timestamp = :now, updatedAt = :now_iso, "
    "claimExpiresAt = :claim_expires_at"
)
STATUS_NAMES = {"#status": "status", "#timestamp": "timestamp"}


def update_delivery(delivery, *, status, event, detail, claim_seconds, extra_set="",
                    extra_add="", condition, names=None, values=None):
    """One conditional UpdateItem that changes the item's status (STATUS_CHANGE plus `extra_set`
    and `extra_add`), only if `condition` holds.

    Returns None when the write applied. When the condition failed, returns the item as it was
    (ReturnValuesOnConditionCheckFailure=ALL_OLD, so no extra read is needed). Any other error
    propagates. Only the placeholders the expressions use are sent: DynamoDB rejects unused ones.
    """
    now = int(time.time())
    update = STATUS_CHANGE + extra_set + extra_add
    attribute_values = {
        ":no_events": [],
        ":event": [{"type": event, "time": iso_time(now), "detail": detail}],
        ":status": status,
        ":now": now,
        ":now_iso": iso_time(now),
        ":claim_expires_at": now + claim_seconds,
        **(values or {}),
    }
    try:
        dynamodb.update_item(
            TableName=TABLE_NAME,
            Key=delivery.key,
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={**STATUS_NAMES, **(names or {})},
            ExpressionAttributeValues={
                name: to_attribute_value(value) for name, value in attribute_values.items()},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except Exception as error:
        response = getattr(error, "response", None) or {}
        if error_code(error) == "ConditionalCheckFailedException" and "Item" in response:
            return response["Item"]
        raise
    return None


def claim(delivery, context):
    """Make this attempt the only one allowed to send the order's email.

    Creates the item as SENDING, or takes over a SENDING item whose claim has expired or was
    released (its holder died or failed). Returns None when the claim is ours, else the item that
    stopped it: the order was handled, or another invocation holds a live claim (if that holder
    fails, its own message is retried). The claim outlives this invocation but never the queue's
    visibility timeout.
    """
    remaining_seconds = context.get_remaining_time_in_millis() // 1000
    return update_delivery(
        delivery,
        status="SENDING",
        event="Claimed",
        detail=context.aws_request_id,
        claim_seconds=min(remaining_seconds + CLAIM_MARGIN_SECONDS, MAX_CLAIM_SECONDS),
        extra_set=(
            ", #to = :to, sentTo = :sent_to, claimToken = :token"
            ", createdAt = if_not_exists(createdAt, :now_iso), #ttl = if_not_exists(#ttl, :ttl)"
        ),
        extra_add=" ADD attempts :one",
        condition=(
            "attribute_not_exists(orderId)"
            " OR (#status = :sending AND claimExpiresAt <= :now)"
        ),
        names={"#to": "to", "#ttl": "ttl"},
        values={
            ":to": delivery.to,
            ":sent_to": delivery.sent_to,
            ":token": delivery.claim_token,
            ":sending": "SENDING",
            ":ttl": int(time.time()) + delivery.ttl_seconds,
            ":one": 1,
        },
    )


def end_claim(delivery, *, status, event, detail, attribute, value):
    """End this attempt's claim (it expires now), moving the item to `status` and setting one
    more attribute. Applies only while the attempt still holds the claim: its token is on the
    item and SES feedback has not moved the status on."""
    return update_delivery(
        delivery,
        status=status,
        event=event,
        detail=detail,
        claim_seconds=0,
        extra_set=", #attribute = :value",
        condition="claimToken = :token AND #status = :sending",
        names={"#attribute": attribute},
        values={":value": value, ":token": delivery.claim_token, ":sending": "SENDING"},
    )


# --- SES ---------------------------------------------------------------------------------------

def send(delivery, subject, html_body, text_body):
    """Send the email with SES; returns the SES message id."""
    def utf8(text):
        """A message part in UTF-8, as SES needs it for anything that is not 7-bit ASCII."""
        return {"Data": text, "Charset": "UTF-8"}

    response = ses.send_email(
        Source=FROM_ADDRESS,
        Destination={"ToAddresses": [delivery.sent_to]},
        Message={"Subject": utf8(subject),
                 "Body": {"Html": utf8(html_body), "Text": utf8(text_body)}},
        ConfigurationSetName=CONFIGURATION_SET,
        # The feedback processor finds the item from these: they come back in every SES event
        # as `mail.tags`.
        Tags=[{"Name": "orderId", "Value": tag_value(delivery.order_id)},
              {"Name": "messageId", "Value": tag_value(delivery.message_id)}],
    )
    return response["MessageId"]


def classify_send_error(code, message):
    """PERMANENT, RELEASE or AMBIGUOUS: what a SendEmail error means for the order."""
    if code in NOT_ABOUT_THE_ORDER:
        return RELEASE
    if code == "MessageRejected" and any(
            phrase in message.lower() for phrase in ACCOUNT_STATE_REJECTIONS):
        return RELEASE
    if code in ABOUT_THE_ORDER:
        return PERMANENT
    # A read timeout, a closed connection, a 5xx, a code we do not know: SES may have taken it.
    return AMBIGUOUS


def handle_send_failure(delivery, error, log):
    """Decide what a failed SendEmail means for the order (classify_send_error) and record it;
    returns the record's outcome."""
    code = log["error"] = error_code(error)
    message = error_message(error)
    if message:
        log["sesMessage"] = mask_addresses(message)[:300]
    verdict = log["decision"] = classify_send_error(code, message)
    if verdict == PERMANENT:
        status, event, outcome = "FAILED", "Failed", FAILED
    elif verdict == RELEASE:
        status, event, outcome = "SENDING", "Released", RETRY
    else:
        # Keep the claim. The retry comes after the visibility timeout, when the claim has expired
        # and, if SES did accept the email, its Send event has set SENT: the retry then skips.
        return RETRY
    # If this write fails, the record is retried (lambda_handler logs `writeError`): the claim
    # expires before the retry comes, or the dead-letter queue keeps the order.
    end_claim(delivery, status=status, event=event, detail=code,
              attribute="error", value=f"{code}: {error}"[:500])
    return outcome


# --- The sending rate -------------------------------------------------------------------------

class Pacer:
    """Spaces this container's SendEmail calls so that all copies of the function together stay
    within the stack's share of the account's SES sending rate.

    The rate is read on the container's first send, not at import (a cold start makes no API
    call) and not on invocations that send nothing.
    """

    def __init__(self):
        self.interval = None  # seconds between two sends of this container, once known
        self.read_again_at = None  # after a failed read: when to try GetSendQuota again
        self.next_send_at = 0.0  # time.monotonic() of this container's next allowed send

    def must_read_rate(self):
        """Whether the next turn starts with a GetSendQuota call."""
        if self.interval is None:
            return True
        return self.read_again_at is not None and time.monotonic() >= self.read_again_at

    def read_rate(self, log):
        """Read the account's rate and derive this container's interval between sends. A failed
        read falls back to SAFE_SEND_RATE, to be read again after QUOTA_RETRY_SECONDS, instead of
        failing the batch."""
        try:
            account_rate = float(ses.get_send_quota()["MaxSendRate"])
            self.read_again_at = None
        except Exception as error:  # any failure: send at a safe rate, read again later
            account_rate = SAFE_SEND_RATE
            self.read_again_at = time.monotonic() + QUOTA_RETRY_SECONDS
            # A warning, not an error: the order is sent all the same, but an operator should
            # see it (AccessDenied means the role lost ses:GetSendQuota).
            log.update(level="WARNING", quotaError=error_code(error),
                       quotaMessage=error_message(error)[:200])
        container_rate = max(account_rate, SAFE_SEND_RATE) * RATE_SHARE / SEND_CONCURRENCY
        self.interval = 1 / container_rate
        log.update(accountSendRate=account_rate, containerSendRate=round(container_rate, 3))
        if self.interval > SLOW_TURN_SECONDS:
            log.update(level="WARNING", rateWarning=(
                f"one send every {self.interval:.1f} s per copy: SendMaxConcurrency "
                f"{SEND_CONCURRENCY} is too high for {account_rate * RATE_SHARE:g} emails a "
                "second (README, Capacity)"))

    def wait_seconds(self):
        """How long the next send would wait for its turn, at most: the time left of the current
        interval, plus the GetSendQuota call's worst case when the rate is still to be read."""
        wait = max(0.0, self.next_send_at - time.monotonic())
        return wait + (worst_case_seconds(SES_CONFIG) if self.must_read_rate() else 0.0)

    def wait_for_turn(self, log):
        """Sleep until this container's turn, and book the next turn one interval after this
        one; returns the seconds slept.

        The turns keep their beat: a send that comes late (a slow SES answer before it) does not
        push the later turns back, so the container still sends at its rate on average. After a
        pause longer than one interval the beat starts afresh, so a container never saves up
        turns for a burst: over any stretch of time it sends at most two more emails than its
        rate allows.
        """
        if self.must_read_rate():
            self.read_rate(log)
        now = time.monotonic()
        if now > self.next_send_at + self.interval:
            self.next_send_at = now
        wait = self.next_send_at - now
        if wait > 0:
            time.sleep(wait)
        self.next_send_at += self.interval
        return max(0.0, wait)


pacer = Pacer()


# --- One record, one batch ---------------------------------------------------------------------

def process_record(record, context, metrics, log):
    """Validate, claim, send and record one SQS record; returns its outcome.

    Raises InvalidOrder for a message that breaks the order contract. `log` collects the fields
    of the record's one log line; `metrics` collects counts.
    """
    order = parse_order(record["body"])
    customer = order["customerEmail"]
    canary = is_canary(order)
    # Sandbox mode redirects every email to the test inbox; the canary goes to the simulator.
    redirected = not PRODUCTION and not canary
    recipient = TEST_ADDRESS if redirected else customer
    log.update(orderId=order["orderId"], to=mask_email(customer), sentTo=mask_email(recipient))
    if canary:
        log["canary"] = True
    if not recipient:
        log["reason"] = "no TEST_EMAIL_ADDRESS"
        return RETRY
    # Rendered before the claim: a rendering bug leaves no claim behind.
    subject, html_body, text_body = render_email(order, sandbox=redirected)
    delivery = Delivery(order_id=order["orderId"], message_id=message_id_for(order["orderId"]),
                        to=customer, sent_to=recipient, claim_token=uuid.uuid4().hex,
                        ttl_seconds=CANARY_TTL_SECONDS if canary else RECORD_TTL_SECONDS)

    existing = claim(delivery, context)
    # An item with our own token: botocore resent the claim after a lost response although the
    # first write had applied, and the resend failed its condition on our own item. It is ours.
    if existing and existing.get("claimToken") != {"S": delivery.claim_token}:
        metrics["DuplicatesSkipped"] += 1
        log["existingStatus"] = existing["status"]["S"]
        return DUPLICATE

    waited = pacer.wait_for_turn(log)
    if waited:
        log["pacedMillis"] = round(waited * 1000, 1)
    started = time.perf_counter()
    try:
        ses_message_id = send(delivery, subject, html_body, text_body)
    except Exception as error:
        metrics["SendFailures"] += 1
        return handle_send_failure(delivery, error, log)

    # SES accepted the email: from here on, nothing may lead to a second send.
    # The call's time is logged, not published as a metric (each metric is billed every hour it
    # is published): the canary's end-to-end latency and the function's duration are.
    log["sesMillis"] = round((time.perf_counter() - started) * 1000, 1)
    metrics["CanarySent" if canary else "EmailsSent"] += 1
    log["sesMessageId"] = ses_message_id
    # A failed condition is fine: SES feedback (Send, Delivery) got there first and ranks higher,
    # or botocore resent a write that had applied. Any other error: acknowledge anyway (the SES
    # Send event sets SENT moments later, through the feedback processor), count and log it.
    try:
        end_claim(delivery, status="SENT", event="Accepted", detail=ses_message_id,
                  attribute="sesMessageId", value=ses_message_id)
    except Exception as error:
        metrics["RecordFailures"] += 1
        log.update(level="ERROR", writeError=error_code(error))
    return SENT


LOG_LEVELS = ("INFO", "WARNING", "ERROR")  # from the least severe


def log_level(outcome):
    """WARNING for a record that will be retried, ERROR for an order SES refused for good."""
    if outcome in RETRIED_OUTCOMES:
        return "WARNING"
    return "ERROR" if outcome == FAILED else "INFO"


def metrics_line(metrics):
    """One CloudWatch Embedded Metric Format document. No dimensions: every combination of
    dimension values would be a separately billed metric."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [
                    {"Name": name, "Unit": "Count"} for name in metrics],
            }],
        },
        **metrics,
    }


def has_time_for_a_record(context, log):
    """Whether the invocation's remaining time covers one record's worst case, after its wait
    for a sending turn."""
    remaining_seconds = context.get_remaining_time_in_millis() / 1000
    turn_seconds = pacer.wait_seconds()
    if remaining_seconds >= RECORD_WORST_CASE_SECONDS + turn_seconds:
        return True
    log["reason"] = (f"not started: {remaining_seconds:.1f} s left, a record may need "
                     f"{RECORD_WORST_CASE_SECONDS} s")
    if turn_seconds:
        log["reason"] += f" after {turn_seconds:.1f} s for its sending turn"
    return False


def lambda_handler(event, context):
    """SQS batch in, {"batchItemFailures": [...]} out: only the failed records are retried."""
    metrics = collections.Counter()
    failures = []
    for record in event["Records"]:
        log = {"sqsMessageId": record["messageId"]}
        try:
            if has_time_for_a_record(context, log):
                outcome = process_record(record, context, metrics, log)
            else:
                outcome = NOT_STARTED
        except InvalidOrder as invalid:
            metrics["InvalidMessages"] += 1
            outcome = INVALID
            log["reason"] = str(invalid)
        except Exception as error:  # one broken record never fails the batch
            outcome = RETRY
            # After a failed send (`error` is set), the exception came from recording it.
            log["writeError" if "error" in log else "error"] = error_code(error)
        # The more severe of the outcome's level and one a step asked for (a failed write).
        level = max(log.pop("level", "INFO"), log_level(outcome), key=LOG_LEVELS.index)
        print(json.dumps({"level": level, "message": f"Order {outcome}", "outcome": outcome,
                          **log}))
        if outcome in RETRIED_OUTCOMES:
            failures.append({"itemIdentifier": record["messageId"]})
    # Only non-zero metrics: each metric is billed per hour in which it is published.
    if metrics:
        print(json.dumps(metrics_line(metrics)))
    return {"batchItemFailures": failures}
