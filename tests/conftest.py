"""Shared fixtures: fake AWS credentials, handler loading, event fixtures, a fake Lambda context.

Handler tests run the code the template embeds: the function's `ZipFile` text in the template the
build renders (`test_code.py` proves it is the file in `handlers/` byte for byte). Each load is a
fresh module named `index`, as Lambda runs it.
"""

from __future__ import annotations

import functools
import json
import types
from pathlib import Path

import pytest

import infra
from infra.code import load_as_index
from infra.functions import HANDLER_FILES

TESTS_DIR = Path(__file__).resolve().parent
EVENTS_DIR = TESTS_DIR / "events"
REGION = "us-east-1"


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    """Fake credentials and region so nothing can reach real AWS."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@functools.lru_cache(maxsize=1)
def embedded_handlers() -> dict[str, str]:
    """The ZipFile code of each function in the template the build renders, by handler name."""
    resources = json.loads(infra.build().to_json())["Resources"]
    return {handler: resources[function]["Properties"]["Code"]["ZipFile"]
            for function, handler in HANDLER_FILES.items()}


def load_handler(name: str) -> types.ModuleType:
    """The function whose handler is `handlers/<name>.py`, loaded from its ZipFile code as module
    `index` (the environment variables it reads must be set first)."""
    return load_as_index(embedded_handlers()[name], f"handlers/{name}.py (ZipFile)")


def load_event(relative: str) -> dict:
    """A JSON fixture from `tests/events/`."""
    return json.loads((EVENTS_DIR / relative).read_text(encoding="utf-8"))


class FakeContext:
    """The parts of the Lambda context object the handlers use."""

    def __init__(self, remaining_ms: int = 30_000, request_id: str = "req-00000000"):
        self._remaining_ms = remaining_ms
        self.aws_request_id = request_id
        self.function_name = "test-function"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = (
            f"arn:aws:lambda:{REGION}:123456789012:function:test-function"
        )

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_ms


@pytest.fixture
def lambda_context() -> FakeContext:
    return FakeContext()


def sqs_event(*bodies: str, receive_counts: list[int] | None = None) -> dict:
    """An SQS event whose records carry `bodies` as-is, message ids `msg-0`, `msg-1`, ..."""
    records = []
    for index, body in enumerate(bodies):
        count = receive_counts[index] if receive_counts else 1
        records.append(
            {
                "messageId": f"msg-{index}",
                "receiptHandle": f"handle-{index}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": str(count),
                    "SentTimestamp": "1795780800000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1795780800000",
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:test-queue",
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


@pytest.fixture(scope="session")
def template() -> dict:
    """The template exactly as `build_template.py` renders the deploy file."""
    import build_template

    return json.loads(build_template.render()[build_template.JSON_FILE])


def resources_of_type(template: dict, resource_type: str) -> dict[str, dict]:
    return {
        name: resource for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def commercial_regions_with(resource_type: str) -> list[str]:
    """The regions of the commercial `aws` partition whose CloudFormation has `resource_type`,
    according to cfn-lint's own per-region resource types (the data its E3006 check reads), in
    cfn-lint's order. GovCloud, China, the ISO partitions and any region botocore does not place
    in a partition are left out."""
    import botocore.exceptions
    import botocore.session
    from cfnlint.helpers import REGIONS
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    session = botocore.session.get_session()

    def commercial(region: str) -> bool:
        try:
            return session.get_partition_for_region(region) == "aws"
        except botocore.exceptions.UnknownRegionError:
            return False

    return [region for region in REGIONS if commercial(region)
            and resource_type in PROVIDER_SCHEMA_MANAGER.get_resource_types(region)]
