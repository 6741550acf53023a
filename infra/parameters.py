"""Stack parameters, their conditions and the console layout (`AWS::CloudFormation::Interface`)."""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import Equals, Not, Parameter, Ref, Template

from infra import settings
from infra.common import ENV

# Deliberately simple: one address, no display name, no spaces. SES verifies the real thing.
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
DOMAIN_PATTERN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
# Lower case (SQS, SES and DynamoDB names), starts with a letter, 20 characters at most so that the
# longest derived name (`<env>-ses-feedback-processor`) stays within Lambda's 64-character limit.
ENV_PATTERN = r"^[a-z][a-z0-9-]{0,18}[a-z0-9]$|^[a-z]$"

HAS_ALARM_EMAIL = "HasAlarmEmail"
CREATE_EMAIL_IDENTITY = "CreateEmailIdentity"
HAS_CANARY = "HasCanary"
AUTO_PAUSES = "AutoPausesSending"


@dataclass(frozen=True)
class Params:
    env: Parameter
    verified_domain: Parameter
    from_address: Parameter
    enable_production_ses: Parameter
    test_email: Parameter
    alarm_email: Parameter
    monthly_budget: Parameter
    send_max_concurrency: Parameter
    ses_rate_share_percent: Parameter
    record_retention_days: Parameter
    log_retention_days: Parameter
    create_email_identity: Parameter
    canary_interval_minutes: Parameter
    auto_pause_sending: Parameter
    pause_at_percent_of_review: Parameter
    # condition names
    has_alarm_email: str = HAS_ALARM_EMAIL
    creates_email_identity: str = CREATE_EMAIL_IDENTITY
    has_canary: str = HAS_CANARY
    auto_pauses: str = AUTO_PAUSES


def add_parameters(t: Template) -> Params:
    p = Params(
        env=t.add_parameter(Parameter(
            ENV, Type="String", Default="dev", AllowedPattern=ENV_PATTERN,
            Description=(
                "Name of this environment, such as dev, staging or prod. Every resource name "
                "starts with it, so several environments can live in one account."),
            ConstraintDescription="1-20 of a-z, 0-9 and -, starting with a letter",
        )),
        verified_domain=t.add_parameter(Parameter(
            "VerifiedDomain", Type="String", AllowedPattern=DOMAIN_PATTERN,
            Description=(
                "The domain the emails are sent from, such as shop.example.com. With "
                "CreateEmailIdentity=true the stack creates its SES identity, and you publish "
                "the three DkimRecord outputs in its DNS zone."),
            ConstraintDescription="a lower-case domain name",
        )),
        from_address=t.add_parameter(Parameter(
            "SesFromAddress", Type="String", AllowedPattern=EMAIL_PATTERN,
            Description=(
                "The From address of every email, in VerifiedDomain, such as "
                "orders@shop.example.com."),
            ConstraintDescription="one e-mail address",
        )),
        enable_production_ses=t.add_parameter(Parameter(
            "EnableProductionSES", Type="String", Default="false", AllowedValues=["true", "false"],
            Description=(
                "Set to true to email the customers. With false, every email goes to "
                "TestEmailAddress instead: the safe choice while the account is in the SES "
                "sandbox."),
        )),
        test_email=t.add_parameter(Parameter(
            "TestEmailAddress", Type="String", AllowedPattern=EMAIL_PATTERN,
            Description=(
                "The address that receives every email while EnableProductionSES is false. "
                "Verify it in SES first: the sandbox only delivers to verified addresses."),
            ConstraintDescription="one e-mail address",
        )),
        alarm_email=t.add_parameter(Parameter(
            "AlarmEmail", Type="String", Default="",
            AllowedPattern=EMAIL_PATTERN.rstrip("$") + "$|^$",
            Description=(
                "The on-call address that receives alarm and budget notifications (confirm the "
                "subscription e-mail AWS sends to it). Leave it empty for no e-mail."),
            ConstraintDescription="empty or one e-mail address",
        )),
        monthly_budget=t.add_parameter(Parameter(
            "MonthlyBudgetUsd", Type="Number", Default=settings.DEFAULT_MONTHLY_BUDGET_USD,
            MinValue=1,
            Description=(
                "Monthly cost budget of the whole account, in US dollars. The alarms topic is "
                "notified when actual spend reaches 80 % of it or forecast spend 100 %. Unused "
                "in the regions where CloudFormation has no budgets (README, Deploy)."),
        )),
        send_max_concurrency=t.add_parameter(Parameter(
            "SendMaxConcurrency", Type="Number", Default=settings.DEFAULT_SEND_MAX_CONCURRENCY,
            MinValue=2, MaxValue=1000,
            Description=(
                "The most copies of the send function that run at once (2 to 1000). They share "
                "the stack's part of the account's SES sending rate equally, so this sets how "
                "many sends can be in flight, not how fast the stack sends: 2 is right up to a "
                "rate of 14 a second; the README's capacity table gives the value for higher "
                "rates."),
        )),
        ses_rate_share_percent=t.add_parameter(Parameter(
            "SesRateSharePercent", Type="Number", Default=settings.DEFAULT_SES_RATE_SHARE_PERCENT,
            MinValue=10, MaxValue=100,
            Description=(
                "The percentage of the account's SES maximum send rate this stack may use (10 to "
                "100). Lower it when other applications send from the same account and region, "
                "so that a burst of orders does not throttle them or itself."),
        )),
        record_retention_days=t.add_parameter(Parameter(
            "RecordRetentionDays", Type="Number", Default=settings.DEFAULT_RECORD_RETENTION_DAYS,
            MinValue=1, MaxValue=3650,
            Description=(
                "How many days a delivery record stays in the table before DynamoDB deletes it "
                "(time to live)."),
        )),
        log_retention_days=t.add_parameter(Parameter(
            "LogRetentionDays", Type="Number", Default=settings.DEFAULT_LOG_RETENTION_DAYS,
            AllowedValues=settings.LOG_RETENTION_CHOICES,
            Description="How many days CloudWatch Logs keeps the functions' logs.",
        )),
        create_email_identity=t.add_parameter(Parameter(
            "CreateEmailIdentity", Type="String", Default="true", AllowedValues=["true", "false"],
            Description=(
                "Set to true to create the SES identity of VerifiedDomain (then publish the "
                "DkimRecord outputs in DNS). Set to false when the domain is already an SES "
                "identity in this account and region, such as one a deleted stack kept."),
        )),
        canary_interval_minutes=t.add_parameter(Parameter(
            "CanaryIntervalMinutes", Type="Number",
            Default=settings.DEFAULT_CANARY_INTERVAL_MINUTES,
            AllowedValues=settings.CANARY_INTERVAL_CHOICES,
            Description=(
                "Every this many minutes a canary order travels the whole path (order topic, "
                "send function, SES, feedback, table) to the SES mailbox simulator; an alarm "
                f"fires when none arrived in {settings.CANARY_ALARM_INTERVALS} intervals in a "
                "row. 0 turns the canary off."),
        )),
        auto_pause_sending=t.add_parameter(Parameter(
            "AutoPauseSending", Type="String", Default="true", AllowedValues=["true", "false"],
            Description=(
                "Set to true to let the circuit breaker pause this stack's sending (its SES "
                "configuration set and its queue consumer) when a reputation rate reaches "
                "PauseAtPercentOfReview. With false the breaker's alarms only notify."),
        )),
        pause_at_percent_of_review=t.add_parameter(Parameter(
            "PauseAtPercentOfReview", Type="Number",
            Default=settings.DEFAULT_PAUSE_AT_PERCENT_OF_REVIEW, MinValue=10, MaxValue=100,
            Description=(
                "The circuit breaker pauses sending when a bounce or complaint rate reaches this "
                "percentage of the rate at which AWS reviews the account (5 % bounces, 0.1 % "
                "complaints): 80 pauses at 4 % and 0.08 %."),
        )),
    )
    t.add_condition(HAS_ALARM_EMAIL, Not(Equals(Ref(p.alarm_email), "")))
    t.add_condition(CREATE_EMAIL_IDENTITY, Equals(Ref(p.create_email_identity), "true"))
    t.add_condition(HAS_CANARY, Not(Equals(Ref(p.canary_interval_minutes), 0)))
    t.add_condition(AUTO_PAUSES, Equals(Ref(p.auto_pause_sending), "true"))
    _add_console_layout(t, p)
    return p


def _add_console_layout(t: Template, p: Params) -> None:
    groups = [
        ("Environment", [p.env]),
        ("Sending", [p.verified_domain, p.create_email_identity, p.from_address,
                     p.enable_production_ses, p.test_email, p.send_max_concurrency,
                     p.ses_rate_share_percent]),
        ("Operations", [p.alarm_email, p.monthly_budget, p.record_retention_days,
                        p.log_retention_days]),
        ("Self-watching", [p.canary_interval_minutes, p.auto_pause_sending,
                           p.pause_at_percent_of_review]),
    ]
    labels = [
        (p.env, "Environment name"),
        (p.verified_domain, "Sending domain"),
        (p.create_email_identity, "Create the SES domain identity?"),
        (p.from_address, "From address"),
        (p.enable_production_ses, "Send to real customers?"),
        (p.test_email, "Test recipient (sandbox mode)"),
        (p.send_max_concurrency, "Maximum concurrent senders"),
        (p.ses_rate_share_percent, "Share of the SES sending rate (%)"),
        (p.alarm_email, "On-call e-mail for alarms"),
        (p.monthly_budget, "Monthly budget (USD)"),
        (p.record_retention_days, "Delivery record retention (days)"),
        (p.log_retention_days, "Log retention (days)"),
        (p.canary_interval_minutes, "Canary interval (minutes, 0: off)"),
        (p.auto_pause_sending, "Pause sending automatically?"),
        (p.pause_at_percent_of_review, "Pause at this % of AWS's review rates"),
    ]
    t.set_metadata({
        "AWS::CloudFormation::Interface": {
            "ParameterGroups": [
                {"Label": {"default": label}, "Parameters": [param.title for param in params]}
                for label, params in groups
            ],
            "ParameterLabels": {
                param.title: {"default": label} for param, label in labels
            },
        }
    })
