"""Make docs/img/plant_step_{battery,heatpump,chip}.png: each plant's response to a step of its
main actuator (matplotlib Agg). Run: .venv/bin/python benchmarks/plot_plant_steps.py"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from thermopilot.hil.plants import make_plant  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "img")
C = 273.15


def simulate(name, params, inputs_of_t, t_end_s, dt_s=0.1):
    plant = make_plant(name, **params)
    t, log = [], []
    for k in range(int(t_end_s / dt_s)):
        log.append(plant.step(dt_s, inputs_of_t(k * dt_s)))
        t.append((k + 1) * dt_s)
    return t, log


def panel(ax, t, series, ylabel):
    for label, ys in series:
        ax.plot(t, ys, label=label)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def battery():
    t_step = 300.0
    t, log = simulate(
        "battery_loop",
        {},
        lambda t: {
            "pump_duty": 0.3 if t < t_step else 0.8,
            "current_a": 150.0,
            "ambient_k": 303.15,
        },
        1200.0,
    )
    fig, ax = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    panel(ax[0], t, [("pump duty", [0.3 if x <= t_step else 0.8 for x in t])], "duty (-)")
    panel(
        ax[1],
        t,
        [
            ("pack outlet", [o["coolant_out_k"] - C for o in log]),
            ("pack inlet", [o["coolant_in_k"] - C for o in log]),
        ],
        "coolant (°C)",
    )
    panel(
        ax[2],
        t,
        [
            ("cell max", [o["cell_max_k"] - C for o in log]),
            ("cell min", [o["cell_min_k"] - C for o in log]),
        ],
        "cells (°C)",
    )
    ax[2].set_xlabel("time (s)")
    fig.suptitle("Battery loop: pump duty 0.3 → 0.8 at 300 s (150 A, ambient 30 °C)")
    return fig


def heatpump():
    def steps(t):
        return 150 if t < 60.0 else 165 if t < 180.0 else 260 if t < 300.0 else 150

    t, log = simulate(
        "heatpump_r290",
        {"initial_valve_steps": 150.0},
        lambda t: {"valve_steps_cmd": steps(t)},
        420.0,
    )
    fig, ax = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    panel(ax[0], t, [("valve position", [o["valve_steps"] for o in log])], "EXV (steps)")
    panel(
        ax[1],
        t,
        [
            ("superheat (signed; < 0 = wet)", [o["superheat_k"] for o in log]),
            ("subcooling", [o["subcooling_k"] for o in log]),
        ],
        "K",
    )
    ax[1].axhline(0.0, color="k", lw=0.5)
    panel(
        ax[2],
        t,
        [("liquid mass fraction at the compressor", [o["liquid_at_compressor"] for o in log])],
        "-",
    )
    panel(
        ax[3],
        t,
        [
            ("suction sat.", [o["evap_sat_t_k"] - C for o in log]),
            ("condensing sat.", [o["cond_sat_t_k"] - C for o in log]),
            ("leaving water", [o["cond_sec_out_k"] - C for o in log]),
        ],
        "°C",
    )
    ax[3].set_xlabel("time (s)")
    fig.suptitle(
        "R290 heat pump: EXV 150 → 165 steps at 60 s, → 260 at 180 s (floods), → 150 at 300 s\n"
        "(50 rev/s, brine 10 °C, water 30 °C)"
    )
    return fig


def chip():
    t_step = 120.0
    t, log = simulate(
        "chip_cooler",
        {},
        lambda t: {"chip_power_w": 750.0, "pump_duty": 0.7 if t < t_step else 0.25},
        420.0,
    )
    fig, ax = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    panel(
        ax[0],
        t,
        [
            ("pump duty", [0.7 if x <= t_step else 0.25 for x in t]),
            ("exit quality", [o["exit_quality"] for o in log]),
            ("dry-out margin (CHF and quality)", [o["dryout_margin"] for o in log]),
        ],
        "-",
    )
    ax[0].axhline(0.0, color="k", lw=0.5)
    panel(
        ax[1],
        t,
        [
            ("junction", [o["junction_k"] - C for o in log]),
            ("case", [o["case_k"] - C for o in log]),
        ],
        "°C",
    )
    panel(
        ax[2],
        t,
        [
            ("cold plate", [o["cold_plate_k"] - C for o in log]),
            ("evaporator outlet", [o["outlet_t_k"] - C for o in log]),
            ("loop saturation", [o["sat_t_k"] - C for o in log]),
        ],
        "°C",
    )
    ax[2].set_xlabel("time (s)")
    fig.suptitle("Two-phase chip cooler: pump duty 0.7 → 0.25 at 120 s (750 W chip)")
    return fig


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fn in (("battery", battery), ("heatpump", heatpump), ("chip", chip)):
        fig = fn()
        fig.tight_layout()
        path = os.path.join(OUT, "plant_step_%s.png" % name)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        print(path)


if __name__ == "__main__":
    main()
