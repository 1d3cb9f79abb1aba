"""Firmware control tick on the real MicroPython VM: time and heap allocated per tick.

Runs the board application (firmware/tpfw/app.py) on the MicroPython unix port with the
virtual board's definition, feeds its HIL sensor values directly and calls ``tick()`` many
times, reporting microseconds and bytes allocated per tick (gc.mem_alloc() with the collector
off). Also reports the lockstep HIL rate seen from the host over the pty (steps per second).

Run: .venv/bin/python benchmarks/bench_firmware.py
"""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
MICROPYTHON = pathlib.Path(sys.executable).parent / "micropython"

DRIVER = r"""
import gc, sys, time
sys.path.insert(0, "FIRMWARE")
from tpfw import app, board

class Sink:
    def write(self, b):
        return len(b)

a = app.App(board.load("BOARD"), None, Sink())
a.hil = True
a.hal.valid = 1
a.hal.raw[0] = 0.45  # an NTC divider near 33 degC
for k in range(50):  # warm up: first-call allocations are not per-tick costs
    a.tick(k * 100)
N = 40  # allocation, collector off (the heap must hold N ticks of garbage)
gc.collect()
gc.disable()
m0 = gc.mem_alloc()
for k in range(N):
    a.hal.raw[0] = 0.45 + (k % 10) * 0.0001
    a.tick(k * 100)
m1 = gc.mem_alloc()
gc.enable()
T = 5000  # time, collector on as on the board
t0 = time.ticks_us()
for k in range(T):
    a.hal.raw[0] = 0.45 + (k % 10) * 0.0001
    a.tick(k * 100)
t1 = time.ticks_us()
for k in range(100):  # leave some garbage behind, then time one full collection
    a.tick(k * 100)
c0 = time.ticks_us()
gc.collect()
c1 = time.ticks_us()
print('{"us_per_tick": %.2f, "bytes_per_tick": %.1f, "pid_path": "%s", "gc_us": %d, '
      '"free": %d}' % (time.ticks_diff(t1, t0) / T, (m1 - m0) / N,
                       "C module" if app.core.NATIVE else "MicroPython", time.ticks_diff(c1, c0),
                       gc.mem_free()))
"""


def tick_cost():
    with tempfile.TemporaryDirectory() as tmp:
        code = DRIVER.replace("FIRMWARE", str(ROOT / "firmware")).replace(
            "BOARD", str(ROOT / "boards" / "virtual.json")
        )
        path = pathlib.Path(tmp) / "bench_tick.py"
        path.write_text(code)
        res = subprocess.run(
            [str(MICROPYTHON), "-X", "heapsize=256K", str(path)],
            capture_output=True, text=True, cwd=tmp, timeout=300,
        )  # fmt: skip
        if res.returncode != 0:
            raise SystemExit("tick benchmark failed: " + res.stdout + res.stderr)
        return json.loads(res.stdout.strip().splitlines()[-1])


def hil_rate(steps=2000):
    from thermopilot.hil.rig import N_SENSORS
    from thermopilot.hil.vboard import VirtualBoard

    with VirtualBoard() as vb, vb.session() as s:  # the path `hil run` takes
        s.hello()
        values = [305.0] + [0.0] * (N_SENSORS - 1)
        t0 = time.perf_counter()
        for k in range(steps):
            s.request("HIL_SENSORS", expect=("HIL_ACTUATORS",), t_ms=k * 100, valid=1,
                      values=values)  # fmt: skip
        wall = time.perf_counter() - t0
    return steps / wall


def main():
    if shutil.which(str(MICROPYTHON)) is None:
        raise SystemExit("micropython not found next to %s" % sys.executable)
    tick = tick_cost()
    rate = hil_rate()
    tick_hz = 10.0
    print("| measurement | value |")
    print("| --- | --- |")
    print(
        "| control tick on the VM (%s PID) | %.1f µs |" % (tick["pid_path"], tick["us_per_tick"])
    )
    print("| heap allocated per tick | %.0f bytes |" % tick["bytes_per_tick"])
    print(
        "| free heap after a full collection, application running (256 KB heap: the "
        "sources are compiled on the VM) | %d bytes |" % tick["free"]
    )
    print("| one full garbage collection | %d µs |" % tick["gc_us"])
    print("| ticks between collections (free heap / bytes per tick) | %.0f |"
          % (tick["free"] / max(tick["bytes_per_tick"], 1)))  # fmt: skip
    print(
        "| lockstep HIL frames per second, link and board only (host ↔ pty ↔ VM, no plant) "
        "| %.0f |" % rate
    )
    print("| the same in simulated time at %g Hz ticks (no plant, sensors or rows: not a HIL "
          "run, see bench-hil) | %.0f× real time |" % (tick_hz, rate / tick_hz))  # fmt: skip


if __name__ == "__main__":
    main()
