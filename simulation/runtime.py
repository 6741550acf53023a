"""The Lambda and event-source runtime: the handlers run in this process on a virtual clock.

`Function` loads a function's `ZipFile` code as module `index` (as Lambda does) with the
template's environment variables, gives it the virtual clock as its `time`, and lets `Instrument`
hook its botocore clients (API call counts, injected faults, emails handed to the SES player).
`EventSourceMapping` plays an SQS event source mapping: batches, MaximumConcurrency invocations a
tick, partial batch failures, and the queue's visibility timeout before a retry, which passes on
the `VirtualClock` instantly in real time.
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
from dataclasses import dataclass
from typing import Any, Callable

from infra.code import load_as_index
from simulation.faults import CRASH_SHARE, Faults
from simulation.stack import FunctionInfo, MappingInfo, QueueInfo
from simulation.template import ACCOUNT_ID, REGION

# --- Virtual time -------------------------------------------------------------------------------
START_EPOCH = 1795780800  # 2026-11-27T12:00:00Z
TICK_S = 1  # one polling slot: an invocation of a batch takes about a second
MAX_VIRTUAL_S = 7 * 24 * 3600  # a run that has not settled after a week of virtual time is stuck
# moto counts visibility in real time; receive with a long one so that only the virtual clock
# decides when a failed message comes back (ChangeMessageVisibility 0 when its timeout passed).
SQS_HOLD_S = 43200


class SimulatedCrash(BaseException):
    """The send function died mid-invocation (timeout, out of memory, runtime crash).

    A BaseException, so the handler's per-record `except Exception` cannot swallow it, just as it
    could not swallow a real crash: the invocation fails and its whole batch comes back.
    """


class VirtualClock:
    """Simulated epoch seconds: a visibility timeout or a claim expiry passes instantly."""

    def __init__(self, start: float = START_EPOCH):
        self.now = float(start)


class TimeShim:
    """Stands in for a handler module's `time`: `time()` is the virtual clock, local time is UTC
    (as in Lambda), the rest is the real module."""

    def __init__(self, clock: VirtualClock):
        self._clock = clock

    def time(self) -> float:
        return self._clock.now

    def time_ns(self) -> int:
        return int(self._clock.now * 1e9)

    def sleep(self, seconds: float) -> None:
        self._clock.now += seconds

    def gmtime(self, seconds: float | None = None):
        return _real_time.gmtime(self._clock.now if seconds is None else seconds)

    localtime = gmtime

    def strftime(self, fmt: str, moment=None) -> str:
        return _real_time.strftime(fmt, self.gmtime() if moment is None else moment)

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_time, name)


class Instrument:
    """Hooks on the botocore clients a handler module created at import (found by type, not by
    name): counts every API call the handler makes, injects faults, and hands each email SES
    accepted to the SES player."""

    def __init__(self, faults: Faults, on_email: Callable[[dict, dict], Any]):
        self.faults = faults
        self.on_email = on_email
        self.calls: Counter = Counter()  # (function, operation) -> calls

    def attach(self, label: str, module: types.ModuleType) -> None:
        from botocore.client import BaseClient

        for value in list(vars(module).values()):
            if isinstance(value, BaseClient):
                self._hook(label, value)

    def _hook(self, label: str, client) -> None:
        events, service = client.meta.events, client.meta.service_model.service_name

        def before_call(model, context, **_):
            self.calls[(label, model.name)] += 1
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
    """The parts of the Lambda context object a handler may use."""

    def __init__(self, function: FunctionInfo, request_id: str):
        self.function_name = function.name
        self.aws_request_id = request_id
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function.name}"
        self._timeout_ms = function.timeout_s * 1000

    def get_remaining_time_in_millis(self) -> int:
        return self._timeout_ms


@dataclass
class Invocation:
    failed: set[str]  # message ids the response reported as batch item failures
    crashed: bool  # died mid-invocation (SimulatedCrash)
    errored: bool  # crashed or raised: Lambda retries the whole batch
    seconds: float


class Function:
    """One Lambda function of the template, running its `ZipFile` code in this process.

    The module is loaded with the template's environment set (handlers read it at import), its
    `time` is the virtual clock, and its clients are instrumented.
    """

    def __init__(self, info: FunctionInfo, clock: VirtualClock, instrument: Instrument,
                 on_load: Callable[[str, types.ModuleType], None] | None):
        self.info = info
        with environment(info.environment):
            self.module = load_as_index(info.code, f"<ZipFile of {info.logical}>")
        self.module.time = TimeShim(clock)
        instrument.attach(info.logical, self.module)
        self.entry = getattr(self.module, info.entry_point)
        self.invocations = 0
        self.errors = 0
        self.emf: Counter = Counter()
        self.outcomes: Counter = Counter()
        if on_load:
            on_load(info.logical, self.module)

    def invoke(self, event: dict) -> Invocation:
        """Run the handler on an SQS event; a crash or an error fails the whole batch."""
        self.invocations += 1
        context = LambdaContext(self.info, f"sim-{self.info.logical}-{self.invocations}")
        out = io.StringIO()
        crashed = False
        started = _real_time.perf_counter()
        with environment(self.info.environment), contextlib.redirect_stdout(out):
            try:
                result = self.entry(event, context)
            except SimulatedCrash:
                crashed, result = True, None
            except Exception as exc:  # a function error: Lambda retries the whole batch
                self.errors += 1
                print(json.dumps({"level": "ERROR", "message": f"function error: {exc!r}"}))
                result = None
        seconds = _real_time.perf_counter() - started
        ids = {record["messageId"] for record in event["Records"]}
        errored = result is None
        failed = ids if errored else self._failed_ids(result, ids)
        self._read_output(out.getvalue())
        return Invocation(failed=failed, crashed=crashed, errored=errored, seconds=seconds)

    @staticmethod
    def _failed_ids(result: Any, ids: set[str]) -> set[str]:
        """Lambda's rule: an itemIdentifier that is empty or not in the batch fails it all."""
        failures = result.get("batchItemFailures", []) if isinstance(result, dict) else []
        failed = {item.get("itemIdentifier") for item in failures if isinstance(item, dict)}
        return ids if failed - ids else failed

    def _read_output(self, text: str) -> None:
        """Sum the EMF metric lines and count the per-record log outcomes."""
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "_aws" in doc:
                for metric in doc["_aws"].get("CloudWatchMetrics", [{}])[0].get("Metrics", []):
                    value = doc.get(metric.get("Name"))
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.emf[metric["Name"]] += value
                    elif isinstance(value, list) and metric.get("Unit") == "Count":
                        self.emf[metric["Name"]] += sum(value)
            elif "outcome" in doc:
                self.outcomes[str(doc["outcome"])] += 1


class EventSourceMapping:
    """Plays one AWS::Lambda::EventSourceMapping against its queue in moto.

    Each tick runs up to MaximumConcurrency invocations. An invocation receives up to BatchSize
    messages (moto counts each receive and moves a message to the DLQ after maxReceiveCount),
    deletes the acknowledged ones, and schedules the failed ones to become visible again when the
    queue's VisibilityTimeout has passed on the virtual clock.
    """

    def __init__(self, info: MappingInfo, queue: QueueInfo, function: Function, role: str,
                 sqs, clock: VirtualClock, observe: Callable[[list[dict]], None] | None = None):
        self.info, self.queue, self.function, self.role = info, queue, function, role
        self.sqs, self.clock, self.observe = sqs, clock, observe
        self.returning: list[tuple[float, str]] = []  # (visible again at, receipt handle)
        self.stats: Counter = Counter()
        self.ms_per_record: list[float] = []

    def next_due(self) -> float | None:
        return min((due for due, _ in self.returning), default=None)

    def tick(self) -> bool:
        """Release the messages whose visibility timeout passed, then poll; True if any work."""
        self._release_due()
        worked = False
        for _ in range(max(1, self.info.max_concurrency)):
            if not self._invoke_once():
                break
            worked = True
        return worked

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

    def _receive(self) -> list[dict]:
        batch: list[dict] = []
        while len(batch) < self.info.batch_size:
            wanted = min(10, self.info.batch_size - len(batch))
            messages = self.sqs.receive_message(
                QueueUrl=self.queue.url, MaxNumberOfMessages=wanted, AttributeNames=["All"],
                VisibilityTimeout=SQS_HOLD_S).get("Messages", [])
            self.stats["receive_calls"] += 1
            batch.extend(messages)
            if len(messages) < wanted:
                break
        return batch

    def _invoke_once(self) -> bool:
        messages = self._receive()
        if not messages:
            return False
        self.stats["deliveries"] += len(messages)
        self.stats["invocations"] += 1
        records = [self._record(message) for message in messages]
        if self.observe:
            self.observe(records)
        result = self.function.invoke({"Records": records})
        self.ms_per_record.append(result.seconds * 1000 / len(records))
        self.stats["crashed_invocations"] += result.crashed
        if result.errored or self.info.report_batch_item_failures:
            failed = result.failed
        else:
            # Without ReportBatchItemFailures Lambda ignores the response: a batch that returned
            # is deleted whole, its failures included. Only an error retries it.
            failed = set()
        self.stats["failed_records"] += len(failed)
        handles = {r["messageId"]: r["receiptHandle"] for r in records}
        due = self.clock.now + self.queue.visibility_timeout
        self.returning.extend((due, handles[message_id]) for message_id in sorted(failed))
        done = [handles[m] for m in handles if m not in failed]
        for start in range(0, len(done), 10):
            entries = [{"Id": str(i), "ReceiptHandle": handle}
                       for i, handle in enumerate(done[start:start + 10])]
            self.sqs.delete_message_batch(QueueUrl=self.queue.url, Entries=entries)
        return True

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
