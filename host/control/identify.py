"""Plant identification for one loop: a step (doublet) or PRBS test within the user's limits,
then a FOPDT fit and a low-order discrete state-space model, judged on held-out data, written
in the model file that ``thermopilot mpc design`` reads.

:class:`StepTest` is a step-driven state machine like the relay tuner (``feed(t_s, y) -> u``,
no I/O), so that it runs against a simulated plant, the virtual board in lockstep and a real
board in real time.

The model
---------
A discrete ARX structure ``A(q) y = q^-d B(q) u + c`` of order ``n`` (1 or 2) with the dead
time ``d`` (whole samples, from the FOPDT fit), first by linear least squares, then refined
as an output-error model (the free-run simulation error, ``scipy.optimize.least_squares``):
ARX alone is biased by measurement noise, the output-error fit is not. python-control has no
identification (reference systems.md s.4) and SIPPY is LGPL and not on PyPI in a maintained
release; a SISO plant with dead time needs no subspace method, so scipy it is. The transfer
function becomes a state-space model in observable form with ``d`` delay states
(``nx = n + d <= 8``, the board's MPC limit; the sample time is chosen so that it fits).

Fit quality is the NRMSE ``rms(y - y_model) / std(y)`` of the free-run simulation over the
last third of the record, which the fit never sees (``nrmse_validation``).

The model file
--------------
JSON, described in docs/tuning.md ("The model file") and checked by :func:`load_model`:
``format`` ``"thermopilot-model"``, ``version`` 1, ``loop``, ``board``, ``ts_s``; ``A``,
``B``, ``C``, ``D`` (lists of rows), ``E`` (nx x nd or null); ``inputs``, ``outputs``,
``disturbances`` (dicts with ``name`` and ``unit``; inputs also ``min``/``max``); the
operating point ``x0``, ``u0``, ``y0``, ``d0``; optional ``fopdt`` (``gain``, ``tau_s``,
``dead_s``) and ``fit``. The model is in deviations: ``x+ = A x + B (u - u0) + E (d - d0)``,
``y - y0 = C x + D (u - u0)``.
"""

import json
import math

import numpy as np

from .tune import TuneError, fit_fopdt

__all__ = [
    "StepTest",
    "identify",
    "save_model",
    "load_model",
    "model_to_dict",
    "simulate_model",
    "plot_fit",
    "MODEL_FORMAT",
    "MODEL_VERSION",
]

MODEL_FORMAT = "thermopilot-model"
MODEL_VERSION = 1
NX_MAX = 8


class StepTest:
    """An identification experiment on one loop's output, fed one sample at a time.

    Parameters
    ----------
    output_start : float
        The output held before and between the moves (the operating point ``u0``).
    amplitude : float
        Size of the moves in output units (> 0); the output stays within
        ``[out_min, out_max]``.
    duration_s : float
        Length of the test after the hold, s.
    out_min, out_max : float
        Output limits.
    signal : str
        ``"step"``: steps of ``+amplitude``, ``-amplitude``, ``+amplitude`` and back to
        ``u0``, a quarter of the duration each (both directions, and moves in the held-out
        last third too); ``"prbs"``: a pseudo-random
        binary sequence of ``+/- amplitude`` with bit time ``clock_s``.
    clock_s : float
        PRBS bit time, s (about a third of the plant's time constant is a good start).
    band : float
        How far the measurement may move from its start before the test aborts.
    hold_s : float
        Hold at ``output_start`` before the first move (the operating point and the noise).
    seed : int
        PRBS seed.
    """

    def __init__(
        self,
        output_start,
        amplitude,
        duration_s,
        *,
        out_min=0.0,
        out_max=1.0,
        signal="step",
        clock_s=10.0,
        band=math.inf,
        hold_s=10.0,
        seed=1,
    ):
        self.out_min, self.out_max = float(out_min), float(out_max)
        if not self.out_min < self.out_max:
            raise TuneError(
                "bad_input",
                "output limits %r..%r: expected out_min < out_max" % (out_min, out_max),
            )
        self.u0 = float(output_start)
        self.d = float(amplitude)
        if not self.d > 0 or not math.isfinite(self.d):
            raise TuneError("bad_input", "amplitude=%r: expected a positive number" % (amplitude,))
        if self.u0 - self.d < self.out_min - 1e-12 or self.u0 + self.d > self.out_max + 1e-12:
            raise TuneError(
                "bad_input",
                "output %g +/- amplitude %g leaves the output limits %g..%g; lower the amplitude "
                "or start nearer the middle" % (self.u0, self.d, self.out_min, self.out_max),
            )
        self.duration_s = float(duration_s)
        if not self.duration_s > 0:
            raise TuneError("bad_input", "duration_s=%r: expected > 0" % (duration_s,))
        if signal not in ("step", "prbs"):
            raise TuneError("bad_input", "signal %r: expected step or prbs" % (signal,))
        self.signal = signal
        self.clock_s = float(clock_s)
        if signal == "prbs" and not self.clock_s > 0:
            raise TuneError("bad_input", "clock_s=%r: expected > 0" % (clock_s,))
        self.band = float(band)
        self.hold_s = float(hold_s)
        self.rng = np.random.default_rng(seed)
        self._bits = []
        self.state = "hold"
        self.reason = None
        self.message = None
        self.t, self.y, self.us = [], [], []
        self.t0 = None
        self.y_start = None
        self.u = self.u0

    @property
    def finished(self):
        return self.state in ("done", "failed")

    @property
    def progress(self):
        el = 0.0 if self.t0 is None or not self.t else self.t[-1] - self.t0
        return {
            "state": self.state,
            "elapsed_s": el,
            "total_s": self.hold_s + self.duration_s,
            "cycles": 0,
            "ku": None,
            "pu_s": None,
        }

    def _fail(self, reason, message):
        self.state = "failed"
        self.reason = reason
        self.message = message
        self.u = self.u0
        return self.u

    def _prbs(self, k):
        # a maximum-length-like random binary sequence, with no bit repeated more than 4 times
        # (long runs carry the low frequencies, too many of them waste the test)
        while len(self._bits) <= k:
            b = self.rng.random() < 0.5
            if len(self._bits) >= 4 and all(x == b for x in self._bits[-4:]):
                b = not b
            self._bits.append(b)
        return self._bits[k]

    def feed(self, t_s, y, fault=False):
        """Take one sample, return the output to apply until the next one."""
        if self.finished:
            return self.u
        t_s, y = float(t_s), float(y)
        if fault:
            return self._fail(
                "fault",
                "the board reported %s at t=%.1f s; the test stopped and the loop is in its "
                "safe state; clear the cause, then 'thermopilot fault reset'"
                % (fault if isinstance(fault, str) else "a fault", self._el(t_s)),
            )
        if not (math.isfinite(y) and math.isfinite(t_s)):
            return self._fail("bad_input", "measurement %r at t=%r s is not finite" % (y, t_s))
        if self.t0 is None:
            self.t0, self.y_start = t_s, y
        self.t.append(t_s)
        self.y.append(y)
        el = t_s - self.t0
        if abs(y - self.y_start) > self.band:
            self.us.append(self.u0)
            return self._fail(
                "band",
                "the measurement moved %.3g from its start %.6g (limit %.3g) at t=%.0f s; "
                "lower the amplitude (now %.3g) or widen the band"
                % (y - self.y_start, self.y_start, self.band, el, self.d),
            )
        if el >= self.hold_s + self.duration_s:
            self.us.append(self.u0)
            self.state = "done"
            self.u = self.u0
            return self.u
        if el < self.hold_s:
            u = self.u0
        else:
            self.state = "test"
            tt = el - self.hold_s
            if self.signal == "step":
                q = min(int(4 * tt / self.duration_s), 3)
                u = self.u0 + (self.d, -self.d, self.d, 0.0)[q]
            else:
                u = self.u0 + (self.d if self._prbs(int(tt // self.clock_s)) else -self.d)
        u = min(max(u, self.out_min), self.out_max)
        self.u = u
        self.us.append(u)
        return u

    def _el(self, t_s):
        return 0.0 if self.t0 is None else t_s - self.t0


# -- fitting ----------------------------------------------------------------------------------


def _resample(t, u, y, ts_s):
    """y sampled at multiples of ts_s from t[0]; u averaged over each interval (ZOH)."""
    t = np.asarray(t, float)
    u = np.asarray(u, float)
    y = np.asarray(y, float)
    tg = np.arange(t[0], t[-1] - ts_s + 1e-9, ts_s)
    yg = np.interp(tg, t, y)
    # u as held between samples: integrate the step function
    dt = np.diff(np.append(t, t[-1] + (t[-1] - t[-2] if len(t) > 1 else ts_s)))
    cum = np.concatenate([[0.0], np.cumsum(u * dt)])
    edges = np.append(t, t[-1] + dt[-1])
    cg = np.interp(np.append(tg, tg[-1] + ts_s), edges, cum)
    ug = np.diff(cg) / ts_s
    return tg, ug, yg


def _sim_arx(a, b, d, du):
    """Free-run response (deviations, from rest) of y = q^-d B/A u."""
    from scipy.signal import lfilter

    num = np.concatenate([np.zeros(d + 1), b])
    den = np.concatenate([[1.0], -np.asarray(a)])
    return lfilter(num, den, du)


def _free_response(a, zi, n):
    """Free response over ``n`` samples of ``1 / A(q)`` from the observable-form plant states
    ``zi`` (what :func:`to_state_space` calls ``x[d:]`` at the first sample)."""
    from scipy.signal import lfilter

    return lfilter([1.0], np.concatenate([[1.0], -np.asarray(a)]), np.zeros(n), zi=zi)[0]


def _arx_ls(yd, du, n, d, dd=None):
    """Linear least squares ARX(n, n, d) with a constant term; with ``dd`` (the measured
    disturbance, deviations) a second input of n terms and no dead time beyond one sample.
    Returns (a, b, e, c), e empty without ``dd``."""
    rows, target = [], []
    k0 = n + d + 1
    for k in range(k0, len(yd)):
        row = [yd[k - i] for i in range(1, n + 1)] + [du[k - d - j] for j in range(1, n + 1)]
        if dd is not None:
            row += [dd[k - j] for j in range(1, n + 1)]
        rows.append(row + [1.0])
        target.append(yd[k])
    theta, *_ = np.linalg.lstsq(np.array(rows), np.array(target), rcond=None)
    e = theta[2 * n : 3 * n] if dd is not None else np.zeros(0)
    return theta[:n], theta[n : 2 * n], e, theta[-1]


def _without_disturbance(t, u, y, d, tick, u0):
    """``y`` less the measured disturbance's effect, estimated by a quick ARX(2) with both
    inputs on a grid of about 600 samples: the FOPDT fit (which chooses the sample time and
    the dead time) must see the response to the output alone. ``y`` as it is when that ARX
    is unstable or the record does not fit the shapes."""
    if d.shape != t.shape or not np.all(np.isfinite(d)):
        return y
    ts0 = max(tick, (t[-1] - t[0]) / 600.0)
    tg, ug, yg = _resample(t, u, y, ts0)
    _, dg, _ = _resample(t, d, y, ts0)
    dg = dg[: len(tg)]
    if len(tg) < 30:
        return y
    dm = float(np.mean(dg))
    a, _b, e, _c = _arx_ls(yg - float(np.mean(yg)), ug - u0, 2, 0, dg - dm)
    if np.max(np.abs(np.roots(np.concatenate([[1.0], -a])))) >= 1.0:
        return y
    effect = _sim_arx(a, e, 0, dg - dm)
    return y - np.interp(t, tg, effect)


def to_state_space(a, b, d):
    """Observable-form (A, B, C, D) of ``y = q^-d (b1 q^-1 + ... + bn q^-n) / (1 - a1 q^-1 -
    ... - an q^-n) u``; nx = n + d."""
    n = len(a)
    nx = n + d
    # delay chain first (u enters x[0]), then the plant's own states
    A = np.zeros((nx, nx))
    B = np.zeros((nx, 1))
    C = np.zeros((1, nx))
    if d > 0:
        B[0, 0] = 1.0
        for i in range(1, d):
            A[i, i - 1] = 1.0
        src = ("x", d - 1)
    else:
        src = ("u", None)
    # observable canonical form of B(q)/A(q) on states p = x[d:]
    Ap = np.zeros((n, n))
    Ap[:, 0] = a
    for i in range(n - 1):
        Ap[i, i + 1] = 1.0
    A[d:, d:] = Ap
    bp = np.asarray(b, float).reshape(n)
    if src[0] == "u":
        B[d:, 0] = bp
    else:
        A[d:, src[1]] = bp
    C[0, d] = 1.0
    return A, B, C, np.zeros((1, 1))


def simulate_model(A, B, C, D, du, x0=None, E=None, dd=None):
    """Free-run response of the deviation model to ``du`` (nu = 1) and, with ``E``, to the
    measured disturbance's deviations ``dd`` (nd = 1)."""
    x = np.zeros(A.shape[0]) if x0 is None else np.array(x0, float)
    out = np.empty(len(du))
    for k, v in enumerate(du):
        out[k] = (C @ x)[0] + D[0, 0] * v
        x = A @ x + B[:, 0] * v
        if E is not None and E.shape[1]:
            x = x + E[:, 0] * dd[k]
    return out


def nrmse(y, ym):
    y = np.asarray(y, float)
    s = float(np.std(y))
    return float(np.sqrt(np.mean((y - ym) ** 2)) / (s if s > 0 else 1.0))


def identify(t, u, y, *, order=2, ts_s=None, tick_s=None, u0=None, y0=None, signal="step", d=None):
    """Fit a FOPDT model and a discrete state-space model to one test's record.

    Parameters
    ----------
    t, u, y : array
        Sample times (s), outputs applied after each sample, measurements (SI).
    order : int
        1 or 2: poles of the ARX/OE model (besides the dead-time states).
    ts_s : float or None
        Model sample time; None chooses one: the MPC horizon (30 steps) spans the plant's
        settling time ``4 tau + L`` and the dead time fits in the state limit, rounded to a
        multiple of ``tick_s``.
    tick_s : float or None
        The board's tick (the shortest sample time), default the record's.
    u0, y0 : float or None
        Operating point; default the output and the mean measurement of the first samples.
    signal : str
        Recorded in the fit summary.
    d : array or None
        The measured disturbance at the times ``t`` (SI; the sensor the MPC will use as
        feed-forward), when it moved during the test: fitted as a second input sharing the
        model's poles (column ``E``); its operating point ``d0`` is its mean over the first
        samples, like ``y0``.

    Returns
    -------
    dict
        ``A, B, C, D, E`` (ndarrays; ``E`` None without ``d``), ``ts_s``, ``u0``, ``y0``,
        ``d0`` (None without ``d``), ``fopdt``, ``fit`` (NRMSE on the
        training and validation parts), ``record`` (t, u, y and the model's free-run output on
        the sample grid, for the plot).

    Raises
    ------
    TuneError
        ``fit``: too little data, no response, or an unstable model.
    """
    t = np.asarray(t, float)
    u = np.asarray(u, float)
    y = np.asarray(y, float)
    if len(t) < 30:
        raise TuneError("fit", "only %d samples: run the test longer (--duration)" % len(t))
    if order not in (1, 2, 3):
        raise TuneError("bad_input", "order=%r: expected 1, 2 or 3" % (order,))
    tick = float(np.median(np.diff(t))) if tick_s is None else float(tick_s)
    u0 = float(u[0]) if u0 is None else float(u0)
    n_split = int(len(t) * 2 / 3)
    y_fop = y
    if d is not None:
        y_fop = _without_disturbance(t, u, y, np.asarray(d, float), tick, u0)
    try:
        fop = fit_fopdt(t[:n_split], u[:n_split], y_fop[:n_split], reverse=None)
    except ValueError as exc:
        raise TuneError("fit", "FOPDT fit failed: %s" % exc) from None
    if ts_s is None:
        settle = 4.0 * fop["tau_s"] + fop["dead_s"]
        ts = max(tick, settle / 30.0, fop["dead_s"] / (NX_MAX - order - 0.5))
        # at least 60 samples in the record (a plant slower than the test gets a model of
        # what the test saw, or is refused as unstable below)
        ts = min(ts, (t[-1] - t[0]) / 60.0)
        ts_s = tick * max(1, round(ts / tick))
    ts_s = float(ts_s)
    tg, ug, yg = _resample(t, u, y, ts_s)
    if d is not None:
        d = np.asarray(d, float)
        if d.shape != t.shape or not np.all(np.isfinite(d)):
            raise TuneError(
                "bad_input",
                "the disturbance record has %d values (finite: %s), expected %d finite values "
                "at the test's sample times" % (d.size, bool(np.all(np.isfinite(d))), t.size),
            )
        # the disturbance averaged over each model interval, as the output is
        _, dg, _ = _resample(t, d, y, ts_s)
        dg = dg[: len(tg)]
    if len(tg) < 20:
        raise TuneError(
            "fit",
            "%d samples at the model's sample time %.3g s: the test is too short for this "
            "plant; run it for at least %.0f s" % (len(tg), ts_s, 20 * ts_s * 1.5),
        )
    dly = int(round(fop["dead_s"] / ts_s))
    dly = min(dly, NX_MAX - order)
    split = int(len(tg) * 2 / 3)
    y0 = float(np.mean(yg[: max(3, int(0.05 * len(tg)))])) if y0 is None else float(y0)
    du = ug - u0
    yd = yg - y0
    if d is not None:
        d0 = float(np.mean(dg[: max(3, int(0.05 * len(tg)))]))
        ddev = dg - d0
        # a disturbance that did not move is no column E: least squares would fit noise
        if float(np.std(ddev)) <= 1e-9 * max(1.0, abs(d0)):
            raise TuneError(
                "fit",
                "the measured disturbance stayed at %.4g over the test: it cannot be "
                "identified; run without --steady so the scenario's disturbance moves, or "
                "without --disturbance" % d0,
            )
    else:
        d0, ddev = None, None
    nd = 0 if d is None else 1
    a, b, e, c = _arx_ls(yd[:split], du[:split], order, dly, None if d is None else ddev[:split])

    from scipy.optimize import least_squares

    def unpack(p):
        return (
            p[:order],
            p[order : 2 * order],
            p[2 * order : (2 + nd) * order],
            p[(2 + nd) * order : (3 + nd) * order],
            p[-1],
        )

    def sim(p, n, init):
        aa, bb, ee, zi, off = unpack(p)
        ys = _sim_arx(aa, bb, dly, du[:n]) + off
        if nd:
            # the disturbance enters the plant's states one sample later (strictly proper)
            ys = ys + _sim_arx(aa, ee, 0, ddev[:n])
        if init:
            ys = ys + _free_response(aa, zi, n)
        return ys

    p0 = np.concatenate([a, b, e, np.zeros(order), [0.0]])
    # start the output-error fit from a stable ARX (a noisy ARX can come out unstable)
    if np.max(np.abs(np.roots(np.concatenate([[1.0], -a])))) >= 1.0:
        p0[:order] = [0.9] + [0.0] * (order - 1)
    # First with the plant's own states at the start estimated: a test rarely starts at rest
    # (the pack still cooling down, the chip still settling), and without them the
    # output-error fit bends the poles to explain that free response (the battery's model
    # came out unstable). A pole slower than the whole record cannot be told from such a
    # free response, though: the fit may trade a near-integrator's huge gain against its
    # initial state. Then the fit is made again from rest, as a model without initial state.
    span_s = float(tg[split - 1] - tg[0])
    for init in (True, False):
        sol = least_squares(
            lambda p, init=init: sim(p, split, init) - yd[:split], p0, max_nfev=400 * (1 + nd)
        )
        a, b, e, zi, off = unpack(sol.x)
        if not init:
            zi = np.zeros(order)
        poles = np.roots(np.concatenate([[1.0], -a]))
        radius = float(np.max(np.abs(poles)))
        slowest_s = -ts_s / math.log(radius) if 0.0 < radius < 1.0 else math.inf
        if slowest_s <= span_s:
            break
    if radius >= 1.0:
        raise TuneError(
            "fit",
            "the identified model is unstable (pole radius %.4f >= 1): the plant drifted or "
            "integrates over the test; run a longer test with a smaller amplitude around a "
            "steady operating point" % radius,
        )
    y0 = y0 + float(off)
    A, B, C, D = to_state_space(a, b, dly)
    E = None
    if nd:
        # the observable form's plant states x[dly:] take the disturbance as they take u
        # when there is no dead time
        E = np.zeros((A.shape[0], 1))
        E[dly:, 0] = e
    x_init = np.zeros(A.shape[0])
    x_init[dly:] = zi  # the observable form's plant states are lfilter's initial conditions
    ym = simulate_model(A, B, C, D, du, x0=x_init, E=E, dd=ddev) + y0
    fit = {
        "method": "arx-oe-ls" + (" with the measured disturbance" if nd else ""),
        # the plant states at the first sample (zeros: fitted from rest, see above)
        "initial_state": [float(v) for v in x_init],
        "order": order,
        "delay_samples": dly,
        "signal": signal,
        "nrmse_train": nrmse(yg[:split], ym[:split]),
        "nrmse_validation": nrmse(yg[split:], ym[split:]),
        "n_train": int(split),
        "n_validation": int(len(tg) - split),
    }
    return {
        "A": A,
        "B": B,
        "C": C,
        "D": D,
        "E": E,
        "ts_s": ts_s,
        "u0": u0,
        "y0": y0,
        "d0": d0,
        "fopdt": {k: fop[k] for k in ("gain", "tau_s", "dead_s")},
        "fit": fit,
        "record": {
            "t": tg,
            "u": ug,
            "y": yg,
            "y_model": ym,
            "split": split,
            "d": None if d is None else dg,
        },
    }


# -- the model file ---------------------------------------------------------------------------


def model_to_dict(
    m,
    loop,
    board,
    input_name,
    output_name,
    output_unit,
    out_min,
    out_max,
    disturbance_name=None,
    disturbance_unit="",
):
    """The model file's JSON object for an :func:`identify` result; the disturbance's name
    (the board's channel, e.g. ``sensed.1``) and unit when it has a column ``E``."""
    has_e = m.get("E") is not None
    import datetime

    nx = m["A"].shape[0]
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "loop": loop,
        "board": board,
        "ts_s": m["ts_s"],
        "A": m["A"].tolist(),
        "B": m["B"].tolist(),
        "C": m["C"].tolist(),
        "D": m["D"].tolist(),
        "E": m["E"].tolist() if has_e else None,
        "inputs": [{"name": input_name, "unit": "1", "min": out_min, "max": out_max}],
        "outputs": [{"name": output_name, "unit": output_unit}],
        "disturbances": (
            [{"name": disturbance_name or "d0", "unit": disturbance_unit}] if has_e else []
        ),
        "x0": [0.0] * nx,
        "u0": [m["u0"]],
        "y0": [m["y0"]],
        "d0": [m["d0"]] if has_e else [],
        "fopdt": m["fopdt"],
        "fit": m["fit"],
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def save_model(path, obj):
    """Check ``obj`` as :func:`load_model` would, then write it (JSON, UTF-8)."""
    _check_model(obj, str(path))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def load_model(path):
    """Read and check a model file (docs/tuning.md, "The model file").

    The one reader of the format: ``thermopilot mpc design`` (:mod:`.design`) and the
    benchmarks use it too.

    Parameters
    ----------
    path : str or pathlib.Path
        The JSON file ``thermopilot identify`` writes.

    Returns
    -------
    dict
        The file's keys, with ``A``, ``B``, ``C``, ``D``, ``E`` as float arrays (``E`` of
        shape (nx, 0) when null), ``x0``, ``u0``, ``y0``, ``d0`` as float vectors and the
        sizes ``nx``, ``nu``, ``ny``, ``nd``.

    Raises
    ------
    ValueError
        Naming the file, the key and its value when a rule of the format is broken.
    """
    where = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError("%s: not JSON (%s)" % (where, exc)) from None
    return _check_model(obj, where)


#: keys every model file has; the others (E, disturbances, d0) may be left out when nd = 0
_MODEL_KEYS = ("format", "version", "loop", "ts_s", "A", "B", "C", "D", "inputs", "outputs")


def _check_model(obj, where):
    """The checked model with arrays (see :func:`load_model`); ValueError naming the key."""

    def bad(key, why):
        raise ValueError("%s: %s %s" % (where, key, why))

    if not isinstance(obj, dict):
        raise ValueError("%s: expected a JSON object, got %s" % (where, type(obj).__name__))
    missing = [k for k in _MODEL_KEYS if k not in obj]
    if missing:
        raise ValueError(
            "%s: missing key(s) %s; is this a file from 'thermopilot identify'?"
            % (where, ", ".join(missing))
        )
    if obj["format"] != MODEL_FORMAT:
        bad("format", "%r, expected %r" % (obj["format"], MODEL_FORMAT))
    v = obj["version"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        bad("version", "%r, expected an integer >= 1" % (v,))
    if v > MODEL_VERSION:
        bad(
            "format version",
            "%d, this ThermoPilot reads up to %d; upgrade ThermoPilot" % (v, MODEL_VERSION),
        )
    ts = obj["ts_s"]
    if (
        isinstance(ts, bool)
        or not isinstance(ts, (int, float))
        or not math.isfinite(ts)
        or ts <= 0
    ):
        bad("ts_s", "= %r, expected a sample time in seconds > 0" % (ts,))

    def mat(key, allow_none=False):
        m = obj.get(key)
        if m is None and allow_none:
            return None
        try:
            a = np.array(m, float)
        except (TypeError, ValueError):
            bad(key, "= %r is not a matrix of numbers (a list of rows)" % (m,))
        if a.ndim != 2:
            bad(key, "must be a list of rows (a matrix), got %d dimension(s)" % a.ndim)
        if not np.all(np.isfinite(a)):
            bad(key, "has a value that is not finite")
        return a

    A, B, C, D = mat("A"), mat("B"), mat("C"), mat("D")
    E = mat("E", allow_none=True)
    nx = A.shape[0]
    if A.shape != (nx, nx) or not 1 <= nx <= NX_MAX:
        bad("A", "has shape %dx%d, expected square with 1..%d rows" % (A.shape + (NX_MAX,)))
    nu = B.shape[1]
    if B.shape[0] != nx or not 1 <= nu <= 3:
        bad("B", "has shape %dx%d, expected %dxN with N 1..3 inputs" % (B.shape + (nx,)))
    ny = C.shape[0]
    if C.shape[1] != nx or not 1 <= ny <= 8:
        bad("C", "has shape %dx%d, expected Nx%d with N 1..8 outputs" % (C.shape + (nx,)))
    if D.shape != (ny, nu):
        bad("D", "has shape %dx%d, expected %dx%d" % (D.shape + (ny, nu)))
    nd = 0 if E is None else E.shape[1]
    if E is not None and (E.shape[0] != nx or not 1 <= nd <= 3):
        bad("E", "has shape %dx%d, expected %dxN with N 1..3 (or null)" % (E.shape + (nx,)))
    kinds = {"inputs": "column of B", "outputs": "row of C", "disturbances": "column of E"}
    for key, n in (("inputs", nu), ("outputs", ny), ("disturbances", nd)):
        ch = obj.get(key, [] if key == "disturbances" else None)
        if not isinstance(ch, list) or len(ch) != n:
            bad(
                key,
                "has %s entries, expected %d (one per %s)"
                % (len(ch) if isinstance(ch, list) else repr(ch), n, kinds[key]),
            )
        for i, c in enumerate(ch):
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) or "unit" not in c:
                bad("%s[%d]" % (key, i), "= %r needs a name and a unit" % (c,))
    out = dict(obj)
    out["ts_s"] = float(ts)
    for key, n in (("x0", nx), ("u0", nu), ("y0", ny), ("d0", nd)):
        vals = obj.get(key, [0.0] * n if key == "x0" else [] if key == "d0" else None)
        if not isinstance(vals, list) or len(vals) != n:
            bad(key, "= %r, expected a list of %d number(s)" % (vals, n))
        if not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in vals
        ):
            bad(key, "= %r has a value that is not a finite number" % (vals,))
        out[key] = np.array(vals, float)
    out.update(A=A, B=B, C=C, D=D, E=np.zeros((nx, 0)) if E is None else E)
    out.update(nx=nx, nu=nu, ny=ny, nd=nd)
    return out


def plot_fit(path, model, title, y_label="measurement", y_offset=0.0):
    """PNG of the measured output vs the model's free-run output (training and held-out
    parts marked) and the input below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = model["record"]
    t = r["t"] - r["t"][0]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.5), height_ratios=[3, 1])
    ax1.plot(t, r["y"] + y_offset, lw=1, label="measured")
    ax1.plot(t, r["y_model"] + y_offset, lw=1.2, label="model (free run)")
    ax1.axvline(t[r["split"]], color="grey", ls="--", lw=1)
    ax1.text(
        t[r["split"]],
        ax1.get_ylim()[1],
        " held out: NRMSE %.3f" % model["fit"]["nrmse_validation"],
        va="top",
    )
    ax1.set_ylabel(y_label)
    ax1.legend(loc="lower left")
    ax1.set_title(title)
    ax2.step(t, r["u"], where="post", lw=1)
    ax2.set_ylabel("output")
    ax2.set_xlabel("time, s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
