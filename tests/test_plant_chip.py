"""Two-phase chip cooler: energy balance, hand-calculated steady state, dry-out signature."""

import math

import pytest

from thermopilot.hil.plants import TwoPhaseChipCooler


def test_energy_balance_closes_through_power_steps():
    c = TwoPhaseChipCooler()
    e0 = c.stored_energy_j()
    chip_j = 0.0
    for k in range(6000):
        p = 700.0 if (k // 500) % 2 else 150.0
        c.step(0.1, {"chip_power_w": p, "pump_duty": 0.5})
        chip_j += 0.1 * p
    assert abs(c.stored_energy_j() - e0 - c.energy_in_j) < 1e-9 * chip_j + 1e-3


def test_steady_state_hand_calculation():
    c = TwoPhaseChipCooler()
    u = {
        "chip_power_w": 500.0,
        "pump_duty": 0.8,
        "facility_t_k": 303.15,
        "facility_flow_kg_s": 0.05,
    }
    for _ in range(3000):
        o = c.step(0.2, u)
    # Condenser: C_w = 0.05*4180 = 209 W/K, eps = 1 - exp(-300/209) = 0.7620
    #   T_loop = 303.15 + 500/(0.7620*209) = 306.289 K
    eps = 1 - math.exp(-300.0 / 209.0)
    assert o["sat_t_k"] == pytest.approx(303.15 + 500.0 / (eps * 209.0), abs=0.01)
    # Chain: junction - case = 500*0.03 = 15 K, case - plate = 500*0.012 = 6 K,
    #   plate - boiling = 500/(6e-3*30e3) = 2.78 K (no dry-out at x_out < 0.7)
    assert o["exit_quality"] < 0.7
    assert o["junction_k"] - o["case_k"] == pytest.approx(15.0, abs=0.01)
    assert o["case_k"] - o["cold_plate_k"] == pytest.approx(6.0, abs=0.01)
    t_evap = c.props.t_sat(o["outlet_p_pa"])
    assert o["cold_plate_k"] - t_evap == pytest.approx(500.0 / 180.0, abs=0.01)
    # Exit quality: x = x_in + Q/(m h_fg), m = 0.8*0.015 kg/s
    sat = c.props.sat(o["sat_p_pa"])
    x_in = o["exit_quality"] - 500.0 / (0.012 * (sat[2] - sat[1]))
    assert -0.1 < x_in < 0.0  # subcooled inlet, 5 K


def test_low_flow_dries_out_with_outlet_temperature_and_junction_rise():
    c = TwoPhaseChipCooler()
    for _ in range(1200):
        wet = c.step(0.1, {"chip_power_w": 750.0, "pump_duty": 0.7})
    for _ in range(1200):
        dry = c.step(0.1, {"chip_power_w": 750.0, "pump_duty": 0.25})
    assert wet["dryout_margin"] > 0 > dry["dryout_margin"]
    assert dry["exit_quality"] > 1.0
    assert dry["outlet_t_k"] > c.props.t_sat(dry["outlet_p_pa"]) + 10.0
    assert dry["outlet_t_k"] > wet["outlet_t_k"] + 10.0
    assert dry["junction_k"] > wet["junction_k"] + 10.0


def test_r245fa_loop_and_bad_fluid():
    c = TwoPhaseChipCooler(fluid="R245fa")
    o = c.step(0.1, {})
    assert o["sat_p_pa"] < 3e5  # a low-pressure fluid: ~2 bar near 35 degC
    with pytest.raises(ValueError, match="fluid"):
        TwoPhaseChipCooler(fluid="Unobtainium")
