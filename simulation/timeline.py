"""What happened to each order, when, on the virtual clock: the raw data of the time figures.

`Timeline` records when each order was first published, when SES first accepted its email, when
its Delivery was recorded in the table, how many times the send function received it, and
whether the operator moved it out of a dead-letter queue; plus what the scenario did and when.
It is plain data, so the shards' timelines merge and cross process boundaries.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from simulation.runtime import START_EPOCH


def order_id_of(body: str) -> str | None:
    """The orderId in a queue message body (raw JSON or an SNS envelope), if it has one."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("Type") == "Notification":
            doc = json.loads(doc.get("Message"))
    except (TypeError, ValueError):
        return None
    order_id = doc.get("orderId") if isinstance(doc, dict) else None
    return order_id if isinstance(order_id, str) else None


@dataclass
class Timeline:
    published: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)
    delivered: dict[str, float] = field(default_factory=dict)
    receives: Counter = field(default_factory=Counter)
    redriven: dict[str, float] = field(default_factory=dict)
    happenings: list[tuple[float, str]] = field(default_factory=list)

    def publish(self, body: str, at: float) -> None:
        order_id = order_id_of(body)
        if order_id is not None and not order_id.startswith("canary-"):
            self.published.setdefault(order_id, at)

    def accept(self, order_id: str | None, at: float) -> None:
        if order_id is not None:
            self.accepted.setdefault(order_id, at)

    def observe_send(self, records: list[dict], result: Any) -> None:
        """The send function was handed these records."""
        for record in records:
            order_id = order_id_of(record["body"])
            if order_id is not None:
                self.receives[order_id] += 1

    def observe_feedback(self, records: list[dict], result: Any) -> None:
        """The feedback function ran: a Delivery it recorded is in the table when it ends."""
        for line in result.log_lines:
            if (line.get("eventType") == "Delivery" and line.get("outcome") in (
                    "applied", "recorded") and isinstance(line.get("orderId"), str)):
                self.delivered.setdefault(line["orderId"], result.ended_at)

    def redrive(self, bodies: list[str], at: float) -> None:
        for body in bodies:
            order_id = order_id_of(body)
            if order_id is not None:
                self.redriven.setdefault(order_id, at)

    def happened(self, at: float, what: str) -> None:
        self.happenings.append((at, what))

    def as_data(self) -> dict:
        return {"published": self.published, "accepted": self.accepted,
                "delivered": self.delivered, "receives": dict(self.receives),
                "redriven": self.redriven, "happenings": self.happenings}


def merge_timelines(timelines: list[dict]) -> dict:
    """One timeline from the shards' (each order lives in one shard; happenings are the same
    scenario played on each shard, kept once)."""
    merged: dict = {"published": {}, "accepted": {}, "delivered": {}, "receives": {},
                    "redriven": {}, "happenings": []}
    for timeline in timelines:
        for key in ("published", "accepted", "delivered", "receives", "redriven"):
            merged[key].update(timeline[key])
    # The same scenario happens to every copy at the same times; the end-of-run redrive comes
    # when each copy settles: the report keeps the earliest of each.
    first: dict[str, float] = {}
    for timeline in timelines:
        for at, what in timeline["happenings"]:
            first[what] = min(at, first.get(what, at))
    merged["happenings"] = sorted((at, what) for what, at in first.items())
    return merged


def hours_minutes_seconds(seconds: float) -> tuple[int, int, int]:
    """A span of time in whole hours, minutes and seconds (rounded to the second)."""
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, seconds = divmod(rest, 60)
    return hours, minutes, seconds


def clock_label(at: float) -> str:
    """`t+2h05m` (or `t+45s`): a virtual time, from the start of the run."""
    hours, minutes, seconds = hours_minutes_seconds(at - START_EPOCH)
    if hours:
        return f"t+{hours}h{minutes:02d}m"
    if minutes:
        return f"t+{minutes}m{seconds:02d}s"
    return f"t+{seconds}s"
