"""The stack's self-watching, played: canary schedules, SES reputation metrics, alarms, actions.

`SelfWatching` runs on the simulation's virtual clock until the scenario's horizon:
- each `AWS::Scheduler::Schedule` of the template fires at its `rate(...)`, publishing its
  target's input (with `<aws.scheduler.scheduled-time>` replaced) to its SNS topic;
- every REPUTATION_PUBLISH_S SES publishes the account's and each configuration set's
  `Reputation.BounceRate` / `Reputation.ComplaintRate` from the SES model, and AWS pauses the
  account if its rates reach the enforcement levels;
- the alarms whose metrics the run produces are evaluated as CloudWatch would
  (simulation/alarms.py); on a state change their actions run: a Lambda function of the stack
  (the circuit breaker) is invoked with CloudWatch's event, a topic notification is counted.
"""

from __future__ import annotations

import re
import time as _real_time
from collections import Counter
from typing import Any

from simulation.alarms import (ALARM, AlarmInfo, AlarmPlayer, MetricStore, Transition,
                               alarm_event, breaches)
from simulation.runtime import START_EPOCH
from simulation.template import ACCOUNT_ID, REGION

REPUTATION_PUBLISH_S = 300  # SES updates its reputation metrics every few minutes (modelled)
SES_NAMESPACE = "AWS/SES"
CONFIGURATION_SET_DIMENSION = "ses:configuration-set"


def rate_seconds(expression: str) -> float:
    """The interval of `rate(N minute[s]|hour[s]|day[s])`."""
    match = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", expression.strip())
    if not match:
        raise ValueError(f"schedule expression {expression!r} is not simulated")
    return int(match.group(1)) * {"minute": 60, "hour": 3600, "day": 86400}[match.group(2)]


class SelfWatching:
    def __init__(self, simulation: Any, horizon: float, metrics: MetricStore):
        self.simulation = simulation
        self.horizon = horizon
        self.metrics = metrics
        stack = simulation.stack
        self.namespaces = {SES_NAMESPACE} | {
            function.environment["METRICS_NAMESPACE"] for function in stack.functions.values()
            if "METRICS_NAMESPACE" in function.environment}
        playable = [alarm for alarm in stack.alarms.values() if self._playable(alarm)]
        self.not_played = sorted(alarm.name for alarm in stack.alarms.values()
                                 if alarm not in playable)
        self.alarms = AlarmPlayer(playable, self.metrics, self._changed, START_EPOCH)
        self.schedules = []
        for schedule in stack.schedules.values():
            if schedule.enabled:
                # The schedule has been running before the run starts: one fires at its start.
                interval = rate_seconds(schedule.expression)
                self.schedules.append([START_EPOCH, interval, schedule])
        self.next_reputation = START_EPOCH + REPUTATION_PUBLISH_S
        self.notifications: Counter = Counter()
        self.actions_run: list[dict] = []
        self.canaries_published = 0
        self.enforced_at: float | None = None

    def _playable(self, alarm: AlarmInfo) -> bool:
        """Whether the run produces every metric the alarm watches."""
        p = alarm.props
        namespaces = [p["Namespace"]] if "Namespace" in p else [
            query["MetricStat"]["Metric"]["Namespace"]
            for query in p.get("Metrics", []) if "MetricStat" in query]
        return bool(namespaces) and all(namespace in self.namespaces for namespace in namespaces)

    # --- the clock ------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        times = [self.alarms.next_due(), self.next_reputation,
                 *(due for due, _, _ in self.schedules)]
        upcoming = [time for time in times if time is not None and time <= self.horizon]
        return min(upcoming, default=None)

    def run_due(self, now: float) -> None:
        if now > self.horizon:
            return
        for entry in self.schedules:
            while entry[0] <= now:
                self._fire(entry[2], entry[0])
                entry[0] += entry[1]
        while self.next_reputation <= now:
            self._publish_reputation(self.next_reputation)
            self.next_reputation += REPUTATION_PUBLISH_S
        self.alarms.evaluate_due(now)

    # --- the parts ------------------------------------------------------------------------------

    def _fire(self, schedule, scheduled: float) -> None:
        """The schedule invokes its target: SNS Publish of its input (templated target)."""
        stamp = _real_time.strftime("%Y-%m-%dT%H:%M:%SZ", _real_time.gmtime(int(scheduled)))
        body = schedule.body.replace("<aws.scheduler.scheduled-time>", stamp)
        self.simulation.publish_to(schedule.target_arn, body)
        self.canaries_published += 1

    def _publish_reputation(self, at: float) -> None:
        account = self.simulation.ses_account
        scopes = [(None, {})] + [(name, {CONFIGURATION_SET_DIMENSION: name})
                                 for name in self.simulation.stack.configuration_sets]
        for configuration_set, dimensions in scopes:
            rates = account.reputation(at, configuration_set)
            if rates is None:
                continue
            self.metrics.put(SES_NAMESPACE, "Reputation.BounceRate", at, rates["bounce"],
                             dimensions)
            self.metrics.put(SES_NAMESPACE, "Reputation.ComplaintRate", at, rates["complaint"],
                             dimensions)
        if account.enforce(at):
            self.enforced_at = at
            self.simulation.timeline.happened(at, "AWS pauses the account: its bounce or "
                                                  "complaint rate reached the enforcement level")

    def _changed(self, alarm: AlarmInfo, transition: Transition) -> None:
        """An alarm changed state: run its actions for the new state."""
        self.simulation.timeline.happened(
            transition.at, f"alarm {alarm.name}: {transition.old} -> {transition.new}")
        if transition.new != ALARM:
            return  # the stack's alarms act only on ALARM (no OKActions)
        for arn in alarm.props.get("AlarmActions", []):
            function = self.simulation.function_by_arn(arn)
            if function is not None:
                event = alarm_event(alarm, transition, ACCOUNT_ID, REGION)
                result = self.simulation.invoke_function(function, event)
                self.actions_run.append({"at": transition.at, "alarm": alarm.name,
                                         "function": function.info.name,
                                         "errored": result.errored})
            else:
                self.notifications[arn.rsplit(":", 1)[-1]] += 1

    def first_breaches(self) -> dict[str, float]:
        """For each played alarm on SES's reputation metrics, when a published datapoint first
        crossed its threshold (what the alarm is about to see)."""
        crossed = {}
        times = sorted({at for (namespace, _, _), points in self.metrics.points.items()
                        if namespace == SES_NAMESPACE for at, _ in points})
        for alarm in self.alarms.alarms:
            queries = alarm.props.get("Metrics", [])
            if not any(q.get("MetricStat", {}).get("Metric", {}).get("Namespace") == SES_NAMESPACE
                       for q in queries):
                continue
            for at in times:
                value = self.alarms.value(alarm, at - 1, at + 1)
                if value is not None and breaches(value, alarm.props["ComparisonOperator"],
                                                  float(alarm.props["Threshold"])):
                    crossed[alarm.name] = at
                    break
        return crossed

    def tally(self) -> dict:
        return {
            "first_breaches": self.first_breaches(),
            "alarm_transitions": [
                {"at": t.at, "alarm": t.alarm, "from": t.old, "to": t.new, "value": t.value}
                for t in self.alarms.transitions],
            "alarms_played": sorted(alarm.name for alarm in self.alarms.alarms),
            "alarms_not_played": self.not_played,
            "alarm_final_states": {alarm.name: alarm.state for alarm in self.alarms.alarms},
            "notifications": dict(self.notifications),
            "alarm_actions_run": self.actions_run,
            "canaries_published": self.canaries_published,
            "reputation": {
                f"{name}{dict(dims) if dims else ''}": points
                for (namespace, name, dims), points in self.metrics.points.items()
                if namespace == SES_NAMESPACE},
            "enforced_at": self.enforced_at,
        }
