"""Seeded fault injection: what `--faults RATE` does to a run.

SES sends are throttled and DynamoDB calls fail at RATE (injected before the real call, by the
runtime's `Instrument`), and the send function dies right after SES accepted an email at
RATE x CRASH_SHARE. The same seed injects the same faults.
"""

from __future__ import annotations

import random
from collections import Counter

CRASH_SHARE = 0.5  # --faults RATE kills the send function after an accepted send at RATE x this


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
