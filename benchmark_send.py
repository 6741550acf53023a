"""Benchmark the send-order-email handler in-process under moto (no network, no AWS account).

Prints figures, asserts nothing:
- AWS API calls per email (and per redelivered duplicate), by operation: PutMetricData must not
  appear (metrics are EMF log lines);
- mean handler time per order under moto (moto's own work included, so an upper bound of the
  handler's share, not a prediction of Lambda latency), without the pacer's waits for a sending
  turn: SES is the SES model with a first production account's rate (14 a second), the waits
  are skipped on a fast-forward clock and reported beside (what they would cost at that rate);
- cold-import time of both handlers vs a bare `import boto3`, each measured in fresh
  interpreters, interleaved, median of several runs; with `--compare-with REV` the handler files
  of that git revision are measured in the same runs (old vs new under the same conditions).

Usage: python benchmark_send.py [--orders 200] [--batch-size 10] [--repeats 7] [--compare-with REV]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent
HANDLER = ROOT / "handlers" / "send_order_email.py"
TABLE = "bench-email-deliveries"
ENV = {
    # Fake credentials and no instance metadata lookups: nothing can reach AWS.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "EMAIL_DELIVERIES_TABLE": TABLE,
    "SES_FROM_ADDRESS": "orders@shop.example.com",
    "SES_CONFIG_SET": "bench-ses-config-set",
    "ENABLE_PRODUCTION_SES": "true",
    "TEST_EMAIL_ADDRESS": "qa-inbox@shop.example.com",
    "ENVIRONMENT": "bench",
    "METRICS_NAMESPACE": "bench/EmailNotifications",
    "RECORD_TTL_DAYS": "90",
    "SES_RATE_SHARE_PERCENT": "100",
    "SEND_MAX_CONCURRENCY": "2",
}
ORDER = {
    "customerEmail": "ada@example.com",
    "customerName": "Ada Lovelace",
    "items": [
        {"name": "Widget", "quantity": 2, "unitPrice": "9.99"},
        {"name": "Gadget", "quantity": 1, "unitPrice": "1250.00"},
    ],
    "total": "1269.98",
    "currency": "USD",
    "orderDate": "2026-11-27T12:00:00Z",
}


class Context:
    aws_request_id = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def load_handler():
    """The handler as Lambda runs ZipFile code: module `index`, compiled from source (no .pyc)."""
    module = types.ModuleType("index")
    exec(compile(HANDLER.read_text(encoding="utf-8"), str(HANDLER), "exec"), module.__dict__)
    return module


def sqs_event(bodies: list[str]) -> dict:
    return {"Records": [{"messageId": f"m-{i}", "body": b, "eventSource": "aws:sqs"}
                        for i, b in enumerate(bodies)]}


def run_orders(orders: int, batch_size: int) -> dict:
    """Send `orders` distinct orders, then redeliver them all; count calls, time the handler."""
    os.environ.update(ENV)
    import boto3
    import botocore.client
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from simulation.runtime import FastForwardTime
    from simulation.ses_model import SesModel

    calls: collections.Counter[str] = collections.Counter()
    real_call = botocore.client.BaseClient._make_api_call

    def counting_call(client, operation_name, params):
        calls[operation_name] += 1
        return real_call(client, operation_name, params)

    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"},
                       {"AttributeName": "messageId", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "orderId", "AttributeType": "S"},
                                  {"AttributeName": "messageId", "AttributeType": "S"}],
        )
        boto3.client("ses").verify_domain_identity(Domain="shop.example.com")
        handler = load_handler()
        clock = handler.time = FastForwardTime()
        account = SesModel(clock=clock.time)  # a first production account: 14 emails a second
        account.add_identity("shop.example.com")
        account.add_configuration_set(ENV["SES_CONFIG_SET"])
        account.attach(handler.ses)
        bodies = [json.dumps({"orderId": f"BENCH-{n:06d}", **ORDER}) for n in range(orders)]
        batches = [bodies[i:i + batch_size] for i in range(0, orders, batch_size)]
        botocore.client.BaseClient._make_api_call = counting_call
        try:
            phases = {}
            for phase in ("new orders", "redeliveries"):
                calls.clear()
                elapsed = 0.0
                paced_before = clock.skipped
                for batch in batches:
                    event = sqs_event(batch)
                    with contextlib.redirect_stdout(io.StringIO()):
                        started = time.perf_counter()
                        result = handler.lambda_handler(event, Context())
                        elapsed += time.perf_counter() - started
                    assert not result["batchItemFailures"], result
                phases[phase] = {"calls": dict(calls), "seconds": elapsed,
                                 "paced_seconds": clock.skipped - paced_before}
        finally:
            botocore.client.BaseClient._make_api_call = real_call
        emails = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_message_count
    return {"emails": emails, "phases": phases}


HANDLERS = ("send_order_email", "ses_feedback_processor")
BASELINE_SNIPPETS = {
    "bare `import boto3`": "import boto3",
}
# A handler compiled from source like ZipFile code (Lambda's /var/task has no .pyc for it).
HANDLER_SNIPPET = (
    "import types; m = types.ModuleType('index');"
    " exec(compile(open(HANDLER).read(), HANDLER, 'exec'), m.__dict__)"
)


def handler_files(compare_with: str | None, scratch: Path) -> dict[str, Path]:
    """label -> handler file to cold-import: this checkout's, and `compare_with`'s if given."""
    files = {f"{name} (now)": ROOT / "handlers" / f"{name}.py" for name in HANDLERS}
    if compare_with:
        for name in HANDLERS:
            text = subprocess.run(["git", "show", f"{compare_with}:handlers/{name}.py"], cwd=ROOT,
                                  check=True, capture_output=True, text=True).stdout
            path = scratch / compare_with.replace("/", "_") / f"{name}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            files[f"{name} ({compare_with})"] = path
    return dict(sorted(files.items()))


def cold_import(repeats: int, files: dict[str, Path]) -> dict[str, list[float]]:
    """Milliseconds to run each snippet in a fresh interpreter (startup excluded), interleaved."""
    env = {**os.environ, **ENV, "PYTHONDONTWRITEBYTECODE": "1"}
    snippets = dict(BASELINE_SNIPPETS)
    for label, path in files.items():
        snippets[label] = HANDLER_SNIPPET.replace("HANDLER", repr(str(path)))
    timings: dict[str, list[float]] = {label: [] for label in snippets}
    for _ in range(repeats):
        for label, snippet in snippets.items():
            code = ("import time; t = time.perf_counter(); " + snippet
                    + "; print((time.perf_counter() - t) * 1000)")
            out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True).stdout
            timings[label].append(float(out.strip().splitlines()[-1]))
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200, help="distinct orders to send (200)")
    parser.add_argument("--batch-size", type=int, default=10,
                        help="SQS records per invocation (10)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="fresh interpreters per cold-import measurement (7)")
    parser.add_argument("--compare-with", metavar="REV",
                        help="also cold-import the handler files of this git revision")
    args = parser.parse_args(argv)

    result = run_orders(args.orders, args.batch_size)
    new, again = result["phases"]["new orders"], result["phases"]["redeliveries"]
    print(f"orders: {args.orders} in batches of {args.batch_size}; emails sent: {result['emails']}"
          f" (redeliveries sent {result['emails'] - args.orders} more)")
    for label, phase in (("per email", new), ("per duplicate", again)):
        total = sum(phase["calls"].values())
        detail = ", ".join(f"{op} {n / args.orders:g}" for op, n in sorted(phase["calls"].items()))
        print(f"API calls {label}: {total / args.orders:g} ({detail});"
              f" PutMetricData: {phase['calls'].get('PutMetricData', 0)}")
    for label, phase in (("new order", new), ("duplicate", again)):
        print(f"mean handler time per {label} under moto: "
              f"{phase['seconds'] * 1000 / args.orders:.2f} ms (without waits for a sending "
              f"turn; at 14 emails a second shared by 2 copies they would add "
              f"{phase['paced_seconds'] * 1000 / args.orders:.1f} ms)")

    with tempfile.TemporaryDirectory() as scratch:
        timings = cold_import(args.repeats, handler_files(args.compare_with, Path(scratch)))
    print(f"cold import, median of {args.repeats} fresh interpreters (startup excluded):")
    base = statistics.median(timings["bare `import boto3`"])
    for label, values in timings.items():
        median = statistics.median(values)
        print(f"  {label:42} {median:7.1f} ms  (+{median - base:.1f} ms vs bare import boto3)")


if __name__ == "__main__":
    main()
