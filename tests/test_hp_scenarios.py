"""The bundled heat-pump scenarios (hil/scenarios/heatpump_*.toml) run by the HIL rig on the
virtual board: the real firmware computes superheat from raw pressure and temperature and
drives the real plant. Every criterion of every file must pass; the figures they measure (plant
truth) are the ones docs/controllers.md reports.

Each scenario gets a fresh board: a run that ends with a sensor fault leaves that fault's cause
present on the board until its next tick, so a fault reset at the start of a following run on
the same board would keep it latched."""

import pytest

from thermopilot.hil import resources, rig, scenario
from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol.link import Session

NAMES = sorted(p.stem for p in resources.scenarios_dir().glob("heatpump_*.toml"))


def test_every_heat_pump_behaviour_of_the_issue_has_a_scenario():
    assert set(NAMES) >= {
        "heatpump_startup",
        "heatpump_setpoint_steps",
        "heatpump_compressor_steps",
        "heatpump_lop",
        "heatpump_mop",
        "heatpump_hitc",
        "heatpump_charge_loss",
        "heatpump_adaptive",
        "heatpump_sensor_fault",
        "heatpump_probe_drift",
    }


@pytest.mark.parametrize("name", NAMES)
def test_bundled_scenario_passes(name):
    sc = scenario.load(resources.scenarios_dir() / (name + ".toml"))
    with VirtualBoard(board="virtual_hp") as vb, Session(vb.port) as s:
        s.hello()
        res = rig.run(sc, session=s)
    bad = ["%s: %s" % (v["label"], v["detail"]) for v in res.verdicts if not v["passed"]]
    assert res.passed, "%s failed: %s" % (name, "; ".join(bad))
    # the protector announced itself when it engaged (value: 3 LOP, 4 MOP, 5 HiTcond,
    # 7 floodback by the discharge)
    codes = {
        "heatpump_lop": 3.0,
        "heatpump_mop": 4.0,
        "heatpump_hitc": 5.0,
        "heatpump_probe_drift": 7.0,
    }
    if name in codes:
        values = [e["value"] for e in res.events if e["name"] == "protector_active"]
        assert codes[name] in values, values
    if name == "heatpump_adaptive":
        assert any(e["name"] == "setpoint_adapted" for e in res.events)
