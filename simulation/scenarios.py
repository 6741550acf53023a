"""Scenarios: the days the stack must survive, played on the virtual clock.

A scenario says how the orders arrive, in what state the SES account starts (simulation/
ses_model.py), what happens to it and when (AWS verifies the domain, pauses the account, ...),
which AWS calls slow down (a brownout), and what the operator does as the README's runbook says
(redrive the dead-letter queue once the cause is fixed). Every scenario must keep the invariants:
no email twice, no order lost, no order FAILED for a reason that is not about that order, and
every email tracked once the cause is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from simulation.latency import Slowdown
from simulation.ses_model import PENDING, SesModel
from simulation.template import SIM_PARAMETERS

MINUTE, HOUR = 60, 3600
DOMAIN = SIM_PARAMETERS["VerifiedDomain"]


@dataclass(frozen=True)
class Action:
    """Something that happens `at_s` seconds into the run; `what` is its line in the report."""

    at_s: float
    what: str
    do: Callable[[Any], None]  # receives the running Simulation


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    # How long it takes to publish the orders (the i-th of n is published at i/n of it).
    arrival_span_s: Callable[[int], float]
    # The SES account at the start, given the number of orders of this copy of the stack.
    account: Callable[[SesModel, int], None] = lambda ses, orders: None
    actions: tuple[Action, ...] = ()
    slowdowns: tuple[tuple[str, float, float, float, tuple[float, float]], ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)
    # Customers at this domain instead of mailbox-simulator addresses: the SES sandbox accepts
    # the simulator, and mail to the simulator never counts toward reputation. Their outcome
    # still follows the local part (`bounce+17@...`), drawn from `outcome_weights`.
    customer_domain: str | None = None
    # The outcome weights of the i-th of n orders, as a function of i/n (None: the defaults).
    outcome_weights: Callable[[float], dict[str, int]] | None = None
    # When the circuit breaker pauses sending, the operator resumes this long afterwards (the
    # breaker runbook: confirm, find and fix the cause, resume). None: nobody does.
    resume_after_pause_s: float | None = None
    # How many copies of the stack the orders are split over (None: `--workers`). A scenario
    # about one account's sending rate runs one copy: copies would each have their own account.
    copies: int | None = None
    # The orders are in the send DLQ when the run starts (an earlier outage put them there); the
    # scenario's redrive moves them back to the send queue.
    starts_in_dlq: bool = False
    # A burst scenario: how fast the stack drains it is measured from this moment, the first
    # publish ("publish") or the operator's redrive ("redrive"), to the last email SES accepted.
    drain_from: str | None = None

    @property
    def last_action_s(self) -> float:
        return max((action.at_s for action in self.actions), default=0.0)

    def slowdown_windows(self, start: float) -> list[Slowdown]:
        return [Slowdown(service=service, start=start + begin, end=start + end, factor=factor,
                         extra_range=extra)
                for service, begin, end, factor, extra in self.slowdowns]


def redrive(what: str, at_s: float) -> Action:
    """The runbook's step once the cause is fixed: move each DLQ back to its queue."""
    return Action(at_s, what, lambda simulation: simulation.operator_redrive())


def on_account(what: str, at_s: float, change: Callable[[SesModel], None]) -> Action:
    return Action(at_s, what, lambda simulation: change(simulation.ses_account))


def resume(what: str, at_s: float) -> Action:
    """The breaker runbook's one command: the circuit breaker invoked with {"action": "resume"}."""
    return Action(at_s, what, lambda simulation: simulation.operator_resume())


RESUME_STEP = "operator resumes sending (runbook breaker-config-set-reputation)"


def _bounce_storm(fraction: float) -> dict[str, int]:
    # Real customers: 1 % of addresses bounce; for the middle third of the orders an upstream bug
    # publishes orders with bad addresses and 15 % bounce, until the source is fixed.
    if 1 / 3 <= fraction < 2 / 3:
        return {"success": 85, "bounce": 15}
    return {"success": 99, "bounce": 1}


def _pending_identity(ses: SesModel, orders: int) -> None:
    ses.add_identity(DOMAIN, PENDING)


def _sandbox(ses: SesModel, orders: int) -> None:
    ses.grant_production_access()  # the quotas below are the sandbox's own
    ses.sandbox = True
    ses.max_send_rate, ses.max_24_hour_send = 1.0, 200.0


def _low_quota(ses: SesModel, orders: int) -> None:
    # A young production account: a low rate, and a daily quota that this burst outgrows.
    ses.max_send_rate = 2.0
    ses.max_24_hour_send = max(1, int(orders * 0.75))


SCENARIOS = {
    "steady": Scenario(
        name="steady",
        summary="a normal busy hour: orders at a steady 4 a second, nothing breaks",
        arrival_span_s=lambda orders: orders / 4,
    ),
    "first-deploy": Scenario(
        name="first-deploy",
        summary=("the first deploy: the domain identity is pending (DKIM not yet in DNS) for the "
                 "first 2 hours, every send is refused; the operator redrives the DLQ once SES "
                 "shows it verified"),
        arrival_span_s=lambda orders: 4 * HOUR,
        account=_pending_identity,
        actions=(
            on_account("DKIM records found: SES verifies the domain identity", 2 * HOUR,
                       lambda ses: ses.verify(DOMAIN)),
            redrive("operator redrives the send DLQ (runbook send-dlq-not-empty)",
                    2 * HOUR + 15 * MINUTE),
        ),
    ),
    "sandbox-account": Scenario(
        name="sandbox-account",
        summary=("EnableProductionSES=true on an account still in the SES sandbox: sends to "
                 "customers are refused until AWS grants production access after 1 hour; the "
                 "operator then redrives the DLQ"),
        arrival_span_s=lambda orders: 2 * HOUR,
        account=_sandbox,
        customer_domain="customers.example.net",
        outcome_weights=lambda fraction: {"success": 1},
        actions=(
            on_account("AWS grants production access (14/s, 50,000 a day)", HOUR,
                       lambda ses: ses.grant_production_access()),
            redrive("operator redrives the send DLQ (runbook send-dlq-not-empty)",
                    HOUR + 10 * MINUTE),
        ),
    ),
    "account-paused": Scenario(
        name="account-paused",
        summary=("AWS pauses the account 20 minutes in and resumes it 2 hours later: the canary "
                 "alarm fires meanwhile; the operator then redrives the DLQ"),
        arrival_span_s=lambda orders: 3 * HOUR,
        actions=(
            on_account("AWS pauses sending for the account", 20 * MINUTE,
                       lambda ses: ses.pause_account()),
            on_account("AWS resumes sending for the account", 2 * HOUR + 20 * MINUTE,
                       lambda ses: ses.resume_account()),
            redrive("operator redrives the send DLQ (runbook send-dlq-not-empty)",
                    2 * HOUR + 30 * MINUTE),
        ),
    ),
    "quota": Scenario(
        name="quota",
        summary=("a 10x burst on a young account: a max send rate of 2/s and a daily quota of "
                 "three quarters of the orders; AWS raises the quota after 1 hour and the "
                 "operator redrives the DLQ"),
        arrival_span_s=lambda orders: 10 * MINUTE,
        account=_low_quota,
        actions=(
            on_account("AWS raises the quota (14/s, 50,000 a day)", HOUR,
                       lambda ses: ses.grant_production_access()),
            redrive("operator redrives the send DLQ (runbook send-dlq-not-empty)",
                    HOUR + 5 * MINUTE),
        ),
    ),
    "brownout": Scenario(
        name="brownout",
        summary=("DynamoDB and SES slow down for 10 minutes (calls of 0.2-1 s and 1-7 s, beyond "
                 "the clients' read timeouts): timeouts, retries and the time budget; the "
                 "operator redrives the DLQs afterwards"),
        arrival_span_s=lambda orders: 30 * MINUTE,
        slowdowns=(
            ("dynamodb", 10 * MINUTE, 20 * MINUTE, 1.0, (0.2, 1.0)),
            ("ses", 10 * MINUTE, 20 * MINUTE, 1.0, (1.0, 7.0)),
        ),
        actions=(
            redrive("operator redrives the DLQs (runbooks send-dlq-not-empty, "
                    "feedback-dlq-not-empty)", 40 * MINUTE),
        ),
    ),
}
SCENARIOS["bounce-storm"] = Scenario(
    name="bounce-storm",
    summary=("real customers, 1 % bouncing; from 40 to 80 minutes an upstream bug publishes bad "
             "addresses and 15 % bounce: the circuit breaker pauses sending; the operator, having "
             "fixed the source, resumes 30 minutes after the pause"),
    arrival_span_s=lambda orders: 2 * HOUR,
    customer_domain="customers.example.net",
    outcome_weights=_bounce_storm,
    resume_after_pause_s=30 * MINUTE,
)
SCENARIOS["flash-sale"] = Scenario(
    name="flash-sale",
    summary=("a flash sale: all the orders within one minute, against SES's usual first "
             "production rate of 14 a second and the default parameters; one copy of the "
             "stack, one account"),
    arrival_span_s=lambda orders: MINUTE,
    copies=1,
    drain_from="publish",
)
SCENARIOS["replay"] = Scenario(
    name="replay",
    summary=("an earlier outage left the orders in the send DLQ (run it with thousands: "
             "--orders 5000); the operator redrives them all at once, one minute in; one copy "
             "of the stack at 14 a second"),
    arrival_span_s=lambda orders: 0,
    copies=1,
    starts_in_dlq=True,
    drain_from="redrive",
    actions=(
        redrive("operator redrives the send DLQ (runbook send-dlq-not-empty)", MINUTE),
    ),
)
BURST_SCENARIOS = tuple(name for name, scenario in SCENARIOS.items() if scenario.drain_from)
DEFAULT_SCENARIO = "steady"
