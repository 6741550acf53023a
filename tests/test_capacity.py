"""The capacity model (simulation/capacity.py) behind the README's capacity table.

Its figures are virtual time from a seeded model, so they are the same on every machine; what is
asserted here is that the model is the handler's rule and the template's send path, and that it
recommends settings the stack can live with.
"""

from __future__ import annotations

import math

import pytest
from moto import mock_aws

from conftest import load_handler
from send_email_harness import env
from simulation import capacity
from simulation.ses_model import RATE_BURST_S


@pytest.fixture(scope="module")
def path(template) -> capacity.SendPath:
    return capacity.SendPath.from_template(template)


def test_the_send_path_is_read_from_the_template(path):
    assert path == capacity.SendPath(batch_size=10, batching_window_s=1.0, timeout_s=30.0,
                                     visibility_timeout_s=180.0)


def test_the_models_copies_of_the_handlers_constants_are_the_handlers(monkeypatch):
    for name, value in env(production=True).items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        handler = load_handler("send_order_email")
    assert capacity.RECORD_WORST_CASE_S == handler.RECORD_WORST_CASE_SECONDS
    assert capacity.RATE_READ_WORST_CASE_S == handler.worst_case_seconds(handler.SES_CONFIG)


def test_the_default_concurrency_is_the_models_choice_for_the_usual_first_rate(template, path):
    default = template["Parameters"]["SendMaxConcurrency"]["Default"]
    assert capacity.recommended_concurrency(path, 14) == default == 2


@pytest.mark.parametrize("rate", capacity.RATES)
def test_a_recommended_concurrency_fits_lambdas_minimum_and_the_burst_ses_tolerates(path, rate):
    concurrency = capacity.recommended_concurrency(path, rate)
    assert concurrency >= capacity.MIN_CONCURRENCY
    # each copy may send two emails beyond its part over any stretch of time (its beat): all of
    # them together within the burst of the SES model, except at the sandbox's 1 a second, where
    # Lambda's minimum of 2 copies already exceeds it (the README says so)
    if rate > 1:
        assert 2 * concurrency <= rate * RATE_BURST_S


@pytest.mark.parametrize("rate", capacity.RATES)
def test_no_drain_is_faster_than_the_rate_allows(path, rate):
    concurrency = capacity.recommended_concurrency(path, rate)
    result = capacity.drain(path, max_send_rate=rate, concurrency=concurrency,
                            orders=capacity.BACKLOG)
    # at most the copies' first sends beyond the rate: 2 per copy over the whole drain
    assert result.orders <= rate * result.drain_s + 2 * concurrency
    assert result.p95_to_ses_s < result.drain_s
    assert result.sustained_rate >= capacity.TARGET_SUSTAINED * rate


def test_too_few_copies_fall_behind_the_rate(path):
    # at 50 a second, 2 copies would need a beat of 40 ms: shorter than one copy's record
    result = capacity.drain(path, max_send_rate=50, concurrency=2, orders=2_000)
    assert result.sustained_rate < 0.5 * 50


def test_a_share_slows_the_drain_in_proportion(path):
    full = capacity.drain(path, max_send_rate=14, concurrency=2, orders=2_000)
    half = capacity.drain(path, max_send_rate=14, concurrency=2, orders=2_000, share=0.5)
    assert half.drain_s == pytest.approx(2 * full.drain_s, rel=0.05)


def test_records_that_do_not_fit_the_time_budget_come_back_after_the_visibility_timeout(path):
    # At 1 a second shared by 2 copies (one send every 2 s), 9 records of a batch of 10 fit the
    # 30 s invocation; the 10th returns after 180 s: 20 orders drain in two invocations plus
    # the two released orders' return
    result = capacity.drain(path, max_send_rate=1, concurrency=2, orders=20)
    assert result.drain_s > path.visibility_timeout_s


def test_the_table_has_a_row_per_rate_with_its_settings(template):
    table = capacity.markdown_table(template).splitlines()
    assert len(table) == 2 + len(capacity.RATES)
    assert table[2].startswith("| 1/s | 2 | 100 |")
    assert table[3].startswith("| 14/s | 2 | 100 |")
    assert all(math.isfinite(row["drain_s"]) for row in capacity.capacity_rows(
        capacity.SendPath.from_template(template)))
