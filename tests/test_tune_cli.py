"""``thermopilot tune`` on the virtual board in lockstep with a bundled scenario's plant: the
JSON result, --apply --save kept in the virtual board's flash, and runs that must abort with the
value and the fix while the loop goes back to its mode."""

import json
import os
import subprocess
import sys

import pytest

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]


@pytest.fixture()
def env(tmp_path):
    e = dict(os.environ)
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # the virtual board's flash goes here
    return e


def cli(env, *args, timeout=300):
    return subprocess.run(
        THERMOPILOT + list(args), capture_output=True, text=True, timeout=timeout, env=env
    )


def test_tune_lockstep_applies_and_saves(env, tmp_path):
    res = cli(env, "tune", "cool", "--scenario", "battery_hold", "--json", "--save")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] and out["rule"] == "amigo" and out["kind"] == "pi"
    assert out["cycles"] >= 4 and out["applied"] and out["saved"]
    # the battery loop's pump: a few tenths of a K per 15 % of duty, cycles of 10-60 s
    assert 5.0 < out["pu_s"] < 120.0
    assert out["kp"] > 0 and out["ki"] > 0 and out["kd"] == 0
    assert out["fopdt"]["gain"] < 0  # more pump, cooler coolant
    # the saved gains are on the virtual board's flash: a new board boots with them
    from thermopilot.hil.vboard import VirtualBoard
    from thermopilot.protocol.link import Session

    os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
    try:
        from thermopilot.hil.vboard import state_dir

        with VirtualBoard(board="virtual", workdir=str(state_dir("virtual"))) as vb:
            with Session(vb.port) as s:
                s.hello()
                assert s.param_get("cool.kp") == pytest.approx(out["kp"], rel=1e-6)
                assert s.param_get("cool.ki") == pytest.approx(out["ki"], rel=1e-6)
    finally:
        del os.environ["XDG_CACHE_HOME"]


def test_tune_setpoint_the_plant_cannot_reach(env):
    """10 degC coolant with 30 degC ambient: the pump alone cannot get there; the run aborts
    within its band, names the values, and the loop is back in auto."""
    res = cli(
        env,
        "tune",
        "cool",
        "--scenario",
        "battery_hold",
        "--setpoint",
        "10",
        "--band",
        "3",
        "--max-duration",
        "600",
        "--json",
    )
    assert res.returncode == 1, res.stderr
    out = json.loads(res.stdout)
    assert not out["ok"] and out["reason"] in ("band", "no_oscillation", "stalled")
    assert "283.15" in out["message"] or "limit 3" in out["message"]
    assert "back in mode auto" in out["message"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--amplitude", "80"], "more than half the output range"),
        (["--setpoint", "warm"], "--setpoint: 'warm' is not a number"),
        (["--band", "2 bar"], "unit 'bar' does not measure"),
    ],
)
def test_tune_bad_values_named(env, args, words):
    res = cli(env, "tune", "cool", "--scenario", "battery_hold", *args)
    assert res.returncode == 2
    assert words in res.stderr
    assert "Traceback" not in res.stderr


def test_tune_needs_one_target(env):
    res = cli(env, "tune", "cool")
    assert res.returncode == 2 and "--port PORT" in res.stderr and "--scenario" in res.stderr


def test_tune_the_chip_loop_with_a_relay_over_its_whole_output_range(env):
    """The chip's case loop (pump 0.3..1.0, float32 limits on the board): an amplitude of
    exactly half the range is taken, and only such a relay makes the two-phase cold plate's
    case oscillate at 400 W (docs/controllers.md, "PID vs MPC"); Tyreus-Luyben gains."""
    r = cli(
        env,
        "tune",
        "case",
        "--scenario",
        "chip_gpu_mpc",
        "--steady",
        "--amplitude",
        "35",
        "--setpoint",
        "42.6",
        "--tolerance",
        "0.25",
        "--rule",
        "tl",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["amplitude"] > 0 and out["cycles"] >= 4
    assert 0.3 < out["kp"] < 0.6 and 0.005 < out["ki"] < 0.02
