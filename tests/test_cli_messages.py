"""Every user mistake the CLI meets ends in exit code 2, one line on stderr that names the
value and says what to do, and no traceback (issue: "Messages that do not help")."""

import os
import pty
import struct
import subprocess
import sys

import pytest

from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol import schema

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]


def run_cli(*args, timeout=120, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        THERMOPILOT + list(args), capture_output=True, text=True, timeout=timeout, env=e
    )


def user_error(res, *needles):
    """Exit 2, no traceback, one line on stderr containing every needle."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("thermopilot")]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def board():
    vb = VirtualBoard().start()
    yield vb
    vb.stop()


@pytest.fixture()
def silent_port():
    master, slave = pty.openpty()  # a port with nothing behind it
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


# -- parameters ----------------------------------------------------------------------------


def test_param_nan_and_inf_are_named(board):
    user_error(run_cli("param", "set", "cool.kp", "nan", "--port", board.port), "nan", "cool.kp")
    # a negative value is a value, not an option (no "unrecognized arguments", no "--")
    line = user_error(run_cli("param", "set", "cool.kp", "-inf", "--port", board.port))
    assert "-inf" in line and "not a finite number" in line
    user_error(run_cli("param", "set", "cool.kp", "abc", "--port", board.port), "'abc'")


def test_negative_values_reach_the_board(board):
    res = run_cli("param", "set", "cool.sp", "-5", "--port", board.port)
    assert res.returncode == 0, res.stderr
    assert "cool.sp = -5 °C" in res.stdout
    res = run_cli("param", "set", "cool.sp", "-1e3", "--port", board.port)
    user_error(res, "cool.sp", "-1000 °C", "out of range", "-40", "125 °C")
    assert run_cli("param", "defaults", "--port", board.port).returncode == 0


def test_unknown_parameter_names_it_and_points_to_the_list(board):
    line = user_error(run_cli("param", "set", "cool.nope", "1", "--port", board.port))
    assert "cool.nope is not a parameter of board virtual" in line
    assert "param list --port %s" % board.port in line
    line = user_error(run_cli("param", "get", "cool.kq", "--port", board.port))
    assert "did you mean cool.kp" in line


def test_out_of_range_and_conflict_name_value_range_and_other_parameter(board):
    line = user_error(run_cli("param", "set", "cool.kp", "500", "--port", board.port))
    assert "cool.kp 500" in line and "out of range" in line and "0 .. 100" in line
    # 60 degC setpoint is above the 50 degC alarm: the rule names cool.alarm_hi
    line = user_error(run_cli("param", "set", "cool.sp", "60", "--port", board.port))
    assert "60 °C" in line and "cool.alarm_hi" in line and "-40 .. 50 °C" in line
    line = user_error(run_cli("param", "set", "cool.sp", "3", "bar", "--port", board.port))
    assert "'bar'" in line and "°C" in line and "K" in line


def test_param_argument_count(board):
    user_error(run_cli("param", "set", "cool.kp", "--port", board.port), "NAME VALUE [UNIT]")
    user_error(run_cli("param", "get", "--port", board.port), "NAME", "no argument")


def test_board_control_mistakes(board):
    line = user_error(run_cli("setpoint", "nope", "30", "--port", board.port))
    assert "no loop 'nope'" in line and "cool" in line
    line = user_error(run_cli("manual", "cool", "140", "--port", board.port))
    assert "140.0 %" in line and "10.0 .. 100.0 %" in line
    line = user_error(run_cli("setpoint", "cool", "90", "--port", board.port))
    assert "90 °C" in line and "cool.alarm_hi" in line
    res = run_cli("mode", "cool", "fast", "--port", board.port)
    assert res.returncode == 2 and "invalid choice: 'fast'" in res.stderr


def test_monitor_rate_out_of_range(board):
    for rate in ("1000", "0", "-1"):
        line = user_error(run_cli("monitor", "--rate", rate, "--port", board.port))
        assert "--rate %s Hz" % rate in line and "0.01 .. 100 Hz" in line


# -- ports, deploy, vboard -------------------------------------------------------------------


def test_missing_port_is_one_line_error():
    user_error(run_cli("info", "--port", "/dev/does-not-exist"), "cannot open /dev/does-not-exist")


def test_silent_port_suggests_a_deploy_that_works(silent_port):
    line = user_error(run_cli("info", "--port", silent_port, "--timeout", "0.2"))
    assert "no answer to HELLO" in line
    # the suggested command names --board, which deploy requires
    assert "thermopilot deploy --port %s --board BOARD" % silent_port in line


def test_deploy_on_a_silent_port_ends_with_a_message(silent_port):
    res = run_cli("deploy", "--board", "virtual", "--port", silent_port, timeout=60)
    line = user_error(res, silent_port)
    assert "neither ThermoPilot nor a MicroPython REPL answered" in line
    assert "thermopilot ports" in line and "Reset the board" in line


def test_deploy_refuses_a_board_the_firmware_would_refuse(tmp_path, silent_port):
    import json

    from thermopilot.hil import resources

    b = resources.load_board("virtual")
    b["tick_hz"] = 5000
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(b))
    user_error(run_cli("deploy", "--board", str(path), "--port", silent_port), "tick_hz")
    user_error(run_cli("deploy", "--board", "nope", "--port", silent_port), "unknown board 'nope'")


@pytest.mark.parametrize(
    "heap, needles",
    [
        ("lots", ["'lots' is not a size", "--heap 160K"]),
        ("16K", ["heap 16K is below the", "the firmware needs", "--heap"]),
        ("2G", ["'2G' is not a size"]),
        ("100000M", ["larger than the 64M"]),
    ],
)
def test_vboard_heap_is_validated(heap, needles, tmp_path):
    res = run_cli("vboard", "--heap", heap, "--workdir", str(tmp_path / "fs"), timeout=60)
    user_error(res, *needles)


def test_vboard_reset_without_a_board(tmp_path):
    res = run_cli("vboard", "reset", env={"XDG_CACHE_HOME": str(tmp_path)})
    user_error(res, "no virtual board is running", "thermopilot vboard")


# -- flash ---------------------------------------------------------------------------------


def _esp_image(chip_id):
    # an ESP image header: magic, segments, flash mode/size, entry, then the extended header
    # with the chip ID at bytes 12..13
    head = bytes([0xE9, 3, 2, 0x20]) + struct.pack("<I", 0x40080000)
    ext = bytes([0xEE, 0, 0, 0]) + struct.pack("<H", chip_id) + bytes(10)
    return head + ext + bytes(1000)


def test_flash_esp32_without_port(tmp_path):
    fw = tmp_path / "ESP32_GENERIC.bin"
    fw.write_bytes(_esp_image(0))
    line = user_error(run_cli("flash", "--board", "esp32_devkitc", "--firmware", str(fw)))
    assert "needs --port" in line and "thermopilot ports" in line


def test_flash_refuses_an_image_for_another_chip(tmp_path):
    fw = tmp_path / "ESP32_S3.bin"
    fw.write_bytes(_esp_image(9))  # ESP32-S3
    res = run_cli("flash", "--board", "esp32_devkitc", "--firmware", str(fw), "--port", "/dev/x")
    line = user_error(res, "ESP32_S3.bin", "ESP32-S3", "the board is an ESP32")
    assert "download" in line
    uf2 = tmp_path / "RPI_PICO.uf2"
    uf2.write_bytes(b"UF2\n" + bytes(508))
    res = run_cli("flash", "--board", "esp32_devkitc", "--firmware", str(uf2), "--port", "/dev/x")
    user_error(res, "is a UF2 file", ".bin")


def test_flash_pico_refuses_a_bin(tmp_path):
    fw = tmp_path / "X.bin"
    fw.write_bytes(_esp_image(0))
    drive = tmp_path / "RPI-RP2"
    drive.mkdir()
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nBoard-ID: RPI-RP2\n")
    res = run_cli("flash", "--board", "rpi_pico", "--firmware", str(fw), "--drive", str(drive))
    user_error(res, "X.bin is an ESP32 .bin image", ".uf2")
    assert list(drive.iterdir()) == [drive / "INFO_UF2.TXT"]  # nothing copied


def test_flash_missing_file_and_unflashable_board(tmp_path):
    res = run_cli("flash", "--board", "rpi_pico", "--firmware", str(tmp_path / "nope.uf2"))
    user_error(res, "nope.uf2 does not exist", "RPI_PICO-*.uf2")
    res = run_cli("flash", "--board", "virtual", "--firmware", str(tmp_path / "x"))
    user_error(res, "virtual", "thermopilot vboard")


# -- output --------------------------------------------------------------------------------


def test_version():
    res = run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.startswith("thermopilot ")
    assert "schema %08x" % schema.SCHEMA_HASH in res.stdout


def test_info_into_a_closed_pipe_is_not_an_error(board):
    # `thermopilot info | head -1`
    cmd = " ".join(THERMOPILOT + ["info", "--port", board.port]) + " | head -1"
    res = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=60
    )
    assert res.stdout.startswith("board ")
    assert "Broken pipe" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stderr


def test_json_for_scripts(board):
    import json

    info = json.loads(run_cli("info", "--json", "--port", board.port).stdout)
    assert info["board"] == "virtual" and info["schema"] == "%08x" % schema.SCHEMA_HASH
    assert info["loops"][0]["name"] == "cool" and info["loops"][0]["unit"] == "°C"
    assert info["link"]["board_rx_ok"] > 0
    rows = json.loads(run_cli("param", "list", "--json", "--port", board.port).stdout)
    sp = [r for r in rows if r["name"] == "cool.sp"][0]
    assert sp["unit"] == "K" and sp["quantity"] == "temperature" and sp["shown_unit"] == "°C"
    assert sp["value"] == pytest.approx(sp["shown"]["value"] + 273.15, abs=1e-3)
    got = json.loads(run_cli("param", "get", "cool.kp", "--json", "--port", board.port).stdout)
    assert got["name"] == "cool.kp" and got["value"] == pytest.approx(0.3)
    assert json.loads(run_cli("fault", "list", "--json", "--port", board.port).stdout) == []


def test_shell_completion_script():
    res = run_cli("completion", "bash")
    assert res.returncode == 0 and "thermopilot" in res.stdout and "complete" in res.stdout
