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
