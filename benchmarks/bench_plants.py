"""Benchmark of the plant models (not a test): cost per 0.1 s tick, cost of the plant part of a
one-hour HIL scenario as a whole process, and the property tables against CoolProp.

    .venv/bin/python benchmarks/bench_plants.py [--baseline REF] [--skip-props]

With ``--baseline REF`` (a git revision, e.g. ``main``) the plants of that revision are
extracted into a temporary package and run through the same workloads in the same run, so the
"before" and "after" columns are measured side by side on the same machine. Prints Markdown
tables for docs/benchmarks.md (section "## Plants").

Workloads (identical for both versions, 0.1 s ticks):

* battery_loop: pump duty alternating 0.3/0.7 every 60 s at 150 A;
* heatpump_r290: valve alternating 150/170 steps every 60 s at 50 rev/s;
* chip_cooler: chip power alternating 300/700 W every 60 s at the default pump duty.

"One simulated hour" runs a fresh Python process that imports ``make_plant``, builds the plant
and steps it 36 000 times: what a one-hour HIL scenario pays for its plant, start-up included.
"Cold" starts with an empty property-table cache, "warm" with the cache the cold run left.
"""

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import time

DT_S = 0.1
ROOT = pathlib.Path(__file__).resolve().parent.parent

WORKLOADS = {
    "battery_loop": "lambda k: {'pump_duty': 0.3 + 0.4 * ((k // 600) % 2), 'current_a': 150.0}",
    "heatpump_r290": "lambda k: {'valve_steps_cmd': 150 + 20 * ((k // 600) % 2)}",
    "chip_cooler": "lambda k: {'chip_power_w': 300.0 + 400.0 * ((k // 600) % 2)}",
}

# Runs in a fresh process: prints JSON with the import, build and stepping times.
_PROCESS = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    sys.path.insert(0, {path!r})
    from {package} import make_plant
    t1 = time.perf_counter()
    plant = make_plant({name!r})
    t2 = time.perf_counter()
    inputs = {workload}
    for k in range({n}):
        plant.step({dt}, inputs(k))
    t3 = time.perf_counter()
    print(json.dumps({{"import_s": t1 - t0, "build_s": t2 - t1, "step_s": t3 - t2,
                       "coolprop_imported": "CoolProp" in sys.modules}}))
    """
)


def extract_baseline(ref, dest):
    """Write the plants package of git revision ``ref`` to ``dest/baseline_plants``."""
    pkg = pathlib.Path(dest) / "baseline_plants"
    pkg.mkdir()
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", ref, "hil/plants/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in names:
        if path.endswith(".py"):
            src = subprocess.run(
                ["git", "show", "%s:%s" % (ref, path)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            (pkg / pathlib.Path(path).name).write_text(src)
    return str(dest), "baseline_plants"


def step_cost_us(make_plant, name, sim_s=600.0):
    """Wall time per 0.1 s tick (us) over ``sim_s`` simulated seconds, plant already built."""
    plant = make_plant(name)
    inputs = eval(WORKLOADS[name])  # noqa: S307 - our own literal workloads
    n = int(sim_s / DT_S)
    t0 = time.perf_counter()
    for k in range(n):
        plant.step(DT_S, inputs(k))
    return (time.perf_counter() - t0) / n * 1e6


def one_hour_process(path, package, name, cache_dir):
    code = _PROCESS.format(
        path=path, package=package, name=name, workload=WORKLOADS[name], n=36000, dt=DT_S
    )
    env = dict(os.environ, THERMOPILOT_CACHE_DIR=cache_dir)
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    wall = time.perf_counter() - t0
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def plants_section(baseline):
    from thermopilot.hil.plants import make_plant

    versions = [("this branch", str(ROOT / "benchmarks"), "thermopilot.hil.plants", make_plant)]
    tmp = tempfile.TemporaryDirectory()
    if baseline:
        path, package = extract_baseline(baseline, tmp.name)
        sys.path.insert(0, path)
        base = __import__(package)
        versions.insert(0, ("baseline %s" % baseline, path, package, base.make_plant))
    print("### Cost per 0.1 s tick (600 s simulated, plant built, one core)")
    print()
    print("| plant | " + " | ".join("%s (us/tick)" % v[0] for v in versions) + " |")
    print("| --- |" + " ---: |" * len(versions))
    for name in WORKLOADS:
        cells = ["%.0f" % step_cost_us(v[3], name) for v in versions]
        print("| %s | %s |" % (name, " | ".join(cells)))
    print()
    print("### Plant part of a one-hour scenario, as a whole process (36 000 ticks of 0.1 s)")
    print()
    print(
        "| plant | version | cache | import make_plant (s) | CoolProp imported | build (s) "
        "| 36 000 steps (s) | whole process (s) |"
    )
    print("| --- | --- | --- | ---: | --- | ---: | ---: | ---: |")
    for name in WORKLOADS:
        for label, path, package, _ in versions:
            cache = tempfile.mkdtemp(dir=tmp.name)
            for state in ("cold", "warm"):
                r = one_hour_process(path, package, name, cache)
                print(
                    "| %s | %s | %s | %.2f | %s | %.2f | %.1f | %.1f |"
                    % (
                        name, label, state, r["import_s"],
                        "yes" if r["coolprop_imported"] else "no", r["build_s"], r["step_s"],
                        r["process_s"],
                    )
                )  # fmt: skip
    tmp.cleanup()


def props_section():
    import CoolProp
    import CoolProp.CoolProp as CP
    import numpy as np

    from thermopilot.hil.plants.props import PROPANE_RANGE_PA, FluidTable

    def per_call_us(fn, n=20000):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6

    t0 = time.perf_counter()
    tab = FluidTable("Propane", *PROPANE_RANGE_PA)
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
    print(
        "Propane table build: %.2f s (HEOS, CoolProp already imported; once per machine "
        "thanks to the disk cache)." % build_s
    )
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="git revision whose plants to run side by side")
    ap.add_argument("--skip-props", action="store_true", help="skip the property-table part")
    args = ap.parse_args()
    plants_section(args.baseline)
    if not args.skip_props:
        props_section()


if __name__ == "__main__":
    main()
