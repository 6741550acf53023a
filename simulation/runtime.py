"""The Lambda and event-source runtime: the handlers run in this process on a virtual clock.

Time. `VirtualClock.now` is the simulation's time. An invocation runs on its own copy of it
(`clock.invocation`), which every AWS call moves forward by its modelled latency
(simulation/latency.py), so invocations that overlap in virtual time run one after the other in
this process. An invocation whose clock passes its function's timeout dies (`FunctionTimeout`):
Lambda then retries its whole batch.

Functions. `Function` runs a function's `ZipFile` code as module `index` (as Lambda does), one
module per execution environment (`Container`): the first invocation on a concurrency slot is a
cold start that imports the module (its clients, its per-container caches), and a crash or a
timeout discards the environment. `Instrument` hooks each container's botocore clients (API call
counts, injected faults, emails handed to the SES player and the SES model).

Event sources. `EventSourceMapping` plays an SQS event source mapping like Lambda's poller: it
receives messages into a batch, invokes when the batch is full or its batching window has passed
and a concurrency slot (MaximumConcurrency) is free, deletes what succeeded, and lets the failed
records come back when the queue's visibility timeout has passed on the virtual clock.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import time as _real_time
import types
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from infra.code import load_as_index
from simulation.faults import CRASH_SHARE, Faults
from simulation.stack import FunctionInfo, MappingInfo, QueueInfo
from simulation.template import ACCOUNT_ID, REGION

# --- Virtual time -------------------------------------------------------------------------------
START_EPOCH = 1795780800  # 2026-11-27T12:00:00Z
MAX_VIRTUAL_S = 7 * 24 * 3600  # a run that has not settled after a week of virtual time is stuck
# moto counts visibility in real time; receive with a long one so that only the virtual clock
# decides when a failed message comes back (ChangeMessageVisibility 0 when its timeout passed).
SQS_HOLD_S = 43200
# Lambda's own share of an invocation: a warm start, and the init of a new execution environment
# (the runtime, the handler module's imports and clients).
WARM_START_S = 0.005
COLD_START_S = 0.450
# A handler's own work per record (parsing, rendering, JSON), beside its AWS calls.
CPU_PER_RECORD_S = 0.002


class SimulatedCrash(BaseException):
    """The send function died mid-invocation (out of memory, runtime crash).

    A BaseException, so the handler's per-record `except Exception` cannot swallow it, just as it
    could not swallow a real crash: the invocation fails and its whole batch comes back.
    """


class FunctionTimeout(BaseException):
    """The invocation ran past its function's timeout: Lambda stops it and fails its batch."""


class VirtualClock:
    """Simulated epoch seconds: a visibility timeout or a claim expiry passes instantly.

    Outside an invocation `time()` is `now`; inside one it is the invocation's own time, which
    `advance` moves forward (a call's latency, a back-off) up to the invocation's deadline.
    """

    def __init__(self, start: float = START_EPOCH):
        self.now = float(start)
        self._local: float | None = None
        self._deadline: float | None = None

    def time(self) -> float:
        return self.now if self._local is None else self._local

    def advance(self, seconds: float) -> None:
        if self._local is None:
            self.now += seconds
            return
        self._local += seconds
        if self._deadline is not None and self._local > self._deadline:
            self._local = self._deadline
            raise FunctionTimeout(f"ran past its timeout at t+{self._local - START_EPOCH:.1f}s")

    @contextlib.contextmanager
    def invocation(self, start: float, timeout_s: float):
        """Run an invocation from `start` on its own clock; yields a callable for its end."""
        saved = self._local, self._deadline
        self._local, self._deadline = start, start + timeout_s
        try:
            yield lambda: self._local
        finally:
            self._local, self._deadline = saved


class TimeShim:
    """Stands in for a handler module's `time`: `time()` and `perf_counter()` are the virtual
    clock (the invocation's own time), `sleep` passes on it, local time is UTC (as in Lambda),
    the rest is the real module."""

    def __init__(self, clock: VirtualClock):
        self._clock = clock

    def time(self) -> float:
        return self._clock.time()

    def time_ns(self) -> int:
        return int(self._clock.time() * 1e9)

    def perf_counter(self) -> float:
        return self._clock.time()

    def monotonic(self) -> float:
        return self._clock.time()

    def sleep(self, seconds: float) -> None:
        self._clock.advance(seconds)

    def gmtime(self, seconds: float | None = None):
        return _real_time.gmtime(self._clock.time() if seconds is None else seconds)

    localtime = gmtime

    def strftime(self, fmt: str, moment=None) -> str:
        return _real_time.strftime(fmt, self.gmtime() if moment is None else moment)

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_time, name)


class FastForwardTime:
    """Stands in for a handler module's `time` outside the simulation (tests, the benchmark):
    the real clock, except that `sleep` skips ahead instead of waiting, so the send handler's
    waits for its sending turn cost nothing and are counted (`skipped`). Without sleeps it is
    the real clock."""

    def __init__(self):
        self.skipped = 0.0

    def time(self) -> float:
        return _real_time.time() + self.skipped

    def monotonic(self) -> float:
        return _real_time.monotonic() + self.skipped

    def perf_counter(self) -> float:
        return _real_time.perf_counter() + self.skipped

    def sleep(self, seconds: float) -> None:
        self.skipped += max(0.0, seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_time, name)


class Instrument:
    """Hooks on the botocore clients a handler module created at import (found by type, not by
    name): counts every API call the handler makes, puts the SES model (real SES's refusals) and
    the latency model (each call's time on the virtual clock) in front of moto, injects faults,
    and hands each email SES accepted to the SES player."""

    def __init__(self, faults: Faults, on_email: Callable[[dict, dict], Any], *,
                 clock: VirtualClock | None = None, ses_account: Any = None, latency: Any = None,
                 lambda_control: Any = None):
        self.faults = faults
        self.on_email = on_email
        self.clock, self.ses_account, self.latency = clock, ses_account, latency
        self.lambda_control = lambda_control
        self.calls: Counter = Counter()  # (function, operation) -> calls

    def attach(self, label: str, module: types.ModuleType) -> None:
        from botocore.client import BaseClient

        for value in list(vars(module).values()):
            if isinstance(value, BaseClient):
                self._hook(label, value)

    def _hook(self, label: str, client) -> None:
        events, service = client.meta.events, client.meta.service_model.service_name

        def count(model, **_):
            self.calls[(label, model.name)] += 1

        events.register_first("before-parameter-build", count)
        if self.ses_account is not None and service in ("ses", "sesv2"):
            self.ses_account.attach(client)
        if self.lambda_control is not None and service == "lambda":
            self.lambda_control.attach(client)
        if self.latency is not None and self.clock is not None:
            self.latency.attach(client, self.clock)

        def before_call(model, context, **_):
            if service == "ses" and model.name in ("SendEmail", "SendRawEmail"):
                if self.faults.hit("ses_throttling", self.faults.rate):
                    raise _client_error(client, "Throttling", "Maximum sending rate exceeded.",
                                        model.name)
            elif service == "dynamodb":
                if self.faults.hit("dynamodb_errors", self.faults.rate):
                    raise _client_error(client, "ProvisionedThroughputExceededException",
                                        "The level of configured provisioned throughput for the "
                                        "table was exceeded.", model.name)

        def keep_params(params, context, **_):
            context["simulate_params"] = copy.deepcopy(params)

        def after_send(http_response, parsed, context, **_):
            if http_response.status_code >= 300:
                return
            email = self.on_email(context.get("simulate_params", {}), parsed)
            if self.faults.hit("crashes_after_send", self.faults.rate * CRASH_SHARE):
                email.crashed = True
                raise SimulatedCrash("send function died after SES accepted the email")

        events.register("before-call", before_call)
        if service == "ses":
            for operation in ("SendEmail", "SendRawEmail"):
                events.register(f"before-parameter-build.ses.{operation}", keep_params)
                events.register(f"after-call.ses.{operation}", after_send)


def _client_error(client, code: str, message: str, operation: str) -> Exception:
    """The exception botocore raises for `code` (its modeled class when the service has one)."""
    response = {"Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": 400}}
    return client.exceptions.from_code(code)(response, operation)


@contextlib.contextmanager
def environment(variables: dict[str, str]):
    """`os.environ` with `variables` set; restored afterwards."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class LambdaContext:
    """The parts of the Lambda context object a handler may use; the remaining time runs on the
    invocation's virtual clock."""

    def __init__(self, function: FunctionInfo, request_id: str, clock: VirtualClock,
                 deadline: float):
        self.function_name = function.name
        self.aws_request_id = request_id
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function.name}"
        self._clock, self._deadline = clock, deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock.time()) * 1000))


@dataclass
class Invocation:
    failed: set[str]  # message ids the response reported as batch item failures
    crashed: bool  # died mid-invocation (SimulatedCrash or FunctionTimeout)
    errored: bool  # crashed or raised: Lambda retries the whole batch
    timed_out: bool
    seconds: float  # wall-clock time of the handler in this process
    ended_at: float  # virtual time the invocation ended
    log_lines: list[dict] = field(default_factory=list)


class Container:
    """One execution environment: the handler module as one cold start imported it."""

    def __init__(self, info: FunctionInfo, clock: VirtualClock, instrument: Instrument,
                 on_load: Callable[[str, types.ModuleType], None] | None):
        with environment(info.environment):
            self.module = load_as_index(info.code, f"<ZipFile of {info.logical}>")
        self.module.time = TimeShim(clock)
        instrument.attach(info.logical, self.module)
        self.entry = getattr(self.module, info.entry_point)
        if on_load:
            on_load(info.logical, self.module)


class Function:
    """One Lambda function of the template, running its `ZipFile` code in this process, one
    `Container` per concurrency slot in use."""

    def __init__(self, info: FunctionInfo, clock: VirtualClock, instrument: Instrument,
                 on_load: Callable[[str, types.ModuleType], None] | None,
                 on_emf: Callable[[dict], None] | None = None):
        self.info, self.clock, self.instrument, self.on_load = info, clock, instrument, on_load
        self.on_emf = on_emf
        self.containers: dict[Any, Container] = {}
        self.invocations = 0
        self.cold_starts = 0
        self.errors = 0
        self.timeouts = 0
        self.emf: Counter = Counter()
        self.outcomes: Counter = Counter()

    def invoke(self, event: dict, *, slot: Any, start: float) -> Invocation:
        """Run the handler on an event from virtual time `start`, in the container of `slot`
        (a cold start if there is none); a crash, a timeout or an error fails the whole batch."""
        self.invocations += 1
        out = io.StringIO()
        crashed = timed_out = False
        result = None
        began = _real_time.perf_counter()
        with self.clock.invocation(start, self.info.timeout_s) as local_time, \
                environment(self.info.environment), contextlib.redirect_stdout(out):
            try:
                container = self.containers.get(slot)
                if container is None:
                    self.cold_starts += 1
                    self.clock.advance(COLD_START_S)
                    container = self.containers[slot] = Container(
                        self.info, self.clock, self.instrument, self.on_load)
                self.clock.advance(WARM_START_S + CPU_PER_RECORD_S * len(event.get("Records", [])))
                context = LambdaContext(self.info, f"sim-{self.info.logical}-{self.invocations}",
                                        self.clock, start + self.info.timeout_s)
                result = container.entry(event, context)
            except SimulatedCrash:
                crashed = True
            except FunctionTimeout:
                crashed = timed_out = True
                self.timeouts += 1
            except Exception as exc:  # a function error: Lambda retries the whole batch
                self.errors += 1
                print(json.dumps({"level": "ERROR", "message": f"function error: {exc!r}"}))
            ended_at = local_time()
        if crashed:  # Lambda replaces an environment that crashed or timed out
            self.containers.pop(slot, None)
        seconds = _real_time.perf_counter() - began
        ids = {record["messageId"] for record in event.get("Records", [])}
        errored = result is None
        failed = ids if errored else self._failed_ids(result, ids)
        lines = self._read_output(out.getvalue())
        return Invocation(failed=failed, crashed=crashed, errored=errored, timed_out=timed_out,
                          seconds=seconds, ended_at=ended_at, log_lines=lines)

    @staticmethod
    def _failed_ids(result: Any, ids: set[str]) -> set[str]:
        """Lambda's rule: an itemIdentifier that is empty or not in the batch fails it all."""
        failures = result.get("batchItemFailures", []) if isinstance(result, dict) else []
        failed = {item.get("itemIdentifier") for item in failures if isinstance(item, dict)}
        return ids if failed - ids else failed

    def _read_output(self, text: str) -> list[dict]:
        """Sum the EMF metric lines and count the per-record log outcomes; returns the JSON log
        lines (not the EMF ones)."""
        lines = []
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "_aws" in doc:
                if self.on_emf:
                    self.on_emf(doc)
                for metric in doc["_aws"].get("CloudWatchMetrics", [{}])[0].get("Metrics", []):
                    value = doc.get(metric.get("Name"))
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.emf[metric["Name"]] += value
                    elif isinstance(value, list) and metric.get("Unit") == "Count":
                        self.emf[metric["Name"]] += sum(value)
            else:
                lines.append(doc)
                if "outcome" in doc:
                    self.outcomes[str(doc["outcome"])] += 1
        return lines


class EventSourceMapping:
    """Plays one AWS::Lambda::EventSourceMapping against its queue in moto, like Lambda's poller.

    The poller receives messages into a batch (moto counts each receive and moves a message to
    the DLQ after maxReceiveCount). It invokes the function when the batch is full or its
    batching window has passed, on a free concurrency slot (at most MaximumConcurrency
    invocations at once, each slot busy until its invocation ends). Acknowledged messages are
    deleted; failed ones become visible again when the queue's VisibilityTimeout, counted from
    their receive, has passed on the virtual clock. A disabled mapping stops polling; the
    messages wait in the queue.
    """

    def __init__(self, info: MappingInfo, queue: QueueInfo, function: Function, role: str,
                 sqs, clock: VirtualClock,
                 observe: Callable[[list[dict], "Invocation"], None] | None = None):
        self.info, self.queue, self.function, self.role = info, queue, function, role
        self.sqs, self.clock, self.observe = sqs, clock, observe
        self.enabled = info.enabled
        self.returning: list[tuple[float, str]] = []  # (visible again at, receipt handle)
        self.slots: list[float] = [0.0] * max(1, info.max_concurrency)  # busy until
        self.batch: list[tuple[float, dict]] = []  # (received at, message) awaiting an invoke
        self.may_have_messages = True
        self.stats: Counter = Counter()
        self.ms_per_record: list[float] = []

    def notify(self) -> None:
        """Messages may have arrived in the queue (a publish, a redrive)."""
        self.may_have_messages = True

    def next_due(self) -> float | None:
        """The next virtual time this mapping has something to do, if any."""
        times = [due for due, _ in self.returning]
        if self.enabled and (self.batch or self.may_have_messages):
            free_at = min(self.slots)
            if self.batch:
                window_ends = self.batch[0][0] + self.info.batching_window_s
                full = len(self.batch) >= self.info.batch_size
                times.append(max(free_at, self.clock.now if full else window_ends))
            else:
                times.append(max(free_at, self.clock.now))
        return min(times, default=None)

    def busy(self) -> bool:
        """Whether an invocation is still running (in virtual time) or a batch is waiting."""
        return bool(self.batch) or max(self.slots) > self.clock.now

    def tick(self) -> bool:
        """Release the messages whose visibility timeout passed, then poll and invoke while a
        slot is free and a batch is ready; True if anything was invoked."""
        self._release_due()
        if not self.enabled:
            return False
        worked = False
        while True:
            slot = min(range(len(self.slots)), key=lambda index: self.slots[index])
            if self.slots[slot] > self.clock.now:
                return worked  # every slot busy
            self._fill_batch()
            if not self.batch:
                return worked
            full = len(self.batch) >= self.info.batch_size
            if not full and self.clock.now < self.batch[0][0] + self.info.batching_window_s:
                return worked  # the batching window is still open
            self._invoke(slot)
            worked = True

    def _release_due(self) -> None:
        now = self.clock.now
        due = [handle for when, handle in self.returning if when <= now]
        if not due:
            return
        self.returning = [(when, handle) for when, handle in self.returning if when > now]
        for start in range(0, len(due), 10):
            entries = [{"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                       for i, handle in enumerate(due[start:start + 10])]
            self.sqs.change_message_visibility_batch(QueueUrl=self.queue.url, Entries=entries)
        self.may_have_messages = True

    def _fill_batch(self) -> None:
        while self.may_have_messages and len(self.batch) < self.info.batch_size:
            wanted = min(10, self.info.batch_size - len(self.batch))
            messages = self.sqs.receive_message(
                QueueUrl=self.queue.url, MaxNumberOfMessages=wanted, AttributeNames=["All"],
                VisibilityTimeout=SQS_HOLD_S).get("Messages", [])
            self.stats["receive_calls"] += 1
            self.batch.extend((self.clock.now, message) for message in messages)
            if len(messages) < wanted:
                self.may_have_messages = False

    def _invoke(self, slot: int) -> None:
        taken, self.batch = self.batch, []
        received_at = {message["MessageId"]: at for at, message in taken}
        messages = [message for _, message in taken]
        self.stats["deliveries"] += len(messages)
        self.stats["invocations"] += 1
        records = [self._record(message) for message in messages]
        result = self.function.invoke({"Records": records}, slot=(self.info.logical, slot),
                                      start=self.clock.now)
        if self.observe:
            self.observe(records, result)
        self.slots[slot] = result.ended_at
        self.ms_per_record.append(result.seconds * 1000 / len(records))
        self.stats["crashed_invocations"] += result.crashed
        self.stats["timed_out_invocations"] += result.timed_out
        if result.errored or self.info.report_batch_item_failures:
            failed = result.failed
        else:
            # Without ReportBatchItemFailures Lambda ignores the response: a batch that returned
            # is deleted whole, its failures included. Only an error retries it.
            failed = set()
        self.stats["failed_records"] += len(failed)
        handles = {r["messageId"]: r["receiptHandle"] for r in records}
        self.returning.extend(
            (received_at[message_id] + self.queue.visibility_timeout, handles[message_id])
            for message_id in sorted(failed))
        done = [handles[m] for m in handles if m not in failed]
        for start in range(0, len(done), 10):
            entries = [{"Id": str(i), "ReceiptHandle": handle}
                       for i, handle in enumerate(done[start:start + 10])]
            self.sqs.delete_message_batch(QueueUrl=self.queue.url, Entries=entries)

    def _record(self, message: dict) -> dict:
        attributes = message.get("Attributes", {})
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {key: attributes[key] for key in (
                "ApproximateReceiveCount", "SentTimestamp", "SenderId",
                "ApproximateFirstReceiveTimestamp") if key in attributes},
            "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue.arn,
            "awsRegion": REGION,
        }
