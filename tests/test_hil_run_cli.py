"""``hil run`` for long runs: a progress line, Ctrl-C that leaves the board safe with a partial
report, and the scenario's [params] restored on the board afterwards (or kept)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import tomllib

from thermopilot.hil import resources
from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol.link import Session

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]


def test_ctrl_c_stops_cleanly_with_a_partial_report(tmp_path):
    env = dict(os.environ, FORCE_COLOR="1", COLUMNS="160")
    proc = subprocess.Popen(
        THERMOPILOT + ["hil", "run", "battery_hold", "--realtime", "--report-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # the board starts (~1.5 s idle, much longer on a busy machine), then a few seconds of
    # real time: interrupt once the progress line shows simulated time
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(proc.stderr.readline, "")))
    reader.start()
    deadline = time.monotonic() + 60
    while "simulated" not in "".join(chunks) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    proc.wait(timeout=60)
    reader.join(timeout=10)
    err = "".join(chunks)
    assert proc.returncode == 130, out + err
    assert "simulated" in err and "criteria:" in err  # the progress line was shown
    assert "interrupted at t=" in err and "hil_stop" in err and "partial report" in err
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "battery_hold" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["passed"] is False
    assert 1.0 < summary["simulated_s"] < 20.0
    # the board acknowledged the stop: its hil_stopped notice arrived after the interruption
    assert any(e["event"] == "hil_stopped" for e in summary["events"])
    assert (tmp_path / "battery_hold" / "plot.png").exists()
    rows = (tmp_path / "battery_hold" / "rows.csv").read_text().splitlines()
    assert 10 < len(rows) < 200


@pytest.fixture
def board():
    vb = VirtualBoard(ports=2).start()
    yield vb
    vb.stop()


def short_scenario(tmp_path):
    raw = (resources.scenarios_dir() / "battery_impossible.toml").read_text()
    raw = raw.replace("duration_s = 60", "duration_s = 2")
    raw = raw.replace('name = "battery_impossible"', 'name = "short"\n')
    raw = raw.replace("[plant]", '[params]\n"cool.kp" = 0.25\n"cool.inef_s" = 100.0\n\n[plant]')
    raw = raw.replace("within_s = 5", "within_s = 1").replace("band = 0.001", "band = 50")
    path = tmp_path / "short.toml"
    path.write_text(raw)
    tomllib.loads(raw)
    return path


def test_params_are_restored_after_a_run_unless_kept(board, tmp_path):
    path = short_scenario(tmp_path)
    with Session(board.ports[1]) as s:
        s.hello()
        s.param_set("cool.kp", 0.5)
        s.param_set("cool.ki", 0.03)
    res = subprocess.run(
        THERMOPILOT
        + ["hil", "run", str(path), "--port", board.port, "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # the board's heap beside its collections, between ticks and inside them
    out = " ".join(res.stdout.split())  # rich wraps long lines
    assert "collections between ticks," in out and "inside a tick" in out
    with Session(board.ports[1]) as s:
        s.hello()
        assert s.param_get("cool.kp") == pytest.approx(0.5)
        assert s.param_get("cool.ki") == pytest.approx(0.03)  # the defaults of the run undone
        assert s.param_get("cool.inef_s") == pytest.approx(300.0)
    res = subprocess.run(
        THERMOPILOT
        + [
            "hil",
            "run",
            str(path),
            "--port",
            board.port,
            "--report-dir",
            str(tmp_path),
            "--keep-params",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    with Session(board.ports[1]) as s:
        s.hello()
        assert s.param_get("cool.kp") == pytest.approx(0.25)
        assert s.param_get("cool.inef_s") == pytest.approx(100.0)


def test_a_refused_param_names_key_value_range_and_file(board, tmp_path):
    path = short_scenario(tmp_path)
    path.write_text(path.read_text().replace('"cool.kp" = 0.25', '"cool.kp" = 500.0'))
    with Session(board.ports[1]) as s:
        s.hello()
        s.param_set("cool.ki", 0.03)
    res = subprocess.run(
        THERMOPILOT + ["hil", "run", str(path), "--port", board.port],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "scenario short [params]: cool.kp = 500 out of range; the board allows 0..100" in (
        res.stderr
    )
    with Session(board.ports[1]) as s:
        s.hello()
        assert s.param_get("cool.ki") == pytest.approx(0.03)  # nothing was changed


def test_a_scenario_for_another_board_is_refused_before_the_run(board, tmp_path):
    path = resources.scenarios_dir() / "heatpump_superheat.toml"
    res = subprocess.run(
        THERMOPILOT + ["hil", "run", str(path), "--port", board.port],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "is for board 'virtual_hp', but the board on" in res.stderr
    assert "is 'virtual'" in res.stderr
