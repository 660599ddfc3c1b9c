"""The PromQL subset of alert rules, evaluated over a recorded signal history."""

from __future__ import annotations

import math

import pytest

from ragvigil.ops.alerts.history import SignalHistory
from ragvigil.ops.alerts.promql import Evaluator, PromQLError, parse

T0 = 1_700_000_000.0


def history_of(series: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]], step: float = 5.0) -> SignalHistory:
    """One sample per ``step`` seconds per series, every series' last one at ``T0``."""
    h = SignalHistory(retention_s=3600)
    n = max(len(v) for v in series.values())
    for i in range(n):
        t = T0 - (n - 1 - i) * step
        batch = [(name, dict(lb), vals[i - n + len(vals)]) for (name, lb), vals in series.items() if i >= n - len(vals)]
        h.add(t, batch)
    return h


def run(h: SignalHistory, expr: str, t: float = T0) -> dict:
    value = Evaluator(h).instant(parse(expr), t)
    if isinstance(value, float):
        return {"scalar": value}
    return {tuple(sorted(dict(lb).items())): v for lb, v in value}


def test_rate_of_a_steady_counter_and_across_a_reset() -> None:
    steady = [10.0 * 5 * i for i in range(13)]  # +10/s, 60 s of samples every 5 s
    reset = [100, 150, 200, 10, 60, 110, 160]  # restarted between 200 and 10
    h = history_of(
        {
            ("reqs_total", (("route", "/a"),)): steady,
            ("reqs_total", (("route", "/b"),)): [float(v) for v in reset],
        }
    )
    out = run(h, "rate(reqs_total[1m])")
    assert out[(("route", "/a"),)] == pytest.approx(10.0)
    # increase seen: 50+50 + (10) + 50+50+50 = 260 over 30 s of samples, extrapolated
    assert run(h, 'increase(reqs_total{route="/b"}[30s])')[(("route", "/b"),)] == pytest.approx(260.0)


def test_error_ratio_with_sum_and_a_threshold() -> None:
    h = history_of(
        {
            ("http_total", (("status", "200"),)): [100.0 * i for i in range(13)],
            ("http_total", (("status", "500"),)): [10.0 * i for i in range(13)],
        }
    )
    ratio = 'sum(rate(http_total{status=~"5.."}[1m])) / sum(rate(http_total[1m]))'
    assert run(h, ratio)[()] == pytest.approx(10 / 110)
    assert run(h, ratio + " > 0.05") == {(): pytest.approx(10 / 110)}
    assert run(h, ratio + " > 0.5") == {}
    assert run(h, ratio + " > bool 0.5") == {(): 0.0}


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    buckets = {"0.1": 50, "0.5": 90, "1": 100, "+Inf": 100}
    h = history_of(
        {("lat_bucket", (("le", le), ("route", "/x"))): [0.0, float(c), 2.0 * c] for le, c in buckets.items()},
        step=30,
    )
    out = run(h, "histogram_quantile(0.95, sum by (le, route) (rate(lat_bucket[1m])))")
    assert out[(("route", "/x"),)] == pytest.approx(0.5 + 0.5 * (95 - 90) / 10)
    assert run(h, "histogram_quantile(0.5, sum by (le) (rate(lat_bucket[1m])))")[()] == pytest.approx(0.1)


def test_gauges_aggregations_and_vector_matching() -> None:
    h = history_of(
        {
            ("up", (("check", "database"),)): [1, 1, 0],
            ("up", (("check", "disk"),)): [1, 1, 1],
            ("errors", (("check", "database"),)): [3, 4, 5],
        }
    )
    assert run(h, "up == 0") == {(("__name__", "up"), ("check", "database")): 0.0}
    assert run(h, "min(up)") == {(): 0.0}
    assert run(h, "count by (check) (up)") == {(("check", "database"),): 1.0, (("check", "disk"),): 1.0}
    assert run(h, "up + on(check) errors") == {(("check", "database"),): 5.0}
    assert run(h, "up and errors") == {(("__name__", "up"), ("check", "database")): 0.0}
    assert set(run(h, "up unless errors")) == {(("__name__", "up"), ("check", "disk"))}
    assert run(h, "max_over_time(up[15s])")[(("check", "database"),)] == 1.0
    assert run(h, 'absent(up{check="redis"})') == {(("check", "redis"),): 1.0}
    assert run(h, "absent(up)") == {}


def test_instant_selectors_look_back_five_minutes_only() -> None:
    h = history_of({("g", ()): [7.0]})
    assert run(h, "g", T0 + 299) == {(("__name__", "g"),): 7.0}
    assert run(h, "g", T0 + 301) == {}


def test_division_by_zero_is_ieee_not_an_exception() -> None:
    h = history_of({("a", ()): [1.0], ("z", ()): [0.0]})
    assert run(h, "a / on() z")[()] == math.inf
    assert math.isnan(run(h, "z / on() z")[()])


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("rate(x[5m]", "not valid PromQL"),
        ("topk(3, x)", "aggregation topk"),
        ("max_over_time(x[5m:1m])", "subqueries"),
        ("x * on(a) group_left(b) y", "group_left"),
        ("holt_winters(x[5m], 0.5, 0.5)", "holt_winters"),
    ],
)
def test_unsupported_or_invalid_expressions_are_rejected(expr: str, message: str) -> None:
    with pytest.raises(PromQLError, match=message):
        parse(expr)
