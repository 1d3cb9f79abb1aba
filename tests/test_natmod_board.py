"""The C core module on the virtual board: deployed by default (IDENTITY feature c_core),
left out with --no-native, refused without harm when it is of the wrong architecture or cut
short; the HIL scenarios pass with and without it, with the same plant trajectory."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from thermopilot.hil import resources
from thermopilot.hil.vboard import VirtualBoard

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]
ROOT = Path(__file__).resolve().parent.parent
X64 = ROOT / "firmware" / "tpcore_mpy" / "tpcore-x64.mpy"


def run_cli(*args, timeout=120):
    return subprocess.run(
        THERMOPILOT + list(args), capture_output=True, text=True, timeout=timeout
    )


def features(port):
    res = run_cli("info", "--port", port)
    assert res.returncode == 0, res.stdout + res.stderr
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("features")][0]
    return line.split(None, 1)[1].split(", ")


def test_virtual_board_runs_the_module_by_default_and_deploy_can_leave_it_out(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    with VirtualBoard(workdir=str(fs)) as vb:
        assert "c_core" in features(vb.port)
        assert (fs / "lib" / "tpfw" / "tpcore.mpy").read_bytes() == X64.read_bytes()
        assert (fs / "lib" / "tpfw" / "tpcore.sha256").read_text() == resources.native_stamp(X64)
        # deploy without the module: it is removed from the board, the board runs MicroPython
        res = run_cli("deploy", "--board", "virtual", "--port", vb.port, "--no-native")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "C core: not copied (--no-native)" in res.stdout
        assert not (fs / "lib" / "tpfw" / "tpcore.mpy").exists()
        assert not (fs / "lib" / "tpfw" / "tpcore.sha256").exists()
        vb.run_app()  # what a reset does on a real board
        assert "c_core" not in features(vb.port)
        # and back
        res = run_cli("deploy", "--board", "virtual", "--port", vb.port)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "tpcore-x64.mpy -> :lib/tpfw/tpcore.mpy" in res.stdout
        vb.run_app()
        assert "c_core" in features(vb.port)


def test_no_native_virtual_board_has_no_c_core():
    with VirtualBoard(native=False) as vb:
        assert "c_core" not in features(vb.port)
        assert "hil" in features(vb.port)


def test_module_of_another_architecture_boots_the_fallback(tmp_path):
    # a board definition for an RP2040 wired to the HIL rig: deploy copies the armv6m module,
    # which the x64 VM cannot load
    board = json.loads((resources.boards_dir() / "virtual.json").read_text())
    board.update(name="pico_hil", mpy_arch="armv6m")
    path = tmp_path / "pico_hil.json"
    path.write_text(json.dumps(board))
    fs = tmp_path / "fs"
    fs.mkdir()
    with VirtualBoard(board=str(path), workdir=str(fs)) as vb:
        assert (fs / "lib" / "tpfw" / "tpcore.mpy").read_bytes()[2] >> 2 == 4  # armv6m
        assert "c_core" not in features(vb.port)
        res = run_cli("monitor", "--port", vb.port, "--duration", "1")
        assert res.returncode == 0, res.stdout + res.stderr


def test_module_cut_short_by_an_interrupted_copy_boots_the_fallback(tmp_path):
    # MicroPython's .mpy loader never returns from a truncated native module; the stamp
    # written by deploy keeps it from being imported
    fs = tmp_path / "fs"
    fs.mkdir()
    vb = VirtualBoard(workdir=str(fs))
    try:
        vb.start(run=False)  # deployed, application not started yet
        module = fs / "lib" / "tpfw" / "tpcore.mpy"
        module.write_bytes(module.read_bytes()[:3000])
        vb.run_app()
        assert "c_core" not in features(vb.port)
    finally:
        vb.stop()


def test_deploy_says_which_module_it_copies():
    module, why = resources.native_module(resources.load_board("esp32_devkitc"))
    assert module is None and why.startswith("no tpcore module built for xtensawin")
    module, _ = resources.native_module(resources.load_board("rpi_pico"))
    assert module.name == "tpcore-armv6m.mpy"


def hil_run(name, out_dir, *extra):
    path = resources.scenarios_dir() / (name + ".toml")
    res = run_cli("hil", "run", str(path), "--report-dir", str(out_dir), *extra, timeout=300)
    return res, out_dir / name


@pytest.mark.parametrize(
    "name", ["heatpump_superheat", "chip_gpu_trace", "battery_sensor_fault", "battery_host_lost"]
)
def test_scenario_passes_on_the_micropython_fallback(name, tmp_path):
    # the same scenarios pass through the module in test_skeleton_hil.py (the default)
    res, _ = hil_run(name, tmp_path, "--no-native")
    assert res.returncode == 0, res.stdout + res.stderr


def test_demo_scenario_same_trajectory_with_and_without_the_module(tmp_path):
    runs = {}
    for flag in ("", "--no-native"):
        res, out = hil_run(
            "battery_hold", tmp_path / (flag or "native"), *([flag] if flag else [])
        )
        assert res.returncode == 0, res.stdout + res.stderr
        core = "MicroPython" if flag else "C (tpcore)"
        assert "control core on the board: %s\n" % core in res.stdout, res.stdout
        with open(out / "rows.csv") as f:
            rows = list(csv.DictReader(f))
        runs[flag] = {
            k: np.array([float(r[k]) for r in rows]) for k in ("out.0", "plant.coolant_out_k")
        }
    a, b = runs[""], runs["--no-native"]
    assert len(a["out.0"]) == len(b["out.0"]) > 1000
    # float32 (C) and double (MicroPython) PID on the same closed loop: the pump command and
    # the coolant temperature stay within a hair of each other over the whole run
    assert np.max(np.abs(a["out.0"] - b["out.0"])) < 0.01
    assert np.max(np.abs(a["plant.coolant_out_k"] - b["plant.coolant_out_k"])) < 0.01
