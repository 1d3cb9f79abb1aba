"""The criteria registry on synthetic rows with known answers (each computed by hand here)."""

import math

import numpy as np
import pytest
import tomllib

from thermopilot.hil import criteria, resources, scenario
from thermopilot.hil.rows import Rows
from thermopilot.protocol import schema

DT = 0.1


def load(name, crits, faults=None):
    raw = tomllib.loads((resources.scenarios_dir() / (name + ".toml")).read_text())
    raw["criteria"] = crits
    if faults is not None:
        raw["faults"] = faults
    sc = scenario.check(raw, "test.toml")
    return sc, scenario.context(sc)


def make_rows(ctx, n, **cols):
    """Rows with t_s = k*DT and the given columns (arrays or constants); the rest zero."""
    names = ["t_s"] + list(cols)
    for c in ("faults", "out.0"):
        if c not in names:
            names.append(c)
    rows = Rows(names, ctx, DT, {"out.pump": "out.0"})
    t = np.arange(n) * DT
    data = {"t_s": t}
    for c in names[1:]:
        v = cols.get(c, 0.0)
        data[c] = np.broadcast_to(np.asarray(v, float), (n,))
    for k in range(n):
        rows.append([data[c][k] for c in names])
    return rows.freeze()


def judge(sc, ctx, rows, events=()):
    objs = [criteria.make(c, i) for i, c in enumerate(sc["criteria"])]
    return [o.evaluate(rows, list(events)) for o in objs]


def test_between_at_most_at_least_with_windows():
    sc, ctx = load(
        "battery_sensor_fault",
        [
            {"kind": "between", "signal": "plant.coolant_out_k", "min": 300, "max": 305},
            {
                "kind": "between",
                "signal": "plant.coolant_out_k",
                "min": 300,
                "max": 305,
                "before_s": 5.0,
            },  # fmt: skip
            {"kind": "at_most", "signal": "plant.coolant_out_k", "max": 306},
            {"kind": "at_least", "signal": "plant.coolant_out_k", "min": 301, "after_s": 2},
            {"kind": "between", "signal": "plant.coolant_out_k", "min_c": 26.85, "max_c": 32},
        ],
    )
    n = 101  # 0..10 s
    x = np.full(n, 302.0)
    x[80] = 305.5  # t = 8.0 s: outside [300, 305], inside the first 5 s window? no
    x[10] = 300.5  # t = 1.0 s: below 301 but before after_s = 2
    rows = make_rows(ctx, n, **{"plant.coolant_out_k": x})
    v = judge(sc, ctx, rows)
    assert not v[0]["passed"] and v[0]["value"] == [300.5, 305.5]
    assert "first outside at t=8.0 s" in v[0]["detail"] and "°C" in v[0]["detail"]
    assert v[1]["passed"]  # the excursion at 8 s is outside the window
    assert v[2]["passed"] and v[2]["value"] == 305.5
    assert v[3]["passed"] and v[3]["value"] == 302.0
    assert sc["criteria"][4]["min"] == pytest.approx(300.0)
    assert not v[4]["passed"]  # 305.5 K = 32.35 degC > 32


def test_nan_counts_as_outside():
    sc, ctx = load(
        "battery_sensor_fault",
        [{"kind": "at_most", "signal": "plant.coolant_out_k", "max": 400}],
    )
    x = np.full(20, 300.0)
    x[5] = math.nan
    v = judge(sc, ctx, make_rows(ctx, 20, **{"plant.coolant_out_k": x}))
    assert not v[0]["passed"]


def test_settles_and_overshoot_against_the_setpoint_changes():
    sc, ctx = load(
        "battery_sensor_fault",
        [
            {"kind": "settles", "loop": "cool", "within_s": 3.0, "band": 0.5},
            {"kind": "settles", "loop": "cool", "within_s": 1.0, "band": 0.5},
            {"kind": "overshoot", "loop": "cool", "max": 1.0},
            {"kind": "overshoot", "loop": "cool", "max": 0.5},
        ],
    )
    n = 101
    t = np.arange(n) * DT
    sp = np.where(t < 5.0, 300.0, 302.0)
    # first segment: starts at 298 (approach from below), reaches 300.8 at 2 s then 300
    x = np.where(t < 2.0, 298.0 + 1.4 * t, 300.0)
    x[20] = 300.8
    # second segment: from 300 to 302, overshoots to 302.7 at 6.5 s, settled from 7 s
    x[50:] = 302.0
    x[55:65] = 302.7
    x[65:] = 302.1
    rows = make_rows(
        ctx, n, **{"loop.cool.setpoint": sp, "plant.coolant_out_k": x, "loop.cool.measurement": x}
    )
    v = judge(sc, ctx, rows)
    # within 3 s: segment 1 judged from 3 s (error 0), segment 2 judged from 8 s (0.1 K)
    assert v[0]["passed"] and v[0]["value"] == pytest.approx(0.1)
    # within 1 s: segment 1 judged from 1 s: 0.8 K at 2.0 s
    assert not v[1]["passed"] and v[1]["value"] == pytest.approx(0.8)
    assert "at t=2.0 s" in v[1]["detail"]
    # overshoot: 0.8 K in segment 1, 0.7 K in segment 2 (the setpoint went up: above is past)
    assert v[2]["passed"] and v[2]["value"] == pytest.approx(0.8)
    assert not v[3]["passed"]
    sc2, _ = load("battery_sensor_fault", [{"kind": "overshoot", "max": 1.0, "after_s": 5.0}])
    v = judge(sc2, ctx, rows)
    assert v[0]["value"] == pytest.approx(0.7) and "at t=5.5 s" in v[0]["detail"]


def test_iae_ise_energy_std():
    sc, ctx = load(
        "battery_sensor_fault",
        [
            {"kind": "iae", "loop": "cool", "max": 2.5},
            {"kind": "ise", "loop": "cool"},
            {"kind": "energy", "signals": ["plant.pump_power_w"], "max_j": 99.0},
            {"kind": "energy", "signals": ["plant.pump_power_w", "plant.heater_w"]},
            {"kind": "std", "signal": "plant.coolant_out_k", "max": 0.6, "after_s": 5.0},
        ],
    )
    n = 101  # 10 s
    t = np.arange(n) * DT
    x = 300.0 + np.where(t < 5.0, 0.5, 0.0)  # error 0.5 K for 5 s
    x[50:] = 300.0 + np.where(np.arange(51) % 2, 0.5, -0.5)  # std 0.5 after 5 s
    rows = make_rows(
        ctx,
        n,
        **{
            "loop.cool.setpoint": 300.0,
            "plant.coolant_out_k": x,
            "plant.pump_power_w": 10.0,
            "plant.heater_w": np.where(t >= 5.0, 100.0, 0.0),
        },
    )
    v = judge(sc, ctx, rows)
    # IAE: 0.5 K over 0..4.9 s (trapezoid edge to 5.0 where it drops), then |0.5| alternating
    iae = np.trapz(np.abs(300.0 - x), t)
    assert v[0]["value"] == pytest.approx(iae) and iae > 2.5 and not v[0]["passed"]
    assert v[1]["passed"] and v[1]["value"] == pytest.approx(np.trapz((300.0 - x) ** 2, t))
    assert "reported only" in v[1]["detail"]
    assert v[2]["value"] == pytest.approx(100.0) and not v[2]["passed"]  # 10 W for 10 s
    assert v[3]["value"] == pytest.approx(100.0 + np.trapz(rows["plant.heater_w"], t))
    assert v[4]["value"] == pytest.approx(np.std(x[50:])) and v[4]["passed"]


def test_reversals_count_direction_changes_beyond_the_deadband():
    assert criteria.Reversals.count([0, 1, 0, 1, 0], 0.0) == 3
    assert criteria.Reversals.count([0, 1, 0.9, 1.0, 0], 0.2) == 1  # the 0.1 dip is noise
    assert criteria.Reversals.count([0, 1, 2, 3], 0.0) == 0
    assert criteria.Reversals.count([5, 5, 5], 0.0) == 0
    sc, ctx = load(
        "battery_sensor_fault",
        [
            {"kind": "reversals", "channel": "pump", "max_per_s": 1.0, "deadband": 0.05},
            {"kind": "reversals", "channel": 0, "max_per_s": 3.0},
        ],
    )
    n = 101  # 10 s, hunting at 1 reversal per tick for the whole run
    u = 0.5 + 0.1 * (np.arange(n) % 2)
    v = judge(sc, ctx, make_rows(ctx, n, **{"out.0": u}))
    assert v[0]["count"] == 99 and v[0]["value"] == pytest.approx(9.9)
    assert not v[0]["passed"] and not v[1]["passed"]


FO = schema.FAULTS["sensor_open"]
OT = schema.FAULTS["over_temperature"]


def ev(t, code, kind="latched"):
    names = {v: k for k, v in schema.FAULTS.items()}
    return {"t_s": t, "code": code, "name": names[code], "kind": kind, "loop": 0, "value": 0.0}


def test_fault_latched_latch_latency_and_no_fault():
    faults = [{"kind": "sensor_open", "t_s": 2.0, "duration_s": 1.0}]
    sc, ctx = load(
        "battery_sensor_fault",
        [
            {"kind": "fault_latched", "fault": "sensor_open", "before_s": 3.0},
            {"kind": "fault_latched", "fault": "sensor_open", "before_s": 2.0},
            {"kind": "latch_latency", "fault": "sensor_open", "after_fault": 0, "max_s": 0.2},
            {
                "kind": "latch_latency",
                "fault": ["over_temperature", "sensor_open"],
                "after_fault": "sensor_open",
                "max_s": 0.05,
            },  # fmt: skip
            {"kind": "no_fault"},
            {"kind": "no_fault", "before_s": 2.0},
            {"kind": "latch_latency", "fault": "over_temperature", "max_s": 10},
        ],
        faults,
    )
    n = 51
    t = np.arange(n) * DT
    bits = np.where(t >= 2.1 - 1e-9, 1 << FO, 0)
    rows = make_rows(ctx, n, faults=bits)
    rows.injections.append(
        {"index": 0, "kind": "sensor_open", "label": "sensor_open ch0", "t_s": 2.0, "t_end": 3.0}
    )
    events = [ev(2.1, FO)]
    v = judge(sc, ctx, rows, events)
    assert v[0]["passed"] and v[0]["value"] == pytest.approx(2.1)
    assert not v[1]["passed"]
    assert v[2]["passed"] and v[2]["value"] == pytest.approx(0.1) and v[2]["latched"] == FO_NAME
    assert not v[3]["passed"] and v[3]["value"] == pytest.approx(0.1)
    assert not v[4]["passed"] and "sensor_open" in v[4]["detail"]
    assert v[5]["passed"]
    assert not v[6]["passed"] and "never latched" in v[6]["detail"]
    # a latch in the fault bits without the event being reported is not enough
    v = judge(sc, ctx, rows, [])
    assert not v[0]["passed"] and "no latched event reported" in v[0]["detail"]


FO_NAME = "sensor_open"


def test_actuator_safe_at_end():
    sc, ctx = load(
        "battery_sensor_fault",
        [{"kind": "actuator_safe_at_end", "channel": "pump"}, {"kind": "actuator_safe_at_end"}],
    )
    u = np.full(20, 0.4)
    v = judge(sc, ctx, make_rows(ctx, 20, **{"out.0": u}))
    assert not v[0]["passed"] and "NOT SAFE" in v[0]["detail"]
    u[-1] = 1.0  # the board's safe value for the pump
    v = judge(sc, ctx, make_rows(ctx, 20, **{"out.0": u}))
    assert v[0]["passed"] and v[1]["passed"]


@pytest.mark.parametrize(
    "safe, last, passed",
    [
        ({"pump": 0.0}, 0.0, True),  # a controller that stops a dead pump
        ({"pump": 0.0}, 1.0, False),  # the board's safe value is not this fault's
        ({"0": [0.2, 0.6]}, 0.4, True),
        ({"pump": [0.2, 0.6]}, 0.7, False),
    ],
)
def test_actuator_safe_at_end_with_the_controllers_safe_values(safe, last, passed):
    sc, ctx = load("battery_sensor_fault", [{"kind": "actuator_safe_at_end", "safe": safe}])
    u = np.full(20, 0.4)
    u[-1] = last
    v = judge(sc, ctx, make_rows(ctx, 20, **{"out.0": u}))
    assert v[0]["passed"] == passed, v[0]
    assert ("NOT SAFE" in v[0]["detail"]) == (not passed)


@pytest.mark.parametrize(
    "safe, message",
    [
        ({"valve": 0.0}, "safe names actuator 'valve'; board virtual has actuators 0 \\(pump\\)"),
        ({"pump": [0.6, 0.2]}, "safe.pump = \\[0.6, 0.2\\]; expected a number or \\[min, max\\]"),
        ({"pump": "off"}, "safe.pump = 'off'; expected"),
    ],
)
def test_actuator_safe_at_end_refuses_safe_values_it_cannot_judge(safe, message):
    with pytest.raises(scenario.ScenarioError, match=message):
        load("battery_sensor_fault", [{"kind": "actuator_safe_at_end", "safe": safe}])


def test_state_on_a_partial_run():
    sc, ctx = load(
        "battery_sensor_fault",
        [
            {"kind": "at_most", "signal": "plant.coolant_out_k", "max": 310},
            {"kind": "fault_latched", "fault": "sensor_open"},
            {"kind": "actuator_safe_at_end"},
            {"kind": "at_most", "signal": "plant.coolant_out_k", "max": 290},
        ],
    )
    rows = make_rows(ctx, 30, **{"plant.coolant_out_k": 300.0})  # 3 s of a 240 s run
    objs = [criteria.make(c, i) for i, c in enumerate(sc["criteria"])]
    states = [criteria.state(o, o.evaluate(rows, []), rows) for o in objs]
    assert states == ["ok", "pending", "pending", "fail"]
