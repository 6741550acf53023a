"""CloudWatch, played: the metrics the run publishes and the template's alarms evaluated on them.

`MetricStore` holds every datapoint the run produces: the handlers' Embedded Metric Format lines
(at the timestamp in the line, which is the invocation's virtual time) and SES's reputation
metrics (simulation/ses_reputation.py). `AlarmPlayer` evaluates the template's alarms the way
CloudWatch does, from their own properties: at the end of each period it takes the period's
statistic (or the metric-math expression over its queries), treats missing data as the alarm's
`TreatMissingData` says, needs `DatapointsToAlarm` of the last `EvaluationPeriods` periods
breaching to go to ALARM, and on a state change runs its actions: a Lambda function of the stack
is invoked with the event CloudWatch sends, an SNS topic gets a notification (counted).
Only alarms whose metrics the run produces are played; the others are listed as not simulated.
"""

from __future__ import annotations

import math
import re
import time as _real_time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

OK, ALARM, INSUFFICIENT = "OK", "ALARM", "INSUFFICIENT_DATA"


class MetricStore:
    """Datapoints by (namespace, metric name, dimensions): lists of (time, value)."""

    def __init__(self):
        self.points: dict[tuple, list[tuple[float, float]]] = defaultdict(list)

    @staticmethod
    def key(namespace: str, name: str, dimensions: dict | None = None) -> tuple:
        return namespace, name, tuple(sorted((dimensions or {}).items()))

    def put(self, namespace: str, name: str, at: float, value: float,
            dimensions: dict | None = None) -> None:
        self.points[self.key(namespace, name, dimensions)].append((at, float(value)))

    def put_emf(self, document: dict) -> None:
        """One Embedded Metric Format document (no dimensions, as the handlers write them)."""
        directives = document.get("_aws", {})
        at = directives.get("Timestamp", 0) / 1000
        for directive in directives.get("CloudWatchMetrics", []):
            for metric in directive.get("Metrics", []):
                value = document.get(metric.get("Name"))
                values = value if isinstance(value, list) else [value]
                for one in values:
                    if isinstance(one, (int, float)) and not isinstance(one, bool):
                        self.put(directive["Namespace"], metric["Name"], at, one)

    def statistic(self, key: tuple, stat: str, start: float, end: float) -> float | None:
        """The statistic of the datapoints in [start, end); None if there are none."""
        values = [value for at, value in self.points.get(key, ()) if start <= at < end]
        if not values:
            return None
        if stat == "Sum":
            return sum(values)
        if stat == "Maximum":
            return max(values)
        if stat == "Minimum":
            return min(values)
        if stat == "Average":
            return sum(values) / len(values)
        if stat == "SampleCount":
            return float(len(values))
        raise ValueError(f"statistic {stat} is not simulated")


# --- Metric math ----------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(\d+\.?\d*(?:[eE][-+]?\d+)?|[A-Za-z_][A-Za-z0-9_]*|[-+*/(),\[\]]|>=|<=|>|<)")


def evaluate(expression: str, values: dict[str, float | None]) -> float | None:
    """A CloudWatch metric-math expression over one period's values of its queries: numbers,
    ids, + - * /, parentheses, MAX([...]), MIN([...]), FILL(x, v), IF(a >= b, x, y). A missing
    value (None) makes the result missing unless FILL replaces it."""
    tokens = _TOKEN.findall(expression.replace(" ", ""))
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal position
        token = tokens[position]
        if expected is not None and token != expected:
            raise ValueError(f"expected {expected!r} in {expression!r}, got {token!r}")
        position += 1
        return token

    def comparison():
        left = additive()
        if peek() in (">=", "<=", ">", "<"):
            operator = take()
            right = additive()
            if left is None or right is None:
                return None
            return float({">=": left >= right, "<=": left <= right,
                          ">": left > right, "<": left < right}[operator])
        return left

    def additive():
        value = term()
        while peek() in ("+", "-"):
            operator, right = take(), term()
            value = None if value is None or right is None else (
                value + right if operator == "+" else value - right)
        return value

    def term():
        value = factor()
        while peek() in ("*", "/"):
            operator, right = take(), factor()
            if value is None or right is None:
                value = None
            elif operator == "*":
                value = value * right
            else:
                value = value / right if right else math.inf
        return value

    def factor():
        token = take()
        if token == "-":
            inner = factor()
            return None if inner is None else -inner
        if token == "(":
            inner = comparison()
            take(")")
            return inner
        if re.fullmatch(r"\d.*", token):
            return float(token)
        if peek() == "(":
            return function(token)
        if token not in values:
            raise ValueError(f"unknown id {token!r} in {expression!r}")
        return values[token]

    def function(name: str):
        take("(")
        if name in ("MAX", "MIN"):
            take("[")
            items = [comparison()]
            while peek() == ",":
                take(",")
                items.append(comparison())
            take("]")
            take(")")
            present = [item for item in items if item is not None]
            if not present:
                return None
            return max(present) if name == "MAX" else min(present)
        arguments = [comparison()]
        while peek() == ",":
            take(",")
            arguments.append(comparison())
        take(")")
        if name == "FILL":
            return arguments[1] if arguments[0] is None else arguments[0]
        if name == "IF":
            condition, then, otherwise = arguments
            if condition is None:
                return None
            return then if condition else otherwise
        raise ValueError(f"function {name} is not simulated")

    result = comparison()
    if position != len(tokens):
        raise ValueError(f"cannot read {expression!r}")
    return result


# --- Alarms ---------------------------------------------------------------------------------------

@dataclass
class Transition:
    at: float
    alarm: str
    old: str
    new: str
    value: float | None


@dataclass
class AlarmInfo:
    """One alarm of the template, its properties resolved."""

    logical: str
    name: str
    arn: str
    props: dict
    state: str = INSUFFICIENT
    history: list[bool | None] = field(default_factory=list)  # per period: breaching, or None

    @property
    def period(self) -> int:
        if "Period" in self.props:
            return int(self.props["Period"])
        periods = [int(q["MetricStat"]["Period"]) for q in self.props.get("Metrics", [])
                   if "MetricStat" in q]
        return min(periods)


def breaches(value: float, operator: str, threshold: float) -> bool:
    """Whether `value` is on the alarming side of `threshold` for a ComparisonOperator."""
    return {"GreaterThanThreshold": value > threshold,
            "GreaterThanOrEqualToThreshold": value >= threshold,
            "LessThanThreshold": value < threshold,
            "LessThanOrEqualToThreshold": value <= threshold}[operator]


class AlarmPlayer:
    """Evaluates the alarms at the end of each of their periods on the virtual clock."""

    def __init__(self, alarms: list[AlarmInfo], store: MetricStore,
                 on_transition: Callable[[AlarmInfo, Transition], None], start: float):
        self.alarms, self.store, self.on_transition = alarms, store, on_transition
        self.transitions: list[Transition] = []
        self.next_at = {alarm.logical: start + alarm.period for alarm in alarms}

    def next_due(self) -> float | None:
        return min(self.next_at.values(), default=None)

    def evaluate_due(self, now: float) -> None:
        for alarm in self.alarms:
            while self.next_at[alarm.logical] <= now:
                end = self.next_at[alarm.logical]
                self._evaluate(alarm, end - alarm.period, end)
                self.next_at[alarm.logical] = end + alarm.period

    def value(self, alarm: AlarmInfo, start: float, end: float) -> float | None:
        """The alarm's value for the period [start, end): its metric's statistic, or its
        metric-math expression (the query with ReturnData) over its queries' statistics."""
        p = alarm.props
        if "MetricName" in p:
            key = MetricStore.key(p["Namespace"], p["MetricName"], {
                d["Name"]: d["Value"] for d in p.get("Dimensions", [])})
            return self.store.statistic(key, p["Statistic"], start, end)
        values: dict[str, float | None] = {}
        expression = None
        for query in p["Metrics"]:
            if "MetricStat" in query:
                stat = query["MetricStat"]
                metric = stat["Metric"]
                key = MetricStore.key(metric["Namespace"], metric["MetricName"], {
                    d["Name"]: d["Value"] for d in metric.get("Dimensions", [])})
                values[query["Id"]] = self.store.statistic(key, stat["Stat"], start, end)
            elif query.get("ReturnData", True):
                expression = query["Expression"]
        return evaluate(expression, values)

    def _evaluate(self, alarm: AlarmInfo, start: float, end: float) -> None:
        p = alarm.props
        value = self.value(alarm, start, end)
        breaching = None if value is None else breaches(
            value, p["ComparisonOperator"], float(p["Threshold"]))
        alarm.history.append(breaching)
        periods = int(p.get("EvaluationPeriods", 1))
        needed = int(p.get("DatapointsToAlarm", periods))
        window = alarm.history[-periods:]
        missing = p.get("TreatMissingData", "missing")
        treated = [self._treat(point, missing) for point in window]
        if missing == "ignore" and all(point is None for point in window):
            new = alarm.state  # keep the state while no data comes
        elif sum(point is True for point in treated) >= needed:
            new = ALARM
        elif all(point is None for point in treated):
            new = INSUFFICIENT
        else:
            new = OK
        if new != alarm.state:
            transition = Transition(at=end, alarm=alarm.name, old=alarm.state, new=new,
                                    value=value)
            alarm.state = new
            self.transitions.append(transition)
            self.on_transition(alarm, transition)

    @staticmethod
    def _treat(point: bool | None, missing: str) -> bool | None:
        if point is not None:
            return point
        return {"breaching": True, "notBreaching": False}.get(missing)


def alarm_event(alarm: AlarmInfo, transition: Transition, account: str, region: str) -> dict:
    """The event CloudWatch sends a Lambda function that is an alarm's action."""
    def state(value: str, at: float, reason: str) -> dict:
        return {"value": value, "reason": reason, "timestamp": _iso(at)}
    return {
        "source": "aws.cloudwatch",
        "alarmArn": alarm.arn,
        "accountId": account,
        "time": _iso(transition.at),
        "region": region,
        "alarmData": {
            "alarmName": alarm.name,
            "state": state(transition.new, transition.at,
                           f"Threshold Crossed: value {transition.value}"),
            "previousState": state(transition.old, transition.at, ""),
            "configuration": {"description": alarm.props.get("AlarmDescription", "")},
        },
    }


def _iso(at: float) -> str:
    whole = int(at)
    return (_real_time.strftime("%Y-%m-%dT%H:%M:%S", _real_time.gmtime(whole))
            + f".{int((at - whole) * 1000):03d}+0000")

