"""R290 heat-pump controller: the figures docs/controllers.md reports, measured in one run.

1. The bundled heat-pump scenarios (hil/scenarios/heatpump_*.toml) run by the HIL rig on the
   virtual board against the real plant, with the realistic suction probe (8 s lag, 0.15 K
   noise): superheat spread (sigma) and valve reversals at steady state, minimum superheat,
   settling after each setpoint step, adaptive-setpoint convergence, the start-up purge.
2. Side by side on the same plant, the same probe and the same compressor step 50 -> 35 rev/s
   (issue 9's case): the board's hp controller against the previous build's set-up (the rig
   computed superheat and fed it to a generic PID on the valve, boards/virtual_hp.json before
   the hp controller).
3. Heap of the heat-pump board beside the PID board (both in their 160 KB heap, after 60 s of
   HIL).

Run: .venv/bin/python benchmarks/bench_hp.py   (about 5 minutes)
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hp_rig  # noqa: E402  (the tests' closed loop)
import numpy as np  # noqa: E402

from thermopilot.hil import resources, rig  # noqa: E402
from thermopilot.hil import scenario as scenario_mod  # noqa: E402
from thermopilot.hil.criteria import Reversals  # noqa: E402
from thermopilot.hil.plants import make_plant  # noqa: E402
from thermopilot.hil.sensors import Sensor  # noqa: E402
from thermopilot.hil.vboard import VirtualBoard  # noqa: E402
from thermopilot.protocol.link import Session  # noqa: E402


class Run:
    """A rig result, read as (t, value) series of its signals."""

    def __init__(self, res):
        self.res = res
        self.passed = res.passed
        self.verdicts = res.verdicts
        self.t = res.rows.t

    def series(self, signal, a, b):
        x = self.res.rows[signal]
        m = (self.t >= a - 1e-9) & (self.t <= b + 1e-9)
        return list(zip(self.t[m].tolist(), x[m].tolist(), strict=True))


def scenario(name, seed=1):
    sc = scenario_mod.load(resources.scenarios_dir() / (name + ".toml"))
    with VirtualBoard(board="virtual_hp") as vb, Session(vb.port) as s:
        s.hello()
        return Run(rig.run(sc, session=s, seed=seed))


def values(run, signal, a, b):
    return [v for _, v in run.series(signal, a, b)]


def settle(run, t0, sp, band, t1):
    last = t0
    for t, v in run.series("plant.superheat_k", t0, t1):
        if abs(v - sp) > band:
            last = t
    return last - t0


def steady(run, a, b):
    sd = statistics.pstdev(values(run, "plant.superheat_k", a, b))
    rev = Reversals.count(values(run, "out.0", a, b), 0.0) / (b - a)
    return sd, rev


def scenario_figures():
    out = {}
    r = scenario("heatpump_setpoint_steps")
    out["setpoint_steps"] = {
        "passed": r.passed,
        "steady": [steady(r, a, b) for a, b in ((150, 250), (500, 600), (700, 800))],
        "min_sh": min(values(r, "plant.superheat_k", 15, 800)),
        "settle_1k": [
            settle(r, t, sp, 1.0, e) for t, sp, e in ((250, 9, 400), (400, 5, 600), (600, 7, 800))
        ],  # fmt: skip
        "settle_05k": [
            settle(r, t, sp, 0.5, e) for t, sp, e in ((250, 9, 400), (400, 5, 600), (600, 7, 800))
        ],  # fmt: skip
    }
    r = scenario("heatpump_compressor_steps")
    out["compressor_steps"] = {
        "passed": r.passed,
        "speeds": [values(r, "out.1", t, t + 0.1)[0] for t in (349.0, 549.0, 899.0)],
        "steady": [steady(r, a, b) for a, b in ((250, 350), (550, 650), (900, 1000))],
        "min_sh": min(values(r, "plant.superheat_k", 15, 1000)),
        "max_liquid": max(values(r, "plant.liquid_at_compressor", 15, 1000)),
    }
    r = scenario("heatpump_adaptive")
    sp = r.series("loop.hp.setpoint", 0, 900)
    floor = min(v for _, v in sp)
    out["adaptive"] = {
        "passed": r.passed,
        "floor": floor,
        "converged_s": next(t for t, v in sp if v <= floor + 1e-6),
        "steady": steady(r, 400, 900),
        "min_sh": min(values(r, "plant.superheat_k", 15, 900)),
    }
    r = scenario("heatpump_startup")
    t = r.t
    hz = r.res.rows["plant.compressor_hz"]
    liq = r.res.rows["plant.liquid_at_compressor"]
    flow = r.res.rows["plant.mass_flow_kg_s"]
    wet = np.nonzero((hz > 0) & (liq > 0))[0]
    sh = r.series("plant.superheat_k", 12, 600)
    out["startup"] = {
        "passed": r.passed,
        "start_s": float(t[np.nonzero(hz > 0)[0][0]]),
        "wet_s": (float(t[wet[0]]), float(t[wet[-1]])) if len(wet) else None,
        "liquid_g": float(1000 * np.sum(liq[wet] * flow[wet]) * 0.1),
        "max_sh": max(v for _, v in sh),
        "min_te_c": min(values(r, "plant.evap_sat_t_k", 12, 600)) - 273.15,
        "settled_s": max(t for t, v in sh if abs(v - 6.0) > 1.0),
    }
    for name in ("heatpump_lop", "heatpump_mop", "heatpump_hitc", "heatpump_charge_loss",
                 "heatpump_sensor_fault", "heatpump_probe_drift"):  # fmt: skip
        r = scenario(name)
        out[name[9:]] = {"passed": r.passed, "verdicts": [(v["label"], v["detail"])
                                                         for v in r.verdicts]}  # fmt: skip
    return out


def compressor_step(board_path, hp):
    """Compressor 50 -> 35 rev/s at 300 s, brine 10 degC, water 30 degC, the realistic probe;
    `hp`: the hp board (raw channels, it drives both actuators, hz_fix sets its speed) or the
    previous set-up (the rig feeds the probe's superheat to a PID on the valve fraction)."""
    with VirtualBoard(board=str(board_path)) as vb, Session(vb.port) as s:
        s.hello()
        if hp:
            loop = hp_rig.Loop(s, params={"hp.hz_fix": 50.0, "hp.hz_dn": 50.0},
                               sensors=hp_rig.realistic_sensors(seed=3))  # fmt: skip
            loop.run(300)
            s.param_set("hp.hz_fix", 35.0)
            loop.run(300)
            rows = [(r["t_s"], r["plant"], r["out"][0]) for r in loop.rows]
        else:
            s.request("PARAM_DEFAULTS", flags=0)
            s.param_set("sh.sp", 6.0)  # the hp board's default setpoint: like with like
            s.command("hil_start")
            s.fault_reset()
            plant = make_plant("heatpump_r290")
            probe = Sensor.ntc(noise_k=0.15, quant_k=0.01, lag_s=8.0, seed=3)
            po = plant.outputs()
            rows = []
            for k in range(6000):
                t = k * 0.1
                # the rig computed superheat from the plant and the probe: the probe's lag and
                # noise act on the pipe temperature, the saturation temperature is exact
                sh = probe.read(po["suction_pipe_k"], t) - po["evap_sat_t_k"]
                ans = s.request("HIL_SENSORS", expect=("HIL_ACTUATORS",), t_ms=k * 100,
                                valid=1, values=[sh] + [0.0] * 15)  # fmt: skip
                valve = ans.outputs[0] * 480.0
                rows.append((t, po, valve))
                po = plant.step(0.1, {"valve_steps_cmd": valve,
                                      "compressor_hz": 50.0 if t < 300 else 35.0})  # fmt: skip
    after = [(t, p, v) for t, p, v in rows if t >= 300]
    steady_rows = [(t, p, v) for t, p, v in rows if 200 <= t < 300]
    wet = [t for t, p, v in after if p["liquid_at_compressor"] > 0]
    return {
        "min_sh": min(p["superheat_k"] for _, p, _ in after),
        "wet_s": len(wet) * 0.1,
        "max_liquid": max(p["liquid_at_compressor"] for _, p, _ in after),
        "sigma_before": statistics.pstdev([p["superheat_k"] for _, p, _ in steady_rows]),
        # reversals of the valve itself (the plant's position, whole steps): what wears it
        "reversals_before": Reversals.count([p["valve_steps"] for _, p, _ in steady_rows], 0.0)
        / 100.0,
    }


def heap():
    lows = {}
    for name in ("virtual", "virtual_hp"):
        with VirtualBoard(board=name) as vb, Session(vb.port) as s:
            s.hello()
            if name == "virtual_hp":
                hp_rig.Loop(s, params={"hp.hz_fix": 50.0}).run(60)
            else:
                s.command("hil_start")
                for k in range(600):
                    s.request("HIL_SENSORS", expect=("HIL_ACTUATORS",), t_ms=k * 100, valid=1,
                              values=[0.4] + [0.0] * 15)  # fmt: skip
            st = s.heap_and_ticks()
            lows[name] = (st.heap_free, st.heap_min_free, st.heap_total)
    return lows


def main():
    figs = scenario_figures()
    print(json.dumps(figs, indent=1, default=float))
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "virtual_hp_pid.json"
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", "0d112de:boards/virtual_hp.json"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        b = json.loads(text)
        b["name"] = "virtual_hp_pid"
        old.write_text(json.dumps(b))
        new = compressor_step(ROOT / "boards" / "virtual_hp.json", True)
        prev = compressor_step(old, False)
    print("| compressor step 50 -> 35 rev/s, realistic probe | hp controller | previous set-up |")
    print("| --- | --- | --- |")
    print(
        "| minimum superheat after the step | %.2f K | %.2f K |" % (new["min_sh"], prev["min_sh"])
    )
    print(
        "| time with liquid at the compressor | %.1f s | %.1f s |" % (new["wet_s"], prev["wet_s"])
    )
    print("| largest liquid fraction | %.3f | %.3f |" % (new["max_liquid"], prev["max_liquid"]))
    print("| superheat sigma before the step | %.3f K | %.3f K |"
          % (new["sigma_before"], prev["sigma_before"]))  # fmt: skip
    print("| valve reversals before the step | %.3f /s | %.3f /s |"
          % (new["reversals_before"], prev["reversals_before"]))  # fmt: skip
    print("heap free now / low point / total:", heap())


if __name__ == "__main__":
    main()
