"""Relay autotune as a step-driven state machine, and the tuning rules that turn its result
into PID gains.

:class:`RelayTuner` does no I/O: the caller feeds it ``(t_s, y)`` and applies the output it
returns, so the same code runs against a simulated plant (the robustness campaign), the
virtual board in lockstep and a real board in real time (``thermopilot tune``).

The experiment (Åström & Hägglund's relay feedback; the practice of Klipper's PID_CALIBRATE
and ESPHome's pid autotune, reference control.md s.2-3 and systems.md s.4):

1. **hold**: the output is held at its start value while the measurement's noise is
   measured (peak-to-peak of the detrended samples); the relay's hysteresis is set above
   that band, so noise alone never switches it.
2. **relay**: the output switches between ``centre + d`` and ``centre - d`` when the
   measurement crosses ``setpoint -/+ hysteresis``. After every full cycle the centre moves
   to the cycle's mean output (a *biased* relay), so that the plant's own operating point at
   the setpoint is found and the half-periods balance even when the plant heats faster than it
   cools. The ultimate gain of each cycle is taken from the fundamental harmonics of the
   output and the measurement over that cycle, ``Ku = |U1| / |Y1|``, which is the
   describing-function estimate ``4 d / (pi a)`` for a symmetric square wave and stays right
   when the duty is not 50 % (where ``4 d / (pi a)`` is off by ``sin(pi D)`` and ESPHome
   rejects the run below a 0.66 symmetry). The first cycle (the transient) is discarded; the
   run converges when the last ``cycles`` cycles agree on Ku and Pu within ``tolerance``;
   the estimate is their median.
3. **done** or **failed** (with ``reason`` and a message that says what to change).

Bounds: a total duration, a band the measurement may not leave around its start value, a
half-period that does not end (the output cannot bring the measurement back across the
setpoint), the output limits, and a fault flag from the caller (the board's fault bits).

A first-order-plus-dead-time (FOPDT) model ``K exp(-L s) / (tau s + 1)`` is fitted to the
same relay record by least squares (:func:`fit_fopdt`), for the model-based rules.

Rules (:data:`RULES`, :func:`gains`):

- ``zn``: Ziegler & Nichols (1942), "Optimum settings for automatic controllers", Trans.
  ASME 64: PI Kc = 0.45 Ku, Ti = Pu/1.2; PID Kc = 0.6 Ku, Ti = Pu/2, Td = Pu/8 (Klipper's
  rule, control.md s.2).
- ``tl``: Tyreus & Luyben (1992), "Tuning PI controllers for integrator/dead time processes",
  Ind. Eng. Chem. Res. 31; Luyben (1986): PI Kc = Ku/3.2, Ti = 2.2 Pu; PID Kc = Ku/2.2,
  Ti = 2.2 Pu, Td = Pu/6.3.
- ``simc``: Skogestad (2003), "Simple analytic rules for model reduction and PID controller
  tuning", J. Process Control 13: PI with tau_c = L: Kc = tau / (K (tau_c + L)),
  Ti = min(tau, 4 (tau_c + L)). (SIMC adds derivative only for a second time constant, which a
  FOPDT fit does not have: ``simc`` is PI.)
- ``amigo``: Åström & Hägglund (2004), "Revisiting the Ziegler-Nichols step response method
  for PID control", J. Process Control 14: PI Kc = 0.15/K + (0.35 - L tau/(L+tau)^2) tau/(K L),
  Ti = 0.35 L + 13 L tau^2 / (tau^2 + 12 L tau + 7 L^2); PID Kc = (0.2 + 0.45 tau/L)/K,
  Ti = (0.4 L + 0.8 tau)/(L + 0.1 tau) L, Td = 0.5 L tau/(0.3 L + tau).
"""

import math

import numpy as np

__all__ = [
    "RelayTuner",
    "TuneError",
    "RULES",
    "DEFAULT_RULE",
    "gains",
    "fit_fopdt",
    "simulate_fopdt",
]

from . import DEFAULT_RULE, RULES  # noqa: E402,F401  (defined without numpy for the CLI)

HOLD, RELAY, DONE, FAILED = "hold", "relay", "done", "failed"


class TuneError(ValueError):
    """A tuning run that cannot start or that failed; ``reason`` is a short key
    (``band``, ``timeout``, ``stalled``, ``fault``, ``no_oscillation``, ``bad_input``,
    ``not_converged``, ``fit``)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def _pos(name, v, allow_zero=False, allow_inf=False):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise TuneError("bad_input", "%s=%r is not a number" % (name, v)) from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or v < 0 or (v == 0 and not allow_zero):
        raise TuneError(
            "bad_input",
            "%s=%r out of range: expected a %s number"
            % (name, v, "non-negative" if allow_zero else "positive"),
        )
    return v


class RelayTuner:
    """Relay autotune of one loop, fed one sample at a time.

    Parameters
    ----------
    setpoint : float
        Measurement value the relay oscillates around, in the measurement's SI unit.
    output_start : float
        Output held during the noise measurement and the relay's first centre, in the
        actuator's unit (a fraction 0..1 for most outputs); within ``[out_min, out_max]``.
    amplitude : float
        Relay half-swing ``d`` in output units (> 0): the output moves between
        ``centre - d`` and ``centre + d``, clipped to the output limits.
    out_min, out_max : float
        Output limits, ``out_min < out_max``.
    reverse : bool
        True when more output lowers the measurement (a cooling pump, a valve that opens to
        cool).
    band : float
        How far (absolute, measurement units) the measurement may move from its value at the
        start before the run aborts; ``inf`` for no bound.
    max_duration_s : float
        Longest run in s, the hold included.
    hold_s : float
        Shortest hold before the relay starts, s; the hold also lasts at least
        ``hold_samples`` samples.
    hold_samples : int
        Fewest samples for the noise measurement (>= 5).
    hysteresis : float or None
        Relay hysteresis (half-width, measurement units). None: ``noise_factor`` times the
        measured peak-to-peak noise, at least ``min_hysteresis``.
    noise_factor : float
        Hysteresis over the measured noise band (> 1 keeps noise from switching the relay).
    min_hysteresis : float
        Floor for the automatic hysteresis (the sensor's resolution), >= 0.
    cycles : int
        Cycles (after the first) that must agree before the run ends (>= 2).
    max_cycles : int
        Cycles after which a run that has not converged fails.
    bias : bool
        Re-centre the relay on each cycle's mean output (default). False keeps the centre at
        ``output_start`` (the plain relay, for comparison).
    tolerance : float
        Largest relative deviation from their median ``max|x - median| / median`` allowed
        among those cycles, for both Ku and Pu.

    Notes
    -----
    Call :meth:`feed` with every new sample and apply its return value; stop when
    :attr:`finished` is true, then read :attr:`result` (``state == "done"``) or
    :attr:`reason` / :attr:`message` (``state == "failed"``). After a failure the output
    returned is ``output_start`` (the caller restores the loop's previous mode).
    """

    def __init__(
        self,
        setpoint,
        output_start,
        amplitude,
        *,
        out_min=0.0,
        out_max=1.0,
        reverse=False,
        band=math.inf,
        max_duration_s=3600.0,
        hold_s=0.0,
        hold_samples=30,
        hysteresis=None,
        noise_factor=2.0,
        min_hysteresis=0.0,
        cycles=4,
        max_cycles=20,
        tolerance=0.1,
        bias=True,
    ):
        self.bias = bool(bias)
        self.setpoint = float(setpoint)
        if not math.isfinite(self.setpoint):
            raise TuneError("bad_input", "setpoint=%r: expected a finite number" % (setpoint,))
        self.out_min = float(out_min)
        self.out_max = float(out_max)
        if not (math.isfinite(self.out_min) and math.isfinite(self.out_max)) or not (
            self.out_min < self.out_max
        ):
            raise TuneError(
                "bad_input",
                "output limits %r..%r: expected finite out_min < out_max" % (out_min, out_max),
            )
        u0 = float(output_start)
        if not self.out_min <= u0 <= self.out_max:
            raise TuneError(
                "bad_input",
                "output_start=%r outside the output limits %g..%g" % (u0, out_min, out_max),
            )
        self.d = _pos("amplitude", amplitude)
        if self.d > 0.5 * (self.out_max - self.out_min) + 1e-12:
            raise TuneError(
                "bad_input",
                "amplitude=%g is more than half the output range %g..%g; choose at most %g"
                % (self.d, out_min, out_max, 0.5 * (self.out_max - self.out_min)),
            )
        self.reverse = bool(reverse)
        self.band = _pos("band", band, allow_inf=True)
        self.max_duration_s = _pos("max_duration_s", max_duration_s)
        self.hold_s = _pos("hold_s", hold_s, allow_zero=True)
        self.hold_samples = int(hold_samples)
        if self.hold_samples < 5:
            raise TuneError("bad_input", "hold_samples=%r: expected >= 5" % (hold_samples,))
        self.hysteresis = None if hysteresis is None else _pos("hysteresis", hysteresis)
        self.noise_factor = _pos("noise_factor", noise_factor)
        self.min_hysteresis = _pos("min_hysteresis", min_hysteresis, allow_zero=True)
        self.cycles = int(cycles)
        self.max_cycles = int(max_cycles)
        if self.cycles < 2 or self.max_cycles < self.cycles + 1:
            raise TuneError(
                "bad_input",
                "cycles=%r, max_cycles=%r: expected cycles >= 2 and max_cycles > cycles"
                % (cycles, max_cycles),
            )
        self.tolerance = _pos("tolerance", tolerance)
        self.output_start = u0
        self.centre = u0
        self.state = HOLD
        self.reason = None
        self.message = None
        self.result = None
        self.noise_pp = None
        self.t0 = None
        self.y_start = None
        self.u = u0
        # the whole record (for the FOPDT fit and for plots): t, y, u applied after y
        self.t = []
        self.y = []
        self.us = []
        self._hold_y = []
        self._high = None
        self._switch_t = []  # times of switches to high (cycle boundaries)
        self._last_switch_t = None
        self._half = []  # durations of completed half-periods
        self._cycle_start = 0  # index into the record where the current cycle began
        self.cycle_list = []  # dicts: t_s, pu_s, ku, amplitude, high_s, low_s, centre

    # -- state -------------------------------------------------------------------------------
    @property
    def finished(self):
        """True once the run is done or failed."""
        return self.state in (DONE, FAILED)

    @property
    def progress(self):
        """dict: ``state``, ``cycles`` (complete, transient excluded), current ``ku`` and
        ``pu_s`` estimates (median of the cycles so far, or None), ``hysteresis``,
        ``centre`` (the relay's current centre output), ``elapsed_s``."""
        cyc = self.cycle_list[1:]
        return {
            "state": self.state,
            "cycles": len(cyc),
            "ku": float(np.median([c["ku"] for c in cyc])) if cyc else None,
            "pu_s": float(np.median([c["pu_s"] for c in cyc])) if cyc else None,
            "hysteresis": self.hysteresis,
            "centre": self.centre,
            "elapsed_s": 0.0 if self.t0 is None or not self.t else self.t[-1] - self.t0,
        }

    def _fail(self, reason, message):
        self.state = FAILED
        self.reason = reason
        self.message = message
        self.u = self.output_start
        return self.u

    # -- the step ----------------------------------------------------------------------------
    def feed(self, t_s, y, fault=False):
        """Take one sample and return the output to apply until the next one.

        Parameters
        ----------
        t_s : float
            Sample time in s (non-decreasing).
        y : float
            Measurement, SI unit.
        fault : bool or str
            True (or a fault's name) when the board reports a fault: the run fails at once.

        Returns
        -------
        float
            The output to apply; ``output_start`` once the run has failed, the relay's centre
            once it is done.
        """
        if self.finished:
            return self.u
        t_s = float(t_s)
        y = float(y)
        if fault:
            what = fault if isinstance(fault, str) else "a fault"
            return self._fail(
                "fault",
                "the board reported %s at t=%.1f s; the tune stopped and the loop is in its "
                "safe state; clear the cause (thermopilot info), then 'thermopilot fault "
                "reset' and tune again" % (what, self._elapsed(t_s)),
            )
        if not math.isfinite(y) or not math.isfinite(t_s):
            return self._fail(
                "bad_input", "measurement %r at t=%r s is not finite; check the sensor" % (y, t_s)
            )
        if self.t0 is None:
            self.t0 = t_s
            self.y_start = y
        elif t_s < self.t[-1]:
            return self._fail(
                "bad_input", "time went backwards: t=%g s after %g s" % (t_s, self.t[-1])
            )
        self.t.append(t_s)
        self.y.append(y)
        elapsed = t_s - self.t0
        if abs(y - self.y_start) > self.band:
            self.us.append(self.output_start)
            return self._fail(
                "band",
                "the measurement moved %.3g from its start %.6g (limit %.3g) at t=%.0f s with "
                "the output at %.3g; lower the relay amplitude (now %.3g) or widen the band"
                % (y - self.y_start, self.y_start, self.band, elapsed, self.u, self.d),
            )
        if elapsed > self.max_duration_s:
            self.us.append(self.output_start)
            p = self.progress
            return self._fail(
                "timeout",
                "no converged result after %.0f s (limit %.0f s): %d cycles%s; allow a longer "
                "run (--max-duration) or a larger amplitude"
                % (
                    elapsed,
                    self.max_duration_s,
                    p["cycles"],
                    ""
                    if p["pu_s"] is None
                    else ", Pu about %.0f s, Ku about %.3g" % (p["pu_s"], p["ku"]),
                ),
            )
        if self.state == HOLD:
            u = self._hold(t_s, y)
        else:
            u = self._relay(t_s, y)
        self.us.append(u)
        return u

    def _elapsed(self, t_s):
        return 0.0 if self.t0 is None else t_s - self.t0

    def _hold(self, t_s, y):
        self._hold_y.append((t_s, y))
        if len(self._hold_y) < self.hold_samples or t_s - self.t0 < self.hold_s:
            return self.output_start
        tt = np.array([p[0] for p in self._hold_y])
        yy = np.array([p[1] for p in self._hold_y])
        # detrend (quadratic) so that a slow drift is not taken for noise
        x = tt - tt[0]
        deg = 2 if np.ptp(x) > 0 else 0
        coef = np.polyfit(x, yy, deg) if deg else np.array([yy.mean()])
        res = yy - np.polyval(coef, x)
        self.noise_pp = float(np.ptp(res))
        if self.hysteresis is None:
            self.hysteresis = max(self.noise_factor * 0.5 * self.noise_pp, self.min_hysteresis)
            if self.hysteresis <= 0.0:
                # a noise-free measurement: a hysteresis of a small fraction of the signal
                # keeps the relay from switching on rounding
                self.hysteresis = 1e-6 * max(1.0, abs(y))
        self.state = RELAY
        self._high = self._error(y) > 0
        self._last_switch_t = t_s
        self._cycle_start = len(self.t) - 1
        self._half_start = t_s
        self._e_half_start = self._error(y)
        return self._relay_output()

    def _error(self, y):
        """Positive when the measurement is below the setpoint in the direction that more
        output raises it (more output is wanted)."""
        e = self.setpoint - y
        return -e if self.reverse else e

    def _relay_output(self):
        u = self.centre + self.d if self._high else self.centre - self.d
        return min(max(u, self.out_min), self.out_max)

    def _relay(self, t_s, y):
        e = self._error(y)
        h = self.hysteresis
        switch = (self._high and e < -h) or ((not self._high) and e > h)
        if switch:
            self._half.append(t_s - self._half_start)
            self._half_start = t_s
            self._e_half_start = e
            self._high = not self._high
            if self._high:
                self._end_cycle(t_s)
                if self.finished:
                    return self.u
        else:
            longest = max(self._half) if self._half else None
            held = t_s - self._half_start
            if longest is not None and len(self._half) >= 2 and held > 4.0 * longest + 1e-9:
                return self._fail(
                    "stalled",
                    "the output at %.3g (%s limit) has not brought the measurement back across "
                    "the setpoint %.6g in %.0f s, 4x the longest half-cycle so far; the plant "
                    "cannot hold this setpoint with outputs %.3g..%.3g: tune at another "
                    "setpoint or raise the amplitude"
                    % (
                        self._relay_output(),
                        "upper" if self._high else "lower",
                        self.setpoint,
                        held,
                        self.out_min,
                        self.out_max,
                    ),
                )
            if longest is None and held > 0.5 * self.max_duration_s:
                away = abs(e) > abs(self._e_half_start) + 2.0 * h
                return self._fail(
                    "no_oscillation",
                    "the measurement %s %.6g, %s the setpoint %.6g -/+ hysteresis %.3g, "
                    "for %.0f s with the output at %.3g: no oscillation; %s"
                    % (
                        "moved away from the setpoint to" if away else "stayed at",
                        y,
                        "below" if (e > 0) != self.reverse else "above",
                        self.setpoint,
                        h,
                        held,
                        self._relay_output(),
                        "the output pushed it the other way: check the loop's direction "
                        "(reverse = more output lowers the measurement)"
                        if away
                        else "tune at a setpoint the plant reaches from output %.3g, or with "
                        "a larger amplitude" % self.centre,
                    ),
                )
        return self._relay_output()

    def _end_cycle(self, t_s):
        i0 = self._cycle_start
        i1 = len(self.t) - 1  # the sample where the new cycle starts
        self._cycle_start = i1
        if self._switch_t:
            t = np.asarray(self.t[i0:i1])
            y = np.asarray(self.y[i0:i1])
            u = np.asarray(self.us[i0:i1])
            dt = np.diff(self.t[i0 : i1 + 1])
            pu = float(self.t[i1] - self.t[i0])
            if pu > 0 and len(t) >= 4:
                w = 2.0 * math.pi / pu
                ph = np.exp(-1j * w * (t - t[0]))
                y1 = np.sum((y - y.mean()) * ph * dt)
                u1 = np.sum((u - u.mean()) * ph * dt)
                ku = float(abs(u1) / abs(y1)) if abs(y1) > 0 else math.inf
                high = float(np.sum(dt[u > self.centre]))
                mean_u = float(np.sum(u * dt) / pu)
                self.cycle_list.append(
                    {
                        "t_s": float(t_s),
                        "pu_s": pu,
                        "ku": ku,
                        "amplitude": float(0.5 * np.ptp(y)),
                        "high_s": high,
                        "low_s": pu - high,
                        "centre": self.centre,
                        "mean_u": mean_u,
                        "symmetry": min(high, pu - high) / max(high, pu - high, 1e-300),
                    }
                )
                # biased relay: the next cycle centres on this cycle's mean output
                if self.bias:
                    self.centre = min(max(mean_u, self.out_min), self.out_max)
                self._check_converged()
        self._switch_t.append(t_s)

    def _check_converged(self):
        cyc = self.cycle_list[1:]
        if len(cyc) >= self.cycles:
            last = cyc[-self.cycles :]
            ku = np.array([c["ku"] for c in last])
            pu = np.array([c["pu_s"] for c in last])
            ok = all(np.isfinite(ku))
            if ok:
                sku = np.max(np.abs(ku - np.median(ku))) / np.median(ku)
                spu = np.max(np.abs(pu - np.median(pu))) / np.median(pu)
                if sku <= self.tolerance and spu <= self.tolerance:
                    self._finish(last)
                    return
        if len(cyc) >= self.max_cycles:
            last = cyc[-self.cycles :]
            self._fail(
                "not_converged",
                "%d cycles without %d agreeing within %.0f %%: the last ones had Ku %s and "
                "Pu %s s; the plant may be nonlinear or disturbed here: raise the amplitude "
                "so the signal stands above the disturbance, or allow more spread (--tolerance)"
                % (
                    len(cyc),
                    self.cycles,
                    100 * self.tolerance,
                    ", ".join("%.3g" % c["ku"] for c in last),
                    ", ".join("%.0f" % c["pu_s"] for c in last),
                ),
            )

    def _finish(self, last):
        self.state = DONE
        self.u = self.centre
        ku = float(np.median([c["ku"] for c in last]))
        pu = float(np.median([c["pu_s"] for c in last]))
        a = float(np.median([c["amplitude"] for c in last]))
        res = {
            "ku": ku,
            "pu_s": pu,
            "amplitude": a,
            "hysteresis": self.hysteresis,
            "noise_pp": self.noise_pp,
            "relay_amplitude": self.d,
            "centre": self.centre,
            "symmetry": float(np.median([c["symmetry"] for c in last])),
            "cycles": len(self.cycle_list) - 1,
            "duration_s": self.t[-1] - self.t0,
            "reverse": self.reverse,
            "setpoint": self.setpoint,
            # the describing function of a symmetric relay with hysteresis, for comparison
            "ku_symmetric": 4.0
            * self.d
            / (math.pi * math.sqrt(max(a * a - self.hysteresis**2, 1e-300))),
        }
        try:
            # the fit uses the settled cycles only (the transient from the hold carries the
            # plant's static gain mixed with its up/down asymmetry and any drift); the relay's
            # square wave has odd harmonics, so these cycles still pin down gain, lag and
            # dead time, not only the one point at Pu
            n = len(self.us)  # the current sample's output is not yet chosen
            res["fopdt"] = fit_fopdt(
                np.asarray(self.t[:n]),
                np.asarray(self.us),
                np.asarray(self.y[:n]),
                ku,
                pu,
                self.reverse,
                fit_from_s=self.cycle_list[0]["t_s"],
            )
        except (ValueError, np.linalg.LinAlgError) as exc:
            res["fopdt"] = None
            res["fopdt_error"] = str(exc)
        self.result = res


# -- FOPDT fit ---------------------------------------------------------------------------------


def simulate_fopdt(t, u, gain, tau_s, dead_s, y0, x0=0.0, u_ref=None):
    """Response of ``y0 + gain exp(-dead_s s)/(tau_s s + 1)`` to ``u`` (zero-order hold) on a
    uniform time grid ``t``; ``u_ref`` is the input level of the state ``x0`` (default u[0]).

    Returns
    -------
    ndarray
        Model output at every ``t``.
    """
    from scipy.signal import lfilter

    t = np.asarray(t, float)
    u = np.asarray(u, float)
    dt = float(t[1] - t[0])
    ur = u[0] if u_ref is None else u_ref
    du = u - ur
    n = dead_s / dt
    k = int(math.floor(n))
    f = n - k
    # delayed input: linear blend of the two neighbouring whole-sample delays
    ud = np.zeros_like(du)
    if k < len(du):
        ud[k:] += (1.0 - f) * du[: len(du) - k]
    if k + 1 < len(du):
        ud[k + 1 :] += f * du[: len(du) - k - 1]
    a = math.exp(-dt / max(tau_s, 1e-12))
    # x[i+1] = a x[i] + (1-a) K ud[i]; y[i] = y0 + x[i]
    xs, _ = lfilter([0.0, (1.0 - a) * gain], [1.0, -a], ud, zi=[x0])
    return y0 + xs


def fit_fopdt(t, u, y, ku=None, pu_s=None, reverse=False, fit_from_s=None):
    """Least-squares FOPDT fit ``K exp(-L s)/(tau s + 1)`` of a record (scipy).

    Parameters
    ----------
    t, u, y : array
        Sample times (s), inputs applied after each sample, measurements.
    ku, pu_s : float or None
        The relay's ultimate gain and period, used for the starting guesses (phase crossover
        of a FOPDT at ``2 pi / pu_s`` with ``|G| = 1/ku``).
    reverse : bool or None
        True when more input lowers the output (the gain must come out negative), False
        (positive), None (either sign).
    fit_from_s : float or None
        Only samples from this time on count in the fit; the earlier inputs still drive the
        model (its dead time and lag need their history).

    Returns
    -------
    dict
        ``gain`` (output unit per input unit, signed), ``tau_s``, ``dead_s``, ``nrmse``
        (of the fit over the record).
    """
    from scipy.optimize import least_squares

    t = np.asarray(t, float)
    u = np.asarray(u, float)
    y = np.asarray(y, float)
    if len(t) < 10:
        raise ValueError("too few samples (%d) for a FOPDT fit" % len(t))
    dt = float(np.median(np.diff(t)))
    if not dt > 0:
        raise ValueError("sample times do not increase")
    # a grid of at most ~1500 points keeps the fit fast on long records; the relay's
    # switching times stay resolved to a few hundredths of a period
    dt = max(dt, float(t[-1] - t[0]) / 1500.0)
    tg = np.arange(t[0], t[-1] + 0.5 * dt, dt)
    idx = np.clip(np.searchsorted(t, tg, side="right") - 1, 0, len(t) - 1)
    ug = u[idx]
    yg = np.interp(tg, t, y)
    sign = -1.0 if reverse else 1.0
    span = float(tg[-1] - tg[0])
    ystd = float(np.std(yg if fit_from_s is None else yg[tg >= fit_from_s])) or 1.0
    guesses = []
    if ku and pu_s and math.isfinite(ku) and ku > 0:
        w = 2.0 * math.pi / pu_s
        for m in (1.1, 1.5, 2.5, 5.0, 12.0, 40.0):
            k = m / ku
            tau = math.sqrt(m * m - 1.0) / w
            dead = (math.pi - math.atan(w * tau)) / w
            guesses.append((k, tau, dead))
    else:
        for ft in (0.01, 0.05, 0.15, 0.4):
            for fl in (0.002, 0.01, 0.04):
                guesses.append((1.0, ft * span, fl * span))
    n_max = max(0.9 * span, 2 * dt)

    w0 = 0 if fit_from_s is None else int(np.searchsorted(tg, fit_from_s))
    w0 = min(w0, len(tg) - 10)

    ys = yg[w0:]
    idx_k = np.arange(len(tg), dtype=float)

    def linear(p):
        """Variable projection: for a lag and a dead time, the gain, the offset and the
        initial state enter linearly; solve them by linear least squares."""
        tau, dead = p
        unit = simulate_fopdt(tg, ug, 1.0, tau, dead, 0.0, 0.0)
        decay = np.exp(-idx_k * dt / max(tau, 1e-12))
        phi = np.column_stack([unit, np.ones_like(unit), decay])[w0:]
        theta, *_ = np.linalg.lstsq(phi, ys, rcond=None)
        return theta, (phi @ theta - ys) / ystd

    def resid(p):
        return linear(p)[1]

    lo = np.array([dt * 0.05, 0.0])
    hi = np.array([1e3 * max(span, dt), n_max])
    starts = []
    for _k, tau, dead in guesses:
        p0 = np.array([max(tau, dt), min(max(dead, 0.0), n_max * 0.99)])
        p0 = np.clip(p0, lo + 1e-15, hi - 1e-12)
        starts.append((float(np.sum(resid(p0) ** 2)), p0))
    starts.sort(key=lambda s: s[0])
    # the cost has local minima (a fast plant with a long dead time against a slow one with a
    # short one): refine the three best starts, keep the best end
    best = None
    for _c, p0 in starts[:3]:
        sol = least_squares(resid, p0, bounds=(lo, hi), x_scale="jac", max_nfev=200)
        if best is None or sol.cost < best.cost:
            best = sol
    tau, dead = best.x
    theta, r = linear(best.x)
    k = float(theta[0])
    if reverse is not None and k * sign < 0:
        raise ValueError(
            "the fitted gain %.3g has the sign opposite to the loop's direction (%s)"
            % (k, "reverse" if reverse else "direct")
        )
    return {
        "gain": k,
        "tau_s": float(tau),
        "dead_s": float(dead),
        "nrmse": float(math.sqrt(np.mean(r * r))),
    }


# -- rules -------------------------------------------------------------------------------------


def gains(result, rule=DEFAULT_RULE, kind="pi", dt_s=0.0):
    """PID gains from a relay result by one of :data:`RULES`.

    Parameters
    ----------
    result : dict
        :attr:`RelayTuner.result`.
    rule : str
        ``zn``, ``tl``, ``simc`` or ``amigo``.
    kind : str
        ``pi`` or ``pid`` (``simc`` on a FOPDT model is PI only).
    dt_s : float
        The loop's sample time: half of it is added to the fitted dead time for the
        model-based rules (the zero-order hold's delay, when the fit did not see it).

    Returns
    -------
    dict
        ``kp`` (output per unit error), ``ki`` (per unit error-second, 1/s), ``kd`` (s),
        ``kc``, ``ti_s``, ``td_s``, ``rule``, ``kind``: the board's parallel form
        ``kp = Kc``, ``ki = Kc/Ti``, ``kd = Kc Td``.
    """
    if rule not in RULES:
        raise TuneError("bad_input", "rule %r: expected one of %s" % (rule, ", ".join(RULES)))
    if kind not in ("pi", "pid"):
        raise TuneError("bad_input", "kind %r: expected pi or pid" % (kind,))
    ku, pu = result["ku"], result["pu_s"]
    td = 0.0
    if rule == "zn":
        kc, ti = (0.45 * ku, pu / 1.2) if kind == "pi" else (0.6 * ku, pu / 2.0)
        if kind == "pid":
            td = pu / 8.0
    elif rule == "tl":
        kc, ti = (ku / 3.2, 2.2 * pu) if kind == "pi" else (ku / 2.2, 2.2 * pu)
        if kind == "pid":
            td = pu / 6.3
    else:
        m = result.get("fopdt")
        if not m:
            raise TuneError(
                "fit",
                "rule %s needs the FOPDT fit of the relay record, which failed (%s); choose "
                "--rule zn or tl" % (rule, result.get("fopdt_error", "no fit")),
            )
        k = abs(m["gain"])
        tau = m["tau_s"]
        dead = max(m["dead_s"], 0.5 * dt_s, 1e-9 * tau)
        if rule == "simc":
            kind = "pi"
            tc = dead
            kc = tau / (k * (tc + dead))
            ti = min(tau, 4.0 * (tc + dead))
        elif kind == "pi":
            kc = 0.15 / k + (0.35 - dead * tau / (dead + tau) ** 2) * tau / (k * dead)
            ti = 0.35 * dead + 13.0 * dead * tau**2 / (tau**2 + 12.0 * dead * tau + 7.0 * dead**2)
        else:
            kc = (0.2 + 0.45 * tau / dead) / k
            ti = (0.4 * dead + 0.8 * tau) / (dead + 0.1 * tau) * dead
            td = 0.5 * dead * tau / (0.3 * dead + tau)
    return {
        "rule": rule,
        "kind": kind,
        "kc": float(kc),
        "ti_s": float(ti),
        "td_s": float(td),
        "kp": float(kc),
        "ki": float(kc / ti),
        "kd": float(kc * td),
    }
