"""Test harness for the send-order-email handler: a moto "stack" (table, SES identities) with the
handler loaded as module `index`, helpers to invoke it and read what happened (items, emails, log
lines, the EMF metrics line, AWS API calls), and fault injection on the handler's own clients.

Shared by `tests/test_send_order_email*.py`; conftest.py (owned by the lead) provides the loading.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.client
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from conftest import REGION, FakeContext, load_event, load_handler, sqs_event
from simulation.runtime import FastForwardTime
from simulation.ses_model import SesModel

TABLE = "test-email-deliveries"
DOMAIN = "shop.example.com"
FROM_ADDRESS = "orders@shop.example.com"
TEST_INBOX = "qa-inbox@shop.example.com"
CONFIG_SET = "test-ses-config-set"
NAMESPACE = "test/EmailNotifications"
TTL_DAYS = 90
MESSAGE_ID = "order-confirmation"


_CLIENTS: dict[str, Any] = {}
_SESSION: list[boto3.Session] = []


def shared_session() -> boto3.Session:
    """One boto3 session for all tests. mock_aws() swaps in a fresh default session per test, which
    re-reads the service models from disk (most of a test's time); the handler's clients are made
    the same way either way (`boto3.client`, i.e. the default session)."""
    if not _SESSION:
        _SESSION.append(boto3.Session(region_name=REGION))
    return _SESSION[0]


def aws_client(service: str):
    """The test's own client, created once: moto intercepts it inside every mock_aws()."""
    if service not in _CLIENTS:
        _CLIENTS[service] = shared_session().client(service, region_name=REGION)
    return _CLIENTS[service]


def env(production: bool) -> dict[str, str]:
    """The function's environment as the template sets it."""
    return {
        "EMAIL_DELIVERIES_TABLE": TABLE,
        "SES_FROM_ADDRESS": FROM_ADDRESS,
        "SES_CONFIG_SET": CONFIG_SET,
        "ENABLE_PRODUCTION_SES": "true" if production else "false",
        "TEST_EMAIL_ADDRESS": TEST_INBOX,
        "ENVIRONMENT": "test",
        "METRICS_NAMESPACE": NAMESPACE,
        "RECORD_TTL_DAYS": str(TTL_DAYS),
        "SES_RATE_SHARE_PERCENT": "100",
        "SEND_MAX_CONCURRENCY": "2",
    }


def create_table(client) -> None:
    """The table as the template defines it (key, GSIs EmailIndex and StatusIndex)."""
    client.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "orderId", "KeyType": "HASH"},
            {"AttributeName": "messageId", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "orderId", "AttributeType": "S"},
            {"AttributeName": "messageId", "AttributeType": "S"},
            {"AttributeName": "to", "AttributeType": "S"},
            {"AttributeName": "status", "AttributeType": "S"},
            {"AttributeName": "timestamp", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": hash_key, "KeyType": "HASH"},
                    {"AttributeName": "timestamp", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for name, hash_key in (("EmailIndex", "to"), ("StatusIndex", "status"))
        ],
    )


def body(order: dict) -> str:
    return json.dumps(order)


def order_body(fixture: str = "order_full.json", **changes: Any) -> str:
    """An SQS body: the JSON fixture `events/send/<fixture>` with `changes` applied."""
    return body({**load_event(f"send/{fixture}"), **changes})


def decode_tag(value: str) -> str:
    """The feedback processor's side of the tag encoding (base64url, padding stripped)."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")


def client_error(code: str, operation: str, status: int = 400,
                 message: str = "injected") -> ClientError:
    """The error botocore raises when AWS answers `code` (after its own retries gave up)."""
    response = {"Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


class Crash(BaseException):
    """The invocation dies here (timeout, out of memory): nothing in the handler can catch it."""


@dataclass
class Invocation:
    """What one handler call returned and printed."""

    result: dict
    logs: list[dict]
    metrics: dict[str, Any]
    emf_lines: list[dict]
    output: str

    @property
    def failures(self) -> list[str]:
        return [failure["itemIdentifier"] for failure in self.result["batchItemFailures"]]

    def log_for(self, sqs_message_id: str) -> dict:
        lines = [line for line in self.logs if line.get("sqsMessageId") == sqs_message_id]
        assert len(lines) == 1, f"expected one log line for {sqs_message_id}, got {lines}"
        return lines[0]


@dataclass
class Stack:
    """The handler under moto with everything it talks to."""

    handler: Any
    dynamodb: Any
    # Real SES's account state in front of moto (simulation/ses_model.py): a production account
    # with the domain verified and the configuration set in place, a rate high enough that no
    # test is throttled unless it asks for it.
    ses: SesModel
    api_calls: list[str] = field(default_factory=list)
    ses_requests: list[dict] = field(default_factory=list)
    clock: FastForwardTime = field(default_factory=FastForwardTime)  # the handler's time

    @classmethod
    def start(cls, monkeypatch, production: bool = True, **overrides: str) -> "Stack":
        """Create the resources, then load the handler (its clients are module level)."""
        for name, value in {**env(production), **overrides}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", shared_session())
        dynamodb = aws_client("dynamodb")
        create_table(dynamodb)
        ses = aws_client("ses")
        ses.verify_domain_identity(Domain=DOMAIN)
        ses.create_configuration_set(ConfigurationSet={"Name": CONFIG_SET})
        clock = FastForwardTime()
        account = SesModel(region=REGION, max_send_rate=1000, clock=clock.time)
        account.add_identity(DOMAIN)
        account.add_configuration_set(CONFIG_SET)
        stack = cls(handler=load_handler("send_order_email"), dynamodb=dynamodb, ses=account,
                    clock=clock)
        stack.handler.time = clock
        account.attach(stack.handler.ses)

        real_call = botocore.client.BaseClient._make_api_call

        def counting_call(client, operation_name, params):
            stack.api_calls.append(operation_name)
            return real_call(client, operation_name, params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting_call)
        real_send = stack.handler.ses.send_email

        def recording_send(**kwargs):
            stack.ses_requests.append(kwargs)
            return real_send(**kwargs)

        monkeypatch.setattr(stack.handler.ses, "send_email", recording_send)
        return stack

    def invoke(self, *bodies: str, context: FakeContext | None = None) -> Invocation:
        return self.call(sqs_event(*bodies), context)

    def call(self, event: dict, context: FakeContext | None = None) -> Invocation:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = self.handler.lambda_handler(event, context or FakeContext())
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        emf = [line for line in lines if "_aws" in line]
        assert len(emf) <= 1, "at most one EMF line per invocation"
        return Invocation(
            result=result,
            logs=[line for line in lines if "_aws" not in line],
            metrics={k: v for k, v in (emf[0] if emf else {}).items() if k != "_aws"},
            emf_lines=emf,
            output=out.getvalue(),
        )

    def item(self, order_id: str, message_id: str = MESSAGE_ID) -> dict | None:
        """The table item as plain Python values (N as int, L/M unpacked)."""
        response = self.dynamodb.get_item(
            TableName=TABLE,
            Key={"orderId": {"S": order_id}, "messageId": {"S": message_id}},
            ConsistentRead=True,
        )
        return plain(response["Item"]) if "Item" in response else None

    def set_item(self, order_id: str, **attributes: Any) -> None:
        """Change an item behind the handler's back (time passing, another writer)."""
        names = {f"#a{i}": name for i, name in enumerate(attributes)}
        values = {f":a{i}": typed(value) for i, value in enumerate(attributes.values())}
        self.dynamodb.update_item(
            TableName=TABLE,
            Key={"orderId": {"S": order_id}, "messageId": {"S": MESSAGE_ID}},
            UpdateExpression="SET " + ", ".join(f"#a{i} = :a{i}" for i in range(len(names))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    @property
    def emails(self) -> list:
        """Every email SES (moto) accepted."""
        return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)

    def inject(self, monkeypatch, client: str, method: str, error: BaseException,
               calls: set[int] = frozenset({1})) -> list[int]:
        """Make the handler's `client.method` raise `error` on the given 1-based call numbers
        (counted from now); other calls go through. Returns the list of call numbers seen."""
        target = getattr(self.handler, client)
        real = getattr(target, method)
        seen: list[int] = []

        def faulty(**kwargs):
            seen.append(len(seen) + 1)
            if seen[-1] in calls:
                raise error
            return real(**kwargs)

        monkeypatch.setattr(target, method, faulty)
        return seen


def typed(value: Any) -> dict:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    return {"S": value}


def plain(value: Any) -> Any:
    """DynamoDB JSON -> Python."""
    if isinstance(value, dict) and len(value) == 1:
        (kind, inner), = value.items()
        if kind == "S":
            return inner
        if kind == "N":
            return int(inner) if inner.lstrip("-").isdigit() else float(inner)
        if kind == "L":
            return [plain(v) for v in inner]
        if kind == "M":
            return {k: plain(v) for k, v in inner.items()}
        if kind == "SS":
            return set(inner)
        if kind in ("BOOL", "NULL"):
            return inner
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
