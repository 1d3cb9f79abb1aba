"""The relay tuner's state machine and rules, on simulated plants (no board)."""

import math

import numpy as np
import pytest

from thermopilot.host.control.tune import RULES, RelayTuner, TuneError, gains


class Fopdt:
    """A linear FOPDT plant ``k exp(-dead s)/(tau s + 1)`` about (u_eq, y_eq), sampled at dt."""

    def __init__(self, k=2.0, tau=50.0, dead=10.0, dt=0.5, u_eq=0.5, y_eq=300.0, noise=0.0):
        self.k, self.tau, self.dt, self.u_eq, self.y_eq = k, tau, dt, u_eq, y_eq
        self.buf = [u_eq] * int(round(dead / dt))
        self.x = 0.0
        self.noise = noise
        self.rng = np.random.default_rng(0)

    def y(self):
        return self.y_eq + self.x + (self.rng.normal(0, self.noise) if self.noise else 0.0)

    def step(self, u):
        self.buf.append(u)
        ud = self.buf.pop(0)
        a = math.exp(-self.dt / self.tau)
        self.x = a * self.x + (1 - a) * self.k * (ud - self.u_eq)


def drive(tuner, plant, fault_at=None):
    t = 0.0
    while not tuner.finished:
        u = tuner.feed(t, plant.y(), fault=fault_at is not None and t >= fault_at)
        plant.step(u)
        t += plant.dt
    return tuner


def true_ultimate(k, tau, dead):
    from scipy.optimize import brentq

    w = brentq(lambda w: math.atan(tau * w) + dead * w - math.pi, 1e-6, 10.0)
    return math.sqrt(1 + (tau * w) ** 2) / abs(k), 2 * math.pi / w


def test_hysteresis_above_the_measured_noise():
    p = Fopdt(noise=0.05)
    tu = drive(RelayTuner(300.0, 0.5, 0.2, hold_samples=200), p)
    assert tu.state == "done", tu.message
    # peak-to-peak of 200 Gaussian samples of sigma 0.05 is 4..7 sigma; the hysteresis
    # (half-width) is that whole band, so noise alone does not switch the relay: every
    # half-period outlasts the plant's dead time
    assert 0.15 < tu.noise_pp < 0.4
    assert tu.hysteresis == pytest.approx(tu.noise_pp)
    halves = [c[k] for c in tu.cycle_list for k in ("high_s", "low_s")]
    assert min(halves) > 10.0


def test_biased_relay_balances_an_offset_operating_point():
    """Started far from the output that holds the setpoint, the plain relay runs lopsided;
    the biased relay re-centres, balances its half-periods and finds the true point."""
    # the sampled relay switches on average half a sample late: dead time + dt/2
    ku, pu = true_ultimate(2.0, 50.0, 10.25)
    plain = drive(RelayTuner(300.0, 0.3, 0.25, bias=False, max_cycles=30), Fopdt(u_eq=0.5))
    biased = drive(RelayTuner(300.0, 0.3, 0.25), Fopdt(u_eq=0.5))
    assert biased.state == "done", biased.message
    assert biased.result["symmetry"] > 0.9
    assert biased.result["centre"] == pytest.approx(0.5, abs=0.02)
    assert biased.result["ku"] == pytest.approx(ku, rel=0.08)
    assert biased.result["pu_s"] == pytest.approx(pu, rel=0.08)
    # 4 d / (pi a), the symmetric relay's formula, is further off than the harmonic estimate
    assert abs(biased.result["ku_symmetric"] / ku - 1) > abs(biased.result["ku"] / ku - 1)
    assert biased.result["fopdt"]["tau_s"] == pytest.approx(50.0, rel=0.02)
    # the plain relay here sits below ESPHome's 0.66 symmetry limit
    sym = np.median([c["symmetry"] for c in plain.cycle_list[1:]])
    assert sym < 0.66


def test_reverse_acting_loop():
    ku, pu = true_ultimate(-3.0, 80.0, 8.0)
    tu = drive(RelayTuner(300.0, 0.5, 0.1, reverse=True), Fopdt(k=-3.0, tau=80.0, dead=8.0))
    assert tu.state == "done", tu.message
    assert tu.result["ku"] == pytest.approx(ku, rel=0.08)
    assert tu.result["fopdt"]["gain"] == pytest.approx(-3.0, rel=0.1)
    g = gains(tu.result, "amigo")
    assert g["kp"] > 0 and g["ki"] > 0


def test_wrong_direction_leaves_the_band_and_says_so():
    """A loop declared direct that is reverse runs away: the band stops it, output restored."""
    tu = drive(RelayTuner(300.0, 0.5, 0.2, band=0.5), Fopdt(k=-3.0))
    assert tu.state == "failed" and tu.reason == "band"
    assert "moved" in tu.message and "limit 0.5" in tu.message
    assert tu.u == 0.5
    # without a band it ends as no oscillation, and says to check the direction
    tu = drive(RelayTuner(300.0, 0.5, 0.2, max_duration_s=600), Fopdt(k=-3.0))
    assert tu.reason == "no_oscillation" and "direction" in tu.message


def test_setpoint_out_of_reach_aborts_with_the_fix():
    """The plant cannot reach the setpoint with the outputs allowed: no oscillation."""
    tu = drive(RelayTuner(310.0, 0.5, 0.2, max_duration_s=2000), Fopdt(k=2.0))
    assert tu.state == "failed" and tu.reason == "no_oscillation"
    assert "310" in tu.message and "setpoint" in tu.message


def test_fault_aborts_at_once():
    tu = drive(RelayTuner(300.0, 0.5, 0.2), Fopdt(), fault_at=100.0)
    assert tu.state == "failed" and tu.reason == "fault"
    assert len(tu.t) == 200  # stopped at the first sample with the fault (t = 100 s)
    assert tu.u == 0.5


def test_timeout_names_the_progress():
    tu = drive(RelayTuner(300.0, 0.5, 0.2, max_duration_s=150), Fopdt())
    assert tu.state == "failed" and tu.reason == "timeout"
    assert "150" in tu.message and "--max-duration" in tu.message


@pytest.mark.parametrize(
    "kw, word",
    [
        ({"amplitude": 0.0}, "amplitude"),
        ({"amplitude": 0.7}, "half the output range"),
        ({"output_start": 1.5}, "output_start"),
        ({"out_min": 1.0, "out_max": 0.0}, "output limits"),
        ({"setpoint": math.nan}, "setpoint"),
        ({"cycles": 1}, "cycles"),
        ({"band": -1}, "band"),
    ],
)
def test_bad_arguments_named(kw, word):
    args = {"setpoint": 300.0, "output_start": 0.5, "amplitude": 0.2}
    args.update(kw)
    with pytest.raises(TuneError, match=word):
        RelayTuner(args.pop("setpoint"), args.pop("output_start"), args.pop("amplitude"), **args)


def test_rules_follow_their_sources():
    res = {"ku": 2.0, "pu_s": 100.0, "fopdt": {"gain": 2.0, "tau_s": 50.0, "dead_s": 10.0}}
    zn = gains(res, "zn", "pid")
    assert (zn["kp"], zn["ki"], zn["kd"]) == pytest.approx((1.2, 1.2 / 50, 1.2 * 12.5))
    tl = gains(res, "tl", "pi")
    assert (tl["kp"], tl["ki"]) == pytest.approx((2 / 3.2, 2 / 3.2 / 220))
    simc = gains(res, "simc", "pid")
    assert simc["kind"] == "pi"
    assert (simc["kc"], simc["ti_s"]) == pytest.approx((50 / (2 * 20), 50.0))
    am = gains(res, "amigo", "pi")
    kc = 0.15 / 2 + (0.35 - 10 * 50 / 60**2) * 50 / (2 * 10)
    ti = 0.35 * 10 + 13 * 10 * 2500 / (2500 + 12 * 500 + 700)
    assert (am["kc"], am["ti_s"]) == pytest.approx((kc, ti))
    with pytest.raises(TuneError, match="rule"):
        gains(res, "cohen-coon")
    with pytest.raises(TuneError, match="FOPDT"):
        gains({"ku": 2.0, "pu_s": 100.0, "fopdt": None}, "simc")
    assert set(RULES) == {"zn", "tl", "simc", "amigo"}
