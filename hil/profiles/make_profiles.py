"""Regenerate the profile CSVs in this folder (deterministic; run from anywhere).

    python -m thermopilot.hil.profiles.make_profiles

* ``drive_cycle.csv``: battery current and ambient temperature of a synthetic 30-minute drive
  (urban stop-and-go, suburban, motorway, urban again) at 1 s. Speed is a sequence of
  accelerate/cruise/brake segments; traction power comes from a road-load model
  ``P = (m a + m g c_rr + 0.5 rho c_d A v^2) v / eta`` with m = 2000 kg, c_rr = 0.010,
  c_d A = 0.65 m^2, rho = 1.2 kg/m^3, drivetrain efficiency 0.9 (regeneration at 0.6 of braking
  power), plus 1.5 kW auxiliaries, at a 400 V pack: ``I = P / 400``. These are stated
  assumptions of a mid-size EV, not a homologation cycle. Ambient warms from 30 to 32 degC.
* ``gpu_power.csv``: chip power at 0.1 s for 20 minutes: idle 90 W, steps to 450/700/750 W,
  bursts of 0.5-3 s up to 1000 W during training-like phases (seeded random, seed 7).
* ``heatpump_demand.csv``: heat-pump capacity demand at 10 s for 2 hours: a morning ramp, a
  setback, a noon dip and an evening peak, 1.5-4.5 kW, with source temperature 5-12 degC.
"""

import math
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _write(name, header, units, rows):
    path = os.path.join(HERE, name)
    with open(path, "w", newline="\n") as fh:
        fh.write("# " + ",".join(units) + "\n")
        fh.write(",".join(header) + "\n")
        for r in rows:
            fh.write(",".join("%.6g" % v for v in r) + "\n")
    return path


def drive_cycle():
    # (target speed km/h, accel time s, cruise s, brake time s, stop s)
    segs = [(30, 8, 20, 6, 10)] * 6 + [(50, 12, 60, 10, 15)] * 4
    segs += [(70, 15, 120, 12, 5), (120, 30, 600, 25, 10)]
    segs += [(30, 8, 20, 6, 10)] * 8
    v = [0.0]
    for kmh, ta, tc, tb, ts in segs:
        vt = kmh / 3.6
        v += [vt * (i + 1) / ta for i in range(ta)] + [vt] * tc
        v += [vt * (1 - (i + 1) / tb) for i in range(tb)] + [0.0] * ts
    v = np.array(v[:1800] + [0.0] * max(0, 1800 - len(v)))
    t = np.arange(v.size, dtype=float)
    a = np.gradient(v, t)
    m, g, crr, cda, rho, eta = 2000.0, 9.81, 0.010, 0.65, 1.2, 0.9
    f = m * a + m * g * crr * (v > 0) + 0.5 * rho * cda * v**2
    p_wheel = f * v
    p_batt = np.where(p_wheel > 0, p_wheel / eta, 0.6 * p_wheel) + 1500.0
    current = p_batt / 400.0
    ambient = 303.15 + 2.0 * t / t[-1]
    rows = np.column_stack([t, current, ambient, v])
    return _write(
        "drive_cycle.csv", ["t_s", "current_a", "ambient_k", "speed_m_s"],
        ["s", "A", "K", "m/s"], rows,
    )  # fmt: skip


def gpu_power():
    rng = np.random.default_rng(7)
    dt = 0.1
    t = np.arange(0, 1200 + dt / 2, dt)
    p = np.full(t.size, 90.0)
    for t0, t1, level in [(60, 240, 450), (300, 600, 700), (660, 1080, 750)]:
        p[(t >= t0) & (t < t1)] = level
    # Bursts inside the two high phases.
    for t0, t1 in [(300, 600), (660, 1080)]:
        ts = t0 + 5
        while ts < t1 - 5:
            dur = rng.uniform(0.5, 3.0)
            p[(t >= ts) & (t < ts + dur)] = rng.uniform(850, 1000)
            ts += dur + rng.uniform(5, 25)
    p += rng.normal(0, 5.0, t.size)
    return _write("gpu_power.csv", ["t_s", "chip_power_w"], ["s", "W"], np.column_stack([t, p]))


def heatpump_demand():
    t = np.arange(0, 7200 + 1, 10.0)
    h = t / 3600.0
    demand = (
        2500
        + 1500 * np.exp(-(((h - 0.4) / 0.25) ** 2))
        - 900 * np.exp(-(((h - 1.0) / 0.2) ** 2))
        + 2000 * np.exp(-(((h - 1.7) / 0.2) ** 2))
    )
    demand = np.clip(demand, 1500, 4500)
    source = 278.15 + 7.0 * np.sin(math.pi * h / 2.0) ** 2
    return _write(
        "heatpump_demand.csv", ["t_s", "capacity_w", "source_k"], ["s", "W", "K"],
        np.column_stack([t, demand, source]),
    )  # fmt: skip


if __name__ == "__main__":
    for fn in (drive_cycle, gpu_power, heatpump_demand):
        print(fn())
