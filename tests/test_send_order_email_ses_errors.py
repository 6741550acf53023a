"""Each row of DESIGN.md's table "SES errors: what each one means for the order", with SES's own
codes and messages.

SES's answers come from the SES model (`simulation/ses_model.py`) put in front of moto: the test
puts the account in a state (an identity pending, the account paused, the sandbox, ...), SES
refuses the send exactly as real SES does, then the state is fixed and the retry must send exactly
one email. moto alone would accept every one of these sends. Answers that are not SES's (a
connection that never opened, a lost response) are injected in `test_send_order_email_faults.py`.

The rule under test: an order is FAILED only for a reason that is about that order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import boto3
import pytest
from moto import mock_aws

from send_email_harness import CONFIG_SET, DOMAIN, TEST_INBOX, Stack, client_error, order_body
from simulation import ses_model
from simulation.ses_model import PENDING, SesModel

ORDER_ID = "ORD-20261127-0001"


@dataclass(frozen=True)
class AccountState:
    """A state of the SES account that makes SES refuse every send, and the operator's fix."""

    name: str
    production: bool  # ENABLE_PRODUCTION_SES of the stack
    cause: Callable[[SesModel], None]
    fix: Callable[[SesModel], None]
    code: str
    message: str  # the start of SES's message


def _pause_sending(ses: SesModel) -> None:
    ses.sending_enabled = False


def _enable_sending(ses: SesModel) -> None:
    ses.sending_enabled = True


def _lose_the_configuration_set(ses: SesModel) -> None:
    del ses.configuration_sets[CONFIG_SET]


def _sandbox(ses: SesModel) -> None:
    ses.sandbox = True


def _no_rate(ses: SesModel) -> None:
    ses.max_send_rate = 0


def _rate(ses: SesModel) -> None:
    ses.max_send_rate = 14


def _no_quota(ses: SesModel) -> None:
    ses.max_24_hour_send = 0


def _quota(ses: SesModel) -> None:
    ses.max_24_hour_send = 50_000


NOT_ABOUT_THE_ORDER = [
    AccountState("rate", True, _no_rate, _rate, "Throttling", "Maximum sending rate exceeded."),
    AccountState("daily-quota", True, _no_quota, _quota, "Throttling",
                 "Daily message quota exceeded."),
    AccountState("identity-pending", True,
                 lambda ses: ses.add_identity(DOMAIN, PENDING), lambda ses: ses.verify(DOMAIN),
                 "MessageRejected", "Email address is not verified. The following identities "
                 "failed the check in region US-EAST-1: orders@shop.example.com"),
    AccountState("sandbox-recipient", True, _sandbox, lambda ses: ses.grant_production_access(),
                 "MessageRejected", "Email address is not verified. The following identities "
                 "failed the check in region US-EAST-1: ada@example.com"),
    AccountState("account-paused-by-aws", True, lambda ses: ses.pause_account(),
                 lambda ses: ses.resume_account(), "MessageRejected",
                 "Sending paused for this account."),
    AccountState("account-sending-disabled", True, _pause_sending, _enable_sending,
                 "AccountSendingPausedException", ses_model.ACCOUNT_SENDING_DISABLED),
    AccountState("configuration-set-paused", True,
                 lambda ses: ses.pause_configuration_set(CONFIG_SET),
                 lambda ses: ses.resume_configuration_set(CONFIG_SET),
                 "ConfigurationSetSendingPausedException", "Email sending for the configuration"),
    AccountState("configuration-set-missing", True, _lose_the_configuration_set,
                 lambda ses: ses.add_configuration_set(CONFIG_SET),
                 "ConfigurationSetDoesNotExist", "Configuration set <test-ses-config-set>"),
    AccountState("mail-from-domain", True, lambda ses: ses.mail_from_failing.add(DOMAIN),
                 lambda ses: ses.mail_from_failing.discard(DOMAIN),
                 "MailFromDomainNotVerifiedException", "The MAIL FROM domain"),
]


@pytest.mark.parametrize("state", NOT_ABOUT_THE_ORDER, ids=[s.name for s in NOT_ABOUT_THE_ORDER])
def test_an_account_or_setup_state_releases_the_claim_and_the_order_is_emailed_once_it_is_fixed(
        monkeypatch, state):
    with mock_aws():
        stack = Stack.start(monkeypatch, production=state.production)
        # GIVEN the SES account in a state that refuses every send
        state.cause(stack.ses)
        # WHEN the order is delivered the five times the queue allows before its DLQ
        runs = [stack.invoke(order_body()) for _ in range(5)]
        # THEN every attempt is a batch item failure (so the order ends in the DLQ), never FAILED
        assert all(run.failures == ["msg-0"] for run in runs)
        first = runs[0].log_for("msg-0")
        assert (first["outcome"], first["error"], first["decision"]) == (
            "retry", state.code, "release")
        # AND SES's own message is logged, its addresses masked
        assert first["sesMessage"].startswith(state.message[:25])
        assert "orders@" not in first["sesMessage"] and "ada@" not in first["sesMessage"]
        refused = [code for _, code, _ in stack.ses.refusals]
        assert refused == [state.code] * 5
        assert stack.ses.refusals[0][2].startswith(state.message)
        item = stack.item(ORDER_ID)
        assert item["status"] == "SENDING" and item["claimExpiresAt"] <= stack.clock.time()
        assert [e["type"] for e in item["events"]] == ["Claimed", "Released"] * 5
        assert stack.emails == []
        # WHEN the operator fixed the cause and redrives the DLQ
        state.fix(stack.ses)
        retry = stack.invoke(order_body())
        # THEN the order is emailed, exactly once
        assert retry.failures == [] and retry.log_for("msg-0")["outcome"] == "sent"
        assert len(stack.emails) == 1 and stack.item(ORDER_ID)["status"] == "SENT"
        assert stack.invoke(order_body()).log_for("msg-0")["outcome"] == "duplicate"
        assert len(stack.emails) == 1


def test_moto_alone_accepts_what_real_ses_refuses(monkeypatch):
    # The reason the SES model exists: moto accepts a send through a configuration set that does
    # not exist, with a tag real SES refuses, to an unverified recipient of a sandbox account.
    with mock_aws():
        Stack.start(monkeypatch, production=True)
        client = boto3.client("ses", region_name="us-east-1")  # no SES model in front of it
        client.verify_domain_identity(Domain=DOMAIN)
        response = client.send_email(
            Source="orders@shop.example.com", Destination={"ToAddresses": ["x@example.com"]},
            Message={"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}},
            ConfigurationSetName="no-such-set", Tags=[{"Name": "bad:name", "Value": "a b"}])
        assert response["MessageId"]


# --- about the order: FAILED, acknowledged -------------------------------------------------------

def test_a_rejection_of_this_very_email_is_failed_and_not_retried(stack_production, monkeypatch):
    stack = stack_production
    # GIVEN SES rejects the email itself (real SES: MessageRejected "Illegal address" for an
    # address it cannot send to; our validation lets few of those through, so it is injected)
    stack.inject(monkeypatch, "ses", "send_email",
                 client_error("MessageRejected", "SendEmail", message="Illegal address"))
    # WHEN the order arrives
    run = stack.invoke(order_body())
    # THEN it is FAILED and acknowledged: a retry would be refused again
    assert run.failures == []
    line = run.log_for("msg-0")
    assert (line["level"], line["outcome"], line["decision"]) == ("ERROR", "failed", "permanent")
    item = stack.item(ORDER_ID)
    assert item["status"] == "FAILED" and item["error"].endswith(": Illegal address")
    assert item["claimExpiresAt"] <= time.time()
    assert stack.invoke(order_body()).log_for("msg-0")["existingStatus"] == "FAILED"
    assert stack.emails == []


def test_an_invalid_parameter_is_failed_with_ses_own_message(stack_production, monkeypatch):
    stack = stack_production
    # GIVEN a tag SES refuses (a bug that would put a ':' in the encoded order id)
    monkeypatch.setattr(stack.handler, "tag_value", lambda text: "order:" + text)
    # WHEN the order arrives
    run = stack.invoke(order_body())
    # THEN SES answers InvalidParameterValue with its own text, and the order is FAILED
    assert run.failures == []
    line = run.log_for("msg-0")
    assert (line["outcome"], line["error"]) == ("failed", "InvalidParameterValue")
    assert line["sesMessage"].startswith("Invalid tag value <order:ORD-20261127-0001>: only "
                                         "alphanumeric ASCII characters")
    assert stack.item(ORDER_ID)["status"] == "FAILED"
    assert stack.emails == []


# --- the classification itself --------------------------------------------------------------------

@pytest.mark.parametrize("code, message, verdict", [
    ("Throttling", "Maximum sending rate exceeded.", "release"),
    ("Throttling", "Daily message quota exceeded.", "release"),
    ("MessageRejected", "Email address is not verified. The following identities failed the "
                        "check in region EU-WEST-1: orders@shop.example.com", "release"),
    ("MessageRejected", "Sending paused for this account. For more information, please check the "
                        "inbox of the email address associated with your AWS account.", "release"),
    ("MessageRejected", "Email address not verified orders@shop.example.com", "release"),  # moto
    ("AccountSendingPausedException", "", "release"),
    ("ConfigurationSetSendingPausedException", "", "release"),
    ("ConfigurationSetDoesNotExist", "", "release"),
    ("MailFromDomainNotVerifiedException", "", "release"),
    ("EndpointConnectionError", "", "release"),
    ("ConnectTimeoutError", "", "release"),
    ("MessageRejected", "Illegal address", "permanent"),
    ("MessageRejected", "", "permanent"),
    ("InvalidParameterValue", "Invalid tag value <a:b>: only alphanumeric ASCII characters, '_', "
                              "and '-' are allowed.", "permanent"),
    ("ReadTimeoutError", "", "ambiguous"),
    ("ConnectionClosedError", "", "ambiguous"),
    ("InternalFailure", "", "ambiguous"),
    ("ServiceUnavailable", "", "ambiguous"),
    ("SomethingNewFromAws", "", "ambiguous"),
])
def test_classification_by_code_and_message_follows_the_design_table(
        stack_production, code, message, verdict):
    assert stack_production.handler.classify_send_error(code, message) == verdict


@pytest.fixture
def stack_production(monkeypatch):
    with mock_aws():
        yield Stack.start(monkeypatch, production=True)


def test_a_sandbox_stack_on_a_sandbox_account_sends_to_its_verified_test_inbox(monkeypatch):
    # The default deploy: EnableProductionSES=false on an account still in the SES sandbox. Every
    # email goes to the test inbox, which the operator verified: SES accepts it.
    with mock_aws():
        stack = Stack.start(monkeypatch, production=False)
        stack.ses.sandbox = True
        stack.ses.add_identity(TEST_INBOX)
        run = stack.invoke(order_body())
        assert run.failures == [] and len(stack.emails) == 1
        assert stack.emails[0].destinations["ToAddresses"] == [TEST_INBOX]
