"""Identification on simulated plants: the step/PRBS test's limits, the FOPDT and state-space
fits against known plants, NRMSE on held-out data, the model file's rules."""

import json
import math

import numpy as np
import pytest

from thermopilot.host.control import identify as idm
from thermopilot.host.control.tune import TuneError


class Plant:
    """Second-order plus dead time, about (u_eq, y_eq), with Gaussian measurement noise."""

    def __init__(self, k=-3.0, tau1=40.0, tau2=10.0, dead=6.0, dt=0.5, noise=0.02):
        self.k, self.tau1, self.tau2, self.dt = k, tau1, tau2, dt
        self.buf = [0.5] * int(round(dead / dt))
        self.x1 = self.x2 = 0.0
        self.noise = noise
        self.rng = np.random.default_rng(5)

    def y(self):
        return 300.0 + self.x2 + self.rng.normal(0.0, self.noise)

    def step(self, u):
        self.buf.append(u)
        du = self.buf.pop(0) - 0.5
        a1 = math.exp(-self.dt / self.tau1)
        a2 = math.exp(-self.dt / self.tau2)
        self.x1 = a1 * self.x1 + (1 - a1) * self.k * du
        self.x2 = a2 * self.x2 + (1 - a2) * self.x1


def run(test, plant):
    t = 0.0
    while not test.finished:
        plant.step(test.feed(t, plant.y()))
        t += plant.dt
    return test


@pytest.mark.parametrize("signal", ["step", "prbs"])
def test_identify_second_order_plant(signal, tmp_path):
    p = Plant()
    test = run(idm.StepTest(0.5, 0.2, 1200.0, signal=signal, clock_s=20.0), p)
    assert test.state == "done"
    m = idm.identify(test.t, test.us, test.y, order=2, tick_s=0.5, signal=signal)
    # noise alone (0.02 K on a response of a few tenths) is about 0.1
    assert m["fit"]["nrmse_validation"] < 0.2
    # the state-space model's static gain is the plant's
    A, B, C = m["A"], m["B"], m["C"]
    dc = (C @ np.linalg.solve(np.eye(len(A)) - A, B))[0, 0]
    assert dc == pytest.approx(-3.0, rel=0.1)
    assert max(abs(np.linalg.eigvals(A))) < 1.0
    assert m["fopdt"]["gain"] == pytest.approx(-3.0, rel=0.15)
    assert m["A"].shape[0] <= 8
    # against a fresh step the plant has not seen (noise-free truth)
    q = Plant(noise=0.0)
    du = np.full(400, 0.15)
    truth = []
    for v in du:
        truth.append(q.y() - 300.0)
        q.step(0.5 + v)
    dt_ratio = int(round(m["ts_s"] / 0.5))
    ym = idm.simulate_model(A, B, C, m["D"], du[::dt_ratio])
    err = np.abs(ym - np.array(truth)[::dt_ratio][: len(ym)])
    assert err.max() < 0.1 * 3.0 * 0.15 + 0.05
    # the file round-trips through the reader's checks
    obj = idm.model_to_dict(m, "cool", "virtual", "out.0", "loop.cool.measurement", "K", 0, 1)
    path = tmp_path / "m.json"
    idm.save_model(path, obj)
    back = idm.load_model(path)
    assert np.array_equal(back["A"], m["A"]) and back["y0"][0] == pytest.approx(m["y0"])
    idm.plot_fit(tmp_path / "fit.png", m, "test")
    assert (tmp_path / "fit.png").stat().st_size > 10000


def test_test_stays_in_its_band():
    test = run(idm.StepTest(0.5, 0.3, 1200.0, band=0.5), Plant())
    assert test.state == "failed" and test.reason == "band"
    assert "limit 0.5" in test.message and test.u == 0.5


def test_test_limits_refused():
    with pytest.raises(TuneError, match="leaves the output limits"):
        idm.StepTest(0.9, 0.2, 100.0)
    with pytest.raises(TuneError, match="signal"):
        idm.StepTest(0.5, 0.2, 100.0, signal="chirp")


def test_drifting_plant_gives_no_unstable_model():
    """An integrating plant (the level keeps rising): refused with the reason, or if a stable
    model comes out, its poles are inside the unit circle."""
    t = np.arange(0, 600, 0.5)
    u = np.where(t > 20, 0.7, 0.5)
    y = 300 + np.cumsum((u - 0.5) * 0.05)
    try:
        m = idm.identify(t, u, y, tick_s=0.5)
    except TuneError as exc:
        assert "unstable" in str(exc) and "longer test" in str(exc)
    else:
        assert max(abs(np.linalg.eigvals(m["A"]))) < 1.0


def test_a_test_that_starts_off_rest_is_fitted_with_its_initial_state():
    """The plant is still settling from an earlier operating point when the test starts (a
    pack cooling down, a chip after a load): the free response is part of the model's fit
    (its initial state), not bent into the poles; the gain is the plant's and the model is
    stable. Without the initial state the same record gives a gain 13 % off (-3.38) and a
    model that starts at the operating point instead of 2.5 K above it."""
    p = Plant(noise=0.02)
    # 2.5 K above the operating point in both lags, decaying with the 40 s and 10 s lags
    p.x1, p.x2 = 2.5, 2.5
    test = run(idm.StepTest(0.5, 0.2, 1200.0, signal="prbs", clock_s=20.0, hold_s=0.0), p)
    m = idm.identify(test.t, test.us, test.y, order=2, tick_s=0.5, u0=0.5, y0=300.0)
    A, B, C = m["A"], m["B"], m["C"]
    assert max(abs(np.linalg.eigvals(A))) < 1.0
    dc = (C @ np.linalg.solve(np.eye(len(A)) - A, B))[0, 0]
    assert dc == pytest.approx(-3.0, rel=0.1)
    # the record starts 2.5 K up: the fit's initial state says so
    assert m["record"]["y_model"][0] == pytest.approx(302.5, abs=0.3)
    assert m["fit"]["nrmse_validation"] < 0.2
    assert len(m["fit"]["initial_state"]) == len(A)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"format": "other"}, "format"),
        ({"version": 2}, "version"),
        ({"ts_s": 0}, "ts_s"),
        ({"A": [[1.0, 0.0]]}, "A has shape 1x2"),
        ({"B": [[1.0, 2.0, 3.0, 4.0]]}, "B has shape 1x4"),
        ({"u0": [0.5, 0.1]}, "u0"),
        ({"A": [[float("nan")]]}, "not finite"),
        ({"outputs": [{"name": "y"}]}, "name and a unit"),
        ({"E": [[0.1]]}, "disturbances has 0 entries, expected 1"),
        ({"version": True}, "version"),
    ],
)
def test_model_file_checks_name_the_key(tmp_path, change, words):
    good = {
        "format": "thermopilot-model",
        "version": 1,
        "loop": "cool",
        "ts_s": 1.0,
        "A": [[0.9]],
        "B": [[0.1]],
        "C": [[1.0]],
        "D": [[0.0]],
        "E": None,
        "inputs": [{"name": "out.0", "unit": "1", "min": 0, "max": 1}],
        "outputs": [{"name": "loop.cool.measurement", "unit": "K"}],
        "disturbances": [],
        "x0": [0.0],
        "u0": [0.5],
        "y0": [300.0],
        "d0": [],
    }
    p = tmp_path / "m.json"
    p.write_text(json.dumps(good))
    idm.load_model(p)
    good.update(change)
    p.write_text(json.dumps(good))
    with pytest.raises(ValueError, match=words):
        idm.load_model(p)


def test_measured_disturbance_becomes_column_e():
    """A plant whose load (a heat input, W) moves in random steps during a PRBS test: the
    fit with the load as a second input recovers its static gain in column E, and the model
    with E follows the held-out data far better than one that ignores the load."""
    k_u, k_d, tau, dt = -4.0, 0.01, 30.0, 0.5
    rng = np.random.default_rng(7)
    test = idm.StepTest(0.5, 0.15, 1800.0, signal="prbs", clock_s=20.0, hold_s=10.0, seed=3)
    t, load, x = 0.0, 400.0, 0.0
    ts, ds = [], []
    a = math.exp(-dt / tau)
    while not test.finished:
        if rng.random() < dt / 60.0:
            load = float(rng.uniform(200.0, 600.0))
        u = test.feed(t, 300.0 + x + rng.normal(0.0, 0.02))
        ts.append(t)
        ds.append(load + rng.normal(0.0, 1.0))
        x = a * x + (1 - a) * (k_u * (u - 0.5) + k_d * (load - 400.0))
        t += dt
    d = np.interp(test.t, ts, ds)
    m = idm.identify(test.t, test.us, test.y, order=1, tick_s=dt, u0=test.u0, d=d)
    nx = m["A"].shape[0]
    gain = np.linalg.solve(np.eye(nx) - m["A"], np.hstack([m["B"], m["E"]]))
    k_u_fit, k_d_fit = (m["C"] @ gain)[0]
    assert k_u_fit == pytest.approx(k_u, rel=0.1)
    assert k_d_fit == pytest.approx(k_d, rel=0.1)
    assert 200.0 < m["d0"] < 600.0
    assert m["fit"]["nrmse_validation"] < 0.2
    # without the load the same record gives a drifting model (refused) or a poor one
    try:
        without = idm.identify(test.t, test.us, test.y, order=1, tick_s=dt, u0=test.u0)
    except TuneError as exc:
        assert "unstable" in str(exc)
    else:
        assert m["fit"]["nrmse_validation"] < 0.5 * without["fit"]["nrmse_validation"]
    # the model file keeps the disturbance's column, name, unit and operating point
    obj = idm.model_to_dict(
        m,
        "case",
        "b",
        "out.0",
        "loop.case.measurement",
        "K",
        0,
        1,
        disturbance_name="sensed.1",
        disturbance_unit="W",
    )
    assert obj["disturbances"] == [{"name": "sensed.1", "unit": "W"}]


def test_a_disturbance_that_never_moved_is_refused():
    test = run(idm.StepTest(0.5, 0.15, 600.0, hold_s=10.0), Plant())
    with pytest.raises(TuneError, match="stayed at 400"):
        idm.identify(
            test.t, test.us, test.y, tick_s=0.5, u0=test.u0, d=np.full(len(test.t), 400.0)
        )
