"""Helpers every builder shares: physical names, ARNs built from pseudo parameters, tags."""

from __future__ import annotations

from troposphere import AWSObject, Parameter, Ref, Sub, Tags

from infra.settings import STATIC_TAGS

ENV = "EnvironmentSuffix"  # the one parameter physical names are derived from


def physical(name: str) -> Sub:
    """`<env>-<name>`: the physical name of a resource, known before the resource exists.

    Log groups and IAM statements use it to name functions and queues without a `Ref`, which is
    what keeps the role -> log group -> function -> role chain free of cycles.
    """
    return Sub(f"${{{ENV}}}-{name}")


def arn(service: str, resource: str, *, region: bool = True) -> Sub:
    """An ARN in this stack's partition and account (never a literal `arn:aws:`)."""
    region_part = "${AWS::Region}" if region else ""
    return Sub(f"arn:${{AWS::Partition}}:{service}:{region_part}:${{AWS::AccountId}}:{resource}")


def tag_pairs(env: Parameter) -> list[tuple[str, object]]:
    """The five standard tags as (key, value), sorted so the template is byte-stable."""
    values = dict(STATIC_TAGS, Environment=Ref(env))
    return [(key, values[key]) for key in sorted(values)]


def tags(env: Parameter) -> Tags:
    return Tags(**dict(tag_pairs(env)))


def add(template, resource: AWSObject) -> AWSObject:
    """Add `resource` to `template` and return it (troposphere refuses duplicate logical IDs)."""
    return template.add_resource(resource)
