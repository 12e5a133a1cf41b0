"""The planner: durations, shares that never exceed what is left, task order and the degradation ladder."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solver import budget as B

SIZE = B.TaskSize(train_tokens=600, prompt_tokens=700, output_tokens=50, num_tests=1)
FULL = B.Work(ttt_steps=40, batch_size=2, views=8)
RATES = B.Rates(train_tokens_per_s=120, prefill_tokens_per_s=400, decode_tokens_per_s=10, task_overhead_s=1)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("12h", 43200), ("1h30m", 5400), ("45", 45),
                                          ("2.5h", 9000), (" 5M ", 300), (30, 30)])
def test_parse_duration(text, seconds):
    assert B.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "m10", "0s", "-5m", "10m5", "5s10m3"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        B.parse_duration(text)


def test_format_seconds():
    assert [B.format_seconds(s) for s in (42, 185, 3725)] == ["42s", "3m05s", "1h02m"]


needs_st = st.lists(st.floats(0.0, 5000.0), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(needs=needs_st, remaining=st.floats(0.0, 1e5), workers=st.integers(1, 8), committed=st.floats(0.0, 1e5),
       headroom=st.floats(1.0, 5.0), cap=st.one_of(st.just(math.inf), st.floats(1.0, 1e4)))
def test_shares_never_exceed_what_is_left(needs, remaining, workers, committed, headroom, cap):
    """Handing out shares one task after another (each promised share committed) never promises more worker-seconds
    than are left, and no single share is longer than the wall time left."""
    committed = min(committed, workers * remaining)
    start_capacity = workers * remaining - committed
    pending = list(needs)
    handed = 0.0
    while pending:
        this = {lv: n * (1 - 0.15 * lv) for lv, n in zip(B.Level, [pending[0]] * 5)}
        totals = {lv: sum(n * (1 - 0.15 * lv) for n in pending) for lv in this}
        share = B.plan_share(this, totals, remaining, workers, committed + handed, cap=cap, headroom=headroom)
        assert 0.0 <= share <= remaining + 1e-9
        assert share <= cap + 1e-9 and share <= headroom * this[B.Level.FULL] + 1e-9
        handed += share
        assert handed <= start_capacity + 1e-6 * max(1.0, start_capacity)
        pending.pop(0)


@settings(max_examples=200, deadline=None)
@given(cost=st.floats(0.0, 1e4), extra=st.floats(0.0, 1e5), remaining=st.floats(0.0, 1e5),
       workers=st.integers(1, 8), committed=st.floats(0.0, 1e6))
def test_time_share_bounds(cost, extra, remaining, workers, committed):
    share = B.time_share(cost, cost + extra, remaining, workers, committed)
    assert 0.0 <= share <= remaining + 1e-9
    assert share <= max(0.0, workers * remaining - committed) + 1e-6


def test_share_when_everything_fits_is_proportional_and_at_least_the_need():
    this = {B.Level.FULL: 10.0, B.Level.NO_TTT: 2.0}
    totals = {B.Level.FULL: 40.0, B.Level.NO_TTT: 8.0}
    share = B.plan_share(this, totals, remaining=100, workers=1, headroom=100)
    assert share == pytest.approx(25.0)  # 10/40 of 100 s
    # the set fits only at NO_TTT: the share is proportional at that level, still at least its need there
    share = B.plan_share(this, totals, remaining=20, workers=1, headroom=100)
    assert share == pytest.approx(5.0) and share >= this[B.Level.NO_TTT]
    # it does not fit at all: the task gets its need at the last level
    assert B.plan_share(this, totals, remaining=6, workers=1, headroom=100) == pytest.approx(2.0)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(0.0, 1e4), b=st.floats(0.0, 1e4))
def test_more_time_never_means_a_worse_level(a, b):
    lo, hi = sorted((a, b))
    assert B.choose_level(SIZE, FULL, RATES, hi, min_seconds=2) <= B.choose_level(SIZE, FULL, RATES, lo, min_seconds=2)


def test_levels_follow_the_ladder():
    needs = {lv: B.total_seconds(SIZE, B.work_at(lv, FULL), RATES) for lv in B.Level if lv != B.Level.FALLBACK}
    assert needs[B.Level.FULL] > needs[B.Level.FEWER_STEPS] > needs[B.Level.FEWER_VIEWS] > needs[B.Level.NO_TTT]
    pick = lambda share: B.choose_level(SIZE, FULL, RATES, share, min_seconds=2)  # noqa: E731
    assert pick(needs[B.Level.FULL] + 1) == B.Level.FULL
    assert pick(needs[B.Level.FULL] - 1) == B.Level.FEWER_STEPS
    assert pick(needs[B.Level.FEWER_VIEWS] + 0.1) == B.Level.FEWER_VIEWS
    assert pick(needs[B.Level.NO_TTT] + 0.1) == B.Level.NO_TTT  # SHARED_ADAPTER skipped: none exists
    assert B.choose_level(SIZE, FULL, RATES, needs[B.Level.NO_TTT] + 0.1, shared_adapter=True) == \
        B.Level.SHARED_ADAPTER
    assert pick(needs[B.Level.NO_TTT] / 3) == B.Level.NO_TTT  # best effort when nothing fits
    assert pick(1.0) == B.Level.FALLBACK


def test_work_shrinks_down_the_ladder():
    works = [B.work_at(lv, FULL, steps_factor=0.5, min_views=2) for lv in B.Level]
    assert [w.ttt_steps for w in works] == [40, 20, 20, 0, 0, 0]
    assert [w.views for w in works] == [8, 8, 2, 2, 2, 0]
    assert works[B.Level.SHARED_ADAPTER].shared_adapter and not works[B.Level.NO_TTT].shared_adapter


def test_retry_is_the_smallest_model_level():
    for lv in list(B.Level)[:-1]:
        assert B.retry_level(lv) == B.Level.NO_TTT
        assert B.total_seconds(SIZE, B.work_at(B.retry_level(lv), FULL), RATES) <= \
            B.total_seconds(SIZE, B.work_at(lv, FULL), RATES)


def test_order_longest_first_unless_under_pressure():
    needs = {"a": 5.0, "b": 50.0, "c": 1.0, "d": 20.0}
    assert B.order_tasks(needs, under_pressure=False) == ["b", "d", "a", "c"]
    assert B.order_tasks(needs, under_pressure=True) == ["c", "a", "d", "b"]


def test_pressure():
    assert B.pressure([10, 10], remaining=10, workers=2) == pytest.approx(1.0)
    assert B.pressure([10, 10], remaining=10, workers=1) == pytest.approx(2.0)
    assert B.pressure([10], remaining=10, workers=1, committed=10) == math.inf


def test_long_first_schedules_tighter_than_short_first():
    needs = [1.0] * 12 + [10.0]
    span_short_first, _ = B.simulate(sorted(needs), workers=2)
    span_long_first, _ = B.simulate(sorted(needs, reverse=True), workers=2)
    assert span_long_first < span_short_first
    _, done_cheap = B.simulate(sorted(needs), workers=1, budget=11)
    _, done_long = B.simulate(sorted(needs, reverse=True), workers=1, budget=11)
    assert done_cheap > done_long


def test_stage_deadlines_split_in_proportion():
    ttt_end, end = B.stage_deadlines(100.0, 30.0, ttt_estimate=20.0, predict_estimate=10.0)
    assert (ttt_end, end) == (pytest.approx(120.0), 130.0)
    assert B.stage_deadlines(0.0, 10.0, 0.0, 0.0) == (0.0, 10.0)


def test_correction_follows_measurements():
    r = RATES
    est = B.total_seconds(SIZE, FULL, r)
    for _ in range(30):
        r = B.update_correction(r, B.total_seconds(SIZE, FULL, r), 2 * est)
    assert r.correction == pytest.approx(2.0, rel=0.01)
    assert B.total_seconds(SIZE, FULL, r) == pytest.approx(2 * est, rel=0.01)
    assert B.update_correction(r, 0.0, 5.0) == r
