"""SES, played: the emails it accepted and the events it publishes about them.

`SesPlayer.accept` records each email SES (moto) accepted as an `Email`; the recipient's
mailbox-simulator address (`outcome_of`) decides its outcome. For that outcome the player builds
the event records a real SES publishes (`ses_event`, in AWS's documented format, with the message
tags) and publishes them to the topics the template's event destinations name, seconds later,
shuffled, some twice and minutes late. `ArrivalLog` records what the feedback function was
handed, to show the events really arrived out of order.
"""

from __future__ import annotations

import base64
import heapq
import json
import random
import time as _real_time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from simulation.runtime import START_EPOCH, VirtualClock
from simulation.template import ACCOUNT_ID, REGION

SIMULATOR_DOMAIN = "simulator.amazonses.com"
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
SES_EVENT_DELAY_S = (1, 5)  # SES publishes an email's events seconds after accepting it
LATE_DUPLICATE_S = (0, 600)  # SNS/SQS may deliver a copy of an event minutes later


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
    """The outcome of a recipient, from its local part (`bounce+17@...` -> bounce): the
    mailbox simulator's, which the simulated customers' own addresses follow too. Any other
    address is delivered."""
    local, _, domain = address.rpartition("@")
    name = local.split("+", 1)[0].lower()
    if name in EXPECTED_STATUS and (domain.lower() == SIMULATOR_DOMAIN or name != "suppressionlist"):
        return name
    return "success"


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
                 rng: random.Random, duplicate_share: float, account: Any = None):
        self.routes, self.sns, self.clock, self.rng = routes, sns, clock, rng
        self.account = account  # the SES model: counts sends, bounces, complaints for reputation
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
            config_set=params.get("ConfigurationSetName"), accepted_at=self.clock.time(),
            outcome=outcome_of(destination[0]) if destination else "success",
            order_id=decode_tag(tags.get("orderId")), message_id=decode_tag(tags.get("messageId")),
        )
        self.emails.append(email)
        if self.account is not None and destination:
            self.account.note("sent", email.accepted_at, email.config_set, destination[0])
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
            counted = {"Bounce": "bounce", "Complaint": "complaint"}.get(kind)
            if (counted and self.account is not None and email.destination
                    and email.outcome != "suppressionlist"):  # SES's own list: not counted
                self.account.note(counted, email.accepted_at + offset_ms / 1000, email.config_set,
                                  email.destination[0])
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

    def observe(self, records: list[dict], result=None) -> None:
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
