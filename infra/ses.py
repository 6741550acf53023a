"""SES: the configuration set every confirmation is sent through, its event destinations, and
(optionally) the domain identity with Easy DKIM, which the stack keeps when it is deleted.

Event routing: `send`, `delivery`, `deliveryDelay` -> delivery topic; `bounce`, `reject`,
`renderingFailure` -> bounce topic; `complaint` -> complaint topic. `send` is routed too because
the feedback processor uses it to close the crash window between SES accepting an email and the
send function recording it.
"""

from __future__ import annotations

from dataclasses import dataclass

from troposphere import Ref, Sub, Template
from troposphere.ses import (
    ConfigurationSet, ConfigurationSetEventDestination,
    DeliveryOptions, DkimSigningAttributes, EmailIdentity, EventDestination, ReputationOptions,
    SnsDestination, SuppressionOptions,
)
from troposphere.sns import Topic, TopicPolicy

from infra import settings
from infra.common import add, physical, tags
from infra.parameters import Params
from infra.topics import Topics

DKIM_RECORDS = 3  # Easy DKIM publishes three CNAME records
RETAIN = "Retain"


@dataclass(frozen=True)
class Ses:
    configuration_set: ConfigurationSet
    destinations: list[ConfigurationSetEventDestination]
    identity: EmailIdentity


def _destination(t: Template, title: str, name: str, config_set: ConfigurationSet,
                 topic: Topic, events: list[str], policy: TopicPolicy,
                 ) -> ConfigurationSetEventDestination:
    return add(t, ConfigurationSetEventDestination(
        title,
        ConfigurationSetName=config_set.ref(),
        EventDestination=EventDestination(
            Name=name,
            Enabled=True,
            MatchingEventTypes=events,
            SnsDestination=SnsDestination(TopicARN=topic.ref()),
        ),
        DependsOn=[policy],
    ))


def add_ses(t: Template, params: Params, *, topics: Topics) -> Ses:
    config_set = add(t, ConfigurationSet(
        "SESConfigurationSet",
        Name=physical(settings.CONFIG_SET_NAME),
        ReputationOptions=ReputationOptions(ReputationMetricsEnabled=True),
        # Never mail an address that bounced hard or complained again, whatever the caller says.
        SuppressionOptions=SuppressionOptions(SuppressedReasons=["BOUNCE", "COMPLAINT"]),
        DeliveryOptions=DeliveryOptions(TlsPolicy="REQUIRE"),
        Tags=tags(params.env),
    ))
    destinations = [
        _destination(t, "SESEventDestinationDelivery", "delivery-destination", config_set,
                     topics.delivery, ["send", "delivery", "deliveryDelay"], topics.policy),
        _destination(t, "SESEventDestinationBounce", "bounce-destination", config_set,
                     topics.bounce, ["bounce", "reject", "renderingFailure"], topics.policy),
        _destination(t, "SESEventDestinationComplaint", "complaint-destination", config_set,
                     topics.complaint, ["complaint"], topics.policy),
    ]
    identity = add(t, EmailIdentity(
        "SESEmailIdentity",
        Condition=params.creates_email_identity,
        # Other senders may use the domain and its DKIM records: deleting the stack (or replacing
        # the identity) keeps it. Deploy again with CreateEmailIdentity=false.
        DeletionPolicy=RETAIN,
        UpdateReplacePolicy=RETAIN,
        EmailIdentity=Ref(params.verified_domain),
        # Easy DKIM (signing is on by default for a domain identity), with 2048-bit keys.
        DkimSigningAttributes=DkimSigningAttributes(NextSigningKeyLength="RSA_2048_BIT"),
        # No default configuration set: the send function names this stack's set on every
        # email. As the domain's default, the set would capture other senders' mail too: a pause
        # of this stack's set (the circuit breaker) would stop their mail, and sending from the
        # retained identity would fail once the stack (and its set) is deleted.
        Tags=tags(params.env),
    ))
    return Ses(configuration_set=config_set, destinations=destinations, identity=identity)


def dkim_record(identity: EmailIdentity, number: int) -> Sub:
    """One DNS record to publish, as `<name> CNAME <value>`."""
    token = f"{identity.title}.DkimDNSToken"
    return Sub(f"${{{token}Name{number}}} CNAME ${{{token}Value{number}}}")
