"""Battery coolant loop: interface, energy balance, hand-calculated steady state, control."""

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
    assert [k for k in out if k.startswith("cell_k_")] == ["cell_k_%d" % i for i in range(4)]
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
    #   Q_gen = I^2 R = 100^2 * 0.096 = 960 W, 240 W per group
    #   flow = 0.5*sqrt(60e3/(83.3 + 60e3/30^2)) = 10.0011 L/min -> m cp = 588.6 W/K
    #   chiller: eps = 1 - exp(-120/588.5) = 0.18446; Q = eps m cp (T_ret - 288.15) = 960
    #     -> T_ret = 288.15 + 960/(0.18446*588.5) = 296.993 K
    #   chiller outlet = T_ret - 960/588.5 = 295.362 K = pack inlet
    #   group g outlet = inlet + 240*(g+1)/588.5; cell g = its coolant node + 240/60
    q_lpm = 0.5 * math.sqrt(60e3 / (83.3 + 60e3 / 30.0**2))
    mcp = q_lpm / 60000 * 1070 * 3300
    eps = 1 - math.exp(-120.0 / mcp)
    t_ret = 288.15 + 960.0 / (eps * mcp)
    t_in = t_ret - 960.0 / mcp
    assert out["heat_gen_w"] == pytest.approx(960.0, rel=1e-6)
    assert out["coolant_out_k"] == pytest.approx(t_ret, abs=0.01)
    assert out["coolant_in_k"] == pytest.approx(t_in, abs=0.01)
    for g in range(4):
        t_node = t_in + 240.0 * (g + 1) / mcp
        assert out["cell_k_%d" % g] == pytest.approx(t_node + 240.0 / 60.0, abs=0.01)


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
    others = [out["cell_k_%d" % g] for g in (0, 1, 3)]
    assert out["cell_k_2"] > max(others) + 1.5
    assert out["cell_max_k"] == out["cell_k_2"]
    with pytest.raises(ValueError, match="runaway_group"):
        b.step(0.1, {"runaway_group": 9})
