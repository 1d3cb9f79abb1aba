"""The bundled heat-pump scenarios (hil/scenarios/v2/heatpump_*.toml, scenario format v2) on the
virtual board: the real firmware computes superheat from raw pressure and temperature and
drives the real plant. Every criterion of every file must pass; the figures they measure
(plant truth) are the ones docs/controllers.md reports.

Each scenario gets a fresh board: a run that ends with a sensor fault leaves that fault's cause
present on the board until its next tick, so a fault reset at the start of a following run on
the same board would keep it latched."""

import pytest
from hp_rig import SCENARIOS, notices, run_scenario

from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol.link import Session

V2 = sorted(p.stem for p in SCENARIOS.glob("heatpump_*.toml"))


@pytest.fixture()
def session():
    with VirtualBoard(board="virtual_hp") as vb, Session(vb.port) as s:
        s.hello()
        yield s


def test_every_heat_pump_behaviour_of_the_issue_has_a_scenario():
    assert set(V2) >= {
        "heatpump_startup",
        "heatpump_setpoint_steps",
        "heatpump_compressor_steps",
        "heatpump_lop",
        "heatpump_mop",
        "heatpump_hitc",
        "heatpump_charge_loss",
        "heatpump_adaptive",
        "heatpump_sensor_fault",
    }


@pytest.mark.parametrize("name", V2)
def test_bundled_scenario_passes(name, session):
    run = run_scenario(session, name)
    bad = ["%s = %r" % (v["criterion"], v["value"]) for v in run.failed()]
    assert run.passed, "%s failed: %s" % (name, "; ".join(bad))
    if name in ("heatpump_lop", "heatpump_mop", "heatpump_hitc"):
        # the protector announced itself when it engaged (value: 3 LOP, 4 MOP, 5 HiTcond)
        code = {"heatpump_lop": 3.0, "heatpump_mop": 4.0, "heatpump_hitc": 5.0}[name]
        values = [e.value for e in run.events if e.code == 35]
        assert code in values, values
    if name == "heatpump_adaptive":
        assert notices(run, "setpoint_adapted")
