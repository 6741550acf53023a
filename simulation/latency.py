"""How long AWS calls take on the virtual clock, and what a handler's client does when one is slow.

Every call a handler makes takes a modelled time on the invocation's own clock (`VirtualClock`):
a draw from a log-normal distribution per service and operation, which scenarios can slow down
(a brownout). A call slower than the client's read timeout is what botocore would see: the
request reached AWS and was processed (moto processes it), but the answer came too late, so the
client raises `ReadTimeoutError` after waiting `read_timeout`, and botocore's retry handler
decides whether to try again (its back-off sleeps pass on the virtual clock too). That is the
hardest case for the send handler: SES may have accepted an email whose answer was lost.

Typical latencies (medians, p95) from AWS's published figures where there are some (DynamoDB:
single-digit milliseconds) and from common measurements of SES's API otherwise.
"""

from __future__ import annotations

import contextlib
import math
import random
import time as _real_time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Lognormal:
    """A call latency in seconds: log-normal with this median and 95th percentile."""

    median_s: float
    p95_s: float

    def draw(self, rng: random.Random) -> float:
        sigma = math.log(self.p95_s / self.median_s) / 1.645
        return self.median_s * math.exp(sigma * rng.gauss(0.0, 1.0))


# (service, operation) -> latency; (service, None) is the service's default.
TYPICAL = {
    ("dynamodb", None): Lognormal(median_s=0.006, p95_s=0.015),
    ("ses", "SendEmail"): Lognormal(median_s=0.060, p95_s=0.180),
    ("ses", None): Lognormal(median_s=0.040, p95_s=0.120),
    ("sesv2", None): Lognormal(median_s=0.040, p95_s=0.120),
    ("lambda", None): Lognormal(median_s=0.050, p95_s=0.150),
}
DEFAULT = Lognormal(median_s=0.020, p95_s=0.060)


@dataclass
class Slowdown:
    """From `start` to `end` (epoch seconds), calls to `service` take `factor` times as long plus
    `extra` seconds drawn from `extra_range` (a brownout)."""

    service: str
    start: float
    end: float
    factor: float = 1.0
    extra_range: tuple[float, float] = (0.0, 0.0)


@dataclass
class LatencyModel:
    """Draws each call's latency (seeded), slowed down by the scenario's brownouts."""

    rng: random.Random
    slowdowns: list[Slowdown] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    def latency(self, service: str, operation: str, now: float) -> float:
        typical = TYPICAL.get((service, operation)) or TYPICAL.get((service, None)) or DEFAULT
        seconds = typical.draw(self.rng)
        for slow in self.slowdowns:
            if slow.service == service and slow.start <= now < slow.end:
                seconds = seconds * slow.factor + self.rng.uniform(*slow.extra_range)
        return seconds

    def attach(self, client, clock) -> None:
        """Make every attempt of `client` take its latency on `clock`; an attempt slower than the
        client's read timeout is processed by AWS (moto) and then lost (ReadTimeoutError)."""
        service = client.meta.service_model.service_name
        config = client.meta.config

        def before_send(request, event_name, **_):
            operation = event_name.rsplit(".", 1)[-1]
            seconds = self.latency(service, operation, clock.time())
            self.stats[f"{service}.{operation}.calls"] += 1
            if seconds > config.read_timeout:
                self.stats[f"{service}.{operation}.read_timeouts"] += 1
                request.simulate_lost_after_s = config.read_timeout
                return None
            clock.advance(seconds)
            return None

        def after_processing(request, **_):
            lost_after = getattr(request, "simulate_lost_after_s", None)
            if lost_after is not None:
                # Imported here: the capacity model (simulation/capacity.py) reads this module's
                # latencies at build time, where botocore is not installed.
                from botocore.exceptions import ReadTimeoutError

                clock.advance(lost_after)
                raise ReadTimeoutError(endpoint_url=request.url)

        # Specific events run before moto's generic `before-send` stubber, the generic
        # `register_last` handler after it (once moto processed the request).
        client.meta.events.register_first(f"before-send.{service}", before_send)
        client.meta.events.register_last("before-send", after_processing)


class BotocoreSleep:
    """Stands in for `botocore.endpoint.time`: a retry's back-off passes on the virtual clock."""

    def __init__(self, clock):
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        self._clock.advance(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_time, name)


@contextlib.contextmanager
def virtual_retry_sleeps(clock, seed: str):
    """botocore's retry back-off on the virtual clock, with seeded jitter (it draws from the
    `random` module's global generator): the same seed repeats a run."""
    import botocore.endpoint

    saved_time, saved_state = botocore.endpoint.time, random.getstate()
    botocore.endpoint.time = BotocoreSleep(clock)
    random.seed(f"{seed}:botocore")
    try:
        yield
    finally:
        botocore.endpoint.time = saved_time
        random.setstate(saved_state)
