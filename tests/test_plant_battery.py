"""Battery coolant loop: interface, energy balance, hand-calculated steady state, control,
off-gas, and the faults a scenario can apply mid-run."""

import math

import pytest

from thermopilot.hil.plants import PLANTS, BatteryCoolantLoop, make_plant


def test_registry_and_unknown_names():
    assert set(PLANTS) == {"battery_loop", "heatpump_r290", "chip_cooler"}
    with pytest.raises(ValueError, match="chip_cooler"):
        make_plant("toaster")
    with pytest.raises(ValueError, match="pack_resistance_ohm"):
        make_plant("battery_loop", pack_resistanc_ohm=0.1)


def test_outputs_contract():
    b = BatteryCoolantLoop()
    out = b.step(0.1, {})
    for k in ("coolant_out_k", "coolant_in_k", "cell_max_k", "cell_min_k", "flow_lpm"):
        assert math.isfinite(out[k])
    assert [k for k in out if k.startswith("cell_k_")] == ["cell_k_%d" % i for i in range(8)]
    for k in ("gas_ppm", "reservoir_level", "air_fraction", "current_a", "cells_vented"):
        assert math.isfinite(out[k])
    assert b.outputs() == out


def test_bad_inputs():
    b = BatteryCoolantLoop()
    with pytest.raises(ValueError, match="current_a"):
        b.step(0.1, {"current_a": float("nan")})
    with pytest.raises(ValueError, match="ambient_k=500"):
        b.step(0.1, {"ambient_k": 500.0})
    with pytest.raises(ValueError, match="pump_dutty"):
        b.step(0.1, {"pump_dutty": 0.5})
    # Actuator commands saturate like hardware: duty 1.7 runs as 1.0.
    assert b.step(0.1, {"pump_duty": 1.7})["flow_lpm"] == pytest.approx(b.pump_flow_lpm(1.0))


def test_pump_operating_point_hand_calc():
    # dp0*d^2 - (dp0/Q0^2) Q^2 = k Q^2 -> Q = d*sqrt(dp0/(k + dp0/Q0^2))
    # defaults: dp0 = 60 kPa, Q0 = 30 L/min, k = 83.3 Pa/(L/min)^2 -> 20.0 L/min at full duty
    b = BatteryCoolantLoop()
    assert b.pump_flow_lpm(1.0) == pytest.approx(60e3**0.5 / (83.3 + 60e3 / 900) ** 0.5)
    assert b.pump_flow_lpm(1.0) == pytest.approx(20.0, abs=0.01)
    assert b.pump_flow_lpm(0.5) == pytest.approx(10.0, abs=0.01)
    assert b.pump_flow_lpm(0.05) == 0.0  # below pump_min_duty


def test_energy_balance_closes_over_a_drive():
    b = BatteryCoolantLoop()
    e0 = b.stored_energy_j()
    throughput = 0.0
    for k in range(6000):  # 10 min, duty and current changing
        out = b.step(
            0.1,
            {
                "pump_duty": 0.3 + 0.5 * ((k // 700) % 2),
                "current_a": 150.0,
                "heater_w": 2000.0 if 3000 < k < 3500 else 0.0,
                "ambient_k": 303.15,
            },
        )
        throughput += 0.1 * (out["heat_gen_w"] + out["chiller_heat_w"] + out["heater_w"])
    residual = b.stored_energy_j() - e0 - b.energy_in_j
    assert abs(residual) < 1e-9 * throughput + 1e-3


def test_steady_state_matches_hand_calculation():
    # No ambient exchange, constant resistance, chiller not capacity-limited, duty 0.5.
    b = BatteryCoolantLoop(
        pack_ambient_w_k=0.0,
        pipe_ambient_w_k=0.0,
        resistance_activation_k=0.0,
        group_resistance_scale=(1.0,),
    )
    u = {"pump_duty": 0.5, "current_a": 100.0, "chiller_ref_k": 288.15}
    for _ in range(int(10 * 3600 / 5.0)):  # the pack settles with a ~1 h time constant
        out = b.step(5.0, u)
    # Hand calculation:
    #   Q_gen = I^2 R = 100^2 * 0.096 = 960 W, 120 W per group (8 groups)
    #   flow = 0.5*sqrt(60e3/(83.3 + 60e3/30^2)) = 10.0011 L/min -> m cp = 588.6 W/K
    #   chiller: eps = 1 - exp(-120/588.5) = 0.18446; Q = eps m cp (T_ret - 288.15) = 960
    #     -> T_ret = 288.15 + 960/(0.18446*588.5) = 296.993 K
    #   chiller outlet = T_ret - 960/588.5 = 295.362 K = pack inlet
    #   group g outlet = inlet + 120*(g+1)/588.5; cell g = its coolant node + 120/30
    q_lpm = 0.5 * math.sqrt(60e3 / (83.3 + 60e3 / 30.0**2))
    mcp = q_lpm / 60000 * 1070 * 3300
    eps = 1 - math.exp(-120.0 / mcp)
    t_ret = 288.15 + 960.0 / (eps * mcp)
    t_in = t_ret - 960.0 / mcp
    assert out["heat_gen_w"] == pytest.approx(960.0, rel=1e-6)
    assert out["coolant_out_k"] == pytest.approx(t_ret, abs=0.01)
    assert out["coolant_in_k"] == pytest.approx(t_in, abs=0.01)
    for g in range(8):
        t_node = t_in + 120.0 * (g + 1) / mcp
        assert out["cell_k_%d" % g] == pytest.approx(t_node + 120.0 / 30.0, abs=0.01)


def test_more_pump_duty_cools_the_outlet_toward_the_chiller():
    outs = []
    for duty in (0.2, 0.5, 0.9):
        b = BatteryCoolantLoop()
        for _ in range(300):
            out = b.step(1.0, {"pump_duty": duty, "current_a": 150.0, "ambient_k": 303.15})
        outs.append(out["coolant_out_k"])
    assert outs[0] > outs[1] > outs[2] > 288.15


def test_runaway_injection_raises_one_group():
    b = BatteryCoolantLoop()
    for _ in range(600):
        out = b.step(0.1, {"current_a": 100.0, "runaway_group": 2, "runaway_w": 3000.0})
    others = [out["cell_k_%d" % g] for g in (0, 1, 3, 4, 5, 6, 7)]
    assert out["cell_k_2"] > max(others) + 1.5
    assert out["cell_max_k"] == out["cell_k_2"]
    with pytest.raises(ValueError, match="runaway_group"):
        b.step(0.1, {"runaway_group": 9})


def test_off_gas_rises_with_the_precursor_ahead_of_the_temperature():
    b = BatteryCoolantLoop()
    quiet = [b.step(0.1, {"current_a": 100.0}) for _ in range(600)]
    assert max(o["gas_ppm"] for o in quiet) == 0.0  # no false signal on a normal drive
    t0 = quiet[-1]["cell_k_5"]
    # A small precursor: electrolyte vapour, hardly any heat (the lead the cited cells show).
    log = [b.step(0.1, {"current_a": 100.0, "runaway_group": 5, "runaway_w": 30.0})
           for _ in range(300)]  # fmt: skip
    assert log[99]["gas_ppm"] > 100.0  # within 10 s
    assert log[-1]["cell_k_5"] - t0 < 0.2  # while the group has hardly warmed
    # Dilution through the breather once the precursor stops.
    after = [b.step(0.1, {"current_a": 100.0}) for _ in range(600)]
    assert after[-1]["gas_ppm"] < log[-1]["gas_ppm"]
    # Well mixed enclosure by hand: c(t) = c_eq (1 - exp(-t/tau)), c_eq = Q_g/(Q_g + Q_b),
    #   tau = V/(Q_g + Q_b) = 100 L / 0.7 L/min = 8571 s
    c_eq, tau = 0.2 / 0.7, 100.0 / 0.7 * 60.0
    assert log[-1]["gas_ppm"] == pytest.approx(1e6 * c_eq * (1 - math.exp(-30.0 / tau)), rel=1e-6)


def test_a_group_past_its_vent_temperature_vents():
    b = BatteryCoolantLoop(initial_t_k=390.0)
    o = b.step(1.0, {"runaway_group": 7, "runaway_w": 20000.0})
    for _ in range(60):
        o = b.step(1.0, {"runaway_group": 7, "runaway_w": 20000.0})
    assert o["cells_vented"] >= 1.0 and o["cell_k_7"] > 393.15
    assert o["gas_ppm"] > 1e5  # tens of L/min into 100 L


def test_chiller_request_capacity_and_loss():
    def chill(**kw):
        b = BatteryCoolantLoop(initial_t_k=318.15)
        u = {"pump_duty": 0.8, "current_a": 0.0, "chiller_ref_k": 268.15}
        u.update(kw.pop("u", {}))
        for name, value in kw.items():
            b.set_param(name, value)
        return b.step(0.1, u)["chiller_heat_w"]

    full = chill()
    assert full == pytest.approx(5000.0)  # capacity-limited with refrigerant at -5 degC
    assert chill(u={"chiller_cmd": 0.4}) == pytest.approx(2000.0)
    assert chill(chiller_capacity_w=0.0) == 0.0  # chiller lost
    assert chill(u={"chiller_w": 1500.0}) == pytest.approx(1500.0)  # coupled heat pump limit
    assert chill(chiller_ua_w_k=20.0) < full  # fouled


def test_pump_wear_death_and_leak():
    b = BatteryCoolantLoop()
    new = b.pump_flow_lpm(0.8)
    b.set_param("pump_health", 0.5)
    # Half the head: Q = d sqrt(w dp0/(k + w dp0/Q0^2))
    assert b.pump_flow_lpm(0.8) == pytest.approx(
        0.8 * math.sqrt(30e3 / (83.3 + 30e3 / 900.0)), rel=1e-9
    )
    b.set_param("pump_health", 0.0)
    assert b.step(0.1, {"pump_duty": 1.0})["flow_lpm"] == 0.0
    b.set_param("pump_health", 1.0)
    # Leak: the reservoir (1 L) empties first without changing the flow ...
    b.set_param("coolant_lost_l", 0.6)
    o = b.step(0.1, {"pump_duty": 0.8})
    assert o["reservoir_level"] == pytest.approx(0.4) and o["flow_lpm"] == pytest.approx(new)
    # ... then air in the 4.6 L loop starves the pump, which air-binds at 10 % air.
    b.set_param("coolant_lost_l", 1.0 + 0.05 * 4.6)
    o = b.step(0.1, {"pump_duty": 0.8})
    assert o["reservoir_level"] == 0.0 and o["air_fraction"] == pytest.approx(0.05)
    assert o["flow_lpm"] == pytest.approx(0.5 * new)
    b.set_param("coolant_lost_l", 2.0)
    assert b.step(0.1, {"pump_duty": 0.8})["flow_lpm"] == 0.0


def test_heater_failure_and_books_through_mid_run_changes():
    b = BatteryCoolantLoop(initial_t_k=278.15)
    e0 = b.stored_energy_j()
    through = 0.0
    for k in range(3000):
        if k == 1000:
            b.set_param("heater_health", 0.25)
        if k == 1500:
            b.set_param("pump_health", 0.3)
        if k == 2000:
            b.set_param("chiller_capacity_w", 0.0)
        o = b.step(0.1, {"heater_w": 4000.0, "pump_duty": 0.6, "ambient_k": 268.15})
        if k == 1001:
            assert o["heater_w"] == pytest.approx(1000.0)
        through += 0.1 * (o["heater_w"] + o["chiller_heat_w"])
    assert abs(b.stored_energy_j() - e0 - b.energy_in_j) < 1e-9 * through + 1e-3


def test_changeable_parameters_are_declared_and_validated():
    b = BatteryCoolantLoop()
    for name, (unit, lo, hi, doc) in b.CHANGEABLE.items():
        assert name in b.PARAMS and lo < hi and doc and unit
    with pytest.raises(ValueError, match=r"coolant_lost_l=-1 out of range; expected 0\.\.20 L"):
        b.set_param("coolant_lost_l", -1)
    with pytest.raises(ValueError, match="cannot be changed while running"):
        b.set_param("n_groups", 4)
    with pytest.raises(ValueError, match="chiller_capacity_w=inf out of range"):
        b.set_param("chiller_capacity_w", float("inf"))


def test_eight_groups_spread_and_four_still_work():
    b = BatteryCoolantLoop()
    for _ in range(3000):
        o = b.step(1.0, {"current_a": 200.0, "pump_duty": 0.4})
    cells = [o["cell_k_%d" % g] for g in range(8)]
    assert o["cell_spread_k"] == pytest.approx(max(cells) - min(cells))
    assert 0.5 < o["cell_spread_k"] < 10.0  # downstream groups run warmer, a few K
    b4 = BatteryCoolantLoop(n_groups=4, group_resistance_scale=(1.0, 1.02, 0.98, 1.04))
    assert len([k for k in b4.step(0.1, {}) if k.startswith("cell_k_")]) == 4
