"""Lambda's control plane for event source mappings, as far as the circuit breaker uses it.

The simulation plays the event source mappings itself (simulation/runtime.py), so moto's Lambda
does not know them. `EventSourceMappings` answers `GetEventSourceMapping` and
`UpdateEventSourceMapping` for them the way Lambda does: by UUID, with `State` moving through
`Disabling` to `Disabled` (and `Enabling` to `Enabled`), and `ResourceNotFoundException` for an
unknown UUID. Disabling a mapping stops its poller; enabling it starts it again. Tests use it
too, to put real Lambda answers in front of a boto3 client.
"""

from __future__ import annotations

from typing import Any, Callable


class EventSourceMappings:
    """The mappings by UUID; each mapping is an object with a boolean `enabled` attribute."""

    def __init__(self, mappings: dict[str, Any], arn_of: Callable[[str], str],
                 on_change: Callable[[str, bool], None] | None = None):
        self.mappings = mappings
        self.arn_of = arn_of
        self.on_change = on_change

    def describe(self, uuid: str) -> dict:
        """GetEventSourceMapping's answer."""
        mapping = self._mapping(uuid)
        return self._answer(uuid, "Enabled" if mapping.enabled else "Disabled")

    def update(self, uuid: str, enabled: bool | None) -> dict:
        """UpdateEventSourceMapping's answer (only `Enabled` is modelled): a change is answered
        as in progress (Enabling / Disabling), as Lambda does, and applied at once."""
        mapping = self._mapping(uuid)
        if enabled is None or bool(enabled) == mapping.enabled:
            return self.describe(uuid)
        mapping.enabled = bool(enabled)
        if self.on_change:
            self.on_change(uuid, mapping.enabled)
        return self._answer(uuid, "Enabling" if mapping.enabled else "Disabling")

    def _answer(self, uuid: str, state: str) -> dict:
        return {"UUID": uuid, "EventSourceMappingArn": self.arn_of(uuid), "State": state}

    def _mapping(self, uuid: str) -> Any:
        if uuid not in self.mappings:
            raise LookupError(uuid)
        return self.mappings[uuid]

    def attach(self, client) -> None:
        """Answer a boto3 `lambda` client's GetEventSourceMapping and UpdateEventSourceMapping
        from these mappings, before moto sees them."""
        events = client.meta.events

        def keep(params, context, **_):
            context["lambda_model_params"] = dict(params)

        def answer(operation: str):
            def handler(model, context, **_):
                params = context.get("lambda_model_params", {})
                uuid = params.get("UUID", "")
                try:
                    if operation == "GetEventSourceMapping":
                        parsed = self.describe(uuid)
                    else:
                        parsed = self.update(uuid, params.get("Enabled"))
                except LookupError:
                    response = {"Error": {"Code": "ResourceNotFoundException",
                                          "Message": "The resource you requested does not exist."},
                                "ResponseMetadata": {"HTTPStatusCode": 404}}
                    raise client.exceptions.from_code("ResourceNotFoundException")(
                        response, operation) from None
                return _HttpResponse(), {**parsed, "ResponseMetadata": {"HTTPStatusCode": 200}}
            return handler

        for operation in ("GetEventSourceMapping", "UpdateEventSourceMapping"):
            events.register(f"before-parameter-build.lambda.{operation}", keep)
            events.register(f"before-call.lambda.{operation}", answer(operation))


class _HttpResponse:
    """The little of an HTTP response botocore's after-call handlers look at."""

    status_code = 200
    headers: dict = {}
    content = b""
