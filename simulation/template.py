"""The template the simulation runs: loading it, choosing its parameters, resolving intrinsics.

`load_template` reads `dist/template.json` (or takes a dict), `choose_parameters` gives every
parameter a value (an override, else the simulation's value, else its Default), `Resolver`
resolves `Ref` / `Fn::Sub` / `Fn::GetAtt` / conditions to this simulation's account, region and
the physical ids moto gave the resources, and `creation_order` sorts the resources so that each
comes after the ones it refers to. Anything the simulation cannot play is a `TemplateError`.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = ROOT / "dist" / "template.json"

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
STACK_NAME = "email-sim"

# Values the simulation gives the template's parameters (any other parameter takes its Default).
# Production mode, so each email goes to its order's mailbox-simulator address.
SIM_PARAMETERS = {
    "EnvironmentSuffix": "sim",
    "VerifiedDomain": "shop.example.com",
    "SesFromAddress": "orders@shop.example.com",
    "EnableProductionSES": "true",
    "TestEmailAddress": "success@simulator.amazonses.com",
    "AlarmEmail": "",
}


class TemplateError(Exception):
    """The template cannot be simulated: missing file, bad JSON, missing value, unknown
    intrinsic."""


def load_template(source: str | Path | dict) -> dict:
    """The template as a dict: a copy of `source` if it is one, else the JSON file it names."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    if not path.is_file():
        hint = " (run `python build_template.py` first)" if path == DEFAULT_TEMPLATE else ""
        raise TemplateError(f"template file not found: {path}{hint}")
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TemplateError(f"cannot read {path} as a JSON template: {exc}") from None
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return template


def choose_parameters(template: dict, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """A value for every template parameter: override, else simulation value, else Default."""
    declared = template.get("Parameters", {})
    unknown = sorted(set(overrides or {}) - set(declared))
    if unknown:
        raise TemplateError(f"unknown template parameter(s): {', '.join(unknown)}")
    chosen = {}
    for name, spec in declared.items():
        if overrides and name in overrides:
            value = overrides[name]
        elif name in SIM_PARAMETERS:
            value = SIM_PARAMETERS[name]
        elif "Default" in spec:
            value = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default: pass --param {name}=VALUE")
        value = str(value)
        allowed = spec.get("AllowedValues")
        if allowed and value not in [str(v) for v in allowed]:
            raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
        chosen[name] = value
    return chosen


NO_VALUE = object()  # AWS::NoValue: the property is removed
SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class Resolver:
    """Resolves CloudFormation intrinsics to the values of this simulation.

    Parameters resolve to the chosen values, pseudo parameters to moto's region and account, and
    resources to the physical ids moto gave them (`physical[logical]` maps "Ref" and each
    `GetAtt` attribute to a value). A resource that is not simulated resolves to a placeholder.
    """

    def __init__(self, template: dict, parameters: dict[str, str]):
        self.template = template
        self.parameters = parameters
        self.physical: dict[str, dict[str, Any]] = {}
        self._conditions: dict[str, bool] = {}
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK_NAME,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{STACK_NAME}/sim",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        self._functions: dict[str, Callable[[Any], Any]] = {
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::If": self._if,
            "Fn::Select": lambda arg: self.resolve(arg[1])[int(self.resolve(arg[0]))],
            "Fn::Split": lambda arg: str(self.resolve(arg[1])).split(arg[0]),
            "Fn::Base64": lambda arg: base64.b64encode(str(self.resolve(arg)).encode()).decode(),
            "Fn::GetAZs": lambda arg: [f"{REGION}{zone}" for zone in "abcdef"],
            "Fn::FindInMap": self._find_in_map,
        }

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not NO_VALUE]
        if isinstance(value, dict):
            if len(value) == 1:
                (key, arg), = value.items()
                if key == "Ref":
                    return self.ref(arg)
                if key.startswith("Fn::"):
                    function = self._functions.get(key)
                    if function is None:
                        raise TemplateError(f"intrinsic {key} is not supported by simulate.py")
                    return function(arg)
            resolved = {key: self.resolve(item) for key, item in value.items()}
            return {key: item for key, item in resolved.items() if item is not NO_VALUE}
        return value

    def _find_in_map(self, arg: list) -> Any:
        mapping, top, second = (str(self.resolve(item)) for item in arg)
        try:
            return self.template["Mappings"][mapping][top][second]
        except KeyError:
            raise TemplateError(f"Fn::FindInMap: no {mapping}.{top}.{second}") from None

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name]["Ref"]
        if name in self.template.get("Resources", {}):
            return f"{name}-not-simulated"
        raise TemplateError(f"Ref to unknown name {name}")

    def get_att(self, name: str, attribute: str) -> Any:
        if name in self.physical:
            if attribute not in self.physical[name]:
                raise TemplateError(f"Fn::GetAtt {name}.{attribute} is not simulated")
            return self.physical[name][attribute]
        if name in self.template.get("Resources", {}):
            return f"{name}-{attribute}-not-simulated"
        raise TemplateError(f"Fn::GetAtt of unknown resource {name}")

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.get("Conditions", {})
            if name not in conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self._evaluate(conditions[name]))
        return self._conditions[name]

    def _evaluate(self, expression: Any) -> Any:
        """A condition expression (Fn::Equals / Not / And / Or / Condition) or a plain value."""
        if isinstance(expression, dict) and len(expression) == 1:
            (key, arg), = expression.items()
            if key == "Fn::Equals":
                return str(self.resolve(arg[0])) == str(self.resolve(arg[1]))
            if key == "Fn::Not":
                return not self._evaluate(arg[0])
            if key == "Fn::And":
                return all(self._evaluate(item) for item in arg)
            if key == "Fn::Or":
                return any(self._evaluate(item) for item in arg)
            if key == "Condition":
                return self.condition(arg)
        return self.resolve(expression)

    def _get_att(self, arg: Any) -> Any:
        name, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
        return self.get_att(name, self.resolve(attribute))

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        values = {name: self.resolve(value) for name, value in variables.items()}

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the literal text ${Literal}
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name and name not in self.pseudo:
                return str(self.get_att(*name.split(".", 1)))
            return str(self.ref(name))

        return SUB_VARIABLE.sub(replace, text)

    def _join(self, arg: Any) -> str:
        delimiter, items = arg
        return delimiter.join(str(item) for item in self.resolve(items))

    def _if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)


def references(value: Any, found: set[str] | None = None) -> set[str]:
    """Logical ids a property value refers to (Ref, Fn::GetAtt, Fn::Sub variables)."""
    found = set() if found is None else found
    if isinstance(value, list):
        for item in value:
            references(item, found)
    elif isinstance(value, dict):
        if len(value) == 1 and "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        elif len(value) == 1 and "Fn::GetAtt" in value:
            arg = value["Fn::GetAtt"]
            found.add(arg.split(".", 1)[0] if isinstance(arg, str) else arg[0])
        elif len(value) == 1 and "Fn::Sub" in value:
            arg = value["Fn::Sub"]
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            for name in SUB_VARIABLE.findall(text):
                if not name.startswith("!") and name not in variables:
                    found.add(name.split(".", 1)[0])
            references(variables, found)
        else:
            for item in value.values():
                references(item, found)
    return found


def creation_order(resources: dict[str, dict]) -> list[str]:
    """Logical ids in an order where every resource comes after the ones it refers to."""
    depends = {}
    for logical, resource in resources.items():
        needed = references(resource.get("Properties", {}))
        explicit = resource.get("DependsOn", [])
        needed.update([explicit] if isinstance(explicit, str) else explicit)
        depends[logical] = {name for name in needed if name in resources and name != logical}
    order, done = [], set()
    while len(order) < len(resources):
        ready = sorted(name for name in resources if name not in done and depends[name] <= done)
        if not ready:
            raise TemplateError("the template's resources depend on each other in a cycle")
        order.extend(ready)
        done.update(ready)
    return order
