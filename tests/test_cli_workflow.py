"""The README's real-board section, followed on the virtual board from start to end without
restarting anything by hand: a two-port board, deploy, monitor with CSV, parameter changes
saved to the board's flash, a real-time HIL run twice, a reset; and the board's filesystem
kept across restarts of `thermopilot vboard` (or emptied with --fresh)."""

import csv
import os
import signal
import subprocess
import sys

import pytest

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]

SCENARIO = """
name = "bench_short"
duration_s = 4
board = "virtual"

[plant]
model = "battery_loop"

[inputs]
current_a = 150.0
ambient_k = 303.15

[[sensors]]
channel = 0
output = "coolant_out_k"
noise_k = 0.05
quant_k = 0.01

[[actuators]]
channel = 0
input = "pump_duty"

[[setpoints]]
t_s = 0
value_c = 32.0

[[criteria]]
kind = "no_fault"
"""


@pytest.fixture()
def env(tmp_path):
    e = dict(os.environ)
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the board's state goes here
    return e


def cli(env, *args, timeout=120):
    return subprocess.run(
        THERMOPILOT + list(args), capture_output=True, text=True, timeout=timeout, env=env
    )


def ok(res):
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


class Vboard:
    def __init__(self, env, *args):
        self.proc = subprocess.Popen(
            THERMOPILOT + ["vboard", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        head = self.proc.stdout.readline()
        assert "running MicroPython" in head, head + self.proc.stderr.read()
        n = 2 if "ports:" in head else 1
        self.ports = [self.proc.stdout.readline().strip() for _ in range(n)]
        self.rest = [self.proc.stdout.readline() for _ in range(3)]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            assert self.proc.wait(timeout=15) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_readme_real_board_section_on_the_virtual_board(env, tmp_path):
    scenario = tmp_path / "bench_short.toml"
    scenario.write_text(SCENARIO)
    vb = Vboard(env, "--ports", "2")
    try:
        p1, p2 = vb.ports
        assert "filesystem: %s" % os.path.join(env["XDG_CACHE_HOME"], "thermopilot") in vb.rest[0]
        out = ok(cli(env, "deploy", "--board", "virtual", "--port", p1))
        assert "deployed: board virtual" in out
        out = ok(cli(env, "info", "--port", p2))
        assert "cool  pid   temperature in °C" in out
        ok(cli(env, "param", "set", "cool.kp", "0.25", "--port", p2))
        assert "saved" in ok(cli(env, "param", "save", "--port", p2))
        # the monitor logs while two real-time HIL runs drive the board on the other port
        csv_path = tmp_path / "tlm.csv"
        mon = subprocess.Popen(
            THERMOPILOT + ["monitor", "--port", p2, "--duration", "14", "--csv", str(csv_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(2):
            res = cli(
                env,
                "hil",
                "run",
                str(scenario),
                "--port",
                p1,
                "--report-dir",
                str(tmp_path / ("report%d" % k)),
                timeout=60,
            )
            assert res.returncode == 0, res.stdout + res.stderr
            assert "PASSED" in res.stdout
        out, err = mon.communicate(timeout=60)
        assert mon.returncode == 0, err
        rows = list(csv.DictReader(csv_path.open()))
        assert len(rows) > 10
        assert {r["mode"] for r in rows} <= {"auto", "manual", "off", "safe"}
        assert any(r["measurement"] for r in rows) and rows[-1]["unit"] == "°C"
        # board control, then a reset: the saved parameter is back, the unsaved one is not
        ok(cli(env, "param", "set", "cool.ki", "0.05", "--port", p2))
        assert "output 50.0 %" in ok(cli(env, "manual", "cool", "50", "--port", p1))
        assert "mode auto" in ok(cli(env, "mode", "cool", "auto", "--port", p1))
        assert "setpoint 31.50 °C" in ok(cli(env, "setpoint", "cool", "31.5", "--port", p1))
        out = ok(cli(env, "vboard", "reset"))
        assert "ThermoPilot answers on %s, %s" % (p1, p2) in out
        assert "cool.kp = 0.25" in ok(cli(env, "param", "get", "cool.kp", "--port", p2))
        assert "cool.ki = 0.02" in ok(cli(env, "param", "get", "cool.ki", "--port", p2))
        assert "board reset" in vb.proc.stdout.readline()
    finally:
        vb.stop()
    # a new `thermopilot vboard` for the same board finds its filesystem as it was left
    vb = Vboard(env)
    try:
        assert "cool.kp = 0.25" in ok(cli(env, "param", "get", "cool.kp", "--port", vb.ports[0]))
        listed = ok(cli(env, "vboard", "list"))
        assert vb.ports[0] in listed
        res = cli(env, "vboard")  # the same board twice would share one filesystem
        assert res.returncode == 2 and "already runs on %s" % vb.ports[0] in res.stderr
    finally:
        vb.stop()
    vb = Vboard(env, "--fresh")
    try:
        assert "cool.kp = 0.3" in ok(cli(env, "param", "get", "cool.kp", "--port", vb.ports[0]))
    finally:
        vb.stop()
    assert "no virtual board is running" in ok(cli(env, "vboard", "list"))
