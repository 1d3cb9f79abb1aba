"""Firmware control tick on the real MicroPython VM: time and heap allocated per tick.

Runs the board application (firmware/tpfw/app.py) on the MicroPython unix port with the
virtual board's definition and heap, the firmware compiled by mpy-cross as deploy puts it on
a board, with the C core (the committed x64 ``tpcore`` native module, the virtual board's
default) and without it (the MicroPython fallback), one after the other in one run. The
driver writes the NTC's raw signal into the HIL sensor buffer (``hal.raw``, as a HIL frame
does) and calls ``tick()`` many times, reporting microseconds and bytes allocated per tick
(gc.mem_alloc() with the collector off), the free heap and the time of one full collection.

It also reports the lockstep HIL rate seen from the host over the pty (HIL_SENSORS /
HIL_ACTUATORS round trips per second with the C core). That rate is the board side and the
link only: no plant, no sensor models, no telemetry rows, no rig bookkeeping; a whole
``thermopilot hil run`` is slower (docs/benchmarks.md, HIL section). Last, the tick jitter of
ten simulated minutes in lockstep with each garbage collection policy (bench_hil.print_jitter).

Run: .venv/bin/python benchmarks/bench_firmware.py   (make bench-firmware)
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_hil  # noqa: E402 - the tick jitter in lockstep
import bench_natmod as bn  # noqa: E402 - the board file system and the raw NTC signal

MICROPYTHON = bn.MICROPYTHON

DRIVER = r"""
import gc, json, sys, time
from array import array
sys.path.insert(0, sys.argv[1])
from tpfw import app, board, core

class Sink:
    def write(self, b):
        return len(b)

raw = array('f', json.loads(sys.argv[3]))  # the NTC's raw signal at 305.00 ... 305.09 K
a = app.App(board.load(sys.argv[2]), None, Sink())
a.hil = True
a.hal.valid = 1
for k in range(50):  # warm up: first-call allocations are not per-tick costs
    a.hal.raw[0] = raw[k % 10]
    a.tick(k * 100)
N = 10  # allocation, collector off (the heap must hold N ticks of the fallback's garbage)
gc.collect()
gc.disable()
m0 = gc.mem_alloc()
for k in range(N):
    a.hal.raw[0] = raw[k % 10]
    a.tick(k * 100)
m1 = gc.mem_alloc()
gc.enable()
T = 5000  # time, collector on as on the board
gc.collect()
t0 = time.ticks_us()
for k in range(T):
    a.hal.raw[0] = raw[k % 10]
    a.tick(k * 100)
t1 = time.ticks_us()
for k in range(100):  # leave some garbage behind, then time one full collection
    a.hal.raw[0] = raw[k % 10]
    a.tick(k * 100)
c0 = time.ticks_us()
gc.collect()
c1 = time.ticks_us()
print(json.dumps({"us_per_tick": time.ticks_diff(t1, t0) / T, "bytes_per_tick": (m1 - m0) / N,
                  "native": core.NATIVE, "reason": core.NATIVE_REASON,
                  "gc_us": time.ticks_diff(c1, c0), "free": gc.mem_free(),
                  "faults": a.sup.faults}))
"""


def tick_cost(tmp, native, raw):
    lib = bn.board_fs(tmp, native)
    drv = Path(tmp) / "bench_firmware_driver.py"
    drv.write_text(DRIVER)
    res = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=" + bn.board_heap(), str(drv), str(lib),
         str(bn.BOARD), json.dumps(raw)],
        capture_output=True, text=True, cwd=tmp, timeout=300,
    )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit("tick benchmark failed: " + res.stdout + res.stderr)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out["native"] != native:
        raise SystemExit("expected native=%s, the board ran %s" % (native, out["reason"]))
    if out["faults"]:
        raise SystemExit("the loop faulted during the benchmark: %r" % out["faults"])
    return out


def hil_rate(raw, steps=2000):
    from thermopilot.hil.rig import N_SENSORS
    from thermopilot.hil.vboard import VirtualBoard

    with VirtualBoard() as vb, vb.session() as s:  # the path `hil run` takes
        s.hello()
        s.command("hil_start")
        values = [raw[0]] + [0.0] * (N_SENSORS - 1)
        t0 = time.perf_counter()
        for k in range(steps):
            s.request("HIL_SENSORS", expect=("HIL_ACTUATORS",), t_ms=k * 100, valid=1,
                      values=values)  # fmt: skip
        wall = time.perf_counter() - t0
    return steps / wall


def main():
    if shutil.which(str(MICROPYTHON)) is None:
        raise SystemExit("micropython not found next to %s" % sys.executable)
    raw = bn.ntc_raw()
    with tempfile.TemporaryDirectory() as tmp:
        ticks = {native: tick_cost(tmp, native, raw) for native in (True, False)}
    rate = hil_rate(raw)
    tick_hz = json.loads(bn.BOARD.read_text())["tick_hz"]
    c, py = ticks[True], ticks[False]
    print("Virtual board definition, VM heap %s, firmware as deployed (.mpy)." % bn.board_heap())
    print()
    print("| measurement | C core (tpcore.mpy) | MicroPython fallback |")
    print("| --- | --- | --- |")
    print("| control tick (App.tick, PID loop) | %.1f µs | %.1f µs |"
          % (c["us_per_tick"], py["us_per_tick"]))  # fmt: skip
    print("| heap allocated per tick | %.0f bytes | %.0f bytes |"
          % (c["bytes_per_tick"], py["bytes_per_tick"]))  # fmt: skip
    print("| free heap with the application running | %d bytes | %d bytes |"
          % (c["free"], py["free"]))  # fmt: skip
    print("| one full garbage collection | %d µs | %d µs |" % (c["gc_us"], py["gc_us"]))
    print()
    print("| lockstep HIL (C core) | value |")
    print("| --- | --- |")
    print("| HIL_SENSORS → HIL_ACTUATORS round trips per second (host ↔ pty ↔ VM) | %.0f |" % rate)
    print("| simulated time per wall second at %g Hz ticks (board and link only) | %.0f× |"
          % (tick_hz, rate / tick_hz))  # fmt: skip
    print()
    bench_hil.print_jitter()


if __name__ == "__main__":
    main()
