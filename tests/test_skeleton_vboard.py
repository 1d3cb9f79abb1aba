"""The virtual board boots the real firmware, answers info, and stops without leftovers."""

import os
import pathlib
import pty
import signal
import subprocess
import sys
import time

import pytest

from thermopilot.hil.vboard import VirtualBoard

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vboard():
    vb = VirtualBoard().start()
    yield vb
    vb.stop()


def run_cli(*args, timeout=60):
    return subprocess.run(
        THERMOPILOT + list(args), capture_output=True, text=True, timeout=timeout
    )


def test_info_identifies_the_board(vboard):
    res = run_cli("info", "--port", vboard.port)
    assert res.returncode == 0, res.stderr
    assert "board         virtual" in res.stdout
    assert "link (board)" in res.stdout


def test_monitor_logs_csv(vboard, tmp_path):
    csv_path = tmp_path / "tlm.csv"
    res = run_cli(
        "monitor",
        "--port",
        vboard.port,
        "--duration",
        "1.5",
        "--rate",
        "10",
        "--csv",
        str(csv_path),
    )
    assert res.returncode == 0, res.stderr
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("host_time_s,loop,mode")
    assert len(lines) > 5  # about 15 rows at 10 Hz


def test_param_out_of_range_names_the_range(vboard):
    res = run_cli("param", "set", "cool.kp", "500", "--port", vboard.port)
    assert res.returncode == 2
    assert "out of range" in res.stderr and "allowed 0 .. 100" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("param", "set", "cool.kp", "0.2", "--port", vboard.port)
    assert res.returncode == 0 and "cool.kp = 0.2" in res.stdout


def test_vm_heap_is_no_larger_than_an_esp32(vboard):
    # 110 KB free on an ESP32 x 1.44, the measured 64-bit / 32-bit footprint of the firmware
    out = vboard.proc.args
    assert "heapsize=160K" in " ".join(out)


def test_vboard_command_prints_port_and_stops_cleanly_on_ctrl_c(tmp_path):
    # its filesystem goes under this cache, not the user's
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    proc = subprocess.Popen(
        THERMOPILOT + ["vboard"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        proc.stdout.readline()
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/")
        res = run_cli("info", "--port", port)
        assert res.returncode == 0, res.stderr
        vm = subprocess.run(
            ["pgrep", "-f", "-P", str(proc.pid), "micropython"], capture_output=True, text=True
        ).stdout.split()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)
    for pid in vm:
        assert not os.path.exists("/proc/%s" % pid), "micropython %s left running" % pid


def test_missing_port_is_one_line_error():
    res = run_cli("info", "--port", "/dev/does-not-exist")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "cannot open /dev/does-not-exist" in res.stderr


def test_silent_port_is_one_line_error():
    master, slave = pty.openpty()  # a port with nothing behind it
    try:
        res = run_cli("info", "--port", os.ttyname(slave), "--timeout", "0.2")
    finally:
        os.close(master)
        os.close(slave)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "no answer to HELLO" in res.stderr


def test_upload_stores_the_blob_on_the_board(vboard, tmp_path):
    blob = bytes(range(256)) * 3 + b"tail"
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    res = run_cli("upload", str(path), "--slot", "2", "--port", vboard.port)
    assert res.returncode == 0, res.stderr
    assert (pathlib.Path(vboard.workdir) / "slot2.bin").read_bytes() == blob


def test_params_survive_a_power_cut_and_a_corrupt_file_keeps_defaults(tmp_path):
    workdir = tmp_path / "fs"
    workdir.mkdir()
    with VirtualBoard(workdir=str(workdir)) as vb:
        assert run_cli("param", "set", "cool.ki", "0.05", "--port", vb.port).returncode == 0
        assert run_cli("param", "save", "--port", vb.port).returncode == 0
    # a half-written save left behind does not matter: only the renamed file is loaded
    (workdir / "params.tmp").write_bytes(b"TPP1\x05")
    with VirtualBoard(workdir=str(workdir)) as vb:
        res = run_cli("param", "get", "cool.ki", "--port", vb.port)
        assert "cool.ki = 0.05" in res.stdout, res.stdout + res.stderr
    data = bytearray((workdir / "params.bin").read_bytes())
    data[10] ^= 0xFF  # flash corruption: the CRC no longer matches
    (workdir / "params.bin").write_bytes(bytes(data))
    with VirtualBoard(workdir=str(workdir)) as vb:
        res = run_cli("param", "get", "cool.ki", "--port", vb.port)
        assert "cool.ki = 0.02" in res.stdout, res.stdout + res.stderr  # the default


def test_deploy_takes_the_console_back_from_the_running_app(tmp_path):
    with VirtualBoard(workdir=str(tmp_path)) as vb:
        assert run_cli("info", "--port", vb.port).returncode == 0
        (tmp_path / "lib" / "tpfw" / "pid.py").write_text("# stale\n")
        res = run_cli("deploy", "--board", "virtual", "--port", vb.port, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "released the console" in res.stdout
        # compiled for the board's architecture; a stale source that would shadow it is gone
        assert (tmp_path / "lib" / "tpfw" / "pid.mpy").read_bytes()[:1] == b"M"
        assert not (tmp_path / "lib" / "tpfw" / "pid.py").exists()
        # deploy reset the board (the VM restarted) and waited for it to answer
        assert "answering on %s" % vb.port in res.stdout
        assert run_cli("info", "--port", vb.port).returncode == 0


def test_machine_reset_restarts_the_vm_and_keeps_the_ports(tmp_path):
    from thermopilot.protocol.link import Session

    with VirtualBoard(ports=2, workdir=str(tmp_path)) as vb:
        ports, boots, pid = list(vb.ports), vb.boots, vb.proc.pid
        with Session(vb.port) as s:
            s.command("release_console")
        # what `mpremote reset` sends; the unix port's machine module gains reset() on the VM
        vb.mpremote("exec", "import time, machine; time.sleep_ms(100); machine.reset()")
        deadline = time.monotonic() + 10
        while vb.boots == boots and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vb.boots == boots + 1 and vb.proc.pid != pid and vb.ports == ports
        assert run_cli("info", "--port", vb.ports[1]).returncode == 0
        vb.reset()  # the reset button
        assert vb.boots == boots + 2
        assert run_cli("info", "--port", vb.ports[0]).returncode == 0


def test_firmware_stopping_at_boot_is_reported_with_what_the_board_printed(tmp_path):
    from thermopilot.hil.vboard import VirtualBoardError

    vb = VirtualBoard(workdir=str(tmp_path))
    try:
        vb.start(run=False)
        (tmp_path / "board.json").write_text("{not json")
        with pytest.raises(VirtualBoardError, match="board.json unreadable"):
            vb.run_app()
    finally:
        vb.stop()


def test_heap_minimum_is_enough_to_run_and_is_stated():
    from thermopilot.hil import rig, scenario
    from thermopilot.hil.vboard import heap_text, min_heap
    from thermopilot.protocol import schema
    from thermopilot.protocol.link import Session

    need = min_heap("virtual")
    # about 100 KB after boot on the 64-bit VM, x1.25
    assert 110 * 1024 <= need <= 160 * 1024
    with VirtualBoard(heap=heap_text(need)) as vb, Session(vb.port, timeout_s=1.0) as s:
        s.hello()
        s.params()
        s.loops()
        sc = dict(scenario.load(str(ROOT / "hil" / "scenarios" / "battery_hold.toml")))
        sc.update(duration_s=30, faults=[])
        res = rig.run(sc, session=s)
        faults = res.rows["faults"].astype(int)
        assert not any(f >> schema.FAULTS["internal"] & 1 for f in faults)
        s.request("PARAM_SAVE", flags=0)
    with pytest.raises(RuntimeError, match="below the %s the firmware needs" % heap_text(need)):
        VirtualBoard(heap=heap_text(need - 4096)).start()


def test_oversized_upload_is_refused_and_the_board_keeps_running(vboard):
    from thermopilot.protocol.link import Nack, Session

    with Session(vboard.port) as s:
        s.hello()
        with pytest.raises(Nack, match=r"out of range \(5e\+07 not in \[1, 16384\]\)"):
            s.request("UPLOAD_BEGIN", slot=0, total_len=50_000_000, crc32=0)
        assert s.hello().n_loops == 1
