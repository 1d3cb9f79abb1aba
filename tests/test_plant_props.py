"""Property tables against CoolProp HEOS and the R290 figures of reference control.md s.5."""

import math

import CoolProp
import numpy as np
import pytest

from thermopilot.hil.plants.props import propane


@pytest.fixture(scope="module")
def tab():
    return propane()


def test_r290_critical_point(tab):
    # reference control.md s.5: Tcrit 96.7 degC, pcrit 42.5 bar
    assert tab.t_crit_k - 273.15 == pytest.approx(96.7, abs=0.05)
    assert tab.p_crit_pa / 1e5 == pytest.approx(42.5, abs=0.05)


@pytest.mark.parametrize("t_c, p_bar", [(0, 4.7), (40, 13.7), (50, 17.1), (60, 21.2), (70, 25.9)])
def test_r290_saturation_pressure(tab, t_c, p_bar):
    # reference control.md s.5 (rounded to 0.1 bar there)
    assert tab.p_sat(t_c + 273.15) / 1e5 == pytest.approx(p_bar, abs=0.06)
    # 0.05 bar of rounding is up to 0.35 K at 0 degC (dT/dp ~ 7 K/bar there)
    assert tab.t_sat(p_bar * 1e5) - 273.15 == pytest.approx(t_c, abs=0.4)


def test_table_matches_heos_over_envelope(tab):
    heos = CoolProp.AbstractState("HEOS", "Propane")
    rng = np.random.default_rng(3)
    worst = {"t_vap": 0.0, "rho_vap": 0.0, "t_liq": 0.0, "h_is": 0.0}
    for _ in range(400):
        p = math.exp(rng.uniform(math.log(1.5e5), math.log(35e5)))
        heos.update(CoolProp.PQ_INPUTS, p, 1.0)
        h = heos.hmass() + rng.uniform(0.0, 150e3)
        heos.update(CoolProp.HmassP_INPUTS, h, p)
        t, rho, x, s = tab.ph(p, h)
        assert x == 1.0
        worst["t_vap"] = max(worst["t_vap"], abs(t - heos.T()))
        worst["rho_vap"] = max(worst["rho_vap"], abs(rho / heos.rhomass() - 1.0))
        s_ref = heos.smass()
        p2 = min(p * rng.uniform(1.5, 4.0), 35e5)
        heos.update(CoolProp.PSmass_INPUTS, p2, s_ref)
        worst["h_is"] = max(worst["h_is"], abs(tab.h_ps(p2, s_ref) - heos.hmass()))
        heos.update(CoolProp.PQ_INPUTS, p, 0.0)
        t_l = heos.T() - rng.uniform(0.5, 15.0)
        heos.update(CoolProp.PT_INPUTS, p, t_l)
        worst["t_liq"] = max(worst["t_liq"], abs(tab.ph(p, heos.hmass())[0] - t_l))
    # Tolerances: 0.05 K, 0.2 %, 0.05 K, 20 J/kg (0.005 % of a ~400 kJ/kg enthalpy).
    assert worst["t_vap"] < 0.05, worst
    assert worst["rho_vap"] < 2e-3, worst
    assert worst["t_liq"] < 0.05, worst
    assert worst["h_is"] < 20.0, worst


def test_two_phase_state_is_linear_in_quality(tab):
    t_sat, hf, hg, rf, rg, sf, sg = tab.sat(5e5)
    t, rho, x, s = tab.ph(5e5, hf + 0.25 * (hg - hf))
    assert x == pytest.approx(0.25)
    assert t == pytest.approx(t_sat)
    assert 1 / rho == pytest.approx(0.75 / rf + 0.25 / rg)


def test_out_of_table_pressure_is_refused(tab):
    with pytest.raises(ValueError, match="outside table range"):
        tab.sat(50e5)
