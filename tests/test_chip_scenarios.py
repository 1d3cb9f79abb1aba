"""The chip cooler controller (firmware/tpfw/ctl_chip.py) on the virtual board against the real
two-phase chip plant, on the HIL rig: its bundled scenarios (hil/scenarios/chip_*.toml) on plant
truth, and the failures they stand for: a dead pump with and without a flow meter, a failing
lid interface, lost facility water, a worn pump, and the power cap guarding the junction in
manual mode."""

import numpy as np
import pytest
import scenario_figures as figs

from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol import schema
from thermopilot.protocol.link import Session

TJ_LIMIT_K = 378.15  # 105 degC: the junction limit the scenarios judge
MODES = schema.MODES


@pytest.fixture(scope="module")
def session():
    vb = VirtualBoard(board="virtual_chip").start()
    s = Session(vb.port)
    yield s
    s.close()
    vb.stop()


_RUNS = {}


def bundled(session, name):
    """A bundled scenario's run, once per module (the GPU trace takes half a minute)."""
    if name not in _RUNS:
        _RUNS[name] = figs.run(figs.load(name), session)
    return _RUNS[name]


def explain(res):
    return "\n".join(str(v) for v in res.verdicts) + "\nfaults: %s" % res.fault_t


def survived(res):
    return res["plant.junction_k"].max() <= TJ_LIMIT_K and res["plant.thermal_trip"].max() == 0


def variant(**change):
    """chip_pump_failure (750 W) with other faults or inputs; judged by the test."""
    raw = figs.load("chip_pump_failure")
    raw["criteria"] = [{"kind": "at_most", "signal": "plant.junction_k", "max": TJ_LIMIT_K}]
    raw.update(change)
    return raw


@pytest.mark.parametrize("name", figs.CHIP)
def test_bundled_scenario_meets_its_criteria(session, name):
    res = bundled(session, name)
    assert res.passed, explain(res)
    fig = figs.chip(name, res)
    assert fig["junction_max_c"] + figs.C <= TJ_LIMIT_K and not fig["thermal_trip"], fig
    if name in figs.TARGET:
        assert fig["latency_s"] is not None and 0.0 <= fig["latency_s"] <= 60.0, fig


def test_gpu_trace_pump_follows_the_power_and_rests_when_idle(session):
    res = bundled(session, "chip_gpu_no_dryout")
    assert res["out.pump"][res.t < 55].max() <= 0.1 + 1e-6  # d_min at idle
    busy = (res.t > 700) & (res.t < 1000)
    assert res["out.pump"][busy].min() > 0.5  # about 750 W: the margin asks for most of it
    # the junction estimate on the board (case + r_jc P, the power lagged like the die after
    # a drop) against the plant's junction: never more than a kelvin or two low, and ahead of
    # it after a power rise (the cap acts at once)
    err = (res["loop.chip.measurement"] - res["plant.junction_k"])[50:]
    assert err.min() > -2.0, err.min()
    assert np.percentile(np.abs(err), 95) < 1.0
    rise = (res.t > 300.0) & (res.t < 300.3)  # idle to 700 W
    assert np.all(res["loop.chip.measurement"][rise] >= res["plant.junction_k"][rise])


def test_dead_pump_without_a_flow_meter_is_found_as_dry_out_and_capped(session):
    raw = variant()
    raw["sensors"] = [s for s in raw["sensors"] if s["output"] != "flow_kg_s"]
    res = figs.run(raw, session)
    lat = res.fault_t.get("dryout", 1e9) - 100.0
    assert 0.0 < lat <= 60.0, res.fault_t
    assert survived(res)


def test_a_failing_lid_interface_is_capped_not_called_a_dead_pump(session):
    fault = {"kind": "plant_change", "t_s": 100.0, "param": "r_tim_k_w", "value": 0.05}
    raw = variant(faults=[fault])
    raw["inputs"]["chip_power_w"] = 900.0
    res = figs.run(raw, session)
    assert res.fault_t == {}, res.fault_t  # the flow is measured and the model is wet
    assert survived(res)
    assert res["plant.throttled"][-1] == 1.0  # the cap holds the junction
    caps = res.notices("power_cap")
    assert caps and 100.0 < caps[0]["t_s"] < 110.0


def test_lost_facility_water_is_survived_with_the_cap(session):
    fault = {"kind": "plant_change", "t_s": 100.0, "param": "facility_flow_scale", "value": 0.0}
    res = figs.run(variant(faults=[fault], duration_s=600), session)
    assert survived(res)


def test_a_worn_pump_measured_by_the_flow_meter_gets_more_duty_and_a_lower_cap(session):
    fault = {"kind": "plant_change", "t_s": 100.0, "param": "pump_health", "value": 0.5}
    raw = variant(faults=[fault])
    raw["inputs"]["chip_power_w"] = 900.0
    res = figs.run(raw, session)
    late = res.t > 110
    assert res["plant.dryout_margin"][late].min() >= 0.0
    assert res["out.pump"][late].min() > 0.99  # full pump
    assert res["plant.chip_power_w"][late].max() < 900.0  # capped to what it carries
    assert "pump_failure" not in res.fault_t  # worn, not dead


def test_the_power_cap_guards_the_junction_in_manual_mode(session):
    raw = variant(faults=[], duration_s=200)
    session.command("mode", 0, MODES["manual"])
    session.command("manual_output", 0, 0.1)  # far too little pump for 750 W
    try:
        res = figs.run(raw, session)
    finally:
        session.command("mode", 0, MODES["auto"])
    assert np.allclose(res["out.pump"][1:], 0.1)
    assert survived(res)
    assert res["plant.throttled"][-1] == 1.0


def test_a_lost_power_reading_caps_the_chip_at_the_boards_safe_cap(session):
    # no power reading, no junction estimate: the board's safe cap (300 W), not the cap the
    # last reading gave
    fault = {"kind": "sensor_open", "t_s": 100.0, "channel": 1}
    res = figs.run(variant(faults=[fault], duration_s=200), session)
    assert res.fault_t.get("sensor_open") == pytest.approx(100.0, abs=0.2)
    assert res.at("out.power_cap", 99.0) > 1000.0
    assert np.all(res["out.power_cap"][res.t > 100.2] <= 300.0)
    assert survived(res)


def test_the_safe_state_never_caps_above_the_boards_safe_cap(session):
    # a dead pump at a cool plate would let the computed cap rise to the junction limit's
    res = figs.run(variant(duration_s=200), session)
    late = res.t > res.fault_t["pump_failure"] + 0.2
    assert np.all(res["out.power_cap"][late] <= 300.0)
    assert survived(res)


def test_a_case_probe_reading_below_the_boiling_fluid_is_implausible(session):
    # drifting low, the case would raise the cap it allows until it left its range (-40 degC,
    # minutes later); under load the lid cannot be colder than the fluid boiling under it
    fault = {"kind": "sensor_drift", "t_s": 100.0, "channel": 0, "rate_per_s": -0.5}
    res = figs.run(variant(faults=[fault], duration_s=200), session)
    t_lat = res.fault_t.get("sensor_implausible")
    case_c = res.at("plant.case_k", 99.0) - figs.C
    sat_c = res.at("plant.sat_t_k", 99.0) - figs.C
    # the reading passes saturation - 3 K at 0.5 K/s, then 2 s
    want = 100.0 + (case_c - sat_c + 3.0) / 0.5 + 2.0
    assert t_lat == pytest.approx(want, abs=2.0), (t_lat, want, res.fault_t)
    assert np.all(res["out.power_cap"][res.t > t_lat + 0.2] <= 300.0)
    assert survived(res)
