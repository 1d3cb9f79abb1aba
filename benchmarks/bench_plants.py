"""Benchmark of the plant models (not a test): real-time factor at the rig's 0.1 s step on one
core, and the cost and accuracy of the property tables against CoolProp.

    .venv/bin/python benchmarks/bench_plants.py

Prints a Markdown table for docs/benchmarks.md (section "## Plants").
"""

import math
import time

import CoolProp
import CoolProp.CoolProp as CP
import numpy as np

from thermopilot.hil.plants import make_plant
from thermopilot.hil.plants.props import FluidTable

DT_S = 0.1


def rtf(name, inputs_of_k, sim_s=600.0):
    plant = make_plant(name)
    n = int(sim_s / DT_S)
    t0 = time.perf_counter()
    for k in range(n):
        plant.step(DT_S, inputs_of_k(k))
    wall = time.perf_counter() - t0
    return sim_s / wall, wall / n * 1e6


def per_call_us(fn, n=20000):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main():
    rows = []
    rows.append(
        ("battery_loop",)
        + rtf(
            "battery_loop",
            lambda k: {"pump_duty": 0.3 + 0.4 * ((k // 600) % 2), "current_a": 150.0},
        )
    )
    rows.append(
        ("heatpump_r290",)
        + rtf("heatpump_r290", lambda k: {"valve_steps_cmd": 150 + 20 * ((k // 600) % 2)})
    )
    rows.append(
        ("chip_cooler",)
        + rtf("chip_cooler", lambda k: {"chip_power_w": 300 + 400 * ((k // 600) % 2)})
    )
    print("| plant | real-time factor at dt 0.1 s | wall time per step (us) |")
    print("| --- | ---: | ---: |")
    for name, f, us in rows:
        print("| %s | %.0fx | %.0f |" % (name, f, us))

    t0 = time.perf_counter()
    tab = FluidTable("Propane", 1.0e5, 38.0e5)
    build_s = time.perf_counter() - t0
    heos = CoolProp.AbstractState("HEOS", "Propane")
    sat = tab.sat(5e5)
    cases = [
        (
            "T, rho, s from (p, h), superheated vapour",
            lambda: tab.ph(5e5, sat[2] + 20e3, sat),
            lambda: (heos.update(CoolProp.HmassP_INPUTS, sat[2] + 20e3, 5e5), heos.T()),
            lambda: CP.PropsSI("T", "P", 5e5, "H", sat[2] + 20e3, "Propane"),
        ),
        (
            "saturation state from p",
            lambda: tab.sat(5e5),
            lambda: (heos.update(CoolProp.PQ_INPUTS, 5e5, 1.0), heos.T()),
            lambda: CP.PropsSI("T", "P", 5e5, "Q", 1, "Propane"),
        ),
        (
            "h from (p, s), isentropic discharge",
            lambda: tab.h_ps(15e5, sat[6] + 50.0),
            lambda: (heos.update(CoolProp.PSmass_INPUTS, 15e5, sat[6] + 50.0), heos.hmass()),
            lambda: CP.PropsSI("H", "P", 15e5, "S", sat[6] + 50.0, "Propane"),
        ),
    ]
    print()
    print("Propane table build: %.2f s (HEOS, once per process)." % build_s)
    print()
    print("| call | table (us) | AbstractState HEOS (us) | PropsSI (us) |")
    print("| --- | ---: | ---: | ---: |")
    for label, f_tab, f_as, f_ps in cases:
        print(
            "| %s | %.1f | %.1f | %.1f |"
            % (label, per_call_us(f_tab), per_call_us(f_as, 2000), per_call_us(f_ps, 1000))
        )

    # Largest deviation from PropsSI over the heat-pump envelope.
    rng = np.random.default_rng(0)
    worst = {
        "T vapour (K)": 0.0,
        "rho vapour (rel)": 0.0,
        "T liquid (K)": 0.0,
        "h isentropic (J/kg)": 0.0,
        "T_sat (K)": 0.0,
    }
    for _ in range(1500):
        p = math.exp(rng.uniform(math.log(1.5e5), math.log(35e5)))
        hg = CP.PropsSI("H", "P", p, "Q", 1, "Propane")
        h = hg + rng.uniform(0, 150e3)
        t, rho, _, s = tab.ph(p, h)
        worst["T vapour (K)"] = max(
            worst["T vapour (K)"], abs(t - CP.PropsSI("T", "P", p, "H", h, "Propane"))
        )
        worst["rho vapour (rel)"] = max(
            worst["rho vapour (rel)"], abs(rho / CP.PropsSI("D", "P", p, "H", h, "Propane") - 1)
        )
        worst["T_sat (K)"] = max(
            worst["T_sat (K)"], abs(tab.t_sat(p) - CP.PropsSI("T", "P", p, "Q", 0, "Propane"))
        )
        p2 = min(p * rng.uniform(1.5, 4), 35e5)
        worst["h isentropic (J/kg)"] = max(
            worst["h isentropic (J/kg)"],
            abs(tab.h_ps(p2, s) - CP.PropsSI("H", "P", p2, "S", s, "Propane")),
        )
        tl = CP.PropsSI("T", "P", p, "Q", 0, "Propane") - rng.uniform(0.5, 20)
        hl = CP.PropsSI("H", "P", p, "T", tl, "Propane")
        worst["T liquid (K)"] = max(worst["T liquid (K)"], abs(tab.ph(p, hl)[0] - tl))
    print()
    print(
        "Largest deviation from PropsSI (HEOS), 1500 random states, 1.5-35 bar, superheat up to "
        "150 kJ/kg, subcooling up to 20 K:"
    )
    print()
    print("| quantity | largest deviation |")
    print("| --- | ---: |")
    for k, v in worst.items():
        print("| %s | %.3g |" % (k, v))


if __name__ == "__main__":
    main()
