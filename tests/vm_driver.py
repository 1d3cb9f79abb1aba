"""Run a driver script on the real MicroPython VM with a JSON payload; shared by the tests that
hold the firmware's maths to the C core."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = Path(sys.executable).parent / "micropython"


#: the virtual board's heap (boards/virtual.json): an ESP32's 110 KB scaled by the measured
#: 64/32-bit footprint of the firmware
BOARD_HEAP = "160K"


def run_micropython(driver, tmp_path, payload, heap=BOARD_HEAP, timeout=300, firmware=None):
    """Run ``driver`` as ``micropython driver.py cases.json FIRMWARE`` (default: the repo's
    firmware/ folder); return the JSON it prints on its last line."""
    drv = tmp_path / "driver.py"
    drv.write_text(driver)
    data = tmp_path / "cases.json"
    data.write_text(json.dumps(payload))
    proc = subprocess.run(
        [
            str(MICROPYTHON),
            "-X",
            "heapsize=" + heap,
            str(drv),
            str(data),
            str(firmware or ROOT / "firmware"),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])
