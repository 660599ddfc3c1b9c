"""Rule groups at their own interval: P1 detection every second, slow rules every 3 s, blips still held off."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from ragvigil.ops.alerts.cadence import Cadence
from ragvigil.ops.alerts.rules import default_rules, load_rules
from ragvigil.ops.alerts.service import AlertService

T0 = 1_700_000_000.0

TWO_GROUPS = """
groups:
  - name: fast
    interval: 1s
    rules:
      - alert: DownFast
        expr: dependency_up == 0
        for: 3s
        labels: {severity: P1}
  - name: slow
    rules:
      - alert: DownSlow
        expr: dependency_up == 0
        for: 3s
        labels: {severity: P1}
"""


def test_each_group_is_due_at_its_own_interval_despite_loop_jitter() -> None:
    cadence = Cadence({"fast": 1.0, "slow": None}, default=3.0)
    assert cadence.step == 1.0
    due = {k: cadence.due(T0 + k * 1.003) for k in range(10)}  # a loop that wakes a little late each time
    assert all("fast" in groups for groups in due.values())
    assert [k for k, groups in due.items() if "slow" in groups] == [0, 3, 6, 9]


def test_a_reload_keeps_the_schedule_of_the_groups_that_stay() -> None:
    cadence = Cadence({"fast": 1.0, "slow": None}, default=3.0)
    assert cadence.due(T0) == {"fast", "slow"}
    cadence.replace({"slow": None, "new": 2.0})
    assert cadence.due(T0 + 1) == {"new"}  # slow was evaluated 1 s ago; the new group starts at once
    assert cadence.step == 2.0


def service_with(tmp_path, registry: CollectorRegistry) -> AlertService:  # type: ignore[no-untyped-def]
    path = tmp_path / "rules.yaml"
    path.write_text(TWO_GROUPS)
    return AlertService(registry, path, eval_interval=3.0)


def fired_at(service: AlertService, up: Gauge, down_between: tuple[float, float], seconds: int) -> dict[str, float]:
    """Run the loop body once a second (a fake clock); ``up`` is 0 inside ``down_between``."""
    fired: dict[str, float] = {}
    for k in range(seconds):
        t = T0 + k
        up.set(0 if down_between[0] <= t < down_between[1] else 1)
        for change in service.run_due(t):
            if change.new == "firing":
                fired.setdefault(change.alert.rule, t - down_between[0])
    return fired


def test_a_fast_group_fires_within_4_seconds_of_the_signal_and_the_default_group_later(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    up = Gauge("dependency_up", "a dependency", registry=registry)
    service = service_with(tmp_path, registry)
    fired = fired_at(service, up, (T0 + 1, T0 + 60), 15)
    assert fired["DownFast"] == 3.0  # pending at the first sample (1 s group), firing 3 s later
    assert fired["DownSlow"] > fired["DownFast"]  # seen only at the next 3 s cycle
    assert service.status()["group_intervals_s"] == {"fast": 1.0, "slow": 3.0}


def test_a_blip_shorter_than_for_never_fires_in_the_fast_group(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    up = Gauge("dependency_up", "a dependency", registry=registry)
    service = service_with(tmp_path, registry)
    assert fired_at(service, up, (T0 + 2, T0 + 5), 15) == {}  # three 1 s samples down: pending, never firing


def test_the_default_pack_evaluates_its_fast_p1_detection_every_second() -> None:
    pack = default_rules()
    quick = [r for r in pack.rules if r.spec.for_ <= 3 and (r.severity == "P1" or r.name == "ProviderBreakerOpen")]
    assert {"RagvigilUnhealthy", "VectorStoreDown", "ProviderBreakerOpen"} <= {r.name for r in quick}
    for rule in quick:
        assert (pack.intervals.get(rule.group) or 3.0) <= 1.0, rule.name
    assert load_rules(TWO_GROUPS).intervals == {"fast": 1.0, "slow": None}


def test_load_shedding_fires_within_10_seconds_of_a_burst_and_never_for_one_refusal() -> None:
    from prometheus_client import Counter

    def first_fired(sheds_per_s: float, seconds: int) -> float | None:
        registry = CollectorRegistry()
        shed = Counter("ragvigil_admission_shed", "shed", ["priority", "reason"], registry=registry)
        service = AlertService(registry)  # the default pack, each group at its own interval
        for k in range(seconds):
            t = T0 + k
            if k == 1 or (sheds_per_s > 1 and k >= 1):
                shed.labels("normal", "predicted_wait").inc(sheds_per_s if sheds_per_s > 1 else 1)
            for change in service.run_due(t):
                if change.alert.rule == "LoadShedding" and change.new == "firing":
                    return t - (T0 + 1)
        return None

    fired = first_fired(300, 30)  # a 10x burst: hundreds shed every second from t = 1 s
    assert fired is not None and fired <= 10  # the seeds ask for an alert within 10 s
    assert first_fired(1, 60) is None  # one request refused once is not an incident


def test_health_results_are_fresh_at_every_p1_evaluation(sample_runtime) -> None:  # type: ignore[no-untyped-def]
    service = sample_runtime.alerts
    assert service is not None
    # a result cached for a step or longer is served again at the next 1 s evaluation: MTTD grows by a step
    assert sample_runtime.health.cache_s < service.cadence.step
    # the checks that call a remote endpoint trust a pass for a while, so the 1 s cadence does not poll it
    slots = sample_runtime.health._slots
    assert slots["generator"].trust_s >= 5 and slots["database"].trust_s == 0
