"""``thermopilot tune LOOP --port P``: the real-board form (the host paced by the board's
telemetry, not by a rig) against a two-port virtual board whose other port a HIL rig drives
with the battery plant. The rig paces the plant at 5x real time, so the link's delay weighs
five times more than on a real board; the tune must still converge and leave the loop as it
found it."""

import json
import threading
import time

import pytest

from thermopilot.hil import resources, rig, scenario
from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol.link import Session


def test_tune_over_a_port_while_a_rig_drives_the_plant(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sc = scenario.load(str(resources.scenarios_dir() / "battery_hold.toml"))
    sc["profile"] = []  # a steady load: the relay sees its own moves
    sc["setpoints"] = sc["setpoints"][:1]
    sc["criteria"] = []
    sc["duration_s"] = 6000
    the_rig = rig.Rig(sc)
    done = threading.Event()
    stop = threading.Event()
    the_rig.on_tick = lambda *_: stop.is_set()  # ends the rig's run cleanly
    with VirtualBoard(board="virtual", ports=2) as vb:
        pa, pb = vb.ports

        def drive():
            try:
                with Session(pa) as s:
                    # paced at 5x real time: the tuner on the other port reads telemetry by
                    # the wall clock as it would from a real board; unpaced, the plant would
                    # move as fast as the machine allows, many relay steps between samples
                    the_rig.run(s, realtime=5.0)
            finally:
                done.set()

        th = threading.Thread(target=drive, daemon=True)
        th.start()
        # let the loop settle at its setpoint under its own PID first (plant time 150 s)
        with Session(pb) as s:
            s.hello()
            s.stream_rate("TELEMETRY", 10)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 90:
                if s.telemetry and s.telemetry[-1].t_ms > 150_000:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the rig did not reach t = 150 s in 90 s")
        from thermopilot.host.cli import main

        code = main(["tune", "cool", "--port", pb, "--json", "--max-duration", "2000"])
        res = capsys.readouterr()
        assert code == 0 and res.out, "tune exited %r: %s" % (code, res.err[-2000:])
        out = json.loads(res.out)
        assert out["ok"] and out["cycles"] >= 4
        assert 5.0 < out["pu_s"] < 120.0 and out["kp"] > 0 and out["ki"] > 0
        # the loop is back in auto (mode 2) under its PID
        with Session(pb) as s:
            s.hello()
            s.telemetry.clear()
            s.stream_rate("TELEMETRY", 10)
            time.sleep(1.0)
            assert s.telemetry and s.telemetry[-1].mode == 2
        assert not done.is_set(), "the rig ended before the tune"
        stop.set()
        th.join(30)
        assert done.is_set()
