"""``thermopilot identify`` on the virtual board in lockstep: the model file that ``mpc
design`` reads (checked by the reader), the plot, and limits refused before anything moves."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from thermopilot.host.control.identify import load_model

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]


@pytest.fixture()
def env(tmp_path):
    e = dict(os.environ)
    e["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return e


def cli(env, cwd, *args, timeout=300):
    return subprocess.run(
        THERMOPILOT + list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def test_identify_lockstep_writes_the_model(env, tmp_path):
    res = cli(
        env,
        tmp_path,
        "identify",
        "cool",
        "--scenario",
        "battery_hold",
        "--steady",
        "--duration",
        "400",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] and out["model"] == "model_cool.json"
    m = load_model(tmp_path / "model_cool.json")
    assert m["loop"] == "cool" and m["board"] == "virtual"
    assert m["inputs"][0]["name"] == "out.0" and m["outputs"][0]["unit"] == "K"
    assert 1 <= m["A"].shape[0] <= 8 and m["ts_s"] >= 0.1
    assert max(abs(np.linalg.eigvals(m["A"]))) < 1.0
    # more pump, cooler coolant: the model's static gain is negative, like the FOPDT's
    nx = m["A"].shape[0]
    dc = (m["C"] @ np.linalg.solve(np.eye(nx) - m["A"], m["B"]))[0, 0]
    assert dc < 0 and m["fopdt"]["gain"] < 0
    assert 290.0 < m["y0"][0] < 320.0 and 0.1 <= m["u0"][0] <= 1.0
    assert m["fit"]["nrmse_validation"] == pytest.approx(out["fit"]["nrmse_validation"])
    assert (tmp_path / "model_cool.png").stat().st_size > 10000


def test_identify_amplitude_beyond_the_limits(env, tmp_path):
    res = cli(env, tmp_path, "identify", "cool", "--scenario", "battery_hold", "--amplitude", "60")
    assert res.returncode == 2
    assert "more than half the output range" in res.stderr
    assert not (tmp_path / "model_cool.json").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (("--disturbance", "current"), "expected a sensor channel of the board, sensed.N"),
        (("--disturbance", "sensed.1", "--steady"), "drop --steady"),
        (("--disturbance", "sensed.1", "--port", "/dev/null"), "needs --scenario"),
    ],
)
def test_disturbance_option_refused_before_anything_moves(env, tmp_path, args, words):
    extra = () if "--port" in args else ("--scenario", "battery_ident_mpc")
    res = cli(env, tmp_path, "identify", "cool", *extra, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert words in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "model_cool.json").exists()


def _identify_with_current(env, tmp_path, options):
    """identify the battery loop on battery_ident_mpc with a PRBS and the pack current
    (sensor 1) as its measured disturbance; ``options``: the rest, space-separated."""
    return cli(
        env,
        tmp_path,
        *"identify cool --scenario battery_ident_mpc --signal prbs".split(),
        *"--disturbance sensed.1 --no-plot".split(),
        *options.split(),
    )


def test_identify_with_the_measured_disturbance_feeds_mpc_design(env, tmp_path):
    """The short chain: identify on the pack current's steps (column E from the sensor the
    loop's d0 role reads), then mpc design takes the file for the board with that role. The
    model must come out stable and predict the held-out third better than its mean."""
    res = _identify_with_current(
        env, tmp_path, "--clock 30 --amplitude 40 --settle 300 --duration 1200 --json"
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["warning"] is None and out["fit"]["nrmse_validation"] < 1.0
    m = load_model(tmp_path / "model_cool.json")
    assert max(abs(np.linalg.eigvals(m["A"]))) < 1.0
    assert m["nd"] == 1 and m["E"].shape == (m["nx"], 1)
    assert m["disturbances"] == [{"name": "sensed.1", "unit": "A"}]
    assert 0.0 < m["d0"][0] < 400.0
    r = cli(
        env, tmp_path, "mpc", "design", "model_cool.json", "-o", "m.mpc", "--board", "virtual_mpc"
    )
    assert r.returncode == 0, r.stderr
    assert "nd=1" in r.stdout and "checked against board virtual_mpc" in r.stdout


def test_a_model_worse_than_the_mean_is_written_with_a_warning(env, tmp_path):
    """A test too short for the plant (300 s of a 10 s PRBS with the pack current stepping):
    the model file is written (the test's result is not thrown away) and identify says, with
    the figure and the fix, that it predicts the held-out third worse than its mean."""
    res = _identify_with_current(env, tmp_path, "--clock 10 --settle 30 --duration 300 --order 1")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "model_cool.json").exists()
    assert "worse than its mean (NRMSE" in res.stderr and "--duration" in res.stderr
