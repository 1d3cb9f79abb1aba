"""thermopilot deploy on the virtual board, the real MicroPython VM behind a pty, through
mpremote's transport: on a running application (also on a two-port board while another
program holds the second port), on a bare REPL, after a release; it verifies what it copied
and ends with the board answering HELLO after its reset."""

import hashlib
import subprocess
import sys

import pytest

from thermopilot.hil import resources
from thermopilot.hil.vboard import VM_ARCH, VirtualBoard
from thermopilot.host.deploy import Deploy, StepFailed
from thermopilot.protocol.link import Session

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]


def run_cli(*args, timeout=120):
    return subprocess.run(
        THERMOPILOT + list(args), capture_output=True, text=True, timeout=timeout
    )


def assert_deployed(res, fs, port):
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified by SHA-256" in res.stdout
    assert "deployed: board virtual" in res.stdout and "answering on %s" % port in res.stdout
    assert "copy" in res.stderr and "100%" in res.stderr  # the progress bar
    # what is on the board is what mpy-cross made for the VM's CPU
    for local, remote in resources.firmware_files(VM_ARCH):
        assert (fs / remote).read_bytes() == local.read_bytes(), remote


def test_deploy_on_a_running_two_port_board_while_a_monitor_holds_the_other_port(tmp_path):
    fs = tmp_path / "fs"
    with VirtualBoard(ports=2, workdir=str(fs)) as vb:
        (fs / "lib" / "tpfw" / "pid.py").write_text("# stale\n")
        boots = vb.boots
        with Session(vb.ports[1]) as monitor:
            monitor.hello()
            res = run_cli("deploy", "--board", "virtual", "--port", vb.ports[0])
            assert "released the console" in res.stdout
            assert_deployed(res, fs, vb.ports[0])
            assert not (fs / "lib" / "tpfw" / "pid.py").exists()
            assert vb.boots == boots + 1  # machine.reset() restarted the VM
            # the second port shares the rebooted board
            assert monitor.hello().n_loops == 1
        assert run_cli("info", "--port", vb.ports[1]).returncode == 0


def test_deploy_on_a_bare_micropython_repl(tmp_path):
    fs = tmp_path / "fs"
    vb = VirtualBoard(workdir=str(fs))
    try:
        vb.start(deploy=False, run=False)  # a freshly flashed board: nothing on it
        res = run_cli("deploy", "--board", "virtual", "--port", vb.port)
        assert "released the console" not in res.stdout
        assert_deployed(res, fs, vb.port)
        res = run_cli("info", "--port", vb.port)
        assert res.returncode == 0 and "c_core" in res.stdout
        # the heap line: collections between ticks and inside them, beside the high-water
        assert "collections between ticks," in res.stdout and "inside a tick" in res.stdout
    finally:
        vb.stop()


def test_deploy_after_a_release_and_twice_in_a_row(tmp_path):
    fs = tmp_path / "fs"
    with VirtualBoard(workdir=str(fs)) as vb:
        with Session(vb.port) as s:
            s.command("release_console")
        assert_deployed(run_cli("deploy", "--board", "virtual", "--port", vb.port), fs, vb.port)
        assert_deployed(run_cli("deploy", "--board", "virtual", "--port", vb.port), fs, vb.port)


def test_verification_catches_a_file_that_differs_on_the_board(tmp_path):
    fs = tmp_path / "fs"

    class Damaged(Deploy):
        def verify(self):
            # the board's filesystem is a host directory: damage a copied file under it
            p = fs / "lib" / "tpfw" / "pid.mpy"
            data = bytearray(p.read_bytes())
            data[-1] ^= 0xFF
            p.write_bytes(bytes(data))
            return super().verify()

    with VirtualBoard(workdir=str(fs)) as vb:
        d = Damaged(vb.port, "virtual", say=lambda *_: None, progress=False)
        with pytest.raises(StepFailed, match=r"lib/tpfw/pid.mpy \(SHA-256 differs\)"):
            d.run()
        assert hashlib.sha256((fs / "board.json").read_bytes()).digest()  # the rest is there


def test_deploy_names_the_board_definition_that_cannot_run_here(tmp_path):
    with VirtualBoard(workdir=str(tmp_path / "fs")) as vb:
        res = run_cli("deploy", "--board", "esp32_devkitc", "--port", vb.port)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "esp32_devkitc drives real pins" in res.stderr and "virtual_hp" in res.stderr
        # refused before anything was copied; the board still runs, after its REPL was used
        vb.reset()
        assert run_cli("info", "--port", vb.port).returncode == 0
