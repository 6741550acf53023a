"""Helpers every builder shares: physical names, ARNs built from pseudo parameters, region
conditions, tags."""

from __future__ import annotations

from collections.abc import Sequence

from troposphere import AWSObject, Equals, Or, Parameter, Ref, Region, Sub, Tags

from infra.settings import STATIC_TAGS

ENV = "EnvironmentSuffix"  # the one parameter physical names are derived from
MAX_OR_CONDITIONS = 10  # Fn::Or takes 2 to 10 conditions


def physical(name: str) -> Sub:
    """`<env>-<name>`: the physical name of a resource, known before the resource exists.

    Log groups and IAM statements use it to name functions and queues without a `Ref`, which is
    what keeps the role -> log group -> function -> role chain free of cycles.
    """
    return Sub(f"${{{ENV}}}-{name}")


def regional(name: str) -> Sub:
    """`<env>-<name>-<region>`: for names that are global to an account (dashboards, budgets),
    so that one environment can be deployed in two regions of one account."""
    return Sub(f"${{{ENV}}}-{name}-${{AWS::Region}}")


def arn(service: str, resource: str, *, region: bool = True) -> Sub:
    """An ARN in this stack's partition and account (never a literal `arn:aws:`)."""
    region_part = "${AWS::Region}" if region else ""
    return Sub(f"arn:${{AWS::Partition}}:{service}:{region_part}:${{AWS::AccountId}}:{resource}")


def region_is_one_of(regions: Sequence[str]) -> Equals | Or:
    """A condition that is true in each of `regions`: one `Fn::Equals` on `AWS::Region` per region,
    under `Fn::Or`s nested as deep as needed (each takes at most 10 conditions)."""
    return _any_of([Equals(Region, region) for region in regions])


def _any_of(conditions: list) -> Equals | Or:
    if len(conditions) == 1:
        return conditions[0]
    if len(conditions) <= MAX_OR_CONDITIONS:
        return Or(*conditions)
    groups = -(-len(conditions) // MAX_OR_CONDITIONS)  # ceiling division
    size = -(-len(conditions) // groups)  # as even as possible: 16 regions -> 8 + 8
    return _any_of([_any_of(conditions[start:start + size])
                    for start in range(0, len(conditions), size)])


def tag_pairs(env: Parameter) -> list[tuple[str, object]]:
    """The five standard tags as (key, value), sorted so the template is byte-stable."""
    values = dict(STATIC_TAGS, Environment=Ref(env))
    return [(key, values[key]) for key in sorted(values)]


def tags(env: Parameter) -> Tags:
    return Tags(**dict(tag_pairs(env)))


def add(template, resource: AWSObject) -> AWSObject:
    """Add `resource` to `template` and return it (troposphere refuses duplicate logical IDs)."""
    return template.add_resource(resource)
