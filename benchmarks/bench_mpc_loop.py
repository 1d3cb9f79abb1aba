"""The board's mpc controller per MPC step on the MicroPython VM, for the blobs of the PID-vs-MPC
comparison (docs/controllers.md): the MicroPython MPC and the C core (tpcore), each step of
the loop as the board runs it (estimator, target, solve, output), with the ESP32 and RP2040
estimates from the VM-to-board factors of docs/benchmarks.md.

Each case designs a blob from an identified model (benchmarks/models/*_arx.json, from
benchmarks/mpc_models.py) with the given blocks
and ADMM budget, runs 400 MPC steps of the mpc controller on the VM in closed loop with the
model itself as the plant (plus measurement noise and disturbance steps, so the constraints
and the warm start see what a run sees), collects garbage between ticks (the application
does) and times the ticks that solve. Best of 3 runs per case; median, p99, max.

Run: ``python benchmarks/bench_mpc_loop.py`` (a few minutes).
"""

import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

from thermopilot.hil import resources
from thermopilot.host.control import design

ROOT = pathlib.Path(__file__).resolve().parents[1]
MICROPYTHON = pathlib.Path(sys.executable).parent / "micropython"
X64 = ROOT / "firmware" / "tpcore_mpy" / "tpcore-x64.mpy"
# VM -> board: pystone ratios (docs/benchmarks.md, "MicroPython MPC on the unix VM")
FACTORS = {"ESP32 240 MHz": 161.0, "RP2040 133 MHz": 291.0}

DRIVER = r"""
import sys, json, gc, time
sys.path.insert(0, sys.argv[2])
from array import array
from tpfw import board as boardmod, loops, params as pm, supervisor, app, core
case = json.load(open(sys.argv[1]))
d = case["dir"]
b = boardmod.check(case["board"])
rows, rules, owner = app.param_table(b)
p = pm.Params(rows, rules, d)
sup = supervisor.Supervisor(b["sensors"], b["actuators"])
lp = b["loops"][0]
c = loops.controller_class("mpc")(0, lp, b, p)
c.start()
m = case["model"]
A, B, E = m["A"], m["B"], m["E"]
nx = len(A)
xs = [0.0] * nx
x = array("f", [0.0] * 16)
out = array("f", [0.0] * 8)
out[0] = m["u0"]
c.hold(out)
seed = 1
times = []
alloc = []
iters = []
dist = m["d0"]
k = 0
sp = m["y0"]
while len(times) < case["steps"]:
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    r = seed / 2147483648.0
    if k % 400 == 0:
        dist = m["d0"] + m["d_amp"] * (2.0 * r - 1.0)
    if k % 600 == 0:
        sp = m["y0"] + 2.0 * (2.0 * ((seed >> 7) / 16777216.0) - 1.0)
    p.values[p.index[lp["name"] + ".sp"]] = sp
    y = m["y0"] + sum(m["C"][0][i] * xs[i] for i in range(nx))
    x[0] = y + 0.05 * (2.0 * r - 1.0)
    x[1] = dist
    gc.collect()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us()
    c.sense(x, 3, 0.1, k * 100)
    c.step(x, 3, 0.1, out, sup, k * 100)
    us = time.ticks_diff(time.ticks_us(), t0)
    a1 = gc.mem_alloc()
    if c.ctl is None:
        raise SystemExit("fell back: %d" % c.why)
    if c.count == c.every - 1:
        times.append(us)
        alloc.append(a1 - a0)
        iters.append(int(c.fields[3]))
    u = out[0] - m["u0"]
    if k % c.every == c.every - 1:
        xs = [sum(A[i][j] * xs[j] for j in range(nx)) + B[i][0] * u
              + E[i][0] * (dist - m["d0"]) for i in range(nx)]
    k += 1
print(json.dumps({"us": times, "alloc": alloc, "native": core.NATIVE,
                  "kind": type(c.ctl).__name__, "iters": iters}))
"""


def board_for(model):
    b = resources.load_board(resources.board_path(model["board"]))
    b["hal"] = "hil"
    return b


def run_case(name, model_path, native, blocks, fb_iter, steps=400):
    model = design.load_model(model_path)
    data = design.design_from_model(
        model, board=board_for(model), r_du=3.0, blocks=blocks, fallback_iter=fb_iter
    )
    raw = json.loads(pathlib.Path(model_path).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        fw = tmp / "lib"
        (fw / "tpfw").mkdir(parents=True)
        for p in (ROOT / "firmware" / "tpfw").glob("*.py"):
            shutil.copy(p, fw / "tpfw" / p.name)
        if native:
            shutil.copy(X64, fw / "tpfw" / "tpcore.mpy")
            (fw / "tpfw" / "tpcore.sha256").write_text(resources.native_stamp(X64))
        (tmp / "slot0.bin").write_bytes(data)
        case = {
            "dir": str(tmp) + "/",
            "board": board_for(model),
            "steps": steps,
            "model": {
                "A": raw["A"],
                "B": raw["B"],
                "E": raw["E"],
                "C": raw["C"],
                "u0": raw["u0"][0],
                "y0": raw["y0"][0],
                "d0": raw["d0"][0],
                "d_amp": 0.5 * abs(raw["d0"][0]),
            },
        }
        (tmp / "case.json").write_text(json.dumps(case))
        (tmp / "drv.py").write_text(DRIVER)
        runs = []
        for _ in range(3):
            proc = subprocess.run(
                [str(MICROPYTHON), "-X", "heapsize=" + ("512K" if native else "256K"),
                 str(tmp / "drv.py"),
                 str(tmp / "case.json"), str(fw)],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if proc.returncode:
                raise RuntimeError(proc.stderr + proc.stdout)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: statistics.median(r["us"]))
    us = sorted(best["us"])
    # the steps that spent the whole ADMM budget (a setpoint or load step, a cold start):
    # what the tick must have room for; the others stopped early on the tolerance
    top = max(best["iters"])
    full = sorted(u for u, i in zip(best["us"], best["iters"], strict=True) if i == top)
    return {
        "case": name,
        "solver": best["kind"],
        "blocks": blocks,
        "fb_iter": fb_iter,
        "nx": model["nx"],
        "nd": model["nd"],
        "horizon": 20,
        "median_ms": statistics.median(us) / 1e3,
        "full_ms": statistics.median(full) / 1e3,
        "full_share": len(full) / len(us),
        "iters_median": statistics.median(best["iters"]),
        "iters_max": top,
        "p99_ms": us[int(0.99 * (len(us) - 1))] / 1e3,
        "max_ms": us[-1] / 1e3,
        "alloc_median": statistics.median(best["alloc"]),
        "alloc_max": max(best["alloc"]),
        "blob_bytes": len(data),
    }


def main():
    rows = []
    models = {
        "chip (nx=1, nd=1)": ROOT / "benchmarks" / "models" / "chip_case_arx.json",
        "battery (nx=4, nd=1)": ROOT / "benchmarks" / "models" / "battery_cool_arx.json",
    }
    for name, path in models.items():
        for native, blocks, it in ((False, 1, 10), (False, 3, 10), (False, 3, 30), (True, 1, 10)):
            rows.append(run_case(name, path, native, blocks, it))
            print(json.dumps(rows[-1]), file=sys.stderr)
    head = (
        "| model | solver | blocks x ADMM iter | blob B | iterations median / max "
        "| ms/step median | ms/step at the full budget (share of steps) | p99 | max "
        "| bytes allocated per step (median / max) | "
        + " | ".join("%s est. ms, full budget" % k for k in FACTORS)
        + " |"
    )
    print(head)
    print("|" + "---|" * (10 + len(FACTORS)))
    for r in rows:
        est = (
            " | ".join("%.0f" % (r["full_ms"] * f) for f in FACTORS.values())
            if r["solver"] != "_Native"
            else " | ".join("n/a (C core)" for _ in FACTORS)
        )
        print(
            "| %s | %s | %s | %d | %g / %d | %.3f | %.3f (%.0f %%) | %.3f | %.3f | %d / %d | %s |"
            % (
                r["case"],
                "C core" if r["solver"] == "_Native" else "MicroPython",
                "%d x %d" % (r["blocks"], r["fb_iter"]) if r["solver"] != "_Native" else "-",
                r["blob_bytes"],
                r["iters_median"],
                r["iters_max"],
                r["median_ms"],
                r["full_ms"],
                100 * r["full_share"],
                r["p99_ms"],
                r["max_ms"],
                r["alloc_median"],
                r["alloc_max"],
                est,
            )
        )


if __name__ == "__main__":
    main()
