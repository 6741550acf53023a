"""simulate.py and the simulation package: the local end-to-end run of the template's own data
plane and handlers.

The expensive part (a simulated run: a few seconds each) happens once per scenario in a
module-scoped fixture; each test asserts one property of a run's report. The template is rendered
in memory (`build_template.render()`, conftest's `template` fixture), never read from a possibly
stale dist/. The cheap parts (intrinsics, parameters, orders) are tested directly.
"""

from __future__ import annotations

import copy
import gc
import json
import multiprocessing
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

import simulate
from simulation import capacity
from simulation.orders import make_orders
from simulation.scenarios import BURST_SCENARIOS, SCENARIOS
from simulation.moto_env import sandbox
from simulation.runner import run, split
from simulation.ses import EXPECTED_STATUS, decode_tag, outcome_of
from simulation.stack import deploy, wire
from simulation.template import REGION, Resolver, TemplateError, choose_parameters, creation_order

ROOT = Path(__file__).resolve().parent.parent
ORDERS = 60  # enough for every outcome, duplicates, invalid orders and faults to occur
SCENARIO_ORDERS = 30  # a scenario's small run
# SES computes reputation over a representative volume (modelled: at least 100 emails), so the
# bounce storm needs enough orders for the circuit breaker's alarm to see a rate at all.
BOUNCE_STORM_ORDERS = 150
# A replay big enough that its drain is measured in seconds of sending, not in cold starts.
REPLAY_ORDERS = 150
slow = pytest.mark.slow  # runs a simulation
SEND_FUNCTION = "LambdaSendOrderEmail"
FEEDBACK_FUNCTION = "LambdaSesFeedbackProcessor"


def with_send_queue(template: dict, **changes) -> dict:
    """A copy of the template whose send queue's RedrivePolicy has `changes`."""
    changed = copy.deepcopy(template)
    changed["Resources"]["SendOrderEmailQueue"]["Properties"]["RedrivePolicy"].update(changes)
    return changed


def uuid_message_ids(logical_id, module):
    """The original spec's bug: a new messageId per attempt, so redeliveries miss the item."""
    if hasattr(module, "message_id_for"):
        module.message_id_for = lambda order_id: str(uuid.uuid4())


# --- runs (one per scenario) --------------------------------------------------------------------

@pytest.fixture(scope="module")
def clean(template):
    return run(template, orders=ORDERS, seed=11)


@pytest.fixture(scope="module")
def faulty(template):
    return run(template, orders=ORDERS, seed=12, faults=0.1)


@pytest.fixture(scope="module")
def duplicated(template):
    """Orders published 2-3 times and SES events delivered twice, in one run."""
    return run(template, orders=ORDERS, seed=13, duplicates=0.3, feedback_duplicates=0.5)


@pytest.fixture(scope="module")
def one_receive(template):
    """The send queue gives each message a single receive; no redrive, so the DLQs show it."""
    return run(with_send_queue(template, maxReceiveCount=1), orders=ORDERS, seed=15, faults=0.2,
               redrive=False)


@pytest.fixture(scope="module")
def five_receives(template):
    """The same run on the template as it is (maxReceiveCount 5)."""
    return run(template, orders=ORDERS, seed=15, faults=0.2, redrive=False)


# --- no faults ----------------------------------------------------------------------------------

@slow
def test_without_faults_every_valid_order_is_emailed_once_and_tracked(clean):
    # GIVEN the template as generated, ORDERS orders, 10 % duplicated, 5 % invalid
    # THEN each valid order got exactly one email, and each email's item ended in its status
    assert clean["invariants_broken"] == []
    assert clean["emails_sent"] == clean["valid_orders"] > 0.8 * ORDERS
    assert clean["duplicate_emails"] == 0
    assert clean["lost_orders"] == 0
    assert clean["tracked_pct"] == 100
    # moto agrees (it counts the canaries' emails too)
    assert clean["ses_accepted_per_moto"] == (clean["emails_sent"]
                                              + clean["self_watching"]["canaries"]["sent"])


@slow
def test_every_mailbox_simulator_outcome_reaches_its_own_status(clean):
    outcomes = clean["email_outcomes"]
    assert set(outcomes) == set(EXPECTED_STATUS)
    statuses = clean["status_counts"]
    assert statuses.get("BOUNCED") == outcomes["bounce"] + outcomes["suppressionlist"]
    assert statuses.get("COMPLAINED") == outcomes["complaint"]
    assert statuses.get("DELIVERED") == outcomes["success"] + outcomes["ooto"]
    assert set(statuses) == {"BOUNCED", "COMPLAINED", "DELIVERED"}  # nothing left SENDING/SENT


@slow
def test_invalid_orders_end_in_the_send_dlq_not_dropped(clean):
    assert clean["invalid_orders"] > 0
    assert clean["invalid_in_dlq"] == clean["invalid_orders"]
    assert clean["invalid_dropped"] == 0
    assert clean["orders_in_dlq"] == 0


@slow
def test_the_report_carries_the_promised_figures(clean):
    for field in ("orders_published", "valid_orders", "emails_sent", "duplicate_emails",
                  "lost_orders", "dlq_messages", "status_counts", "tracked_pct",
                  "api_calls_per_email", "handler_ms_p50", "handler_ms_p95", "wall_s"):
        assert field in clean, field
    assert clean["api_calls_per_email"] > 2  # at least claim, SendEmail, a feedback write
    assert 0 < clean["handler_ms_p50"] <= clean["handler_ms_p95"]
    assert json.loads(json.dumps(clean)) == clean  # --json prints exactly this


@slow
def test_the_handlers_metrics_agree_with_what_ses_accepted(clean):
    send = clean["functions"][SEND_FUNCTION]
    assert send["role"] == "send" and clean["functions"][FEEDBACK_FUNCTION]["role"] == "feedback"
    assert send["metrics"]["EmailsSent"] == clean["emails_sent"]
    assert "PutMetricData" not in json.dumps(clean["api_calls"])  # EMF, never API calls


# --- faults -------------------------------------------------------------------------------------

@slow
def test_faults_are_injected_and_the_invariants_still_hold(faulty):
    # GIVEN SES throttling and DynamoDB errors on 10 % of calls, crashes after 5 % of sends
    injected = faulty["faults_injected"]
    assert injected["ses_throttling"] > 0
    assert injected["dynamodb_errors"] > 0
    assert injected["crashes_after_send"] > 0
    assert faulty["functions"][SEND_FUNCTION]["stats"]["crashed_invocations"] > 0
    # THEN nothing is sent twice or lost, and every email is tracked (after the runbook redrive)
    assert faulty["invariants_broken"] == [], faulty["examples"]
    assert faulty["emails_sent"] == faulty["valid_orders"]


# --- duplicates ---------------------------------------------------------------------------------

@slow
def test_orders_published_two_or_three_times_are_emailed_once(duplicated):
    assert duplicated["duplicated_orders"] >= 0.2 * duplicated["valid_orders"]
    distinct = duplicated["valid_orders"] + duplicated["invalid_orders"]
    assert duplicated["orders_published"] > distinct
    assert duplicated["functions"][SEND_FUNCTION]["metrics"]["DuplicatesSkipped"] > 0
    assert duplicated["emails_sent"] == duplicated["valid_orders"]
    assert duplicated["invariants_broken"] == []


# --- out-of-order and duplicated SES feedback ---------------------------------------------------

@slow
def test_shuffled_and_duplicated_feedback_still_tracks_every_email(duplicated):
    shuffled_feedback = duplicated
    feedback = shuffled_feedback["feedback"]
    # GIVEN events really arrived out of order (e.g. Delivery before Send) and twice
    assert feedback["emails_with_out_of_order_events"] > 0.2 * shuffled_feedback["emails_sent"]
    assert feedback["duplicated_events"] > 0.3 * feedback["events_published"] / 1.5
    assert feedback["redelivered_records"] >= feedback["duplicated_events"]
    outcomes = shuffled_feedback["functions"][FEEDBACK_FUNCTION]["outcomes"]
    assert outcomes.get("duplicate", 0) > 0
    # THEN the status only moved up: every item ends in its outcome's status
    assert shuffled_feedback["tracked_pct"] == 100
    assert shuffled_feedback["invariants_broken"] == []


# --- the template drives the simulation ---------------------------------------------------------

@slow
def test_the_queue_settings_come_from_the_template(one_receive, five_receives):
    assert one_receive["queues"]["SendOrderEmailQueue"]["max_receive_count"] == 1
    assert five_receives["queues"]["SendOrderEmailQueue"]["max_receive_count"] == 5
    assert five_receives["queues"]["SendOrderEmailQueue"]["visibility_timeout_s"] == 180


@slow
def test_max_receive_count_1_dead_letters_more_orders_but_loses_none(one_receive, five_receives):
    # GIVEN the same orders and faults, one receive per message instead of five
    # THEN orders whose single attempt failed wait in the DLQ: more of them, none lost
    assert one_receive["orders_in_dlq"] > five_receives["orders_in_dlq"]
    assert one_receive["orders_in_dlq"] >= 5
    assert one_receive["lost_orders"] == five_receives["lost_orders"] == 0
    assert one_receive["duplicate_emails"] == 0
    # AND an invalid order reaches the function at most once before the DLQ (a crash of its
    # batch can even take that one), but still ends there
    invalid = one_receive["invalid_orders"]
    assert one_receive["functions"][SEND_FUNCTION]["outcomes"]["invalid"] <= invalid
    assert one_receive["invalid_in_dlq"] == invalid


@slow
def test_an_invalid_order_is_received_max_receive_count_times_per_redrive(clean):
    # GIVEN no faults: 5 receives, the runbook's redrive, 5 more, then the DLQ again
    outcomes = clean["functions"][SEND_FUNCTION]["outcomes"]
    assert outcomes["invalid"] == 2 * 5 * clean["invalid_orders"]
    assert clean["redriven"]["sim-send-order-email-dlq"] == clean["invalid_orders"]


@slow
def test_the_data_plane_is_created_from_the_template(template):
    # GIVEN the template's resources created in moto
    with sandbox(), mock_aws():
        aws = {name: boto3.client(name, region_name=REGION)
               for name in ("kms", "sns", "sqs", "dynamodb", "ses", "sesv2")}
        stack = deploy(template, choose_parameters(template), aws)
        wiring = wire(stack, template)
        send = aws["sqs"].get_queue_attributes(QueueUrl=wiring.send_queue.url,
                                               AttributeNames=["All"])["Attributes"]
        subscriptions = aws["sns"].list_subscriptions()["Subscriptions"]
        raw = [aws["sns"].get_subscription_attributes(SubscriptionArn=s["SubscriptionArn"])
               ["Attributes"].get("RawMessageDelivery") for s in subscriptions]
        table = aws["dynamodb"].describe_table(TableName=wiring.table)["Table"]
        config_sets = aws["sesv2"].list_configuration_sets()["ConfigurationSets"]
    # THEN names, redrive policy, raw delivery, table schema and SES routing are the template's
    assert wiring.send_queue.name == "sim-send-order-email"
    assert json.loads(send["RedrivePolicy"])["maxReceiveCount"] == 5
    assert send["VisibilityTimeout"] == "180"
    assert len(subscriptions) == 4 and set(raw) == {"true"}
    assert {index["IndexName"] for index in table["GlobalSecondaryIndexes"]} == {
        "EmailIndex", "StatusIndex"}
    assert config_sets == ["sim-ses-config-set"]
    delivery_topic = stack.topics["SNSTopicSesDelivery"]
    assert stack.event_routes["send"] == [delivery_topic]
    assert stack.event_routes["bounce"] == [stack.topics["SNSTopicSesBounce"]]
    # alarms and schedules are played from the template (simulation/watch.py), not created
    assert set(stack.alarms) == {name for name, r in template["Resources"].items()
                                 if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(stack.schedules) == {"CanarySchedule"}
    assert {SEND_FUNCTION, FEEDBACK_FUNCTION} <= set(stack.functions)
    assert stack.functions[SEND_FUNCTION].environment["ENABLE_PRODUCTION_SES"] == "true"
    assert stack.functions[SEND_FUNCTION].environment["EMAIL_DELIVERIES_TABLE"] == \
        "sim-email-deliveries"


# --- the simulation can fail ---------------------------------------------------------------------

@slow
def test_a_uuid4_message_id_makes_the_simulation_report_duplicates_and_exit_1(template, tmp_path,
                                                                              capsys):
    # GIVEN the sender patched to the original spec's uuid4 messageId
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    # WHEN the CLI runs a small simulation with many duplicated orders
    code = simulate.main(["--template", str(path), "--orders", "60", "--seed", "3",
                          "--duplicates", "0.5", "--json"], on_load=uuid_message_ids)
    out, err = capsys.readouterr()
    # THEN it reports duplicate emails, names the broken invariant and exits 1
    report = json.loads(out)
    assert code == 1
    assert report["duplicate_emails"] > 0
    assert "duplicate_emails" in report["invariants_broken"]
    assert "FAIL: invariant duplicate_emails broken" in err
    example = report["examples"]["duplicate_emails"][0]
    assert len(example["emails"]) >= 2 and len(example["items"]) >= 2  # one item per attempt


# --- CLI ----------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "simulate.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_help_lists_the_options():
    result = cli("--help")
    assert result.returncode == 0
    for option in ("--orders", "--seed", "--faults", "--duplicates", "--invalid", "--template",
                   "--json", "--workers", "--no-redrive", "--scenario"):
        assert option in result.stdout
    for name in SCENARIOS:
        assert f"  {name} " in result.stdout


@slow
def test_cli_json_prints_one_object_and_exits_0(template, tmp_path):
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    result = cli("--template", str(path), "--orders", "20", "--seed", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is only the JSON object; progress is on stderr
    assert report["settings"]["orders"] == 20
    assert report["invariants_broken"] == []
    assert "simulate:" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--orders", "0"], "--orders: must be a whole number >= 1"),
    (["--faults", "1.5"], "--faults: must be a fraction from 0 to 1"),
    (["--param", "nonsense"], "must look like Name=Value"),
])
def test_cli_rejects_bad_arguments_with_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        simulate.parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_names_a_missing_template_and_exits_2(tmp_path, capsys):
    code = simulate.main(["--template", str(tmp_path / "absent.json")])
    assert code == 2
    assert "template file not found" in capsys.readouterr().err


def test_cli_rejects_an_unknown_template_parameter(template, tmp_path, capsys):
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    assert simulate.main(["--template", str(path), "--param", "NoSuchParameter=1"]) == 2
    assert "unknown template parameter(s): NoSuchParameter" in capsys.readouterr().err


# --- intrinsics, parameters, orders (no moto) ----------------------------------------------------

TEMPLATE = {
    "Parameters": {"Env": {"Type": "String", "Default": "dev"},
                   "Flag": {"Type": "String", "Default": "false",
                            "AllowedValues": ["true", "false"]}},
    "Conditions": {"On": {"Fn::Equals": [{"Ref": "Flag"}, "true"]},
                   "Off": {"Fn::Not": [{"Condition": "On"}]}},
    "Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
                  "Policy": {"Type": "AWS::SQS::QueuePolicy",
                             "Properties": {"Queues": [{"Ref": "Queue"}]}}},
}


@pytest.fixture
def resolver():
    resolver = Resolver(TEMPLATE, choose_parameters(TEMPLATE, {"Flag": "true"}))
    resolver.physical["Queue"] = {"Ref": "https://queue/url", "Arn": "arn:aws:sqs:::q"}
    return resolver


def test_sub_resolves_parameters_pseudo_parameters_attributes_and_escapes(resolver):
    text = "${Env}-${AWS::Region}-${Queue.Arn}-${!Literal}-${x}"
    assert resolver.resolve({"Fn::Sub": [text, {"x": {"Ref": "Queue"}}]}) == \
        "dev-us-east-1-arn:aws:sqs:::q-${Literal}-https://queue/url"


def test_conditions_if_join_and_no_value(resolver):
    assert resolver.condition("On") and not resolver.condition("Off")
    assert resolver.resolve({"Fn::If": ["Off", "a", {"Fn::Join": ["/", ["b", {"Ref": "Env"}]]}]}) \
        == "b/dev"
    assert resolver.resolve({"A": {"Ref": "AWS::NoValue"}, "B": 1}) == {"B": 1}
    assert resolver.resolve({"Fn::GetAtt": "Queue.Arn"}) == "arn:aws:sqs:::q"


@pytest.mark.parametrize("region, has_budget", [(REGION, True), ("eu-north-1", False)])
def test_the_budget_condition_resolves_on_the_region(template, region, has_budget):
    # The simulation deploys in us-east-1, where AWS Budgets exists; the nested Fn::Or of
    # Fn::Equals on AWS::Region is resolved, not skipped.
    resolver = Resolver(template, choose_parameters(template))
    resolver.pseudo["AWS::Region"] = region
    assert resolver.condition("RegionHasBudgets") is has_budget


def test_an_unsupported_intrinsic_or_missing_value_is_a_template_error(resolver):
    with pytest.raises(TemplateError, match="Fn::ImportValue"):
        resolver.resolve({"Fn::ImportValue": "x"})
    with pytest.raises(TemplateError, match="has no Default"):
        choose_parameters({"Parameters": {"X": {"Type": "String"}}})
    with pytest.raises(TemplateError, match="is not one of"):
        choose_parameters(TEMPLATE, {"Flag": "maybe"})


def test_resources_are_created_after_what_they_refer_to():
    assert creation_order(TEMPLATE["Resources"]) == ["Queue", "Policy"]


def test_orders_are_repeatable_and_every_copy_of_an_order_is_identical():
    import random

    first = make_orders(300, random.Random("7"), duplicates=0.3, invalid=0.1)
    second = make_orders(300, random.Random("7"), duplicates=0.3, invalid=0.1)
    assert [order.body for order in first[0]] == [order.body for order in second[0]]
    assert first[1] == second[1]
    orders, bodies = first
    assert len({order.body for order in orders}) == 300
    assert len(bodies) == sum(order.copies for order in orders)
    assert 0.2 < sum(order.copies > 1 for order in orders if order.valid) / 300 < 0.4
    assert all(not order.valid for order in orders if order.kind != "valid")
    shards = split(orders, bodies, 2)
    assert sorted(shards[0] + shards[1]) == sorted(bodies)
    # all copies of an order in one shard
    assert not {body for _, body in shards[0]} & {body for _, body in shards[1]}


def test_outcomes_come_from_the_mailbox_simulator_address():
    assert outcome_of("bounce+17@simulator.amazonses.com") == "bounce"
    assert outcome_of("Complaint@SIMULATOR.amazonses.com") == "complaint"
    assert outcome_of("ada@example.com") == "success"
    assert decode_tag("T1JELTIwMjYxMTI3LTAwMDE") == "ORD-20261127-0001"


# --- scenarios: the bad days (simulation/scenarios.py) -------------------------------------------

def scenario_run(template, name: str, **options) -> dict:
    orders = {"bounce-storm": BOUNCE_STORM_ORDERS, "replay": REPLAY_ORDERS}.get(
        name, SCENARIO_ORDERS)
    return run(template, orders=orders, seed=21, scenario=name, workers=1, **options)


_WORKER_TEMPLATE: list[dict] = []  # what the forked workers below simulate


def _run_scenario(name: str) -> dict:
    return scenario_run(_WORKER_TEMPLATE[0], name)


@pytest.fixture(scope="module")
def scenario_reports(template):
    """Each scenario once, two at a time in forked processes (moto is single-threaded)."""
    # the longest (the most orders) first, so that the two workers finish together
    names = sorted((name for name in SCENARIOS if name != "steady"),
                   key=lambda name: name not in ("bounce-storm", "replay"))
    _WORKER_TEMPLATE[:] = [template]
    # The forked workers inherit this process's objects; frozen, the children's garbage
    # collector leaves them alone instead of copying their pages.
    gc.freeze()
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            return dict(zip(names, pool.map(_run_scenario, names)))
    finally:
        gc.unfreeze()


# What SES answered in each scenario (real SES's codes and texts, from the SES model), and where
# the orders waited before the operator's fix let them out.
EXPECTED_REFUSALS = {
    "first-deploy": "MessageRejected: Email address is not verified.",
    "sandbox-account": "MessageRejected: Email address is not verified.",
    "account-paused": "MessageRejected: Sending paused for this account.",
    "quota": "Throttling: ",
}


@slow
@pytest.mark.parametrize("name", [name for name in SCENARIOS if name != "steady"])
def test_every_scenario_keeps_the_invariants_and_gets_every_order_out(scenario_reports, name):
    report = scenario_reports[name]
    # THEN no email twice, no order lost, none FAILED for the account's sake, all tracked, and
    # every valid order emailed once the cause was fixed
    assert report["invariants_broken"] == [], report["examples"]
    assert report["emails_sent"] == report["valid_orders"]
    assert report["failed_not_about_the_order"] == 0 and report["unsent_orders"] == 0
    assert report["waits"]["still_waiting"] == 0
    # AND the run says what happened and which orders waited (a flash sale's orders wait only
    # for their turn at the sending rate, seconds)
    assert report["happenings"]
    assert (report["waits"]["orders_waited"] > 0) == (name != "flash-sale")


@slow
@pytest.mark.parametrize("name, refusal", EXPECTED_REFUSALS.items())
def test_ses_refused_with_its_own_words_and_the_orders_waited_for_the_fix(
        scenario_reports, name, refusal):
    report = scenario_reports[name]
    assert any(message.startswith(refusal) for message in report["ses_refusal_messages"])
    waits = report["waits"]
    if name != "quota":  # a throttled order may also go out on the queue's own retry
        assert waits["in_the_dlq"] > 0
        assert waits["released_by"]["operator redrive from the DLQ"] == waits["in_the_dlq"]


@slow
def test_first_deploy_orders_wait_in_the_dlq_until_the_redrive_after_verification(
        scenario_reports):
    report = scenario_reports["first-deploy"]
    scenario_steps = [line for line in report["happenings"] if " alarm " not in line]
    assert scenario_steps[:2] == [
        "t+2h00m DKIM records found: SES verifies the domain identity",
        "t+2h15m operator redrives the send DLQ (runbook send-dlq-not-empty)"]
    # the orders published in the first two hours waited: at least until the verification
    assert report["waits"]["wait_s"]["max"] > 60 * 60


@slow
def test_a_brownout_slows_calls_past_the_read_timeouts_but_no_invocation_times_out(
        scenario_reports):
    report = scenario_reports["brownout"]
    timeouts = {name: n for name, n in report["call_latency"].items()
                if name.endswith(".read_timeouts")}
    assert timeouts.get("dynamodb.UpdateItem.read_timeouts", 0) > 0
    assert timeouts.get("ses.SendEmail.read_timeouts", 0) > 0
    # the time budget: records not started go back to the queue; no function times out
    assert all(counts["timeouts"] == 0 for counts in report["lambda"].values())


@slow
@pytest.mark.parametrize("name", BURST_SCENARIOS)
def test_a_burst_drains_at_the_sending_rate_without_a_throttle(scenario_reports, name):
    report = scenario_reports[name]
    # THEN the pacer kept every send within the account's 14 a second: SES throttled nothing
    assert report["ses_throttles"] == 0 and report["ses_refusals"] == {}
    # AND the burst left at close to that rate: the bound (emails / 14, or the arrival span
    # when that is longer) over the measured drain, on the virtual clock (deterministic)
    assert report["drain_rate_per_s"] == 14
    assert report["drain_orders"] == report["emails_sent"]
    assert report["drain_bound_s"] <= report["drain_s"]
    assert report["drain_efficiency"] >= 0.9


@slow
def test_the_capacity_model_agrees_with_the_simulation_on_a_replay(scenario_reports, template):
    # The README's capacity table comes from a small model of the send path; the full
    # simulation (moto, the handlers' code, the SES model) drains the same backlog about as fast
    report = scenario_reports["replay"]
    modelled = capacity.drain(capacity.SendPath.from_template(template), max_send_rate=14,
                              concurrency=2, orders=report["drain_orders"])
    assert modelled.drain_s == pytest.approx(report["drain_s"], rel=0.1)


@slow
def test_a_replay_starts_in_the_dlq_and_every_order_leaves_with_the_redrive(scenario_reports):
    report = scenario_reports["replay"]
    waits = report["waits"]
    assert waits["in_the_dlq"] == report["valid_orders"]
    assert waits["released_by"]["operator redrive from the DLQ"] == report["valid_orders"]
    assert "t+1m00s operator redrives the send DLQ (runbook send-dlq-not-empty)" in (
        report["happenings"])


def every_message_rejected_is_permanent(logical_id, module):
    """The first version's classification: every MessageRejected FAILED, whatever SES says."""
    if hasattr(module, "classify_send_error"):
        real = module.classify_send_error
        module.classify_send_error = lambda code, message: (
            module.PERMANENT if code == "MessageRejected" else real(code, message))


@slow
def test_a_classification_that_fails_every_message_rejected_breaks_first_deploy(template):
    # GIVEN the send handler treats "identity not verified yet" as the order's fault
    report = scenario_run(template, "first-deploy", on_load=every_message_rejected_is_permanent)
    # THEN the first deploy loses orders: FAILED for the account's sake, never emailed
    assert "failed_not_about_the_order" in report["invariants_broken"]
    assert "lost_orders" in report["invariants_broken"]
    assert report["failed_not_about_the_order"] > 0
    assert all(item["error"].startswith("MessageRejected: ")
               for item in report["examples"]["failed_not_about_the_order"])


# --- the stack watches itself (issue: canary and circuit breaker) --------------------------------

def transitions_of(report: dict, alarm: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in report["self_watching"]["alarm_transitions"]
            if f" {alarm}:" in line]


@slow
def test_in_a_clean_run_every_canary_is_delivered_and_its_alarm_stays_ok(clean):
    canaries = clean["self_watching"]["canaries"]
    assert canaries["published"] >= 2
    assert canaries["sent"] == canaries["delivered"] == canaries["published"]
    assert transitions_of(clean, "sim-canary-not-delivered") == ["INSUFFICIENT_DATA -> OK"]
    assert "sim-canary-not-delivered" not in clean["self_watching"]["alarms_that_fired"]
    # canaries never count as customers' emails
    assert clean["emails_sent"] == clean["valid_orders"]


@slow
def test_the_canary_alarm_fires_while_the_identity_is_pending_and_clears_after(scenario_reports):
    report = scenario_reports["first-deploy"]
    assert transitions_of(report, "sim-canary-not-delivered") == [
        "INSUFFICIENT_DATA -> OK", "OK -> ALARM", "ALARM -> OK"]
    fired, cleared = [line.split(" ", 1)[0] for line in report["self_watching"]["alarm_transitions"]
                      if "sim-canary-not-delivered" in line][1:]
    # three 30-minute intervals without a delivery after the start, then cleared after the
    # verification (2 h) by the next canary's delivery
    assert fired == "t+1h30m" and cleared == "t+2h30m"


@slow
def test_a_bounce_storm_trips_the_breaker_nothing_is_sent_while_paused_and_resume_sends_all(
        scenario_reports):
    report = scenario_reports["bounce-storm"]
    watching = report["self_watching"]
    # THEN the breaker's alarm fired within one period of its threshold being crossed, and the
    # breaker's own code paused the configuration set and the send mapping
    breaker = watching["breaker"]["sim-breaker-config-set-reputation"]
    assert 0 < breaker["alarm_after_crossing_s"] <= 300
    assert watching["pauses"] == 1 and watching["sending_paused"] == [breaker["alarm"]]
    assert any("LambdaSendOrderEmailEventSourceMapping disabled" in line
               for line in report["happenings"])
    # AND no email went out while paused: later orders waited in the queue
    assert watching["emails_while_paused"] == 0
    waits = report["waits"]
    assert waits["released_by"]["operator resume of the paused stack"] > 0
    assert waits["in_the_dlq"] == 0 and waits["still_waiting"] == 0
    # AND after the operator's resume every order is accounted for, nothing twice, AWS never
    # had to pause the account
    assert report["invariants_broken"] == []
    assert report["emails_sent"] == report["valid_orders"]
    assert watching["account_paused_by_aws"] == []
