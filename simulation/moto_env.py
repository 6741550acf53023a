"""The moto environment a simulation runs in: fake credentials, and moto made fast enough.

`sandbox` gives the run fake credentials and a region, so nothing can reach AWS. `faster_moto`
replaces, for the run, a few moto internals whose cost grows with the queue or the item (the
answers stay the same).
"""

from __future__ import annotations

import contextlib
import functools
import os

from simulation.template import REGION


@contextlib.contextmanager
def faster_moto():
    """Two moto hot spots, replaced for the run by code that gives the same answers faster.

    - SQS checks a received message's retention by computing every queue attribute (each
      approximate count walks the whole queue): receiving is quadratic in the queue length. Read
      the retention period directly instead.
    - SQS computes every queue attribute three times per message sent, only to read
      ContentBasedDeduplication: sending is quadratic in the queue length too (a replay puts
      thousands of messages in one queue). While a message is sent, the queue's attributes are
      that one attribute.
    - DynamoDB parses an UpdateExpression twice per UpdateItem. Parse each distinct expression
      once: moto's validator deep-copies the tree before it resolves or executes anything, so a
      cached tree is never modified.
    A moto version without these internals simply runs unpatched (slower, same result).
    """
    from moto.core.utils import unix_time
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser
    from moto.sqs.models import Queue, SQSBackend

    patches = []

    def still_retained(backend, queue_name, message):
        period = int(backend.get_queue(queue_name).message_retention_period)
        return period + message.sent_timestamp / 1000 > unix_time()

    if hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        patches.append((SQSBackend, "is_message_valid_based_on_retention_period", still_retained))
    all_attributes, send = vars(Queue).get("attributes"), vars(SQSBackend).get("send_message")
    if isinstance(all_attributes, property) and callable(send):
        def attributes(queue):
            if not getattr(queue, "simulate_sending", False):
                return all_attributes.fget(queue)
            if not queue.fifo_queue:  # moto lists ContentBasedDeduplication for FIFO queues only
                return {}
            return {"ContentBasedDeduplication": str(queue.content_based_deduplication).lower()}

        def send_message(backend, queue_name, *args, **kwargs):
            queue = backend.get_queue(queue_name)
            queue.simulate_sending = True
            try:
                return send(backend, queue_name, *args, **kwargs)
            finally:
                queue.simulate_sending = False

        patches.append((Queue, "attributes", property(attributes)))
        patches.append((SQSBackend, "send_message", send_message))
    if isinstance(vars(UpdateExpressionParser).get("make"), classmethod):
        parse = UpdateExpressionParser.make.__func__
        cached = functools.lru_cache(maxsize=256)(lambda text: parse(UpdateExpressionParser, text))
        patches.append((UpdateExpressionParser, "make", staticmethod(cached)))
    saved = [(owner, name, vars(owner)[name]) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


@contextlib.contextmanager
def sandbox():
    """Fake credentials and region (nothing can reach AWS); os.environ restored afterwards."""
    saved = dict(os.environ)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                       "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
