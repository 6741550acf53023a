"""The capacity model: how fast the stack drains a backlog of orders at a given SES sending rate.

A small discrete-event model of the send path, fast enough to run at build time (the README's
capacity table is generated from it and covered by `build_template.py --check`):

- the event source mapping's poller takes batches of BatchSize from the queue, at most
  MaximumConcurrency invocations at once; a partial batch waits for the batching window;
- an invocation pays a cold start on its container's first use, then handles its records one
  after the other: the claim (DynamoDB), the wait for its sending turn, SendEmail, the record
  (DynamoDB), each call taking a latency drawn from simulation/latency.py;
- the pacer's rule, as handlers/send_order_email.py's `Pacer` applies it: the account's rate
  (GetSendQuota on the container's first send) times the share, divided by the concurrency, on a
  beat that a late send does not push back;
- the time budget: a record is started only while the invocation's remaining time covers its
  worst case plus its wait; the others go back to the queue until its visibility timeout passed.

It leaves out what the full simulation (simulate.py) plays: moto, SES events and the feedback
path, faults, the scenarios' account states, SES's own throttling (the pacer keeps within it).
tests/test_capacity.py checks that the two agree on a drain, and that the model's copies of the
handler's constants match the handler.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass

from simulation.latency import TYPICAL
from simulation.runtime import COLD_START_S, CPU_PER_RECORD_S, WARM_START_S
from simulation.timeline import hours_minutes_seconds

# The send handler's constants (tests/test_capacity.py compares them with the handler's own).
RECORD_WORST_CASE_S = 13  # RECORD_WORST_CASE_SECONDS
RATE_READ_WORST_CASE_S = 6  # worst_case_seconds(SES_CONFIG): a GetSendQuota that times out

# The table: the sandbox's rate, the usual first production rate, and two raised ones.
RATES = (1, 14, 50, 200)
BACKLOG = 10_000
# The search for the concurrency drains a smaller backlog at each step: the sustained rate it
# looks at is the middle of the drain, which is the same for a smaller one.
PROBE_ORDERS = 5_000
# The recommended concurrency is the smallest whose copies sustain this share of the rate the
# stack may use in the middle of a drain (a copy that cannot keep its beat, because its calls
# take longer than its interval, falls behind)...
TARGET_SUSTAINED = 0.97
MIN_CONCURRENCY = 2  # Lambda's minimum MaximumConcurrency for an SQS event source
# ...and at most half a second of the rate: each copy may send up to two emails more than its
# part over any stretch of time (the pacer's beat), and all copies together must stay within
# the one second of burst SES tolerates (simulation/ses_model.py, RATE_BURST_S).
MAX_BURST_S = 1.0
SEED = "capacity"


@dataclass(frozen=True)
class SendPath:
    """What the template fixes about the send path."""

    batch_size: int
    batching_window_s: float
    timeout_s: float
    visibility_timeout_s: float

    @classmethod
    def from_template(cls, template: dict) -> "SendPath":
        resources = template["Resources"]
        mapping = resources["LambdaSendOrderEmailEventSourceMapping"]["Properties"]
        function = resources["LambdaSendOrderEmail"]["Properties"]
        queue = resources["SendOrderEmailQueue"]["Properties"]
        return cls(batch_size=int(mapping["BatchSize"]),
                   batching_window_s=float(mapping["MaximumBatchingWindowInSeconds"]),
                   timeout_s=float(function["Timeout"]),
                   visibility_timeout_s=float(queue["VisibilityTimeout"]))


@dataclass(frozen=True)
class Drain:
    """How a backlog of `orders` queued at once left: the time of the last SES accept, the
    rate it left at, and the p95 of each order's time from the start to SES."""

    orders: int
    concurrency: int
    usable_rate: float
    drain_s: float
    p95_to_ses_s: float
    # The rate in the middle of the drain (from the 10th to the 90th percentile of the accepts):
    # what the copies sustain, without the cold starts at the start and the last batches.
    sustained_rate: float

    @property
    def throughput(self) -> float:
        return self.orders / self.drain_s

    @property
    def efficiency(self) -> float:
        return (self.orders / self.usable_rate) / self.drain_s


class _Container:
    """One execution environment of the send function: its pacer's state."""

    def __init__(self):
        self.interval: float | None = None  # unknown until the first send reads the rate
        self.next_send_at = 0.0


def drain(path: SendPath, *, max_send_rate: float, concurrency: int, orders: int,
          share: float = 1.0, seed: str = SEED) -> Drain:
    """Play a backlog of `orders` queued at time 0 through the send path; see the module
    docstring for what is modelled."""
    rng = random.Random(f"{seed}:{max_send_rate}:{concurrency}:{orders}:{share}")
    dynamodb, ses_send = TYPICAL[("dynamodb", None)], TYPICAL[("ses", "SendEmail")]
    ses_other = TYPICAL[("ses", None)]
    container_interval = concurrency / (max(max_send_rate, 1.0) * share)
    queue: deque[int] = deque(range(orders))  # visible messages, oldest first
    returning: list[tuple[float, int]] = []  # (visible again at, order) after a release
    slots = [0.0] * concurrency  # when each concurrency slot is free again
    containers: list[_Container | None] = [None] * concurrency
    accepted: list[float] = []
    while len(accepted) < orders:
        slot = min(range(concurrency), key=slots.__getitem__)
        now = slots[slot]
        while returning and returning[0][0] <= now:
            queue.append(heapq.heappop(returning)[1])
        if not queue:
            slots[slot] = returning[0][0]  # nothing visible until a released order returns
            continue
        batch = [queue.popleft() for _ in range(min(path.batch_size, len(queue)))]
        received_at = now
        if len(batch) < path.batch_size:
            now += path.batching_window_s  # a partial batch waits for the window
        start = now
        container = containers[slot]
        if container is None:
            container = containers[slot] = _Container()
            now += COLD_START_S
        now += WARM_START_S + CPU_PER_RECORD_S * len(batch)
        for index, order in enumerate(batch):
            reading = container.interval is None
            wait = max(0.0, container.next_send_at - now)
            needed = RECORD_WORST_CASE_S + wait + (RATE_READ_WORST_CASE_S if reading else 0)
            if path.timeout_s - (now - start) < needed:
                for released in batch[index:]:
                    heapq.heappush(returning,
                                   (received_at + path.visibility_timeout_s, released))
                break
            now += dynamodb.draw(rng)  # the claim
            if reading:
                now += ses_other.draw(rng)  # GetSendQuota
                container.interval = container_interval
            if now > container.next_send_at + container.interval:
                container.next_send_at = now  # idle for more than a turn: a fresh beat
            now = max(now, container.next_send_at)
            container.next_send_at += container.interval
            now += ses_send.draw(rng)
            accepted.append(now)
            now += dynamodb.draw(rng)  # the record SENT
        slots[slot] = now
    accepted.sort()
    tenth, ninetieth = math.ceil(0.1 * orders) - 1, math.ceil(0.9 * orders) - 1
    middle_s = accepted[ninetieth] - accepted[tenth]
    return Drain(orders=orders, concurrency=concurrency, usable_rate=max_send_rate * share,
                 drain_s=accepted[-1], p95_to_ses_s=accepted[math.ceil(0.95 * orders) - 1],
                 sustained_rate=(ninetieth - tenth) / middle_s if middle_s > 0 else math.inf)


def recommended_concurrency(path: SendPath, max_send_rate: float, share: float = 1.0) -> int:
    """The smallest SendMaxConcurrency whose copies, paced to their part of the rate, sustain
    TARGET_SUSTAINED of the rate the stack may use while draining PROBE_ORDERS; never more
    than the burst allows (MAX_BURST_S), never less than Lambda's minimum."""
    usable_rate = max_send_rate * share
    # One copy sends one email at a time: it cannot keep a beat shorter than its mean record.
    mean_record_s = (2 * _mean(TYPICAL[("dynamodb", None)])
                     + _mean(TYPICAL[("ses", "SendEmail")]) + CPU_PER_RECORD_S)
    ceiling = max(MIN_CONCURRENCY, math.floor(usable_rate * MAX_BURST_S / 2))
    low = min(ceiling, max(MIN_CONCURRENCY, math.floor(usable_rate * mean_record_s)))

    def enough(concurrency: int) -> bool:
        result = drain(path, max_send_rate=max_send_rate, share=share,
                       concurrency=concurrency, orders=PROBE_ORDERS)
        return result.sustained_rate >= TARGET_SUSTAINED * usable_rate

    # Binary search for the smallest that is enough (more copies only add headroom).
    high = ceiling
    while low < high:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _mean(latency) -> float:
    """The mean of a log-normal latency (its median times exp(sigma^2 / 2))."""
    sigma = math.log(latency.p95_s / latency.median_s) / 1.645
    return latency.median_s * math.exp(sigma * sigma / 2)


def capacity_rows(path: SendPath) -> list[dict]:
    """One row per rate of RATES: the settings and what they give on a BACKLOG."""
    rows = []
    for rate in RATES:
        concurrency = recommended_concurrency(path, rate)
        result = drain(path, max_send_rate=rate, concurrency=concurrency, orders=BACKLOG)
        rows.append({"rate": rate, "concurrency": concurrency, "share_percent": 100,
                     "throughput": result.throughput, "drain_s": result.drain_s,
                     "p95_to_ses_s": result.p95_to_ses_s})
    return rows


def markdown_table(template: dict) -> str:
    """The README's capacity table, from the template's send path and the model."""
    lines = [
        "| SES max send rate | `SendMaxConcurrency` | `SesRateSharePercent` | Throughput | "
        f"{BACKLOG:,} queued orders drain in | p95 time to SES in that drain |",
        "|---|---|---|---|---|---|",
    ]
    for row in capacity_rows(SendPath.from_template(template)):
        lines.append(
            f"| {row['rate']}/s | {row['concurrency']} | {row['share_percent']} | "
            f"{row['throughput']:.1f} emails/s | {_duration(row['drain_s'])} | "
            f"{_duration(row['p95_to_ses_s'])} |")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """`2 h 47 min`, `12 min 0 s` or `52 s`."""
    hours, minutes, secs = hours_minutes_seconds(seconds)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
