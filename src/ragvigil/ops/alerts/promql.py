"""Evaluate alert expressions written in PromQL over ragvigil's own signal history.

Rules are written once, in PromQL, so the same text runs here (embedded mode) and on a real
Prometheus (scaled mode). Parsing is done by ``promql-parser`` (the Rust parser GreptimeDB uses);
the evaluation of the subset alert rules need is written here, following Prometheus 2.x semantics:

* selectors with ``=``, ``!=``, ``=~``, ``!~`` matchers and ``offset``; instant selectors look back
  5 minutes for the latest sample; range selectors take the samples in ``[t - range, t]``;
* ``rate``/``increase``/``delta`` with Prometheus' extrapolation and counter-reset handling,
  ``*_over_time``, ``histogram_quantile`` (linear interpolation inside the bucket), ``absent``,
  ``absent_over_time``, ``abs``, ``ceil``, ``floor``, ``clamp_min``, ``clamp_max``, ``vector``,
  ``scalar``, ``time``;
* ``sum``/``avg``/``min``/``max``/``count`` with ``by``/``without``;
* arithmetic and comparison operators (with ``bool``), one-to-one vector matching with
  ``on``/``ignoring``, and ``and``/``or``/``unless``.

Anything else (subqueries, ``@``, ``group_left``…) is rejected when the rule is loaded, with the reason.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

import promql_parser as pp

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs, "__name__" included for raw series
Vector = list[tuple[Labels, float]]
Matrix = list[tuple[Labels, tuple[Sequence[float], Sequence[float]]]]  # (times, values) per series
Value = Vector | Matrix | float

LOOKBACK_S = 300.0  # Prometheus' default lookback delta


class PromQLError(ValueError):
    """The expression cannot be parsed or uses something this evaluator does not support."""


class SeriesSource(Protocol):
    """Where samples come from: the live in-memory history, or a recording being backtested."""

    def select(
        self, name: str | None, start: float, end: float, keep: Callable[[Labels], bool] | None = None
    ) -> Sequence[tuple[Labels, Sequence[float], Sequence[float]]]:
        """Series of metric ``name`` that ``keep`` accepts, with their sample times and values in [start, end]."""
        ...

    def has_data(self, name: str, start: float, end: float) -> bool: ...


def parse(expr: str) -> pp.Expr:
    """Parse and check that the evaluator supports every part of ``expr``."""
    try:
        node = pp.parse(expr)
    except (ValueError, TypeError) as exc:
        raise PromQLError(f"not valid PromQL: {exc}") from None
    _check(node)
    return node


_RANGE_FUNCS = {
    "rate",
    "increase",
    "delta",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "absent_over_time",
}
_MATH_FUNCS: dict[str, Callable[[float], float]] = {"abs": abs, "ceil": math.ceil, "floor": math.floor}
_OTHER_FUNCS = {"histogram_quantile", "absent", "clamp_min", "clamp_max", "vector", "scalar", "time"}
_AGGREGATIONS = {"sum", "avg", "min", "max", "count"}
_ARITHMETIC = {"+", "-", "*", "/", "%", "^"}
_COMPARISON = {"==", "!=", ">", "<", ">=", "<="}
_SET = {"and", "or", "unless"}


def _check(node: pp.Expr) -> None:
    if isinstance(node, pp.SubqueryExpr):
        raise PromQLError("subqueries are not supported")
    if isinstance(node, pp.VectorSelector):
        if node.at is not None:
            raise PromQLError("the @ modifier is not supported")
    elif isinstance(node, pp.MatrixSelector):
        _check(node.vector_selector)
    elif isinstance(node, pp.Call):
        name = node.func.name
        if name not in _RANGE_FUNCS | _MATH_FUNCS.keys() | _OTHER_FUNCS:
            raise PromQLError(f"function {name}() is not supported")
        for arg in node.args:
            _check(arg)
    elif isinstance(node, pp.AggregateExpr):
        if str(node.op) not in _AGGREGATIONS:
            raise PromQLError(f"aggregation {node.op} is not supported (use sum, avg, min, max or count)")
        _check(node.expr)
    elif isinstance(node, pp.BinaryExpr):
        op = str(node.op)
        if op not in _ARITHMETIC | _COMPARISON | _SET:
            raise PromQLError(f"operator {op} is not supported")
        mod = node.modifier
        if mod is not None and str(mod.card) not in (
            "VectorMatchCardinality.OneToOne",
            "VectorMatchCardinality.ManyToMany",
        ):
            raise PromQLError("group_left/group_right are not supported")
        _check(node.lhs)
        _check(node.rhs)
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr):
        _check(node.expr)


def metric_names(node: pp.Expr) -> set[str]:
    """Every metric name the expression reads (to keep only the series rules need)."""
    names: set[str] = set()

    def visit(n: pp.Expr) -> None:
        if isinstance(n, pp.VectorSelector):
            names.add(n.name or "")
        elif isinstance(n, pp.MatrixSelector):
            visit(n.vector_selector)
        elif isinstance(n, pp.Call):
            for a in n.args:
                visit(a)
        elif isinstance(n, pp.AggregateExpr):
            visit(n.expr)
        elif isinstance(n, pp.BinaryExpr):
            visit(n.lhs)
            visit(n.rhs)
        elif isinstance(n, pp.ParenExpr | pp.UnaryExpr):
            visit(n.expr)

    visit(node)
    return names


def _drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != "__name__")


def _matches(labels: Labels, matchers: list[tuple[str, str, str]]) -> bool:
    as_dict = dict(labels)
    for name, op, value in matchers:
        have = as_dict.get(name, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have):
            return False
        if op == "!~" and re.fullmatch(value, have):
            return False
    return True


_MATCH_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def _matchers(vs: pp.VectorSelector) -> list[tuple[str, str, str]]:
    return [(m.name, _MATCH_OPS[str(m.op).rsplit(".", 1)[-1]], m.value) for m in vs.matchers.matchers]


class Evaluator:
    """Instant evaluation of a parsed expression at time ``t`` (seconds) over a ``SeriesSource``."""

    def __init__(self, source: SeriesSource) -> None:
        self.source = source

    def instant(self, node: pp.Expr, t: float) -> Value:
        return self._eval(node, t)

    # --- selectors -----------------------------------------------------------------------------
    def _select(self, vs: pp.VectorSelector, start: float, end: float) -> Matrix:
        matchers = [m for m in _matchers(vs) if m[0] != "__name__"]
        keep = (lambda labels: _matches(labels, matchers)) if matchers else None
        return [(labels, (times, values)) for labels, times, values in self.source.select(vs.name, start, end, keep)]  # type: ignore[misc]

    def _vector_selector(self, vs: pp.VectorSelector, t: float) -> Vector:
        t -= vs.offset.total_seconds() if vs.offset else 0.0
        # (t - 5m, t]: the latest sample not older than the lookback
        return [(labels, values[-1]) for labels, (_, values) in self._select(vs, t - LOOKBACK_S + 1e-9, t)]  # type: ignore[misc]

    def _matrix(self, ms: pp.MatrixSelector, t: float) -> tuple[Matrix, float, float]:
        vs = ms.vector_selector
        end = t - (vs.offset.total_seconds() if vs.offset else 0.0)
        start = end - ms.range.total_seconds()
        return self._select(vs, start, end), start, end

    # --- dispatch ------------------------------------------------------------------------------
    def _eval(self, node: pp.Expr, t: float) -> Value:
        if isinstance(node, pp.NumberLiteral):
            return float(node.val)
        if isinstance(node, pp.ParenExpr):
            return self._eval(node.expr, t)
        if isinstance(node, pp.UnaryExpr):
            inner = self._eval(node.expr, t)
            if isinstance(inner, float):
                return -inner
            return [(_drop_name(lb), -v) for lb, v in inner]  # type: ignore[misc]
        if isinstance(node, pp.VectorSelector):
            return self._vector_selector(node, t)
        if isinstance(node, pp.MatrixSelector):
            raise PromQLError("a range selector must be the argument of a function such as rate()")
        if isinstance(node, pp.Call):
            return self._call(node, t)
        if isinstance(node, pp.AggregateExpr):
            return self._aggregate(node, t)
        if isinstance(node, pp.BinaryExpr):
            return self._binary(node, t)
        raise PromQLError(f"unsupported expression: {node}")

    def _vector_arg(self, node: pp.Expr, t: float) -> Vector:
        value = self._eval(node, t)
        if isinstance(value, float):
            raise PromQLError("expected an instant vector, got a scalar")
        return value  # type: ignore[return-value]

    # --- functions -----------------------------------------------------------------------------
    def _call(self, node: pp.Call, t: float) -> Value:
        name = node.func.name
        args = list(node.args)
        if name in _RANGE_FUNCS:
            matrix, start, end = self._matrix(args[0], t)
            if name == "absent_over_time":
                return [] if matrix else [(_absent_labels(args[0].vector_selector), 1.0)]
            if name in ("rate", "increase", "delta"):
                out = []
                for labels, (times, values) in matrix:  # type: ignore[misc]
                    v = _extrapolated(times, values, start, end, counter=name != "delta", per_second=name == "rate")
                    if v is not None:
                        out.append((_drop_name(labels), v))
                return out
            return [(_drop_name(lb), _OVER_TIME[name](list(values))) for lb, (_, values) in matrix]  # type: ignore[misc]
        if name in _MATH_FUNCS:
            f = _MATH_FUNCS[name]
            return [(_drop_name(lb), float(f(v))) for lb, v in self._vector_arg(args[0], t)]
        if name in ("clamp_min", "clamp_max"):
            bound = self._scalar_arg(args[1], t)
            pick = max if name == "clamp_min" else min
            return [(_drop_name(lb), pick(v, bound)) for lb, v in self._vector_arg(args[0], t)]
        if name == "histogram_quantile":
            return _histogram_quantile(self._scalar_arg(args[0], t), self._vector_arg(args[1], t))
        if name == "absent":
            present = self._vector_arg(args[0], t)
            if present:
                return []
            vs = args[0] if isinstance(args[0], pp.VectorSelector) else None
            return [(_absent_labels(vs) if vs is not None else (), 1.0)]
        if name == "vector":
            return [((), self._scalar_arg(args[0], t))]
        if name == "scalar":
            vec = self._vector_arg(args[0], t)
            return vec[0][1] if len(vec) == 1 else math.nan
        if name == "time":
            return float(t)
        raise PromQLError(f"function {name}() is not supported")

    def _scalar_arg(self, node: pp.Expr, t: float) -> float:
        value = self._eval(node, t)
        if not isinstance(value, float):
            raise PromQLError("expected a scalar")
        return value

    # --- aggregation ---------------------------------------------------------------------------
    def _aggregate(self, node: pp.AggregateExpr, t: float) -> Vector:
        vec = self._vector_arg(node.expr, t)
        mod = node.modifier
        keep: Callable[[Labels], Labels]
        if mod is None:
            keep = lambda lb: ()  # noqa: E731
        elif str(mod.type).endswith("By"):
            wanted = set(mod.labels)
            keep = lambda lb: tuple(p for p in lb if p[0] in wanted)  # noqa: E731
        else:
            dropped = set(mod.labels) | {"__name__"}
            keep = lambda lb: tuple(p for p in lb if p[0] not in dropped)  # noqa: E731
        groups: dict[Labels, list[float]] = defaultdict(list)
        for labels, v in vec:
            groups[keep(labels)].append(v)
        op = str(node.op)
        return [(labels, _AGGREGATE[op](values)) for labels, values in groups.items()]

    # --- binary operators ----------------------------------------------------------------------
    def _binary(self, node: pp.BinaryExpr, t: float) -> Value:
        op = str(node.op)
        mod = node.modifier
        return_bool = bool(mod is not None and mod.return_bool)
        lhs, rhs = self._eval(node.lhs, t), self._eval(node.rhs, t)
        if op in _SET:
            if isinstance(lhs, float) or isinstance(rhs, float):
                raise PromQLError(f"'{op}' needs vectors on both sides")
            return _set_op(op, lhs, rhs, _signature(mod))  # type: ignore[arg-type]
        if isinstance(lhs, float) and isinstance(rhs, float):
            if op in _COMPARISON and not return_bool:
                raise PromQLError("comparisons between scalars must use bool")
            result = _apply(op, lhs, rhs, return_bool)
            return math.nan if result is None else result
        if isinstance(lhs, float) or isinstance(rhs, float):
            out: Vector = []
            for labels, v in rhs if isinstance(lhs, float) else lhs:  # type: ignore[union-attr]
                a, b = (lhs, v) if isinstance(lhs, float) else (v, rhs)
                r = _apply(op, a, b, return_bool)  # type: ignore[arg-type]
                if r is None:
                    continue
                keep_name = op in _COMPARISON and not return_bool
                out.append((labels if keep_name else _drop_name(labels), v if keep_name else r))
            return out
        sig = _signature(mod)
        right: dict[Labels, tuple[Labels, float]] = {}
        for labels, v in rhs:  # type: ignore[union-attr]
            key = sig(labels)
            if key in right:
                raise PromQLError(f"many-to-one match on the right side for {dict(key)}")
            right[key] = (labels, v)
        out = []
        seen: set[Labels] = set()
        for labels, v in lhs:  # type: ignore[union-attr]
            key = sig(labels)
            if key not in right:
                continue
            if key in seen:
                raise PromQLError(f"many-to-one match on the left side for {dict(key)}")
            seen.add(key)
            r = _apply(op, v, right[key][1], return_bool)
            if r is None:
                continue
            filtering = op in _COMPARISON and not return_bool
            out.append((_one_to_one(labels if filtering else _drop_name(labels), mod), v if filtering else r))
        return out


def _on(mod: pp.BinModifier | None) -> bool:
    return mod is not None and mod.matching is not None and str(mod.matching.type).endswith("Include")


def _one_to_one(labels: Labels, mod: pp.BinModifier | None) -> Labels:
    """Result labels of a one-to-one match: only the ``on`` labels, or without the ``ignoring`` ones."""
    if mod is None or mod.matching is None:
        return labels
    names = set(mod.matching.labels)
    if _on(mod):
        return tuple(p for p in labels if p[0] in names)
    return tuple(p for p in labels if p[0] not in names)


def _signature(mod: pp.BinModifier | None) -> Callable[[Labels], Labels]:
    """The labels two samples must share to match (``on``: only these, ``ignoring``: all but these)."""
    if mod is None or mod.matching is None:
        return _drop_name
    names = set(mod.matching.labels)
    if _on(mod):
        return lambda lb: tuple(p for p in lb if p[0] in names)
    return lambda lb: tuple(p for p in lb if p[0] not in names and p[0] != "__name__")


def _set_op(op: str, lhs: Vector, rhs: Vector, sig: Callable[[Labels], Labels]) -> Vector:
    right = {sig(lb) for lb, _ in rhs}
    if op == "and":
        return [(lb, v) for lb, v in lhs if sig(lb) in right]
    if op == "unless":
        return [(lb, v) for lb, v in lhs if sig(lb) not in right]
    left = {sig(lb) for lb, _ in lhs}
    return lhs + [(lb, v) for lb, v in rhs if sig(lb) not in left]


def _apply(op: str, a: float, b: float, return_bool: bool) -> float | None:
    """Arithmetic result, or for comparisons: 1/0 with ``bool``, else the kept value or None (dropped)."""
    if op in _ARITHMETIC:
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return _divide(a, b)
            if op == "%":
                return math.fmod(a, b) if b != 0 else math.nan
            return a**b
        except (OverflowError, ValueError):
            return math.nan
    result = {
        "==": a == b,
        "!=": a != b,
        ">": a > b,
        "<": a < b,
        ">=": a >= b,
        "<=": a <= b,
    }[op]
    if return_bool:
        return 1.0 if result else 0.0
    return a if result else None


def _divide(a: float, b: float) -> float:
    """IEEE 754 division, as Go does it: x/0 is ±Inf, 0/0 is NaN (Python would raise)."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _absent_labels(vs: pp.VectorSelector) -> Labels:
    """absent() keeps the labels of the selector's equality matchers."""
    return tuple(sorted((n, v) for n, op, v in _matchers(vs) if op == "=" and n != "__name__"))


def _extrapolated(
    times: Sequence[float], values: Sequence[float], start: float, end: float, counter: bool, per_second: bool
) -> float | None:
    """Prometheus' ``extrapolatedRate``: the increase over the window, extrapolated to its edges."""
    if len(times) < 2:
        return None
    first_t, first_v = times[0], values[0]
    last_t, last_v = times[-1], values[-1]
    result = last_v - first_v
    if counter:
        previous = 0.0
        for v in values:
            if v < previous:  # a reset: the counter restarted from zero
                result += previous
            previous = v
    to_start = first_t - start
    to_end = end - last_t
    sampled = last_t - first_t
    average_gap = sampled / (len(times) - 1)
    if counter and result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    threshold = average_gap * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average_gap / 2
    interval += to_end if to_end < threshold else average_gap / 2
    result *= interval / sampled
    if per_second:
        result /= end - start
    return result


def _histogram_quantile(q: float, vec: Vector) -> Vector:
    """Prometheus' ``bucketQuantile`` over classic ``_bucket`` series grouped by their labels minus ``le``."""
    groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, v in vec:
        le = dict(labels).get("le")
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        groups[tuple(p for p in labels if p[0] not in ("le", "__name__"))].append((bound, v))
    out: Vector = []
    for labels, buckets in groups.items():
        out.append((labels, _bucket_quantile(q, buckets)))
    return out


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets.sort()
    merged: list[tuple[float, float]] = []
    for bound, count in buckets:  # same upper bound twice: add them up
        if merged and merged[-1][0] == bound:
            merged[-1] = (bound, merged[-1][1] + count)
        else:
            merged.append((bound, count))
    if len(merged) < 2 or not math.isinf(merged[-1][0]):
        return math.nan
    counts = [c for _, c in merged]
    for i in range(1, len(counts)):  # make the cumulative counts monotonic
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next((i for i in range(len(counts) - 1) if counts[i] >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], counts[b]
    if b > 0:
        start = merged[b - 1][0]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count)


_OVER_TIME: dict[str, Callable[[list[float]], float]] = {
    "avg_over_time": lambda vs: sum(vs) / len(vs),
    "min_over_time": min,
    "max_over_time": max,
    "sum_over_time": sum,
    "count_over_time": lambda vs: float(len(vs)),
    "last_over_time": lambda vs: vs[-1],
}
_AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "avg": lambda vs: sum(vs) / len(vs),
    "min": min,
    "max": max,
    "count": lambda vs: float(len(vs)),
}
