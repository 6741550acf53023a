"""The run: one stack played until it settles, or several copies in parallel processes.

`Simulation` deploys one copy of the stack in moto, loads its functions and mappings, then
`play`s the orders on the virtual clock (orders published, SES events published, mappings
ticked) until nothing is in flight, plays the runbook's `redrive`, and `tally`s the end state as
plain data. `run` makes the orders, `split`s them over `workers` copies of the stack (each in a
forked process: moto is single-threaded), `merge`s their tallies and builds the report.
"""

from __future__ import annotations

import copy
import gc
import multiprocessing
import random
import sys
import time as _real_time
import traceback
import types
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable

from simulation.alarms import MetricStore
from simulation.faults import Faults
from simulation.lambda_model import EventSourceMappings
from simulation.moto_env import faster_moto, sandbox
from simulation.latency import LatencyModel, virtual_retry_sleeps
from simulation.orders import Order, make_orders
from simulation.report import EXAMPLES, build_report
from simulation.runtime import (MAX_VIRTUAL_S, SQS_HOLD_S, START_EPOCH, EventSourceMapping,
                                Function, Instrument, VirtualClock)
from simulation.scenarios import DEFAULT_SCENARIO, RESUME_STEP, SCENARIOS, Scenario, resume
from simulation.ses import EXPECTED_STATUS, SIMULATOR_DOMAIN, ArrivalLog, SesPlayer
from simulation.ses_model import SesModel
from simulation.stack import QueueInfo, deploy, mapping_arn, wire
from simulation.timeline import Timeline, merge_timelines
from simulation.watch import SelfWatching

# The watchers run a little past the scenario's last event: long enough for an alarm that needs
# three canary intervals without a delivery (at 30 minutes) to be seen clearing.
WATCH_MARGIN_S = 2 * 3600
from simulation.template import (DEFAULT_TEMPLATE, REGION, TemplateError, choose_parameters,
                                 load_template)


class Progress:
    """Progress on stderr: one updating line on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._pending_newline = False

    def phase(self, text: str) -> None:
        if self.enabled:
            self._end_line()
            print(f"simulate: {text}", file=self.stream, flush=True)

    def status(self, text: str) -> None:
        now = _real_time.monotonic()
        if not self.enabled or now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        if self.tty:
            print(f"\rsimulate: {text}\033[K", end="", file=self.stream, flush=True)
            self._pending_newline = True
        else:
            print(f"simulate: {text}", file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self._pending_newline:
            print(file=self.stream)
            self._pending_newline = False

    def done(self) -> None:
        self._end_line()


def is_canary(order_id: str | None) -> bool:
    return bool(order_id) and order_id.startswith("canary-")


class Simulation:
    """One stack deployed in moto, its functions loaded, SES and the mappings played on it, on
    the virtual clock, while a scenario happens to it."""

    def __init__(self, template: dict, parameters: dict[str, str], *, seed: str, faults: float,
                 feedback_duplicates: float, scenario: Scenario, orders: int, progress: Progress,
                 on_load: Callable[[str, types.ModuleType], None] | None):
        import boto3

        self.copy = seed.rsplit(":", 1)[-1]  # which copy of the stack (its seed ends with it)
        session = boto3.session.Session(region_name=REGION)
        self.aws = {name: session.client(name) for name in ("kms", "sns", "sqs", "dynamodb", "ses",
                                                            "sesv2")}
        self.progress = progress
        self.scenario = scenario
        self.clock = VirtualClock()
        self.stack = deploy(template, parameters, self.aws)
        self.wiring = wire(self.stack, template)
        self.ses_account = self._ses_account(parameters, orders)
        self.faults = Faults(faults, random.Random(f"{seed}:faults"))
        self.latency = LatencyModel(random.Random(f"{seed}:latency"),
                                    scenario.slowdown_windows(self.clock.now))
        self.timeline = Timeline()
        self.ses = SesPlayer(self.stack.event_routes, self.aws["sns"], self.clock,
                             random.Random(f"{seed}:ses"), feedback_duplicates,
                             account=self.ses_account)
        self.lambda_control = EventSourceMappings({}, mapping_arn, on_change=self._mapping_changed)
        self.instrument = Instrument(self.faults, self._accepted, clock=self.clock,
                                     ses_account=self.ses_account, latency=self.latency,
                                     lambda_control=self.lambda_control)
        self.arrivals = ArrivalLog(self.clock)
        self.metrics = MetricStore()
        self.on_load = on_load
        self.functions: dict[str, Function] = {}
        self.mappings = self._mappings(on_load)
        self.lambda_control.mappings.update(
            {f"sim-{mapping.info.logical}": mapping for mapping in self.mappings})
        self.actions = deque(sorted(scenario.actions, key=lambda action: action.at_s))
        self.redriven: Counter = Counter()
        horizon = START_EPOCH + max(scenario.arrival_span_s(orders), scenario.last_action_s)
        self.watch = SelfWatching(self, horizon + WATCH_MARGIN_S, self.metrics)

    def _ses_account(self, parameters: dict[str, str], orders: int) -> SesModel:
        """The SES account as the scenario starts it: by default a production account with the
        stack's domain verified and its configuration sets in place."""
        account = SesModel(region=REGION, clock=self.clock.time)
        for identity in [parameters.get("VerifiedDomain"), *self.stack.identities]:
            if identity:
                account.add_identity(identity)
        for name in self.stack.configuration_sets:
            account.add_configuration_set(name)
        self.scenario.account(account, orders)
        return account

    def _accepted(self, params: dict, response: dict):
        email = self.ses.accept(params, response)
        self.timeline.accept(email.order_id, email.accepted_at)
        return email

    def role_of(self, queue: QueueInfo) -> str:
        if queue is self.wiring.send_queue:
            return "send"
        return "feedback" if queue in self.wiring.feedback_queues else "other"

    def _observer(self, role: str):
        if role == "send":
            return self.timeline.observe_send
        if role == "feedback":
            def observe(records, result):
                self.arrivals.observe(records, result)
                self.timeline.observe_feedback(records, result)
            return observe
        return None

    def _mappings(self, on_load) -> list[EventSourceMapping]:
        """One player per mapping, send first; each function loaded once."""
        by_name = {info.name: info for info in self.stack.functions.values()}
        players = []
        for info in self.stack.mappings.values():
            queue = self.stack.queue_by_arn(info.queue_arn)
            function = by_name.get(info.function_name)
            if queue is None or function is None:
                continue
            role = self.role_of(queue)
            players.append(EventSourceMapping(
                info, queue, self.function(function), role, self.aws["sqs"], self.clock,
                self._observer(role)))
        order = {"send": 0, "feedback": 1, "other": 2}
        return sorted(players, key=lambda player: (order[player.role], player.info.logical))

    def function(self, info) -> Function:
        """The running Function of a FunctionInfo, loaded once (its EMF lines feed the metrics)."""
        if info.logical not in self.functions:
            self.functions[info.logical] = Function(info, self.clock, self.instrument,
                                                    self.on_load, on_emf=self.metrics.put_emf)
        return self.functions[info.logical]

    def function_by_arn(self, arn: str) -> Function | None:
        """The stack's function with this ARN (an alarm action), if it is one."""
        for logical, info in self.stack.functions.items():
            if self.stack.resolver.get_att(logical, "Arn") == arn:
                return self.function(info)
        return None

    def invoke_function(self, function: Function, event: dict):
        """Invoke a function directly (an alarm action, the operator), now."""
        result = function.invoke(event, slot="direct", start=self.clock.now)
        return result

    def operator_resume(self) -> None:
        """The breaker runbook's command: each function an alarm invokes, with `resume`."""
        targets = {arn for alarm in self.stack.alarms.values()
                   for arn in alarm.props.get("AlarmActions", [])}
        for arn in sorted(targets):
            function = self.function_by_arn(arn)
            if function is not None:
                self.invoke_function(function, {"action": "resume"})

    def _mapping_changed(self, uuid: str, enabled: bool) -> None:
        state = "enabled" if enabled else "disabled"
        self.timeline.happened(self.clock.time(), f"event source mapping {uuid[4:]} {state}")
        for mapping in self.mappings:
            mapping.notify()
        delay = self.scenario.resume_after_pause_s
        if not enabled and delay is not None:
            # The operator follows the breaker runbook: confirm, fix the cause, resume.
            due = self.clock.time() - START_EPOCH + delay
            self.actions.append(resume(RESUME_STEP, due))
            self.actions = deque(sorted(self.actions, key=lambda action: action.at_s))

    def publish_to(self, topic_arn: str, body: str) -> None:
        """Publish one message to a topic of the stack (a schedule's target)."""
        self.timeline.publish(body, self.clock.now)
        self.aws["sns"].publish(TopicArn=topic_arn, Message=body)
        for mapping in self.mappings:
            mapping.notify()

    def play(self, schedule: list[tuple[float, str]]) -> None:
        """Run the virtual clock until no order, event, retry or scenario action is left:
        `schedule` holds (publish time, body) of the orders, in time order."""
        pending = deque(schedule)
        deadline = self.clock.now + MAX_VIRTUAL_S
        published = 0
        while True:
            now = self.clock.now
            due = []
            while pending and pending[0][0] <= now:
                due.append(pending.popleft()[1])
            if due:
                self._publish_orders(due)
                published += len(due)
            while self.actions and self.scenario_start + self.actions[0].at_s <= now:
                action = self.actions.popleft()
                self.timeline.happened(now, action.what)
                action.do(self)
            self.watch.run_due(now)
            if self.ses.next_due() is not None and self.ses.next_due() <= now:
                self.ses.publish_due()
                self._notify("feedback")
            for mapping in self.mappings:
                mapping.tick()
            self.progress.status(self._status(published, published + len(pending)))
            upcoming = [time for time in (
                pending[0][0] if pending else None,
                self.scenario_start + self.actions[0].at_s if self.actions else None,
                self.ses.next_due(),
                *(mapping.next_due() for mapping in self.mappings)) if time is not None]
            # The watchers (schedules, metrics, alarms) keep time until the scenario's horizon.
            watch_due = self.watch.next_due()
            if watch_due is not None:
                upcoming.append(watch_due)
            if not upcoming:
                return
            self.clock.now = max(min(upcoming), now + 1e-6)
            if self.clock.now > deadline:
                raise RuntimeError("the simulation did not settle within a week of virtual time")

    @property
    def scenario_start(self) -> float:
        return START_EPOCH

    def _notify(self, role: str) -> None:
        for mapping in self.mappings:
            if mapping.role == role:
                mapping.notify()

    def _publish_orders(self, bodies: list[str]) -> None:
        for body in bodies:
            self.timeline.publish(body, self.clock.now)
        if self.scenario.starts_in_dlq:
            self._put_in_send_dlq(bodies)
            return
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "Message": body}
                       for i, body in enumerate(bodies[start:start + 10])]
            self.aws["sns"].publish_batch(TopicArn=self.wiring.order_topic,
                                          PublishBatchRequestEntries=entries)
        self._notify("send")

    def _put_in_send_dlq(self, bodies: list[str]) -> None:
        """Where an earlier outage left the orders: in the send DLQ, each message as the send
        queue holds it (the order's JSON: the subscription delivers raw messages)."""
        dlq = self.stack.queue_by_arn(self.wiring.send_queue.dead_letter_arn)
        for start in range(0, len(bodies), 10):
            self.aws["sqs"].send_message_batch(QueueUrl=dlq.url, Entries=[
                {"Id": str(i), "MessageBody": body}
                for i, body in enumerate(bodies[start:start + 10])])

    def _status(self, published: int, total: int) -> str:
        elapsed = int(self.clock.now - START_EPOCH)
        retrying = sum(len(mapping.returning) for mapping in self.mappings)
        return (f"t+{elapsed // 60:d}m{elapsed % 60:02d}s virtual | orders published "
                f"{published}/{total} | emails sent {len(self.ses.emails)} | SES events "
                f"published {self.ses.stats['published']} | retries pending {retrying}")

    def operator_redrive(self) -> dict[str, int]:
        """The runbook's step once the cause is fixed (a scenario action or the end of a run)."""
        moved = self.redrive()
        self.redriven.update(moved)
        return moved

    def redrive(self) -> dict[str, int]:
        """The on-call runbook's redrive: move every message in each DLQ back to the queue whose
        redrive policy names it (StartMessageMoveTask, which moto lacks: receive, send, delete).
        Returns the messages moved, by DLQ."""
        moved = {}
        for dlq in self.wiring.dead_letter_queues:
            sources = [q for q in self.stack.queues.values() if q.dead_letter_arn == dlq.arn]
            if len(sources) != 1:  # no single source queue to move them back to
                continue
            moved[dlq.name] = 0
            while True:
                messages = self.aws["sqs"].receive_message(
                    QueueUrl=dlq.url, MaxNumberOfMessages=10,
                    VisibilityTimeout=SQS_HOLD_S).get("Messages", [])
                if not messages:
                    break
                self.aws["sqs"].send_message_batch(QueueUrl=sources[0].url, Entries=[
                    {"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(messages)])
                self.aws["sqs"].delete_message_batch(QueueUrl=dlq.url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)])
                self.timeline.redrive([m["Body"] for m in messages], self.clock.now)
                moved[dlq.name] += len(messages)
        for mapping in self.mappings:
            mapping.notify()
        return moved

    # --- end state ------------------------------------------------------------------------------

    def drain(self, queue: QueueInfo) -> list[str]:
        """Every message body left in `queue` (read once, for the report)."""
        bodies = []
        while True:
            messages = self.aws["sqs"].receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10,
                VisibilityTimeout=SQS_HOLD_S).get("Messages", [])
            if not messages:
                return bodies
            bodies.extend(message["Body"] for message in messages)

    def tally_dlqs(self) -> dict[str, int]:
        """Messages in each DLQ now (before the redrive)."""
        return {queue.name: int(self.aws["sqs"].get_queue_attributes(
                    QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessages"])
                    ["Attributes"]["ApproximateNumberOfMessages"])
                for queue in self.wiring.dead_letter_queues}

    def statuses(self) -> dict[tuple[str, str], str | None]:
        """Each table item's status by (orderId, messageId)."""
        if not self.wiring.table:
            return {}
        statuses = {}
        for page in self.aws["dynamodb"].get_paginator("scan").paginate(
                TableName=self.wiring.table, ProjectionExpression="orderId, messageId, #status",
                ExpressionAttributeNames={"#status": "status"}):
            for item in page["Items"]:
                key = (item.get("orderId", {}).get("S"), item.get("messageId", {}).get("S"))
                statuses[key] = item.get("status", {}).get("S")
        return statuses

    def explain(self, order_id: str | None) -> dict:
        """What happened to an order that broke an invariant: its emails (virtual seconds after
        the start, whether the function crashed right after), when the feedback function got
        each of their events, and the item's history."""
        emails = [email for email in self.ses.emails if email.order_id == order_id]
        story: dict[str, Any] = {"orderId": order_id, "emails": [], "items": []}
        for email in emails:
            story["emails"].append({
                "accepted_s": int(email.accepted_at - START_EPOCH), "crashed": email.crashed,
                "feedback_received_s": self.arrivals.timeline(email.ses_id)})
        for message_id in dict.fromkeys(email.message_id for email in emails):
            item = self.aws["dynamodb"].get_item(
                TableName=self.wiring.table,
                Key={"orderId": {"S": order_id}, "messageId": {"S": message_id}}).get("Item", {})
            entries = [entry["M"] for entry in item.get("events", {}).get("L", [])]
            history = [" ".join(entry[key]["S"] for key in ("time", "type", "detail")
                                if key in entry) for entry in entries]
            story["items"].append({"messageId": message_id,
                                   "status": item.get("status", {}).get("S"), "history": history})
        return story

    def tally(self) -> dict:
        """The run's raw results as plain data (mergeable, and it crosses process boundaries)."""
        statuses = self.statuses()
        sends: Counter = Counter()
        untracked = []
        customers = [email for email in self.ses.emails if not is_canary(email.order_id)]
        canaries = [email for email in self.ses.emails if is_canary(email.order_id)]
        for email in self.ses.emails:
            key = email.order_id if email.order_id is not None else f"?{email.ses_id}"
            if is_canary(email.order_id):  # each copy of the stack has its own schedule
                key = f"{self.copy}:{key}"
            sends[key] += 1
            status = statuses.get((email.order_id, email.message_id))
            if status != EXPECTED_STATUS[email.outcome]:
                untracked.append({"orderId": email.order_id, "outcome": email.outcome,
                                  "expected": EXPECTED_STATUS[email.outcome], "status": status})
        twice = [order_id for order_id, n in sends.items() if n > 1][:EXAMPLES]
        send_dlq = self.stack.queue_by_arn(self.wiring.send_queue.dead_letter_arn)
        unrouted = {f"unrouted_{key[len('unrouted_'):]}": n for key, n in self.ses.stats.items()
                    if key.startswith("unrouted_")}
        return {
            "emails": len(customers),
            "sends": sends,
            "email_outcomes": Counter(email.outcome for email in customers),
            "canaries": {"sent": len(canaries),
                         "delivered": sum(statuses.get((email.order_id, email.message_id))
                                          == "DELIVERED" for email in canaries)},
            "sending_changes": list(self.ses_account.sending_changes),
            "emails_while_paused": sum(
                1 for email in self.ses.emails
                if any(start <= email.accepted_at < end for start, end in self.paused_windows())),
            "watch": self.watch.tally(),
            "untracked": untracked,
            "duplicate_examples": [self.explain(order_id) for order_id in twice],
            "dlq": {queue.name: self.drain(queue) for queue in self.wiring.dead_letter_queues},
            # Still waiting in the send queue at the end (a paused stack nobody resumed).
            "queued": self.drain(self.wiring.send_queue),
            "send_dlq": send_dlq.name if send_dlq else None,
            "status_counts": Counter(status for (order_id, _), status in statuses.items()
                                     if not is_canary(order_id)),
            "ses_accepted_per_moto": int(self.aws["ses"].get_send_quota()["SentLast24Hours"]),
            "max_send_rate": self.ses_account.max_send_rate,
            "feedback": Counter({
                "events_published": self.ses.stats["published"],
                "duplicated_events": self.ses.stats["duplicates"],
                "emails_with_out_of_order_events": self.arrivals.out_of_order(),
                "redelivered_records": self.arrivals.redeliveries(), **unrouted}),
            "faults": Counter(self.faults.counts),
            "functions": {mapping.function.info.logical: {
                "role": mapping.role, "queue": mapping.queue.name,
                "batch_size": mapping.info.batch_size,
                "max_concurrency": mapping.info.max_concurrency,
                "stats": Counter(mapping.stats), "function_errors": mapping.function.errors,
                "outcomes": Counter(mapping.function.outcomes),
                "metrics": Counter(mapping.function.emf)} for mapping in self.mappings},
            "queues": {queue.logical: {"name": queue.name,
                                       "visibility_timeout_s": queue.visibility_timeout,
                                       "max_receive_count": queue.max_receive_count}
                       for queue in self.stack.queues.values()},
            "api_calls": Counter({f"{function}.{operation}": n for (function, operation), n
                                  in self.instrument.calls.items()}),
            "timings": [ms for mapping in self.mappings for ms in mapping.ms_per_record],
            "virtual_s": int(self.clock.now - START_EPOCH),
            "not_simulated": dict(self.stack.not_simulated),
            "skipped": dict(self.stack.skipped),
            "failed_items": self.failed_items(),
            "ses_refusals": Counter(code for _, code, _ in self.ses_account.refusals),
            "ses_refusal_messages": Counter(
                f"{code}: {message[:60]}" for _, code, message in self.ses_account.refusals),
            "latency_stats": Counter(self.latency.stats),
            "lambda": {mapping.function.info.logical: {
                "invocations": mapping.function.invocations,
                "cold_starts": mapping.function.cold_starts,
                "timeouts": mapping.function.timeouts} for mapping in self.mappings},
            "timeline": self.timeline.as_data(),
        }

    def paused_windows(self) -> list[tuple[float, float]]:
        """(start, end) of each time a configuration set's sending was paused (end: resumed, or
        the end of the run)."""
        windows, paused_since = [], {}
        for at, name, enabled in self.ses_account.sending_changes:
            if not enabled:
                paused_since.setdefault(name, at)
            elif name in paused_since:
                windows.append((paused_since.pop(name), at))
        windows += [(at, float("inf")) for at in paused_since.values()]
        return windows

    def failed_items(self) -> list[dict]:
        """Items in a final failure status and the error that put them there."""
        if not self.wiring.table:
            return []
        failed = []
        for page in self.aws["dynamodb"].get_paginator("scan").paginate(
                TableName=self.wiring.table,
                FilterExpression="#status IN (:failed, :rejected, :rendering)",
                ExpressionAttributeNames={"#status": "status", "#error": "error"},
                ExpressionAttributeValues={":failed": {"S": "FAILED"},
                                           ":rejected": {"S": "REJECTED"},
                                           ":rendering": {"S": "RENDERING_FAILED"}},
                ProjectionExpression="orderId, #status, #error"):
            for item in page["Items"]:
                failed.append({"orderId": item["orderId"]["S"], "status": item["status"]["S"],
                               "error": item.get("error", {}).get("S", "")})
        return failed


def simulate_shard(template: dict, parameters: dict[str, str],
                   schedule: list[tuple[float, str]], *, seed: str, faults: float,
                   feedback_duplicates: float, redrive: bool, scenario: str, orders: int,
                   progress: Progress,
                   on_load: Callable[[str, types.ModuleType], None] | None) -> dict:
    """Deploy one copy of the stack in a fresh moto, play the `schedule` of orders through it
    while the scenario happens, until it settles; then (if `redrive`) redrive the DLQs once and
    play until it settles again; return its tally."""
    from moto import mock_aws  # heavy import: only when a run starts

    with sandbox(), mock_aws(), faster_moto():
        simulation = Simulation(template, parameters, seed=seed, faults=faults,
                                feedback_duplicates=feedback_duplicates,
                                scenario=SCENARIOS[scenario], orders=orders, progress=progress,
                                on_load=on_load)
        with virtual_retry_sleeps(simulation.clock, seed):
            simulation.play(schedule)
            before = simulation.tally_dlqs()
            if redrive and any(before.values()):
                simulation.timeline.happened(simulation.clock.now,
                                             "end of run: the runbook's redrive of every DLQ")
                simulation.operator_redrive()
                simulation.play([])
        progress.done()
        return {**simulation.tally(), "before_redrive": before,
                "redriven": dict(simulation.redriven)}


def _shard_process(connection, arguments: dict) -> None:
    """Body of a worker process: run one shard, send back ("ok" | "template" | "error", value)."""
    try:
        result = ("ok", simulate_shard(**arguments))
    except TemplateError as exc:
        result = ("template", str(exc))
    except BaseException:  # report anything, including a crash the simulation did not expect
        result = ("error", traceback.format_exc())
    connection.send(result)
    connection.close()


def run_shards(shards: list[dict]) -> list[dict]:
    """Run each shard (keyword arguments of `simulate_shard`): in forked worker processes when
    there are several and the platform can fork, else one after the other in this process."""
    if len(shards) == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [simulate_shard(**arguments) for arguments in shards]
    context = multiprocessing.get_context("fork")  # no pickling: workers inherit the arguments
    workers = []
    # The workers inherit every object of this process; frozen, their garbage collector leaves
    # those alone instead of touching (and so copying) their memory pages.
    gc.freeze()
    try:
        for arguments in shards:
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_shard_process, args=(sender, arguments),
                                      daemon=True)
            process.start()
            sender.close()
            workers.append((receiver, process))
    finally:
        gc.unfreeze()
    results = []
    for receiver, process in workers:
        try:
            status, value = receiver.recv()
        except EOFError:
            status, value = "error", "a worker process died without a result"
        process.join()
        if status == "template":
            raise TemplateError(value)
        if status == "error":
            raise RuntimeError(f"a simulation worker failed:\n{value}")
        results.append(value)
    return results


def split(orders: list[Order], schedule: list[tuple[float, str]],
          workers: int) -> list[list[tuple[float, str]]]:
    """The publish schedule cut into `workers` shards by order (order i goes to shard i mod
    workers): every copy of an order stays in one shard, at its own time."""
    shard_of = {order.body: index % workers for index, order in enumerate(orders)}
    shards: list[list[tuple[float, str]]] = [[] for _ in range(workers)]
    for at, body in schedule:
        shards[shard_of[body]].append((at, body))
    return [shard for shard in shards if shard]


def publish_schedule(positions: list[tuple[float, str]], count: int,
                     span_s: float) -> list[tuple[float, str]]:
    """(virtual time, body): the i-th of `count` orders is published at i/count of `span_s`
    after the start (copies at their own, later positions)."""
    interval = span_s / max(1, count)
    return [(START_EPOCH + position * interval, body) for position, body in positions]


def merge(tallies: list[dict]) -> dict:
    """One tally from several shards' (counts add up, lists concatenate)."""
    total = copy.deepcopy(tallies[0])
    for tally in tallies[1:]:
        total["emails"] += tally["emails"]
        total["ses_accepted_per_moto"] += tally["ses_accepted_per_moto"]
        total["virtual_s"] = max(total["virtual_s"], tally["virtual_s"])
        for key in ("sends", "email_outcomes", "status_counts", "feedback", "faults", "api_calls",
                    "ses_refusals", "ses_refusal_messages", "latency_stats"):
            total[key].update(tally[key])
        for key in ("untracked", "duplicate_examples", "timings", "failed_items"):
            total[key].extend(tally[key])
        for logical, counts in tally["lambda"].items():
            into = total["lambda"].setdefault(logical, dict.fromkeys(counts, 0))
            if into is not counts:
                for name, n in counts.items():
                    into[name] += n
        for name, bodies in tally["dlq"].items():
            total["dlq"].setdefault(name, []).extend(bodies)
        total["queued"].extend(tally["queued"])
        for key in ("before_redrive", "redriven"):
            for name, n in tally[key].items():
                total[key][name] = total[key].get(name, 0) + n
        for logical, function in tally["functions"].items():
            into = total["functions"].setdefault(logical, copy.deepcopy(function))
            if into is not function and into != function:
                into["function_errors"] += function["function_errors"]
                for key in ("stats", "outcomes", "metrics"):
                    into[key].update(function[key])
    for tally in tallies[1:]:
        for key in ("sent", "delivered"):
            total["canaries"][key] += tally["canaries"][key]
        total["sending_changes"].extend(tally["sending_changes"])
        total["emails_while_paused"] += tally["emails_while_paused"]
    total["duplicate_examples"] = total["duplicate_examples"][:EXAMPLES]
    total["timeline"] = merge_timelines([tally["timeline"] for tally in tallies])
    total["watch"] = [tally["watch"] for tally in tallies]  # per copy of the stack
    return total


def run(template: str | Path | dict = DEFAULT_TEMPLATE, *, orders: int = 200, seed: int = 1,
        scenario: str = DEFAULT_SCENARIO, faults: float = 0.0, duplicates: float = 0.1,
        invalid: float = 0.05, feedback_duplicates: float = 0.1,
        parameters: dict[str, str] | None = None, redrive: bool = True, workers: int = 2,
        progress: Progress | None = None,
        on_load: Callable[[str, types.ModuleType], None] | None = None) -> dict:
    """Simulate `orders` orders through the stack `template` describes, while `scenario`
    happens to it (simulation/scenarios.py); returns the report.

    `workers` > 1 splits the orders over that many copies of the stack, each in its own process
    (moto is single-threaded) and each with its own SES account living the scenario; the same
    seed and workers repeat a run. `on_load(logical_id, module)` is called with each loaded
    handler module (a test can break a handler with it). Raises TemplateError when the template
    cannot be simulated, KeyError for an unknown scenario.
    """
    started = _real_time.perf_counter()
    progress = progress or Progress(enabled=False)
    chosen_scenario = SCENARIOS[scenario]
    template = load_template(template)
    chosen = choose_parameters(template, {**chosen_scenario.parameters, **(parameters or {})})
    order_list, positions = make_orders(
        orders, random.Random(f"{seed}:orders"), duplicates, invalid,
        domain=chosen_scenario.customer_domain or SIMULATOR_DOMAIN,
        weights_at=chosen_scenario.outcome_weights)
    schedule = publish_schedule(positions, orders, chosen_scenario.arrival_span_s(orders))
    bodies = [body for _, body in schedule]
    shards = split(order_list, schedule, max(1, chosen_scenario.copies or workers))
    progress.phase(f"scenario {scenario}: deploying the template's data plane in moto "
                   f"({len(shards)} cop{'y' if len(shards) == 1 else 'ies'}), loading the "
                   f"handlers, publishing {len(bodies)} order messages ({orders} orders), "
                   f"playing the mappings and SES")
    tallies = run_shards([
        {"template": template, "parameters": chosen, "schedule": shard, "seed": f"{seed}:{index}",
         "faults": faults, "feedback_duplicates": feedback_duplicates, "redrive": redrive,
         "scenario": scenario, "orders": max(1, orders // len(shards)), "on_load": on_load,
         "progress": progress if index == 0 else Progress(enabled=False)}
        for index, shard in enumerate(shards)])
    progress.phase("checked the end state: emails SES accepted, table items, dead-letter queues")
    share = float(chosen.get("SesRateSharePercent", 100)) / 100
    report = build_report(merge(tallies), order_list, bodies, redrive=redrive,
                          drain_from=chosen_scenario.drain_from, rate_share=share)
    report["settings"] = {"seed": seed, "orders": orders, "scenario": scenario,
                          "scenario_summary": chosen_scenario.summary, "faults": faults,
                          "duplicates": duplicates, "invalid": invalid,
                          "feedback_duplicates": feedback_duplicates, "redrive": redrive,
                          "workers": len(shards),
                          "parameters": chosen}
    report["wall_s"] = round(_real_time.perf_counter() - started, 2)
    return report
