"""Two-phase chip cooler: energy books, steady state by hand with the cited correlations, dry-out
and the second law, CHF and quality margins, power cap, thermal trip, mid-run changes."""

import math

import pytest

from thermopilot.hil.plants import TwoPhaseChipCooler


def settle(c, u, seconds, dt=0.1):
    return [c.step(dt, u) for _ in range(int(round(seconds / dt)))]


def test_energy_balance_closes_through_power_steps_and_dry_out():
    c = TwoPhaseChipCooler()
    e0 = c.stored_energy_j()
    chip_j = 0.0
    for k in range(8000):
        p = 700.0 if (k // 500) % 2 else 150.0
        o = c.step(0.1, {"chip_power_w": p, "pump_duty": 0.5 if k < 4000 else 0.2})
        chip_j += 0.1 * o["chip_power_w"]
    assert abs(c.stored_energy_j() - e0 - c.energy_in_j) < 1e-9 * chip_j + 1e-3


def test_steady_state_hand_calculation_with_the_cited_correlations():
    c = TwoPhaseChipCooler()
    u = {"chip_power_w": 500.0, "pump_duty": 0.8, "facility_t_k": 303.15}
    o = settle(c, u, 600.0, dt=0.2)[-1]
    # Condenser: C_w = 0.05*4180 = 209 W/K, eps = 1 - exp(-300/209) = 0.7620
    #   T_loop = 303.15 + 500/(0.7620*209) = 306.289 K
    eps = 1 - math.exp(-300.0 / 209.0)
    assert o["sat_t_k"] == pytest.approx(303.15 + 500.0 / (eps * 209.0), abs=0.01)
    # Chain: junction - case = 500*0.03 = 15 K, case - plate = 500*0.012 = 6 K
    assert o["junction_k"] - o["case_k"] == pytest.approx(15.0, abs=0.01)
    assert o["case_k"] - o["cold_plate_k"] == pytest.approx(6.0, abs=0.01)
    # Geometry: 60 channels 0.3 x 1.0 mm, 40 mm long, 0.2 mm fins.
    props = c.props
    sat = props.sat(o["sat_p_pa"])
    mu_l, _, k_l, _, sigma, cp_l, _ = props.transport(o["sat_p_pa"])
    rho_l, rho_v, h_lv = sat[3], sat[4], sat[2] - sat[1]
    d_h = 4 * 0.3e-3 * 1.0e-3 / (2 * 1.3e-3)  # 0.4615 mm
    g = 0.8 * 0.015 / (60 * 0.3e-6)  # 666.7 kg/(m^2 s)
    assert o["mass_flux_kg_m2s"] == pytest.approx(g, rel=1e-12)
    # Sun & Mishima (2009): h = 6 Re^1.05 Bo^0.54 / (We^0.191 (rho_l/rho_v)^0.142) k_l/D_h,
    # evaluated at the plant's heat flux (flux on the heated walls, fins at tanh(mH)/mH).
    q = o["heat_flux_w_m2"]
    re = g * d_h / mu_l
    bo = q / (g * h_lv)
    we = g * g * d_h / (rho_l * sigma)
    h = 6 * re**1.05 * bo**0.54 / (we**0.191 * (rho_l / rho_v) ** 0.142) * k_l / d_h
    assert o["htc_w_m2k"] == pytest.approx(h, rel=1e-3)
    m_fin = math.sqrt(2 * h / (390.0 * 0.2e-3))
    area = 60 * (0.3e-3 + 2 * 1e-3 * math.tanh(m_fin * 1e-3) / (m_fin * 1e-3)) * 0.04
    assert q == pytest.approx((500.0 - 3.0 * (o["cold_plate_k"] - o["sat_t_k"])) / area, rel=1e-3)
    # Wet plate: plate - boiling temperature = flux / h.
    assert o["dryout_fraction"] == 0.0
    t_evap = props.t_sat(o["outlet_p_pa"])
    assert o["cold_plate_k"] - t_evap == pytest.approx(q / h, rel=2e-3)
    # Wojtan, Revellin & Thome (2006):
    #   q_CHF = 0.437 (rho_v/rho_l)^0.073 We_L^-0.24 (L/D)^-0.72 G h_lv, We_L = G^2 L/(sigma rho_l)
    we_l = g * g * 0.04 / (sigma * rho_l)
    chf = 0.437 * (rho_v / rho_l) ** 0.073 * we_l**-0.24 * (0.04 / d_h) ** -0.72 * g * h_lv
    assert o["chf_w_m2"] == pytest.approx(chf, rel=1e-3)
    # Margins: flux against CHF, exit quality against dryout_quality; the plant's is the lower.
    assert o["chf_margin"] == pytest.approx(1 - q / chf, rel=1e-3)
    assert o["quality_margin"] == pytest.approx(1 - o["exit_quality"] / 0.7, rel=1e-9)
    assert o["dryout_margin"] == min(o["chf_margin"], o["quality_margin"])
    # Exit quality: x = x_in + Q_boil/(m h_lv) with a 5 K subcooled inlet (Q_boil: the heat
    # through the channel walls; 3 W/K of plate-to-loop conduction bypasses the fluid).
    x_in = -cp_l * 5.0 / h_lv
    assert o["exit_quality"] == pytest.approx(x_in + q * area / (0.012 * h_lv), rel=1e-3)


def test_boiling_coefficient_rises_with_heat_flux_and_chf_with_mass_flux():
    c = TwoPhaseChipCooler()
    p = c.props.p_sat(308.15)
    sat, tr = c.props.sat(p), c.props.transport(p)
    h = [c.boiling_htc(q, 500.0, sat, tr) for q in (2e4, 1e5, 3e5)]
    assert h[0] < h[1] < h[2]
    assert h[2] / h[0] == pytest.approx(15.0**0.54, rel=1e-6)  # Bo^0.54 (above the laminar floor)
    chf = [c.critical_heat_flux(g, sat, tr) for g in (100.0, 400.0, 800.0)]
    assert chf[0] < chf[1] < chf[2]


@pytest.mark.parametrize("duty", [0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
def test_outlet_never_hotter_than_the_plate_in_dry_out(duty):
    c = TwoPhaseChipCooler()
    log = settle(c, {"chip_power_w": 750.0, "pump_duty": 0.7}, 60.0)
    log += settle(c, {"chip_power_w": 750.0, "pump_duty": duty}, 300.0)
    for o in log:
        assert o["outlet_t_k"] <= o["cold_plate_k"] + 1e-9  # second law
        assert o["outlet_t_k"] >= c.props.t_sat(o["outlet_p_pa"]) - 1e-9
    assert log[-1]["dryout_margin"] < 0.0 and log[-1]["dryout_fraction"] > 0.0


def test_low_flow_dries_out_with_outlet_temperature_and_junction_rise():
    c = TwoPhaseChipCooler()
    wet = settle(c, {"chip_power_w": 750.0, "pump_duty": 0.7}, 120.0)[-1]
    dry = settle(c, {"chip_power_w": 750.0, "pump_duty": 0.25}, 120.0)[-1]
    assert wet["dryout_margin"] > 0 > dry["dryout_margin"]
    assert wet["dryout_fraction"] == 0.0 < dry["dryout_fraction"]
    assert dry["exit_quality"] > 1.0
    assert dry["outlet_t_k"] > c.props.t_sat(dry["outlet_p_pa"]) + 5.0
    assert dry["outlet_t_k"] > wet["outlet_t_k"] + 5.0
    assert dry["junction_k"] > wet["junction_k"] + 10.0


def test_margin_rises_with_flow_and_falls_with_power():
    by_duty = []
    for duty in (0.3, 0.5, 0.8, 1.0):
        c = TwoPhaseChipCooler()
        by_duty.append(settle(c, {"chip_power_w": 750.0, "pump_duty": duty}, 120.0)[-1])
    margins = [o["dryout_margin"] for o in by_duty]
    assert margins == sorted(margins) and margins[0] < 0 < margins[-1]
    # Case temperature is sensitive to flow only through the margin: flat while wet.
    by_power = []
    for power in (300.0, 700.0, 1100.0):
        c = TwoPhaseChipCooler()
        by_power.append(settle(c, {"chip_power_w": power, "pump_duty": 1.0}, 120.0)[-1])
    m = [o["dryout_margin"] for o in by_power]
    assert m[0] > m[1] > m[2]


def test_power_cap_throttles_the_chip():
    c = TwoPhaseChipCooler()
    free = settle(c, {"chip_power_w": 1400.0, "pump_duty": 1.0}, 1.0)[-1]
    assert free["chip_power_w"] == 1400.0 and free["throttled"] == 0.0
    c = TwoPhaseChipCooler()
    capped = settle(c, {"chip_power_w": 1400.0, "power_cap_w": 900.0, "pump_duty": 1.0}, 120.0)
    assert all(o["chip_power_w"] == 900.0 and o["throttled"] == 1.0 for o in capped)
    assert capped[-1]["power_demand_w"] == 1400.0 and capped[-1]["dryout_margin"] > 0.0
    # Above the cooler's capacity (CHF at full pump) the uncapped chip dries the plate out.
    c = TwoPhaseChipCooler()
    over = settle(c, {"chip_power_w": 1400.0, "pump_duty": 1.0}, 120.0)[-1]
    assert over["chf_margin"] < 0.0 and over["junction_k"] > capped[-1]["junction_k"] + 20.0


def test_dead_pump_ends_in_the_chips_own_thermal_trip():
    c = TwoPhaseChipCooler()
    settle(c, {"chip_power_w": 750.0, "pump_duty": 0.7}, 60.0)
    c.set_param("pump_health", 0.0)
    log = settle(c, {"chip_power_w": 750.0, "pump_duty": 0.7}, 300.0)
    assert all(o["flow_kg_s"] == 0.0 for o in log)
    first = next(i for i, o in enumerate(log) if o["thermal_trip"])
    assert 5.0 < first * 0.1 < 120.0  # the small thermal mass heats within tens of seconds
    assert max(o["junction_k"] for o in log) < 398.15 + 2.0  # bounded by the trip
    assert log[first]["chip_power_w"] == 0.0


def test_changeable_parameters_act():
    base = settle(TwoPhaseChipCooler(), {"chip_power_w": 600.0}, 300.0)[-1]
    for name, value, key, sign in [
        ("condenser_ua_w_k", 60.0, "sat_t_k", +1),
        ("facility_flow_scale", 0.3, "sat_t_k", +1),
        ("r_tim_k_w", 0.05, "case_k", +1),
        ("pump_health", 0.5, "exit_quality", +1),
    ]:
        c = TwoPhaseChipCooler()
        c.set_param(name, value)
        o = settle(c, {"chip_power_w": 600.0}, 300.0)[-1]
        assert sign * (o[key] - base[key]) > 1e-3, (name, o[key], base[key])
    c = TwoPhaseChipCooler()
    with pytest.raises(ValueError, match=r"pump_health=1.5 out of range; expected 0\.\.1"):
        c.set_param("pump_health", 1.5)
    with pytest.raises(ValueError, match="changeable: condenser_ua_w_k, facility_flow_scale"):
        c.set_param("channel_width_m", 1e-3)


def test_r245fa_loop_and_bad_fluid():
    c = TwoPhaseChipCooler(fluid="R245fa")
    o = c.step(0.1, {})
    assert o["sat_p_pa"] < 3e5  # a low-pressure fluid: ~2 bar near 35 degC
    assert math.isfinite(o["chf_w_m2"]) and o["htc_w_m2k"] > 0
    with pytest.raises(ValueError, match="fluid"):
        TwoPhaseChipCooler(fluid="Unobtainium")
