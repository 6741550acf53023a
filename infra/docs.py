"""Documentation generated from the template, so it cannot drift from what is deployed.

The build writes the parameters table, the outputs table and the architecture diagram into
README.md between `<!-- BEGIN GENERATED: name -->` / `<!-- END GENERATED: name -->` markers, and
the diagram into `dist/architecture.mmd`. `build_template.py --check` compares all of them.
"""

from __future__ import annotations

import re

BEGIN = "<!-- BEGIN GENERATED: {} -->"
END = "<!-- END GENERATED: {} -->"


class MissingMarker(ValueError):
    """README.md lacks the markers of a generated section."""


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the lines between the `name` markers replaced by `body`."""
    begin, end = BEGIN.format(name), END.format(name)
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise MissingMarker(f"README.md has no '{begin}' ... '{end}' section")
    return pattern.sub(lambda _: f"{begin}\n{body.rstrip()}\n{end}", text, count=1)


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _ref_name(value) -> str:
    """A readable rendering of an intrinsic function value (for the outputs table)."""
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()
        if key == "Ref":
            return f"Ref {inner}"
        if key == "Fn::GetAtt":
            return "GetAtt " + ".".join(inner)
        if key == "Fn::Sub":
            return "Sub " + (inner if isinstance(inner, str) else inner[0])
    return str(value)


def parameters_table(template: dict) -> str:
    rows = ["| Parameter | Default | Allowed | Description |", "|---|---|---|---|"]
    for name, spec in template["Parameters"].items():
        if "AllowedValues" in spec:
            allowed = ", ".join(str(v) for v in spec["AllowedValues"])
        elif "AllowedPattern" in spec:
            allowed = f"`{spec['AllowedPattern']}`"
        elif "MinValue" in spec or "MaxValue" in spec:
            allowed = f"{spec.get('MinValue', '')}..{spec.get('MaxValue', '')}"
        else:
            allowed = ""
        default = spec.get("Default", "*(required)*")
        default = '`""`' if default == "" else default
        rows.append(f"| `{name}` | {_cell(default)} | {_cell(allowed)} | "
                    f"{_cell(spec.get('Description'))} |")
    return "\n".join(rows)


def outputs_table(template: dict) -> str:
    rows = ["| Output | Value | Description |", "|---|---|---|"]
    for name, spec in template["Outputs"].items():
        value = _ref_name(spec["Value"])
        condition = f" (only if {spec['Condition']})" if "Condition" in spec else ""
        rows.append(f"| `{name}` | `{_cell(value)}` | {_cell(spec.get('Description'))}"
                    f"{condition} |")
    return "\n".join(rows)


# --- Architecture diagram ------------------------------------------------------------------------

_SHAPES = {
    "AWS::SNS::Topic": ("{{{{{label}}}}}", "topic"),
    "AWS::SQS::Queue": ("[/{label}/]", "queue"),
    "AWS::Lambda::Function": ("[[{label}]]", "function"),
    "AWS::DynamoDB::Table": ("[({label})]", "table"),
    "AWS::SES::ConfigurationSet": ("([{label}])", "ses"),
}


def _refs(value) -> list[str]:
    """Logical ids referenced (Ref / GetAtt / ${X} in Sub) anywhere inside `value`."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.append(inner)
            elif key == "Fn::GetAtt":
                found.append(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found += [m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)]
                if not isinstance(inner, str):
                    found += _refs(inner[1])
            else:
                found += _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found += _refs(inner)
    return found


def _label(name: str, resource: dict) -> str:
    props = resource.get("Properties", {})
    for key in ("TopicName", "QueueName", "FunctionName", "TableName", "Name"):
        if isinstance(props.get(key), dict) and "Fn::Sub" in props[key]:
            return props[key]["Fn::Sub"].replace("${EnvironmentSuffix}", "env")
    return name


def _granted_actions(resources: dict, function: dict) -> set[str]:
    """Every action the function's execution role grants."""
    role = resources[_refs(function["Properties"]["Role"])[0]]
    actions = set()
    for policy in role["Properties"].get("Policies", []):
        statements = policy["PolicyDocument"]["Statement"]
        for statement in statements if isinstance(statements, list) else [statements]:
            action = statement["Action"]
            actions.update(action if isinstance(action, list) else [action])
    return actions


def _what_it_does(actions: set[str], target_type: str) -> str | None:
    """The edge label for a function that names a resource of `target_type` in its environment,
    from what its role may do."""
    if target_type == "AWS::DynamoDB::Table":
        return "conditional writes"
    if target_type == "AWS::SES::ConfigurationSet" and "ses:SendEmail" in actions:
        return "SendEmail"
    if (target_type == "AWS::SES::ConfigurationSet"
            and "ses:PutConfigurationSetSendingOptions" in actions):
        return "pause / resume"
    if (target_type == "AWS::Lambda::EventSourceMapping"
            and "lambda:UpdateEventSourceMapping" in actions):
        return "pause / resume its queue"
    return None


def _alarm_actions(resources: dict, alarms: list[str], kind: str) -> dict[str, list[str]]:
    """Each resource of type `kind` that alarms act on -> the alarms that do, in order."""
    acted_on: dict[str, list[str]] = {}
    for alarm in alarms:
        # A set: a target named in both branches of an Fn::If counts once.
        for target in sorted(set(_refs(resources[alarm]["Properties"]["AlarmActions"]))):
            if resources.get(target, {}).get("Type") == kind:
                acted_on.setdefault(target, []).append(alarm)
    return acted_on


def _condition_of(actions) -> str:
    """`, if <condition>` when the alarm actions are chosen with Fn::If, else ''."""
    if isinstance(actions, dict) and "Fn::If" in actions:
        return f", if {actions['Fn::If'][0]}"
    return ""


def architecture_mermaid(template: dict) -> str:
    """A flowchart of the data path, derived from the resources and their references."""
    resources = template["Resources"]
    nodes, edges = {}, []

    def node(name: str) -> str:
        resource = resources[name]
        shape, _ = _SHAPES.get(resource["Type"], ("[{label}]", "other"))
        nodes[name] = shape.format(label=_label(name, resource))
        return name

    orders = next(n for n, r in resources.items() if r["Type"] == "AWS::SNS::Topic"
                  and "order" in _label(n, r))
    edges.append(("OrderService", "publish", node(orders)))
    for name, resource in resources.items():
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::SNS::Subscription" and props.get("Protocol") == "sqs":
            topic, queue = _refs(props["TopicArn"])[0], _refs(props["Endpoint"])[0]
            label = "raw" if props.get("RawMessageDelivery") else "envelope"
            edges.append((node(topic), label, node(queue)))
        elif kind == "AWS::SQS::Queue" and "RedrivePolicy" in props:
            dlq = _refs(props["RedrivePolicy"]["deadLetterTargetArn"])[0]
            receives = props["RedrivePolicy"]["maxReceiveCount"]
            edges.append((node(name), f"after {receives} receives", node(dlq)))
        elif kind == "AWS::Lambda::EventSourceMapping":
            queue, function = _refs(props["EventSourceArn"])[0], _refs(props["FunctionName"])[0]
            edges.append((node(queue), f"batches of {props.get('BatchSize', 10)}",
                          node(function)))
        elif kind == "AWS::Lambda::Function":
            actions = _granted_actions(resources, resource)
            for target in sorted(set(_refs(props.get("Environment", {})))):
                target_type = resources.get(target, {}).get("Type")
                verb = _what_it_does(actions, target_type)
                if verb and target_type == "AWS::Lambda::EventSourceMapping":
                    # Shown on the function the mapping feeds: mappings are not nodes.
                    mapped = _refs(resources[target]["Properties"]["FunctionName"])[0]
                    edges.append((node(name), verb, node(mapped)))
                elif verb:
                    edges.append((node(name), verb, node(target)))
        elif kind == "AWS::SES::ConfigurationSetEventDestination":
            destination = props["EventDestination"]
            config_set = _refs(props["ConfigurationSetName"])[0]
            topic = _refs(destination["SnsDestination"]["TopicARN"])[0]
            events = ", ".join(destination["MatchingEventTypes"])
            edges.append((node(config_set), events, node(topic)))
    alarms = [n for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"]
    all_alarms = f"Alarms[{len(alarms)} CloudWatch alarms]"
    for function, invokers in sorted(_alarm_actions(resources, alarms,
                                                    "AWS::Lambda::Function").items()):
        condition = _condition_of(resources[invokers[0]]["Properties"]["AlarmActions"])
        verb = "invokes" if len(invokers) == 1 else "invoke"
        edges.append((all_alarms, f"{len(invokers)} of them {verb}{condition}", node(function)))
    for topic in sorted(_alarm_actions(resources, alarms, "AWS::SNS::Topic")):
        edges.append((all_alarms, "notify", node(topic)))
        for name, resource in resources.items():
            if resource["Type"] == "AWS::Budgets::Budget" and topic in _refs(resource):
                limits = " / ".join(
                    f"{n['Notification']['Threshold']} % {n['Notification']['NotificationType'].lower()}"
                    for n in resource["Properties"]["NotificationsWithSubscribers"])
                # Under a condition: only in the regions whose CloudFormation has budgets.
                where = ", not in every region" if "Condition" in resource else ""
                edges.append((f"Budget[Monthly budget{where}]", limits, topic))
            if (resource["Type"] == "AWS::SNS::Subscription" and
                    resource["Properties"].get("Protocol") == "email"):
                edges.append((topic, "email", "OnCall((on-call))"))

    lines = ["flowchart LR", "  OrderService([order service])"]
    lines += [f"  {name}{shape}" for name, shape in nodes.items()]
    seen = set()
    for source, label, target in edges:
        if (source, label, target) in seen:
            continue
        seen.add((source, label, target))
        lines.append(f"  {source} -->|{label}| {target}")
    return "\n".join(lines) + "\n"
