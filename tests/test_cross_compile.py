"""The C control core compiles for the board targets with -Wall -Wextra -Werror (freestanding,
no C library): Cortex-M0+ (RP2040), Cortex-M33 (RP2350), RV32IMC (ESP32-C3); sizes reported.

Needs the Debian packages gcc-arm-none-eabi and gcc-riscv64-unknown-elf. Set
THERMOPILOT_SKIP_CROSS=1 to skip on a machine without them (CI must not set it).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "firmware" / "native" / "cross_check.sh"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if os.environ.get("THERMOPILOT_SKIP_CROSS") == "1":
        pytest.skip("THERMOPILOT_SKIP_CROSS=1")
    out = tmp_path_factory.mktemp("cross")
    proc = subprocess.run(
        ["sh", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TP_CROSS_OUT=str(out)),
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("target", ["rp2040", "rp2350", "esp32c3"])
def test_target_builds_and_reports_size(report, target):
    m = re.search(r"^%s\s+text=(\d+) data=(\d+) bss=(\d+) workspace=(\d+)$" % target, report, re.M)
    assert m, report
    text, data, bss, workspace = (int(g) for g in m.groups())
    assert 1000 < text < 32768  # PID + MPC code fits a small flash budget
    assert data == 0 and bss == 0  # no hidden state: every struct is the caller's
    # one PID + one MPC workspace at the #define limits (nx 8, nu 3, ny 8, N 30): the
    # interior-point solver keeps slacks, multipliers and a Riccati factor per stage
    assert 0 < workspace < 40960


def test_script_treats_warnings_as_errors():
    assert "-Wall -Wextra -Werror" in SCRIPT.read_text()
