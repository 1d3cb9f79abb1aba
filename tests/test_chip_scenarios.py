"""The chip cooler controller (firmware/tpfw/ctl_chip.py) on the virtual board against the real
two-phase chip plant: its bundled scenarios (hil/scenarios/v2/chip_*.toml) on plant truth, and
the failures they stand for: a dead pump with and without a flow meter, a failing lid
interface, lost facility water, a worn pump, and the power cap guarding the junction in
manual mode."""

import pytest
import scenario_figures as figs
import thermal_rig

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


def load(name):
    return thermal_rig.load(figs.path(name))


_RUNS = {}


def bundled(session, name):
    """A bundled scenario's run, once per module (the GPU trace takes half a minute)."""
    if name not in _RUNS:
        _RUNS[name] = thermal_rig.run(load(name), session)
    return _RUNS[name]


def explain(res):
    return "\n".join(str(v) for v in res.verdicts) + "\nfaults: %s" % res.fault_t


def peak(res, output):
    return max(r["plant"][output] for r in res.rows)


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
    idle = [r["out"][0] for r in res.rows if r["t_s"] < 55]
    busy = [r["out"][0] for r in res.rows if 700 < r["t_s"] < 1000]
    assert max(idle) <= 0.1 + 1e-6  # d_min at idle
    assert min(busy) > 0.5  # about 750 W: the margin target asks for most of the pump
    # the junction estimate on the board (case + r_jc P, the power lagged like the die after
    # a drop) against the plant's junction: never more than a kelvin or two low, and ahead of
    # it after a power rise (the cap acts at once)
    err = [r["loops"]["chip"]["measurement"] - r["plant"]["junction_k"] for r in res.rows[50:]]
    assert min(err) > -2.0, min(err)
    assert sorted(abs(e) for e in err)[int(0.95 * len(err))] < 1.0
    rise = [r for r in res.rows if 300.0 < r["t_s"] < 300.3]  # idle to 700 W
    assert all(r["loops"]["chip"]["measurement"] >= r["plant"]["junction_k"] for r in rise)


def test_dead_pump_without_a_flow_meter_is_found_as_dry_out_and_capped(session):
    sc = load("chip_pump_failure")
    sc["sensors"] = [s for s in sc["sensors"] if s["output"] != "flow_kg_s"]
    res = thermal_rig.run(sc, session)
    lat = res.fault_t.get("dryout", 1e9) - 100.0
    assert 0.0 < lat <= 60.0, res.fault_t
    assert peak(res, "junction_k") <= TJ_LIMIT_K and peak(res, "thermal_trip") == 0.0


def test_a_failing_lid_interface_is_capped_not_called_a_dead_pump(session):
    sc = load("chip_pump_failure")
    sc["inputs"]["chip_power_w"] = 900.0
    sc["faults"] = [{"kind": "plant_change", "t_s": 100.0, "param": "r_tim_k_w", "value": 0.05}]
    res = thermal_rig.run(sc, session)
    assert res.fault_t == {}, res.fault_t  # the flow is measured and the model is wet
    assert peak(res, "junction_k") <= TJ_LIMIT_K
    assert res.rows[-1]["plant"]["throttled"] == 1.0  # the cap holds the junction
    caps = [e for e in res.events if e.code == schema.NOTICES["power_cap"]]
    assert caps and 100.0 < caps[0].t_ms / 1000.0 < 110.0


def test_lost_facility_water_is_survived_with_the_cap(session):
    sc = load("chip_pump_failure")
    sc["faults"] = [
        {"kind": "plant_change", "t_s": 100.0, "param": "facility_flow_scale", "value": 0.0}
    ]
    sc["duration_s"] = 600
    res = thermal_rig.run(sc, session)
    assert peak(res, "junction_k") <= TJ_LIMIT_K and peak(res, "thermal_trip") == 0.0


def test_a_worn_pump_measured_by_the_flow_meter_gets_more_duty_and_a_lower_cap(session):
    sc = load("chip_pump_failure")
    sc["inputs"]["chip_power_w"] = 900.0
    sc["faults"] = [{"kind": "plant_change", "t_s": 100.0, "param": "pump_health", "value": 0.5}]
    res = thermal_rig.run(sc, session)
    late = [r for r in res.rows if r["t_s"] > 110]
    assert min(r["plant"]["dryout_margin"] for r in late) >= 0.0
    assert min(r["out"][0] for r in late) > 0.99  # full pump
    assert max(r["plant"]["chip_power_w"] for r in late) < 900.0  # capped to what it carries
    assert "pump_failure" not in res.fault_t  # worn, not dead


def test_the_power_cap_guards_the_junction_in_manual_mode(session):
    sc = load("chip_pump_failure")
    sc["faults"] = []
    sc["criteria"] = []
    sc["duration_s"] = 200
    session.command("mode", 0, MODES["manual"])
    session.command("manual_output", 0, 0.1)  # far too little pump for 750 W
    try:
        res = thermal_rig.run(sc, session)
    finally:
        session.command("mode", 0, MODES["auto"])
    assert all(r["out"][0] == pytest.approx(0.1) for r in res.rows[1:])
    assert peak(res, "junction_k") <= TJ_LIMIT_K and peak(res, "thermal_trip") == 0.0
    assert res.rows[-1]["plant"]["throttled"] == 1.0
