"""The deployed image of a board on the MicroPython VM, without the pty: the same files
`thermopilot deploy` copies (firmware compiled to .mpy by mpy-cross, the C core with its stamp,
board.json), and drivers that boot the board application in it with the board's heap."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from thermopilot.hil import resources

MICROPYTHON = Path(sys.executable).parent / "micropython"


def board_fs(tmp_path, board):
    """A board filesystem in tmp_path/fs for board definition ``board`` (name or path);
    returns its path."""
    fs = tmp_path / "fs"
    (fs / "lib" / "tpfw").mkdir(parents=True, exist_ok=True)
    for local, remote in resources.firmware_files("x64"):
        if remote.startswith("lib/"):
            shutil.copy(local, fs / remote)
    b = resources.load_board(board)
    module, _ = resources.native_module(dict(b, mpy_arch="x64"))
    if module is not None:
        shutil.copy(module, fs / resources.NATIVE_REMOTE)
        (fs / (resources.NATIVE_REMOTE[:-4] + ".sha256")).write_text(
            resources.native_stamp(module)
        )
    shutil.copy(resources.board_path(board), fs / "board.json")
    return fs


# Boot the application as main.py does (the checker is freed after boot), then report the
# free heap and what one tick allocates; a driver given after it may use `a` (the App).
BOOT = r"""
import gc, json, sys
sys.path.insert(0, "lib")
from tpfw import app, board
class Sink:
    def write(self, b):
        return len(b)
b = board.load("board.json")
del sys.modules["tpfw.board"]
delattr(sys.modules["tpfw"], "board")
del board
gc.collect()
a = app.App(b, None, Sink())
a.hil = True
gc.collect()
FREE_AFTER_BOOT = gc.mem_free()
USED_AFTER_BOOT = gc.mem_alloc()
"""


def run_driver(tmp_path, board, driver, payload=None, heap=None, timeout=300):
    """Run BOOT + ``driver`` on the VM in the deployed image of ``board`` with its heap
    (default: the board definition's); the JSON the driver prints last is returned."""
    fs = board_fs(tmp_path, board)
    (fs / "payload.json").write_text(json.dumps(payload))
    # compiled like the firmware: compiling it on the VM would take the board's heap
    src = tmp_path / "driver.py"
    src.write_text(BOOT + driver)
    shutil.copy(resources.compile_mpy([src], "x64")[0], fs / "driver.mpy")
    heap = heap or resources.load_board(board).get("heap", "160K")
    proc = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=" + heap, "-c", "import driver"],
        cwd=fs,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# A driver's first lines: the payload (one raw reading per sensor channel) into the HIL sensor
# buffer, every channel valid
LOAD_PAYLOAD = r"""
hal = a.hal
raw = json.load(open("payload.json"))
hal.valid = (1 << len(raw)) - 1
for i, r in enumerate(raw):
    hal.raw[i] = r
"""

HEAP_DRIVER = (
    LOAD_PAYLOAD
    + r"""
per_s = int(a.board["tick_hz"] + 0.5) or 1
for k in range(60 * per_s):  # a minute of ticks: filters warm, first-call allocations done
    a.tick(k * a.period_ms)
N = 4 * per_s
used = []
for k in range(60 * per_s, 60 * per_s + N):  # one tick at a time: each fits the free heap
    gc.collect()
    gc.disable()
    m0 = gc.mem_alloc()
    a.tick(k * a.period_ms)
    used.append(gc.mem_alloc() - m0)
    gc.enable()
gc.collect()
print(json.dumps({"free_after_boot": FREE_AFTER_BOOT, "used_after_boot": USED_AFTER_BOOT,
                  "bytes_per_tick": sum(used) / N, "bytes_per_tick_max": max(used),
                  "tick_hz": a.board["tick_hz"], "free_running": gc.mem_free(),
                  "faults": a.sup.faults}))
"""
)
