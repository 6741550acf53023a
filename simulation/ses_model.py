"""What real SES does that moto does not: the account and identity states that refuse a send.

moto's SES accepts almost every `SendEmail`: it ignores message tags, configuration sets, the
sandbox, pauses, the sending rate and the daily quota, and raises `MessageRejected` only for an
unverified sender. Real SES refuses sends for all of these, with its own error codes and messages
(DESIGN.md, "SES errors: what each one means for the order"). `SesModel` holds that state and
puts it in front of moto: attached to a boto3 SES client, it answers `SendEmail` the way real SES
would before moto sees the request, answers `GetSendQuota` with the modelled quota, and answers
the SES v2 calls moto lacks (`PutConfigurationSetSendingOptions`, `GetConfigurationSet`).

The tests and the simulation (`simulation/`) use this one model, so that a send refused in a test
is refused with the same code and message as in a scenario, and as on a real account.

Sources for the codes and messages: the SES API reference (SendEmail errors), the SES developer
guide ("Amazon SES email sending errors", sandbox and quotas), and errors seen from real SES in
public issue threads. Where AWS does not document the exact text, the message below is marked as
modelled; the send handler decides by code (and, for `MessageRejected`, by the documented text).
"""

from __future__ import annotations

import bisect
import re
import time
from collections import deque
from typing import Callable

# Real SES's texts (SendEmail, API v1).
NOT_VERIFIED = ("Email address is not verified. The following identities failed the check in "
                "region {region}: {identities}")
ACCOUNT_PAUSED_BY_AWS = ("Sending paused for this account. For more information, please check "
                         "the inbox of the email address associated with your AWS account.")
MAX_RATE_EXCEEDED = "Maximum sending rate exceeded."
DAILY_QUOTA_EXCEEDED = "Daily message quota exceeded."
INVALID_TAG = ("Invalid tag {part} <{text}>: only alphanumeric ASCII characters, '_', and '-' "
               "are allowed.")
# Modelled: the codes are documented, these texts are not.
ACCOUNT_SENDING_DISABLED = "Email sending is disabled for your entire Amazon SES account."
CONFIGURATION_SET_PAUSED = "Email sending for the configuration set {name} is paused."
CONFIGURATION_SET_MISSING = "Configuration set <{name}> does not exist."
TAG_TOO_LONG = "Invalid tag {part} <{text}>: must be 256 characters or fewer."
MAIL_FROM_NOT_VERIFIED = ("The MAIL FROM domain of {identity} is not verified and its behavior "
                          "on MX failure is RejectMessage.")

SIMULATOR_DOMAIN = "simulator.amazonses.com"
TAG_TEXT = re.compile(r"[A-Za-z0-9_-]+")
MAX_TAG_LENGTH = 256

# A new account's sandbox quota, and the usual first production quota (SES developer guide).
SANDBOX_QUOTA = {"max_send_rate": 1.0, "max_24_hour_send": 200.0}
FIRST_PRODUCTION_QUOTA = {"max_send_rate": 14.0, "max_24_hour_send": 50_000.0}

VERIFIED, PENDING, FAILED = "SUCCESS", "PENDING", "FAILED"

# The maximum send rate. AWS documents it as emails per second, not how SES measures it; public
# reports say a short excess passes and a sustained one is throttled. Modelled as a token bucket,
# the usual shape of AWS's throttling: it holds RATE_BURST_S seconds of the rate and refills at
# the rate. A send is refused when accepting it would overdraw the bucket over any stretch of
# time around it of up to RATE_HORIZON_S. The rule looks at the set of send times, not at their
# order, so sends the simulation plays one invocation after the other, though they overlapped in
# time, are judged as if they had come concurrently.
RATE_BURST_S = 1.0
RATE_HORIZON_S = 10.0
RATE_TOLERANCE = 1e-9  # floating-point slack: a sender spaced exactly at the rate conforms

# Reputation (SES developer guide, "Reputation metrics"): AWS reviews an account at a 5 % bounce
# or 0.1 % complaint rate and may pause it at 10 % / 0.5 %. The rates are computed over a
# representative recent volume; modelled as the emails sent in the last 24 hours, once at least
# REPUTATION_MIN_VOLUME were sent. Mail to the mailbox simulator and bounces from the account's
# suppression list do not count.
REPUTATION_WINDOW_S = 24 * 3600
REPUTATION_MIN_VOLUME = 100
ENFORCEMENT_BOUNCE_RATE = 0.10
ENFORCEMENT_COMPLAINT_RATE = 0.005


class SesRefusal(Exception):
    """SES refused a request: `code` and `message` as real SES returns them."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class SesModel:
    """One SES account in one region, as far as sending is concerned.

    `clock` returns epoch seconds (the simulation's virtual clock, or a test's clock). State
    changes are plain method calls, so a test or a scenario reads like what happens to the
    account: `ses.add_identity("shop.example.com", PENDING)`, later `ses.verify(...)`.
    """

    def __init__(self, *, region: str = "us-east-1", clock: Callable[[], float] = time.time,
                 sandbox: bool = False, max_send_rate: float | None = None,
                 max_24_hour_send: float | None = None):
        self.region = region
        self.clock = clock
        self.sandbox = sandbox
        quota = SANDBOX_QUOTA if sandbox else FIRST_PRODUCTION_QUOTA
        self.max_send_rate = quota["max_send_rate"] if max_send_rate is None else max_send_rate
        self.max_24_hour_send = (quota["max_24_hour_send"] if max_24_hour_send is None
                                 else max_24_hour_send)
        self.identities: dict[str, str] = {}  # domain or address -> VERIFIED / PENDING / FAILED
        self.mail_from_failing: set[str] = set()  # identities whose MAIL FROM rejects sends
        self.configuration_sets: dict[str, bool] = {}  # name -> sending enabled
        self.paused_by_aws = False  # a reputation pause (enforcement)
        self.sending_enabled = True  # the account's own switch (UpdateAccountSendingEnabled)
        self.accepted: deque[float] = deque()  # when each accepted email was sent
        self.send_times: list[float] = []  # the same, sorted, for the rate (recent ones only)
        self.refusals: list[tuple[float, str, str]] = []  # (time, code, message)
        # (time, configuration set, enabled) of each change of a set's sending option
        self.sending_changes: list[tuple[float, str, bool]] = []
        # For reputation: (time, configuration set) of each counted send, bounce and complaint.
        self.counted: dict[str, list[tuple[float, str | None]]] = {
            "sent": [], "bounce": [], "complaint": []}

    # --- the account's state, changed by AWS or by the operator -------------------------------

    def add_identity(self, identity: str, status: str = VERIFIED) -> None:
        self.identities[identity.lower()] = status

    def verify(self, identity: str) -> None:
        """DNS has propagated (DKIM found) or the verification link was clicked."""
        self.identities[identity.lower()] = VERIFIED

    def add_configuration_set(self, name: str) -> None:
        self.configuration_sets.setdefault(name, True)

    def pause_configuration_set(self, name: str) -> None:
        self.configuration_sets[name] = False

    def resume_configuration_set(self, name: str) -> None:
        self.configuration_sets[name] = True

    def pause_account(self) -> None:
        """AWS pauses the account for its reputation (bounce or complaint rate)."""
        self.paused_by_aws = True

    def resume_account(self) -> None:
        self.paused_by_aws = False

    def grant_production_access(self, max_send_rate: float = 14.0,
                                max_24_hour_send: float = 50_000.0) -> None:
        """AWS moved the account out of the sandbox."""
        self.sandbox = False
        self.max_send_rate, self.max_24_hour_send = max_send_rate, max_24_hour_send

    # --- what SES answers ----------------------------------------------------------------------

    def sent_last_24_hours(self) -> int:
        self._forget_older_than(86400)
        return len(self.accepted)

    def send_quota(self) -> dict:
        """The `GetSendQuota` response."""
        return {"Max24HourSend": float(self.max_24_hour_send),
                "MaxSendRate": float(self.max_send_rate),
                "SentLast24Hours": float(self.sent_last_24_hours())}

    def check_send(self, params: dict, at: float | None = None) -> None:
        """Raise SesRefusal as real SES would refuse this `SendEmail` request arriving `at`
        (default: now)."""
        at = self.clock() if at is None else at
        try:
            self._check(params, at)
        except SesRefusal as refusal:
            self.refusals.append((at, refusal.code, refusal.message))
            raise

    def record_accepted(self, at: float | None = None) -> None:
        """SES accepted an email that arrived `at` (default: now): it counts toward the rate and
        the daily quota."""
        at = self.clock() if at is None else at
        self.accepted.append(at)
        bisect.insort(self.send_times, at)
        latest = self.send_times[-1]
        if self.send_times[0] < latest - 2 * RATE_HORIZON_S:
            del self.send_times[:bisect.bisect_left(self.send_times, latest - 2 * RATE_HORIZON_S)]

    def within_rate(self, at: float) -> bool:
        """Whether one more send `at` keeps every stretch of up to RATE_HORIZON_S around it
        within the token bucket: sends in [a, b] <= burst + rate x (b - a)."""
        rate = self.max_send_rate
        burst = rate * RATE_BURST_S
        times = self.send_times
        split = bisect.bisect_right(times, at)
        # The most the sends before `at` (back to a) exceed the refill since a, and the sends
        # after it (up to b) the refill until b; 0 for an empty stretch.
        before = after = 0.0
        for count, earlier in enumerate(
                reversed(times[bisect.bisect_left(times, at - RATE_HORIZON_S):split]), start=1):
            before = max(before, count - rate * (at - earlier))
        for count, later in enumerate(
                times[split:bisect.bisect_right(times, at + RATE_HORIZON_S)], start=1):
            after = max(after, count - rate * (later - at))
        return before + 1 + after <= burst + RATE_TOLERANCE

    def _check(self, params: dict, at: float) -> None:
        for tag in params.get("Tags", []):
            for part in ("name", "value"):
                text = str(tag.get(part.capitalize(), ""))
                if len(text) > MAX_TAG_LENGTH:
                    raise SesRefusal("InvalidParameterValue",
                                     TAG_TOO_LONG.format(part=part, text=text))
                if not TAG_TEXT.fullmatch(text):
                    raise SesRefusal("InvalidParameterValue",
                                     INVALID_TAG.format(part=part, text=text))
        name = params.get("ConfigurationSetName")
        if name is not None and name not in self.configuration_sets:
            raise SesRefusal("ConfigurationSetDoesNotExist",
                             CONFIGURATION_SET_MISSING.format(name=name))
        if self.paused_by_aws:
            raise SesRefusal("MessageRejected", ACCOUNT_PAUSED_BY_AWS)
        if not self.sending_enabled:
            raise SesRefusal("AccountSendingPausedException", ACCOUNT_SENDING_DISABLED)
        if name is not None and not self.configuration_sets[name]:
            raise SesRefusal("ConfigurationSetSendingPausedException",
                             CONFIGURATION_SET_PAUSED.format(name=name))
        source = _address(params.get("Source", ""))
        failed = [] if self._verified(source) else [source]
        if self.sandbox:
            failed += [address for address in _recipients(params)
                       if not self._verified(address) and not _is_simulator(address)]
        if failed:
            raise SesRefusal("MessageRejected", NOT_VERIFIED.format(
                region=self.region.upper(), identities=", ".join(failed)))
        identity = self._identity_of(source)
        if identity in self.mail_from_failing:
            raise SesRefusal("MailFromDomainNotVerifiedException",
                             MAIL_FROM_NOT_VERIFIED.format(identity=identity))
        if self.sent_last_24_hours() >= self.max_24_hour_send:
            raise SesRefusal("Throttling", DAILY_QUOTA_EXCEEDED)
        if not self.within_rate(at):
            raise SesRefusal("Throttling", MAX_RATE_EXCEEDED)

    def _verified(self, address: str) -> bool:
        return self._identity_of(address) is not None

    def _identity_of(self, address: str) -> str | None:
        """The verified identity that covers `address`: itself or its domain."""
        address = address.lower()
        domain = address.rpartition("@")[2]
        for identity in (address, domain):
            if self.identities.get(identity) == VERIFIED:
                return identity
        return None

    def _forget_older_than(self, seconds: float) -> None:
        cutoff = self.clock() - seconds
        while self.accepted and self.accepted[0] <= cutoff:
            self.accepted.popleft()

    # --- reputation ---------------------------------------------------------------------------

    def note(self, what: str, at: float, configuration_set: str | None, recipient: str) -> None:
        """A send, a bounce or a complaint that counts toward the reputation rates (not mail to
        the mailbox simulator)."""
        if not _is_simulator(recipient):
            self.counted[what].append((at, configuration_set))

    def reputation(self, now: float, configuration_set: str | None = None) -> dict | None:
        """{"bounce": rate, "complaint": rate} (fractions) of the account, or of one configuration
        set, over the last REPUTATION_WINDOW_S; None below REPUTATION_MIN_VOLUME sends."""
        def count(what: str) -> int:
            return sum(1 for at, name in self.counted[what]
                       if now - REPUTATION_WINDOW_S < at <= now
                       and (configuration_set is None or name == configuration_set))
        sent = count("sent")
        if sent < REPUTATION_MIN_VOLUME:
            return None
        return {"bounce": count("bounce") / sent, "complaint": count("complaint") / sent}

    def enforce(self, now: float) -> bool:
        """AWS pauses an account whose rates reach its enforcement levels; True if it did now."""
        rates = self.reputation(now)
        if self.paused_by_aws or rates is None:
            return False
        if (rates["bounce"] >= ENFORCEMENT_BOUNCE_RATE
                or rates["complaint"] >= ENFORCEMENT_COMPLAINT_RATE):
            self.pause_account()
            return True
        return False

    # --- in front of a boto3 client ------------------------------------------------------------

    def attach(self, client) -> None:
        """Answer a boto3 `ses` or `sesv2` client's calls as real SES would, before moto does.

        The request is checked when botocore has its parameters (`before-parameter-build`), and
        answered in place of moto where moto lacks the call (`before-call` returning a response).
        """
        service = client.meta.service_model.service_name
        events = client.meta.events
        if service == "ses":
            # A send counts when it reaches SES (its request leaves now), not when its answer
            # arrives after the call's latency.
            def check(params, model, context, **_):
                context["ses_model_at"] = self.clock()
                try:
                    self.check_send(params, context["ses_model_at"])
                except SesRefusal as refusal:
                    raise _client_error(client, refusal, model.name) from None

            def after_send(http_response, context, **_):
                if http_response.status_code < 300:
                    self.record_accepted(context.get("ses_model_at"))

            for operation in ("SendEmail", "SendRawEmail"):
                events.register(f"before-parameter-build.ses.{operation}", check)
                events.register(f"after-call.ses.{operation}", after_send)
            events.register("before-call.ses.GetSendQuota",
                            lambda **_: _response(self.send_quota()))
        elif service == "sesv2":
            for operation, answer in (
                    ("PutConfigurationSetSendingOptions", self._put_sending_options),
                    ("GetConfigurationSet", self._get_configuration_set)):
                events.register(f"before-parameter-build.sesv2.{operation}", _keep_params)
                events.register(f"before-call.sesv2.{operation}", _answer(client, answer))

    def _put_sending_options(self, params: dict) -> dict:
        name = params["ConfigurationSetName"]
        enabled = bool(params.get("SendingEnabled", False))
        if self._configuration_set(name) != enabled:
            self.sending_changes.append((self.clock(), name, enabled))
        self.configuration_sets[name] = enabled
        return {}

    def _get_configuration_set(self, params: dict) -> dict:
        name = params["ConfigurationSetName"]
        return {"ConfigurationSetName": name,
                "SendingOptions": {"SendingEnabled": self._configuration_set(name)}}

    def _configuration_set(self, name: str) -> bool:
        """Whether sending is enabled for the configuration set; NotFoundException if unknown."""
        if name not in self.configuration_sets:
            raise SesRefusal("NotFoundException", f"Configuration set <{name}> does not exist.")
        return self.configuration_sets[name]


def _keep_params(params, context, **_):
    """Keep the API parameters for the `before-call` answer (which sees only the HTTP request)."""
    context["ses_model_params"] = dict(params)


def _answer(client, answer: Callable[[dict], dict]):
    """A `before-call` handler that answers with `answer(params)` or the error it raises."""
    def handler(model, context, **_):
        try:
            return _response(answer(context.get("ses_model_params", {})))
        except SesRefusal as refusal:
            raise _client_error(client, refusal, model.name) from None
    return handler


def _address(text: str) -> str:
    """The address in `Name <address>` or a bare address."""
    match = re.search(r"<([^>]+)>", text)
    return (match.group(1) if match else text).strip()


def _recipients(params: dict) -> list[str]:
    destination = params.get("Destination", {})
    return [_address(address) for field in ("ToAddresses", "CcAddresses", "BccAddresses")
            for address in destination.get(field, [])]


def _is_simulator(address: str) -> bool:
    """The mailbox simulator works in the sandbox too (success@, bounce+label@, ...)."""
    return address.lower().rpartition("@")[2] == SIMULATOR_DOMAIN


def _client_error(client, refusal: SesRefusal, operation: str) -> Exception:
    """The exception botocore raises when SES answers with `refusal` (HTTP 400)."""
    response = {"Error": {"Code": refusal.code, "Message": refusal.message, "Type": "Sender"},
                "ResponseMetadata": {"HTTPStatusCode": 400}}
    return client.exceptions.from_code(refusal.code)(response, operation)


def _response(parsed: dict):
    """A `before-call` answer that stands for SES's response (botocore then skips the request)."""
    http = _HttpResponse()
    return http, {**parsed, "ResponseMetadata": {"HTTPStatusCode": 200}}


class _HttpResponse:
    """The little of an HTTP response botocore's after-call handlers look at."""

    status_code = 200
    headers: dict = {}
    content = b""
