"""Flashing MicroPython itself and finding the board's port.

No ESP32 or RP2040 is attached here, so:
- UF2 files are built by the test (512-byte blocks as in microsoft/uf2's uf2.h) and copied to a
  directory standing in for the BOOTSEL drive (the drive is a plain FAT filesystem; the copy
  is the same file write either way);
- the esptool path runs the real esptool v5 API (detect_chip) against a pty with nothing
  behind it, which is what a board not in its bootloader looks like; a successful write needs
  a chip and is not run here.
"""

import os
import pty
import struct
import subprocess
import sys

import pytest

from thermopilot.host import flash

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]


def run_cli(*args, timeout=120):
    return subprocess.run(
        THERMOPILOT + list(args), capture_output=True, text=True, timeout=timeout
    )


def uf2(n_blocks, family=0xE48BFF56, damage=None):
    out = bytearray()
    for k in range(n_blocks):
        payload = bytes([k & 0xFF]) * 256
        block = struct.pack(
            "<8I",
            flash.UF2_MAGIC_START0,
            flash.UF2_MAGIC_START1,
            flash.UF2_FLAG_FAMILY,
            0x10000000 + 256 * k,
            256,
            k,
            n_blocks,
            family,
        )
        block += payload + bytes(476 - 256) + struct.pack("<I", flash.UF2_MAGIC_END)
        out += block
    if damage is not None:
        out[damage * 512 + 508] ^= 0xFF
    return bytes(out)


@pytest.fixture()
def drive(tmp_path):
    d = tmp_path / "RPI-RP2"
    d.mkdir()
    (d / "INFO_UF2.TXT").write_text(
        "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"
    )
    return d


def test_uf2_is_checked_then_copied_with_progress(tmp_path, drive):
    fw = tmp_path / "RPI_PICO-20250415-v1.25.0.uf2"
    fw.write_bytes(uf2(40))
    res = run_cli("flash", "--board", "rpi_pico", "--firmware", str(fw), "--drive", str(drive))
    assert res.returncode == 0, res.stderr
    assert "40 UF2 blocks, family RP2040" in res.stdout
    assert (drive / fw.name).read_bytes() == fw.read_bytes()
    assert "100%" in res.stderr


def test_uf2_for_another_chip_or_damaged_is_not_copied(tmp_path, drive):
    fw = tmp_path / "RPI_PICO2.uf2"
    fw.write_bytes(uf2(4, family=0xE48BFF59))
    res = run_cli("flash", "--board", "rpi_pico", "--firmware", str(fw), "--drive", str(drive))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "built for RP2350 (Arm), the board is an RP2040" in res.stderr
    fw.write_bytes(uf2(4, damage=2))
    res = run_cli("flash", "--board", "rpi_pico", "--firmware", str(fw), "--drive", str(drive))
    assert res.returncode == 2 and "block 2 of 4 has wrong UF2 magic numbers" in res.stderr
    fw.write_bytes(uf2(4)[:-100])
    res = run_cli("flash", "--board", "rpi_pico", "--firmware", str(fw), "--drive", str(drive))
    assert res.returncode == 2 and "not a whole number of 512-byte UF2 blocks" in res.stderr
    assert sorted(p.name for p in drive.iterdir()) == ["INFO_UF2.TXT"]


def test_uf2_without_the_drive_says_how_to_get_it(tmp_path):
    fw = tmp_path / "RPI_PICO.uf2"
    fw.write_bytes(uf2(2))
    res = run_cli(
        "flash", "--board", "rpi_pico", "--firmware", str(fw), "--drive", str(tmp_path / "none")
    )
    assert res.returncode == 2 and "no UF2 drive at" in res.stderr and "BOOTSEL" in res.stderr
    res = run_cli("flash", "--board", "rpi_pico", "--firmware", str(fw), "--dry-run")
    assert res.returncode == 0 and "copy RPI_PICO.uf2 (1.0 kB)" in res.stdout


def _esp_image(chip_id, size=4096):
    head = bytes([0xE9, 3, 2, 0x20]) + struct.pack("<I", 0x40080000)
    ext = bytes([0xEE, 0, 0, 0]) + struct.pack("<H", chip_id) + bytes(10)
    return head + ext + bytes(size - 24)


def test_esp32_dry_run_names_what_would_happen(tmp_path):
    fw = tmp_path / "ESP32_GENERIC.bin"
    fw.write_bytes(_esp_image(0))
    res = run_cli(
        "flash",
        "--board",
        "esp32_devkitc",
        "--firmware",
        str(fw),
        "--port",
        "/dev/ttyUSB0",
        "--dry-run",
    )
    assert res.returncode == 0, res.stderr
    assert "expect ESP32; write 4.1 kB at 0x1000 at 460800 baud" in res.stdout
    assert "esptool --chip esp32 --port /dev/ttyUSB0 --baud 460800 write-flash -z 0x1000" in (
        res.stdout
    )


def test_esp32_with_no_chip_on_the_port_ends_with_what_to_do(tmp_path):
    fw = tmp_path / "ESP32_GENERIC.bin"
    fw.write_bytes(_esp_image(0))
    master, slave = pty.openpty()
    port = os.ttyname(slave)
    try:
        res = run_cli(
            "flash",
            "--board",
            "esp32_devkitc",
            "--firmware",
            str(fw),
            "--port",
            os.ttyname(slave),
            timeout=120,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no ESP chip answered on %s" % port in res.stderr
    assert "hold the board's BOOT button" in res.stderr


@pytest.mark.parametrize(
    "vid, pid, guess",
    [
        (0x2E8A, 0x0005, "Raspberry Pi RP2040/RP2350 running MicroPython"),
        (0x2E8A, 0x0003, "RP2040 in BOOTSEL"),
        (0x303A, 0x1001, "Espressif"),
        (0x10C4, 0xEA60, "CP210x"),
        (0x1A86, 0x7523, "CH340"),
        (0x0403, 0x6001, "FTDI"),
        (0x1234, 0x0001, ""),
        (None, None, ""),
    ],
)
def test_ports_guess_the_board_from_vid_pid(vid, pid, guess):
    got = flash.guess_board(vid, pid)
    assert (guess in got) if guess else got == ""


def test_ports_json_lists_a_running_virtual_board(tmp_path):
    import json

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    proc = subprocess.Popen(
        THERMOPILOT + ["vboard", "--workdir", str(tmp_path / "fs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        proc.stdout.readline()
        port = proc.stdout.readline().strip()
        res = subprocess.run(
            THERMOPILOT + ["ports", "--json"], capture_output=True, text=True, env=env, timeout=60
        )
        assert res.returncode == 0, res.stderr
        rows = json.loads(res.stdout)
        mine = [r for r in rows if r["device"] == port]
        assert mine and mine[0]["board"].startswith("virtual board virtual")
        assert set(rows[0]) >= {"device", "vid_pid", "board", "description"}
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_missing_uf2_is_a_user_error(tmp_path):
    res = run_cli("flash", "--board", "rpi_pico", "--firmware", str(tmp_path / "nope.uf2"))
    assert res.returncode == 2 and "does not exist" in res.stderr
