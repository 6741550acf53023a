"""The report: figures and invariants from a run's end state, and its readable form.

`build_report` turns the merged tally (emails SES accepted, table items, DLQ contents, each
order's timeline) into the report's figures and checks the INVARIANTS: no email sent twice, no
order lost, no order FAILED for a reason that is not about it, every email tracked to its final
status, every valid order emailed once the runbook's redrive was played, no invalid order
dropped. It also says, per scenario, which orders waited, where, for how long and how they got
out, and how long orders took to reach SES and the inbox. `format_report` prints it as a table.
"""

from __future__ import annotations

import json
from collections import Counter

from simulation.orders import Order
from simulation.timeline import clock_label

EXAMPLES = 5  # orders shown per broken invariant

# (report field, what it must be, what a broken value means)
INVARIANTS = (
    ("duplicate_emails", "0", "an order was emailed more than once"),
    ("lost_orders", "0", "a valid order was neither emailed nor in the DLQ or the send queue"),
    ("failed_not_about_the_order", "0",
     "a valid order was marked FAILED: SES refused it for the account's or the setup's sake"),
    ("tracked_pct", "100", "an email's item did not reach the status its outcome implies"),
    ("unsent_orders", "0", "a valid order was not emailed although the runbook's redrive ran"),
    ("invalid_dropped", "0", "an invalid order was acknowledged instead of dead-lettered"),
)


def build_report(tally: dict, orders: list[Order], bodies: list[str], *,
                 redrive: bool = True, drain_from: str | None = None,
                 rate_share: float = 1.0) -> dict:
    """Figures and invariants from the end state: what SES accepted, the table, the DLQs; for a
    burst scenario (`drain_from`), how fast the stack drained the burst at `rate_share` of the
    account's sending rate."""
    sends = tally["sends"]
    by_body = {order.body: order for order in orders}
    dead = [by_body.get(body) or by_body.get(_envelope_message(body))
            for body in tally["dlq"].get(tally["send_dlq"], [])]
    dead_valid = {order.order_id for order in dead if order and order.valid}
    dead_invalid = {order.body for order in dead if order and not order.valid}
    queued = [by_body.get(body) or by_body.get(_envelope_message(body))
              for body in tally["queued"]]
    queued_valid = {order.order_id for order in queued if order and order.valid}
    queued_invalid = {order.body for order in queued if order and not order.valid}
    valid = [order for order in orders if order.valid]
    invalid = [order for order in orders if not order.valid]
    lost = [order.order_id for order in valid if order.order_id not in sends
            and order.order_id not in dead_valid and order.order_id not in queued_valid]
    emails, untracked = tally["emails"], tally["untracked"]
    api_calls = tally["api_calls"]
    valid_ids = {order.order_id for order in valid}
    wrongly_failed = [item for item in tally["failed_items"] if item["orderId"] in valid_ids]
    unsent = [order.order_id for order in valid if order.order_id not in sends]
    timeline = tally["timeline"]
    report = {
        "orders_published": len(bodies),
        "valid_orders": len(valid),
        "invalid_orders": len(invalid),
        "duplicated_orders": sum(order.copies > 1 for order in valid),
        "emails_sent": emails,
        "duplicate_emails": sum(n - 1 for n in sends.values() if n > 1),
        "lost_orders": len(lost),
        "orders_in_dlq": len(dead_valid),
        "orders_in_dlq_already_emailed": len(dead_valid & set(sends)),
        "invalid_in_dlq": len(dead_invalid),
        "invalid_dropped": len(invalid) - len(dead_invalid | queued_invalid),
        "orders_in_queue": len(queued_valid),
        "dlq_messages": sum(len(found) for found in tally["dlq"].values()),
        "dlq_by_queue": {name: len(found) for name, found in tally["dlq"].items()},
        "dlq_before_redrive": tally["before_redrive"],
        "redriven": tally["redriven"],
        "status_counts": dict(sorted(tally["status_counts"].items(), key=str)),
        "tracked_pct": round(100 * (emails - len(untracked)) / emails, 2) if emails else None,
        "untracked_emails": len(untracked),
        "email_outcomes": dict(sorted(tally["email_outcomes"].items())),
        "ses_accepted_per_moto": tally["ses_accepted_per_moto"],
        "feedback": dict(tally["feedback"]),
        "faults_injected": {name: tally["faults"][name] for name in
                            ("ses_throttling", "dynamodb_errors", "crashes_after_send")},
        "functions": {logical: {
            key: (dict(sorted(value.items())) if isinstance(value, Counter) else value)
            for key, value in function.items()}
            for logical, function in tally["functions"].items()},
        "queues": tally["queues"],
        "api_calls": dict(sorted(api_calls.items())),
        "api_calls_per_email": round(sum(api_calls.values()) / emails, 2) if emails else None,
        "handler_ms_p50": _round(percentile(tally["timings"], 50)),
        "handler_ms_p95": _round(percentile(tally["timings"], 95)),
        "virtual_s": tally["virtual_s"],
        "not_simulated": dict(sorted(tally["not_simulated"].items())),
        "skipped": dict(sorted(tally["skipped"].items())),
        "failed_not_about_the_order": len(wrongly_failed),
        "unsent_orders": len(unsent) if redrive else None,
        "ses_refusals": dict(sorted(tally["ses_refusals"].items())),
        "ses_refusal_messages": dict(sorted(tally["ses_refusal_messages"].items())),
        "ses_throttles": tally["ses_refusals"].get("Throttling", 0)
        + tally["faults"].get("ses_throttling", 0),
        "lambda": tally["lambda"],
        "call_latency": dict(sorted(tally["latency_stats"].items())),
        "accept_latency_s": latency_figures(timeline["published"], timeline["accepted"]),
        "delivery_latency_s": latency_figures(timeline["published"], timeline["delivered"]),
        "waits": waits(timeline, valid_ids, resumed_at=[
            at for at, _, enabled in tally["sending_changes"] if enabled],
            retry_after_s=_send_visibility_timeout(tally)),
        "self_watching": self_watching(tally),
        "happenings": [f"{clock_label(at)} {what}" for at, what in timeline["happenings"]],
        "examples": {"duplicate_emails": tally["duplicate_examples"],
                     "lost_orders": lost[:EXAMPLES], "untracked": untracked[:EXAMPLES],
                     "failed_not_about_the_order": wrongly_failed[:EXAMPLES],
                     "unsent_orders": unsent[:EXAMPLES] if redrive else []},
    }
    if drain_from:
        report.update(drain_figures(timeline, drain_from,
                                    tally["max_send_rate"] * rate_share))
    report["invariants_broken"] = broken_invariants(report)
    return report


def drain_figures(timeline: dict, drain_from: str, usable_rate: float) -> dict:
    """How fast a burst was drained: from its start (the first publish, or the operator's
    redrive) to the last email SES accepted, against the physical bound. No stack can send the
    burst's emails faster than the rate it may use (emails / rate), nor before their orders
    arrive (the span of the publishes), so the bound is the longer of the two; `drain_efficiency`
    is bound / measured."""
    starts = timeline["published"] if drain_from == "publish" else timeline["redriven"]
    drained = {order_id: timeline["accepted"][order_id] for order_id in starts
               if order_id in timeline["accepted"]}
    if not drained:
        return {"drain_s": None, "drain_efficiency": None, "drain_orders": 0,
                "drain_bound_s": None, "drain_rate_per_s": usable_rate}
    began = min(starts[order_id] for order_id in drained)
    arrival_span = max(starts[order_id] for order_id in drained) - began
    drain_s = max(drained.values()) - began
    bound_s = max(len(drained) / usable_rate, arrival_span)
    return {"drain_s": _round(drain_s), "drain_efficiency": round(bound_s / drain_s, 3),
            "drain_orders": len(drained), "drain_bound_s": _round(bound_s),
            "drain_rate_per_s": usable_rate}


def latency_figures(start: dict[str, float], end: dict[str, float]) -> dict:
    """p50 / p95 / max of end - start over the orders that have both, in virtual seconds."""
    spans = [end[order_id] - at for order_id, at in start.items() if order_id in end]
    return {"p50": _round(percentile(spans, 50)), "p95": _round(percentile(spans, 95)),
            "max": _round(max(spans, default=None)) if spans else None, "orders": len(spans)}


# An order whose email went out later than this after it was published waited for something: a
# retry (the queue's visibility timeout) or a redrive, not just the batching window and the calls.
WAITED_AFTER_S = 30


def _send_visibility_timeout(tally: dict) -> float:
    """The send queue's visibility timeout: the soonest a failed order comes back."""
    for function in tally["functions"].values():
        if function["role"] == "send":
            for queue in tally["queues"].values():
                if queue["name"] == function["queue"]:
                    return float(queue["visibility_timeout_s"])
    return float("inf")


def waits(timeline: dict, valid_ids: set[str], resumed_at: list[float] = (),
          retry_after_s: float = float("inf")) -> dict:
    """Which orders waited, where (the queue, or the DLQ until the operator's redrive), for how
    long (publish -> SES accepted, virtual seconds) and how they got out: their turn behind a
    backlog (sent sooner than any retry could come, `retry_after_s`), the queue's own retry, the
    operator's redrive, or the operator's resume of a paused stack (sent after a resume it was
    published before)."""
    published, accepted = timeline["published"], timeline["accepted"]
    redriven = timeline["redriven"]
    waited = {}
    for order_id in valid_ids:
        if order_id not in published:
            continue
        span = accepted.get(order_id, float("inf")) - published[order_id]
        if order_id in redriven or span > WAITED_AFTER_S:
            waited[order_id] = span
    via_dlq = [order_id for order_id in waited if order_id in redriven]
    sent = [span for span in waited.values() if span != float("inf")]

    def after_resume(order_id: str) -> bool:
        return any(published[order_id] < at <= accepted.get(order_id, -1) for at in resumed_at)
    return {
        "orders_waited": len(waited),
        "in_the_queue": len(waited) - len(via_dlq),
        "in_the_dlq": len(via_dlq),
        "still_waiting": sum(span == float("inf") for span in waited.values()),
        "wait_s": {"p50": _round(percentile(sent, 50)), "max": _round(max(sent, default=0))},
        "released_by": {
            "its turn behind a backlog (no retry)": sum(
                1 for order_id, span in waited.items()
                if order_id not in redriven and span < retry_after_s
                and not after_resume(order_id)),
            "queue retry (visibility timeout)": sum(
                1 for order_id, span in waited.items()
                if order_id not in redriven and retry_after_s <= span != float("inf")
                and not after_resume(order_id)),
            "operator resume of the paused stack": sum(
                1 for order_id, span in waited.items()
                if order_id not in redriven and span != float("inf") and after_resume(order_id)),
            "operator redrive from the DLQ": sum(
                1 for order_id in via_dlq if waited[order_id] != float("inf"))},
    }


def self_watching(tally: dict) -> dict:
    """The canaries, the alarms the run could evaluate, and the circuit breaker: per copy of the
    stack (each lives the scenario with its own SES account, alarms and breaker)."""
    copies = tally["watch"] if isinstance(tally["watch"], list) else [tally["watch"]]
    first = copies[0]
    pauses = [(at, name) for at, name, enabled in tally["sending_changes"] if not enabled]
    resumes = [(at, name) for at, name, enabled in tally["sending_changes"] if enabled]
    alarm_at = {}
    for copy in copies:
        for transition in copy["alarm_transitions"]:
            if transition["to"] == "ALARM":
                alarm_at.setdefault(transition["alarm"], transition["at"])
    breaker = {}
    for name, crossed in sorted(first["first_breaches"].items()):
        entry = {"threshold_crossed": clock_label(crossed)}
        if name in alarm_at:
            entry["alarm"] = clock_label(alarm_at[name])
            entry["alarm_after_crossing_s"] = round(alarm_at[name] - crossed)
        breaker[name] = entry
    return {
        "canaries": {"published": sum(copy["canaries_published"] for copy in copies),
                     **tally["canaries"]},
        "alarms_played": first["alarms_played"],
        "alarms_not_played": first["alarms_not_played"],
        "alarm_transitions": [
            f"{clock_label(t['at'])} {t['alarm']}: {t['from']} -> {t['to']}"
            for t in first["alarm_transitions"]],
        "alarms_that_fired": sorted(alarm_at),
        "notifications": _summed(copy["notifications"] for copy in copies),
        "breaker": breaker,
        "sending_paused": [clock_label(at) for at, _ in pauses[:1]],
        "sending_resumed": [clock_label(at) for at, _ in resumes[:1]],
        "pauses": len(pauses),
        "emails_while_paused": tally["emails_while_paused"],
        "account_paused_by_aws": [clock_label(copy["enforced_at"]) for copy in copies
                                  if copy["enforced_at"]],
    }


def _summed(counters) -> dict:
    total: Counter = Counter()
    for counter in counters:
        total.update(counter)
    return dict(sorted(total.items()))


def _envelope_message(body: str) -> str | None:
    """The Message of an SNS envelope (a queue without raw message delivery), else None."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get("Message") if isinstance(doc, dict) and doc.get("Type") == "Notification" \
        else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * pct // 100) - 1)]


def broken_invariants(report: dict) -> list[str]:
    """Names of the invariants the report breaks (see INVARIANTS)."""
    broken = []
    for name, _, _ in INVARIANTS:
        value = report[name]
        ok = value is None or (value >= 100 if name == "tracked_pct" else value == 0)
        if not ok:
            broken.append(name)
    return broken


def _spread(figures: dict) -> str:
    if figures.get("p50") is None:
        return "-"
    return f"{figures['p50']}/{figures['p95']}/{figures['max']}"


def format_report(report: dict, template_label: str = "") -> str:
    """The report as a readable table (the JSON form carries every field)."""
    settings = report["settings"]
    send = next((f for f in report["functions"].values() if f["role"] == "send"), {})
    send_queue = next((q for q in report["queues"].values() if q["name"] == send.get("queue")), {})
    lines = [
        f"Local end-to-end simulation{' of ' + template_label if template_label else ''}",
        f"  scenario {settings.get('scenario')}: {settings.get('scenario_summary')}",
        f"  {settings['orders']} orders, seed {settings['seed']}, faults {settings['faults']}, "
        f"duplicates {settings['duplicates']:.0%}, invalid {settings['invalid']:.0%}, "
        f"duplicated SES events {settings['feedback_duplicates']:.0%}, "
        f"{settings['workers']} stack cop{'y' if settings['workers'] == 1 else 'ies'}",
        f"  send queue {send_queue.get('name')}: visibility "
        f"{send_queue.get('visibility_timeout_s')} s, maxReceiveCount "
        f"{send_queue.get('max_receive_count')}, batch {send.get('batch_size')}, concurrency "
        f"{send.get('max_concurrency')}",
        "  not simulated: " + ", ".join(f"{n} {kind}" for kind, n in
                                        report["not_simulated"].items()),
        "",
    ]
    feedback = report["feedback"]
    faults = report["faults_injected"]
    rows = [
        ("orders_published", report["orders_published"],
         f"{report['valid_orders']} valid ({report['duplicated_orders']} published 2-3x), "
         f"{report['invalid_orders']} invalid"),
        ("emails_sent", report["emails_sent"],
         ", ".join(f"{n} {kind}" for kind, n in report["email_outcomes"].items())),
        ("duplicate_emails", report["duplicate_emails"], "orders emailed more than once"),
        ("lost_orders", report["lost_orders"], "valid orders neither emailed nor in the DLQ"),
        ("orders_in_dlq", report["orders_in_dlq"], "valid orders an operator must redrive"),
        ("orders_in_queue", report["orders_in_queue"],
         "valid orders still waiting in the send queue (a paused stack)"),
        ("invalid_in_dlq", report["invalid_in_dlq"], f"of {report['invalid_orders']} invalid"),
        ("dlq_messages", report["dlq_messages"],
         ", ".join(f"{name} {n}" for name, n in report["dlq_by_queue"].items())),
        ("redriven", sum(report["redriven"].values()) if report["settings"]["redrive"] else "off",
         "DLQ messages the runbook moved back once the run settled"),
        ("tracked_pct", report["tracked_pct"], "emails whose item reached the expected status"),
        ("status_counts", "", ", ".join(f"{k} {v}" for k, v in report["status_counts"].items())),
        ("SES events", feedback["events_published"],
         f"{feedback['duplicated_events']} duplicated, "
         f"{feedback['emails_with_out_of_order_events']} emails' events out of order"),
        ("faults injected", sum(faults.values()),
         ", ".join(f"{name} {n}" for name, n in faults.items())),
        ("SES refusals", sum(report["ses_refusals"].values()),
         ", ".join(f"{code} {n}" for code, n in report["ses_refusals"].items())),
        ("ses_throttles", report["ses_throttles"], "Throttling answers (refused or injected)"),
        ("accept_latency_s", _spread(report["accept_latency_s"]),
         "publish -> SES accepted, p50 / p95 / max, virtual seconds"),
        ("delivery_latency_s", _spread(report["delivery_latency_s"]),
         "publish -> Delivery recorded in the table"),
        *([("drain_s", report["drain_s"],
            f"{report['drain_orders']} orders from the {report['settings']['scenario']} burst's "
            f"start to the last SES accept; bound {report['drain_bound_s']} s at "
            f"{report['drain_rate_per_s']:g}/s"),
           ("drain_efficiency", report["drain_efficiency"], "bound / drain_s (1.0 = the rate)")]
          if "drain_s" in report else []),
        ("api_calls_per_email", report["api_calls_per_email"], "handler AWS calls / emails sent"),
        ("handler_ms_p50", report["handler_ms_p50"], "per record, in-process under moto"),
        ("handler_ms_p95", report["handler_ms_p95"], ""),
        ("virtual time", f"{report['virtual_s']} s", "simulated span incl. retry timeouts"),
        ("wall_s", report["wall_s"], "this run"),
    ]
    width = max(len(str(name)) for name, _, _ in rows)
    for name, value, note in rows:
        lines.append(f"  {name:<{width}}  {str(value):>8}  {note}".rstrip())
    watching = report["self_watching"]
    lines.append("")
    lines.append("self-watching (first copy of the stack)")
    canaries = watching["canaries"]
    lines.append(f"  canaries: {canaries['published']} published, {canaries['sent']} sent, "
                 f"{canaries['delivered']} delivered")
    lines.append(f"  alarms played: {len(watching['alarms_played'])}; fired: "
                 f"{', '.join(watching['alarms_that_fired']) or 'none'}")
    for name, entry in watching["breaker"].items():
        lines.append(f"  {name}: threshold crossed {entry['threshold_crossed']}"
                     + (f", ALARM {entry['alarm']} ({entry['alarm_after_crossing_s']} s later)"
                        if "alarm" in entry else ", never in ALARM"))
    if watching["pauses"]:
        lines.append(f"  sending paused {', '.join(watching['sending_paused'])}, resumed "
                     f"{', '.join(watching['sending_resumed']) or 'never'}; emails accepted "
                     f"while paused: {watching['emails_while_paused']}")
    waits_ = report["waits"]
    if waits_["orders_waited"] or report["happenings"]:
        lines.append("")
        lines.append("what happened, and the orders that waited")
        lines.extend(f"  {line}" for line in report["happenings"])
        released = ", ".join(f"{n} by {how}" for how, n in waits_["released_by"].items() if n)
        lines.append(
            f"  {waits_['orders_waited']} orders waited: {waits_['in_the_queue']} in the queue, "
            f"{waits_['in_the_dlq']} in the DLQ until the redrive; publish -> SES accepted p50 "
            f"{waits_['wait_s']['p50']} s, max {waits_['wait_s']['max']} s; released "
            f"{released or 'none'}; still waiting {waits_['still_waiting']}")
    lines.append("")
    lines.append("invariants")
    for name, target, meaning in INVARIANTS:
        broken = name in report["invariants_broken"]
        lines.append(f"  {'FAIL' if broken else 'ok  '}  {name} = {report[name]}  (must be "
                     f"{target}{'; ' + meaning if broken else ''})")
    examples = {name: found for name, found in report["examples"].items() if found}
    if examples:
        lines.append("")
        lines.append("what happened (first examples; --json has them all)")
        lines.extend("  " + line for line in json.dumps(examples, indent=2).splitlines())
    return "\n".join(lines)
