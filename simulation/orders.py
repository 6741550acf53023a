"""The orders a run publishes: valid ones, duplicated ones and ones that break the contract.

A valid order's recipient is a mailbox-simulator address that picks its email's outcome
(OUTCOME_WEIGHTS); an invalid order breaks one rule of the order contract and must end in the
send DLQ. `make_orders` returns the distinct orders and the sequence they are published in.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from simulation.ses import SIMULATOR_DOMAIN

OUTCOME_WEIGHTS = {"success": 70, "ooto": 10, "bounce": 8, "complaint": 6, "suppressionlist": 6}


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


def valid_order(index: int, rng: random.Random, domain: str = SIMULATOR_DOMAIN,
                weights: dict[str, int] = OUTCOME_WEIGHTS) -> Order:
    """An order that satisfies the order contract; its recipient picks the email's outcome."""
    outcome = rng.choices(list(weights), weights=list(weights.values()))[0]
    # Every 25th id holds characters SES tags refuse: the sender must encode it reversibly.
    order_id = f"ORD/ß#{index:06d}" if index % 25 == 7 else f"ORD-20261127-{index:06d}"
    items = [{"name": name, "quantity": rng.randint(1, 3), "unitPrice": price}
             for name, price in rng.sample(CATALOGUE, rng.randint(1, 3))]
    total = sum(Decimal(item["unitPrice"]) * item["quantity"] for item in items)
    body = json.dumps({
        "orderId": order_id,
        "customerEmail": f"{outcome}+{index}@{domain}",
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


def make_orders(count: int, rng: random.Random, duplicates: float, invalid: float,
                domain: str = SIMULATOR_DOMAIN,
                weights_at: Callable[[float], dict[str, int]] | None = None,
                ) -> tuple[list[Order], list[tuple[float, str]]]:
    """`count` distinct orders and the sequence they are published in, as (position, body):
    order i is published at position i, its copies later (the caller turns positions into times).

    A share `invalid` breaks the contract; a share `duplicates` of the valid ones is published
    2-3 times, the copy either right after the original (same or next batch: a race between two
    claims) or anywhere later (the original is long done).
    """
    orders = []
    for index in range(count):
        if rng.random() < invalid:
            orders.append(invalid_order(index, INVALID_KINDS[index % len(INVALID_KINDS)]))
        else:
            weights = weights_at(index / count) if weights_at else OUTCOME_WEIGHTS
            orders.append(valid_order(index, rng, domain, weights))
    keyed = []
    for index, order in enumerate(orders):
        keyed.append((float(index), order.body))
        if order.valid and rng.random() < duplicates:
            for _ in range(rng.choice((1, 2))):
                order.copies += 1
                later = rng.uniform(0, 30) if rng.random() < 0.5 else rng.uniform(0, count)
                keyed.append((index + later, order.body))
    keyed.sort()
    return orders, keyed
