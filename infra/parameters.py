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
    record_retention_days: Parameter
    log_retention_days: Parameter
    create_email_identity: Parameter
    # condition names
    has_alarm_email: str = HAS_ALARM_EMAIL
    creates_email_identity: str = CREATE_EMAIL_IDENTITY


def add_parameters(t: Template) -> Params:
    p = Params(
        env=t.add_parameter(Parameter(
            ENV, Type="String", Default="dev", AllowedPattern=ENV_PATTERN,
            Description="Prefix of every physical name: dev, staging, prod...",
            ConstraintDescription="1-20 of a-z, 0-9 and -, starting with a letter",
        )),
        verified_domain=t.add_parameter(Parameter(
            "VerifiedDomain", Type="String", AllowedPattern=DOMAIN_PATTERN,
            Description="Sending domain, e.g. shop.example.com",
            ConstraintDescription="a lower-case domain name",
        )),
        from_address=t.add_parameter(Parameter(
            "SesFromAddress", Type="String", AllowedPattern=EMAIL_PATTERN,
            Description="From address of every email, in VerifiedDomain",
            ConstraintDescription="one e-mail address",
        )),
        enable_production_ses=t.add_parameter(Parameter(
            "EnableProductionSES", Type="String", Default="false", AllowedValues=["true", "false"],
            Description="false: every email goes to TestEmailAddress (SES sandbox)",
        )),
        test_email=t.add_parameter(Parameter(
            "TestEmailAddress", Type="String", AllowedPattern=EMAIL_PATTERN,
            Description="Verified address that gets every email in sandbox mode",
            ConstraintDescription="one e-mail address",
        )),
        alarm_email=t.add_parameter(Parameter(
            "AlarmEmail", Type="String", Default="",
            AllowedPattern=EMAIL_PATTERN.rstrip("$") + "$|^$",
            Description="On-call e-mail for alarms (empty: none)",
            ConstraintDescription="empty or one e-mail address",
        )),
        monthly_budget=t.add_parameter(Parameter(
            "MonthlyBudgetUsd", Type="Number", Default=settings.DEFAULT_MONTHLY_BUDGET_USD,
            MinValue=1,
            Description="Alerts at 80 % actual and 100 % forecast",
        )),
        send_max_concurrency=t.add_parameter(Parameter(
            "SendMaxConcurrency", Type="Number", Default=settings.DEFAULT_SEND_MAX_CONCURRENCY,
            MinValue=2, MaxValue=1000,
            Description="Keep x 8 under the SES max send rate (2 for 14/s)",
        )),
        record_retention_days=t.add_parameter(Parameter(
            "RecordRetentionDays", Type="Number", Default=settings.DEFAULT_RECORD_RETENTION_DAYS,
            MinValue=1, MaxValue=3650,
            Description="Days before a delivery record expires (TTL)",
        )),
        log_retention_days=t.add_parameter(Parameter(
            "LogRetentionDays", Type="Number", Default=settings.DEFAULT_LOG_RETENTION_DAYS,
            AllowedValues=settings.LOG_RETENTION_CHOICES,
            Description="Days the functions' logs are kept",
        )),
        create_email_identity=t.add_parameter(Parameter(
            "CreateEmailIdentity", Type="String", Default="true", AllowedValues=["true", "false"],
            Description="Create the SES domain identity (publish the DkimRecord outputs)",
        )),
    )
    t.add_condition(HAS_ALARM_EMAIL, Not(Equals(Ref(p.alarm_email), "")))
    t.add_condition(CREATE_EMAIL_IDENTITY, Equals(Ref(p.create_email_identity), "true"))
    _add_console_layout(t, p)
    return p


def _add_console_layout(t: Template, p: Params) -> None:
    groups = [
        ("Environment", [p.env]),
        ("Sending", [p.verified_domain, p.create_email_identity, p.from_address,
                     p.enable_production_ses, p.test_email, p.send_max_concurrency]),
        ("Operations", [p.alarm_email, p.monthly_budget, p.record_retention_days,
                        p.log_retention_days]),
    ]
    labels = [
        (p.env, "Environment name"),
        (p.verified_domain, "Sending domain"),
        (p.create_email_identity, "Create the SES domain identity?"),
        (p.from_address, "From address"),
        (p.enable_production_ses, "Send to real customers?"),
        (p.test_email, "Test recipient (sandbox mode)"),
        (p.send_max_concurrency, "Maximum concurrent senders"),
        (p.alarm_email, "On-call e-mail for alarms"),
        (p.monthly_budget, "Monthly budget (USD)"),
        (p.record_retention_days, "Delivery record retention (days)"),
        (p.log_retention_days, "Log retention (days)"),
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
