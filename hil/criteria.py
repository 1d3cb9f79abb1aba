"""The criteria registry: pass/fail judgements over a run's rows and events.

One class per kind (``CRITERIA``: kind -> class), each with its name, doc, keys, a ``check``
that resolves its signals against the scenario (so a misspelt signal fails at load time) and
``evaluate(rows, events) -> dict`` with ``passed``, ``detail`` (numbers with units), ``value``
(what was measured, SI) and ``unit``. ``rows`` is a :class:`hil.rows.Rows` (``rows.t``,
``rows[signal]`` as numpy arrays, ``rows.ctx`` the scenario context, ``rows.injections`` the
faults the rig injected); ``events`` the board's events as dicts (t_s, name, kind, loop, value).

Criteria on a signal take a window ``after_s``..``before_s`` (default: the whole run), checked
against the duration when the scenario loads. Where a criterion judges a loop (settles,
overshoot, iae, ise) it compares the loop's setpoint (board telemetry) with the plant truth of the
loop's measured quantity when the scenario wires the loop's ``pv`` sensor to a plant output,
else with the board's own measurement; ``signal`` chooses another.

While a run is under way :func:`state` tells for the progress line whether a criterion has
passed or failed for good, holds so far, or waits for its window.
"""

import math

import numpy as np

from thermopilot.protocol import schema

from . import signals
from .tables import REQUIRED, Key, ScenarioError, choice_message

C_TO_K = 273.15
_trapz = getattr(np, "trapezoid", None) or np.trapz
FAULT_NAMES = {v: k for k, v in schema.FAULTS.items()}

WINDOW_KEYS = {
    "after_s": Key(float, 0.0, "window start, simulated s", lo=0.0),
    "before_s": Key(float, None, "window end, simulated s (default: the end of the run)", lo=0.0),
}


def _fault_bit(name, where):
    if name not in schema.FAULTS:
        raise ScenarioError(choice_message(where, "fault", name, list(schema.FAULTS)))
    return schema.FAULTS[name]


class Criterion:
    KIND = ""
    DOC = ""
    KEYS = {}
    ALIASES = {}
    WINDOW = True
    #: how a partial run reads: "fail_early" (once failed, failed), "pass_early" (once
    #: passed, passed) or "end" (only the whole window tells)
    MODE = "fail_early"

    def __init__(self, cfg, index=0):
        self.cfg = cfg
        self.index = index

    @classmethod
    def keys(cls):
        return dict(WINDOW_KEYS, **cls.KEYS) if cls.WINDOW else dict(cls.KEYS)

    @classmethod
    def check(cls, cfg, ctx, where):
        """Resolve and check the table against the scenario; returns the cfg to keep."""
        if cls.WINDOW:
            _check_window(cfg, ctx, where)
        return cfg

    # -- helpers -------------------------------------------------------------------------
    def window(self, rows):
        before = self.cfg.get("before_s")
        end = rows.ctx.duration_s if before is None else before
        return self.cfg.get("after_s", 0.0), end

    def mask(self, rows):
        a, b = self.window(rows)
        t = rows.t
        return (t >= a - 1e-9) & (t <= b + 1e-9)

    def label(self):
        sig = self.cfg.get("signal")
        return self.KIND + (" " + sig if isinstance(sig, str) else "")

    def verdict(self, passed, detail, value=None, unit="", **extra):
        v = {
            "criterion": self.KIND,
            "index": self.index,
            "label": self.label(),
            "passed": bool(passed),
            "detail": detail,
            "value": value,
            "unit": unit,
        }
        v.update(extra)
        return v

    def evaluate(self, rows, events):
        raise NotImplementedError

    def bands(self, rows):
        """What a plot draws for this criterion: list of (signal, lo, hi, t0, t1)."""
        return []


def _check_window(cfg, ctx, where):
    a = cfg.get("after_s", 0.0)
    b = cfg.get("before_s")
    d = ctx.duration_s
    if a >= d:
        raise ScenarioError(
            "%s: after_s = %g is not before the end of the run (duration_s = %g)" % (where, a, d)
        )
    if b is not None:
        if b > d + 1e-9:
            raise ScenarioError(
                "%s: before_s = %g is after the end of the run (duration_s = %g)" % (where, b, d)
            )
        if b <= a:
            raise ScenarioError("%s: before_s = %g must be after after_s = %g" % (where, b, a))


def _loop_key():
    return Key((str, int), 0, "loop name or index (default: the first loop)")


def _resolve_signal(cfg, ctx, where, key="signal"):
    try:
        return signals.resolve(cfg[key], ctx)
    except signals.SignalError as exc:
        raise ScenarioError("%s: %s" % (where, exc)) from None


def _judged(cfg, ctx, where):
    """Fill cfg['loop'] (name) and cfg['signal'] (judged signal) for loop criteria."""
    if cfg.get("loop") is None:
        cfg["loop"] = 0
    info = ctx.loop(cfg["loop"])
    if info is None:
        raise ScenarioError(
            choice_message(where, "loop", cfg.get("loop"), ctx.loop_names)
            + " (board %s)" % ctx.board_name
        )
    cfg["loop"] = info["name"]
    if cfg.get("signal") is None:
        cfg["signal"] = ctx.judged_signal(info)
    else:
        cfg["signal"] = _resolve_signal(cfg, ctx, where)
    return info


def _celsius_aliases(raw, cfg, where, names):
    """Old keys min_c / max_c (degC) become min / max in K."""
    for old, new in names:
        if old in raw:
            if raw.get(new) is not None:
                raise ScenarioError("%s: give %s or %s, not both" % (where, old, new))
            v = raw[old]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ScenarioError("%s: %s = %r is not a number" % (where, old, v))
            cfg[new] = float(v) + C_TO_K


class _OnSignal(Criterion):
    """A criterion on a signal (or on a loop's judged signal when signal is not given)."""

    @classmethod
    def check(cls, cfg, ctx, where):
        super().check(cfg, ctx, where)
        ch = cfg.pop("channel", None)
        if ch is not None:
            if cfg.get("signal") is not None or cfg.get("loop") is not None:
                raise ScenarioError("%s: give one of signal, loop or channel" % where)
            cfg["signal"] = "out.%s" % ch
        if cfg.get("signal") is None:
            _judged(cfg, ctx, where)
            cfg.pop("loop", None)
        else:
            if cfg.get("loop") is not None:
                raise ScenarioError("%s: give signal or loop, not both" % where)
            cfg.pop("loop", None)
            cfg["signal"] = _resolve_signal(cfg, ctx, where)
        return cfg

    def values(self, rows):
        m = self.mask(rows)
        return rows.t[m], rows[self.cfg["signal"]][m]

    def quantity(self, rows):
        return signals.quantity_of(self.cfg["signal"], rows.ctx)


_SIGNAL = Key(str, None, "signal name (see Signals); default: loop's judged signal")
_CHANNEL = Key((int, str), None, "actuator channel or name: the signal out.<channel>")
_LOOP = Key((str, int), None, "loop whose judged signal to use")
_MIN = Key(float, REQUIRED, "lower limit, SI")
_MAX = Key(float, REQUIRED, "upper limit, SI")


class Between(_OnSignal):
    KIND = "between"
    DOC = "the signal stays within [min, max] over the window"
    KEYS = {
        "signal": _SIGNAL,
        "loop": _LOOP,
        "channel": _CHANNEL,
        "min": _MIN,
        "max": _MAX,
    }
    ALIASES = {"min_k": "min", "max_k": "max"}
    CELSIUS = (("min_c", "min"), ("max_c", "max"))

    @classmethod
    def check(cls, cfg, ctx, where):
        cfg = super().check(cfg, ctx, where)
        lo, hi = cfg.get("min"), cfg.get("max")
        if lo is not None and hi is not None and not lo < hi:
            raise ScenarioError("%s: min = %g must be below max = %g" % (where, lo, hi))
        return cfg

    def evaluate(self, rows, events):
        t, x = self.values(rows)
        q = self.quantity(rows)
        if len(x) == 0:
            return self.verdict(False, "no samples in the window", None, "")
        lo_seen, hi_seen = float(np.nanmin(x)), float(np.nanmax(x))
        lo, hi = self.cfg.get("min", -math.inf), self.cfg.get("max", math.inf)
        bad = ~((x >= lo) & (x <= hi))  # NaN counts as outside
        ok = not bad.any()
        detail = "%s from %s to %s" % (
            self.cfg["signal"],
            signals.display(lo_seen, q),
            signals.display(hi_seen, q),
        )
        limits = []
        if math.isfinite(lo):
            limits.append(">= " + signals.display(lo, q))
        if math.isfinite(hi):
            limits.append("<= " + signals.display(hi, q))
        detail += " (allowed %s)" % " and ".join(limits)
        if not ok:
            detail += ", first outside at t=%.1f s" % t[np.argmax(bad)]
        return self.verdict(ok, detail, self.measured(lo_seen, hi_seen), signals.SI_UNITS[q])

    def measured(self, lo_seen, hi_seen):
        return [lo_seen, hi_seen]

    def bands(self, rows):
        a, b = self.window(rows)
        return [(self.cfg["signal"], self.cfg.get("min"), self.cfg.get("max"), a, b)]


class AtMost(Between):
    KIND = "at_most"
    DOC = "the signal never exceeds max over the window"
    KEYS = {k: v for k, v in Between.KEYS.items() if k != "min"}
    ALIASES = {"max_k": "max"}
    CELSIUS = (("max_c", "max"),)

    def measured(self, lo_seen, hi_seen):
        return hi_seen


class AtLeast(Between):
    KIND = "at_least"
    DOC = "the signal never falls below min over the window"
    KEYS = {k: v for k, v in Between.KEYS.items() if k != "max"}
    ALIASES = {"min_k": "min"}
    CELSIUS = (("min_c", "min"),)

    def measured(self, lo_seen, hi_seen):
        return lo_seen


def _segments(sp):
    """(start, end) index ranges of constant setpoint."""
    if len(sp) == 0:
        return []
    change = np.flatnonzero(np.diff(sp) != 0) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(sp)]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


class _OnLoop(Criterion):
    @classmethod
    def check(cls, cfg, ctx, where):
        super().check(cfg, ctx, where)
        _judged(cfg, ctx, where)
        return cfg

    def label(self):
        return "%s %s" % (self.KIND, self.cfg["loop"])

    def series(self, rows):
        return rows.t, rows["loop.%s.setpoint" % self.cfg["loop"]], rows[self.cfg["signal"]]

    def quantity(self, rows):
        return signals.quantity_of(self.cfg["signal"], rows.ctx)


class Settles(_OnLoop):
    KIND = "settles"
    DOC = (
        "within within_s of every setpoint change the loop's judged signal is within band of "
        "the setpoint and stays there (inside the window)"
    )
    KEYS = {
        "loop": _loop_key(),
        "signal": _SIGNAL,
        "within_s": Key(float, REQUIRED, "settling time allowed", lo=0.0, unit="s"),
        "band": Key(float, REQUIRED, "allowed |error|, SI", lo=0.0, lo_open=True),
    }
    ALIASES = {"band_k": "band"}

    def evaluate(self, rows, events):
        t, sp, x = self.series(rows)
        a, b = self.window(rows)
        q = self.quantity(rows)
        worst, when = 0.0, None
        judged = np.zeros(len(t), bool)
        for s, e in _segments(sp):
            judged[s:e] = t[s:e] >= t[s] + self.cfg["within_s"] - 1e-9
        judged &= (t >= a - 1e-9) & (t <= b + 1e-9)
        if judged.any():
            err = np.abs(x - sp)
            err = np.where(np.isnan(err), np.inf, err)
            err[~judged] = 0.0
            k = int(np.argmax(err))
            worst, when = float(err[k]), float(t[k])
        ok = worst <= self.cfg["band"]
        detail = "largest error after the settling time %s%s (band %s)" % (
            signals.display_delta(worst, q),
            "" if when is None or worst == 0.0 else " at t=%.1f s" % when,
            signals.display_delta(self.cfg["band"], q),
        )
        if not judged.any():
            detail = "no sample after the settling time inside the window"
        return self.verdict(ok, detail, worst, "K" if "temperature" in q else signals.SI_UNITS[q])

    def bands(self, rows):
        """The band around the setpoint where it is judged: from within_s after each
        setpoint change, inside the window."""
        a, b = self.window(rows)
        t = rows.t
        sp = rows["loop.%s.setpoint" % self.cfg["loop"]]
        out = []
        for s, e in _segments(sp):
            t0 = max(t[s] + self.cfg["within_s"], a)
            t1 = min(t[e - 1], b)
            if t1 > t0:
                out.append((self.cfg["signal"], -self.cfg["band"], self.cfg["band"], t0, t1, "sp"))
        return out


class Overshoot(_OnLoop):
    KIND = "overshoot"
    DOC = "after each setpoint change the judged signal goes at most max past the setpoint"
    KEYS = {
        "loop": _loop_key(),
        "signal": _SIGNAL,
        "max": Key(float, REQUIRED, "allowed overshoot, SI", lo=0.0),
    }
    ALIASES = {"max_k": "max"}

    def evaluate(self, rows, events):
        t, sp, x = self.series(rows)
        m = self.mask(rows)
        q = self.quantity(rows)
        worst, when = 0.0, None
        for s, e in _segments(sp):
            if not np.isfinite(sp[s]) or not np.isfinite(x[s]):
                continue
            if s > 0 and np.isfinite(sp[s - 1]):
                # the direction of the setpoint change says which side is past it
                sign = 1.0 if sp[s] > sp[s - 1] else -1.0
            else:
                sign = 1.0 if x[s] < sp[s] else -1.0
            seg = slice(s, e)
            over = sign * (x[seg] - sp[seg])
            over = np.where(m[seg], over, -np.inf)
            k = int(np.argmax(over))
            if over[k] > worst:
                worst, when = float(over[k]), float(t[s + k])
        ok = worst <= self.cfg["max"]
        detail = "overshoot %s%s (limit %s)" % (
            signals.display_delta(worst, q),
            "" if when is None else " at t=%.1f s" % when,
            signals.display_delta(self.cfg["max"], q),
        )
        return self.verdict(ok, detail, worst, "K" if "temperature" in q else signals.SI_UNITS[q])


class Iae(_OnLoop):
    KIND = "iae"
    DOC = "integral of |setpoint - judged signal| over the window is at most max (unit*s)"
    MODE = "fail_early"
    KEYS = {
        "loop": _loop_key(),
        "signal": _SIGNAL,
        "max": Key(float, None, "limit, SI unit * s (default: reported only)", lo=0.0),
    }
    POWER = 1

    def evaluate(self, rows, events):
        t, sp, x = self.series(rows)
        m = self.mask(rows)
        e = np.abs(sp[m] - x[m]) ** self.POWER
        val = float(_trapz(e, t[m])) if m.sum() > 1 else 0.0
        if not math.isfinite(val):
            val = math.inf
        q = self.quantity(rows)
        unit = "K" if "temperature" in q else signals.SI_UNITS[q]
        unit = ("%s^2" % unit if self.POWER == 2 else unit) + " s"
        lim = self.cfg.get("max")
        ok = lim is None or val <= lim
        detail = "%s = %.4g %s" % (self.KIND.upper(), val, unit)
        detail += " (limit %.4g %s)" % (lim, unit) if lim is not None else " (reported only)"
        return self.verdict(ok, detail, val, unit)


class Ise(Iae):
    KIND = "ise"
    DOC = "integral of (setpoint - judged signal)^2 over the window is at most max"
    POWER = 2


class Energy(Criterion):
    KIND = "energy"
    DOC = "energy of the named power signals (W) over the window, at most max_j if given"
    MODE = "fail_early"
    KEYS = {
        "signals": Key(list, REQUIRED, "power signals in W, e.g. ['plant.pump_power_w']"),
        "max_j": Key(float, None, "limit, J (default: reported only)", lo=0.0),
    }

    @classmethod
    def check(cls, cfg, ctx, where):
        super().check(cfg, ctx, where)
        if not cfg["signals"]:
            raise ScenarioError("%s: signals is empty; name at least one power signal" % where)
        out = []
        for s in cfg["signals"]:
            try:
                name = signals.resolve(s, ctx)
            except signals.SignalError as exc:
                raise ScenarioError("%s: %s" % (where, exc)) from None
            q = signals.quantity_of(name, ctx)
            if q != "power":
                raise ScenarioError(
                    "%s: signal %r is not a power in W (it measures %s)" % (where, s, q)
                )
            out.append(name)
        cfg["signals"] = out
        return cfg

    def label(self):
        return "energy " + "+".join(s.split(".", 1)[-1] for s in self.cfg["signals"])

    def evaluate(self, rows, events):
        m = self.mask(rows)
        t = rows.t[m]
        parts = {}
        for s in self.cfg["signals"]:
            parts[s] = float(_trapz(rows[s][m], t)) if len(t) > 1 else 0.0
        total = sum(parts.values())
        lim = self.cfg.get("max_j")
        ok = lim is None or total <= lim
        detail = "%s" % signals.display(total, "energy")
        if len(parts) > 1:
            detail += " (%s)" % ", ".join(
                "%s %s" % (k.split(".", 1)[-1], signals.display(v, "energy"))
                for k, v in parts.items()
            )
        detail += " (limit %s)" % signals.display(lim, "energy") if lim is not None else ""
        return self.verdict(ok, detail, total, "J", parts=parts)


class Reversals(Criterion):
    KIND = "reversals"
    DOC = (
        "direction changes of a signal (default: an actuator's output, channel) per second "
        "over the window, ignoring moves smaller than deadband (hunting)"
    )
    MODE = "end"
    KEYS = {
        "signal": Key(str, None, "signal (default: out.<channel>)"),
        "channel": Key((int, str), None, "actuator channel or name, for out.<channel>"),
        "max_per_s": Key(float, REQUIRED, "allowed reversals per second", lo=0.0),
        "deadband": Key(float, 0.0, "moves smaller than this do not count, SI", lo=0.0),
    }

    @classmethod
    def check(cls, cfg, ctx, where):
        super().check(cfg, ctx, where)
        if (cfg["signal"] is None) == (cfg["channel"] is None):
            raise ScenarioError("%s: reversals needs one of signal or channel" % where)
        if cfg["signal"] is None:
            cfg["signal"] = "out.%s" % cfg.pop("channel")
        else:
            cfg.pop("channel")
        cfg["signal"] = _resolve_signal(cfg, ctx, where)
        return cfg

    @staticmethod
    def count(x, deadband):
        """Direction changes of the sequence ``x`` with hysteresis ``deadband``: a move counts
        as a reversal once it has gone more than deadband back from the last extreme."""
        n = 0
        direction = 0
        ext = None
        for v in x:
            if not math.isfinite(v):
                continue
            if ext is None:
                ext = v
            elif direction == 0:
                if v > ext + deadband:
                    direction, ext = 1, v
                elif v < ext - deadband:
                    direction, ext = -1, v
            elif direction == 1:
                if v > ext:
                    ext = v
                elif v < ext - deadband:
                    n += 1
                    direction, ext = -1, v
            else:
                if v < ext:
                    ext = v
                elif v > ext + deadband:
                    n += 1
                    direction, ext = 1, v
        return n

    def evaluate(self, rows, events):
        m = self.mask(rows)
        t = rows.t[m]
        x = rows[self.cfg["signal"]][m]
        span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
        n = self.count(x.tolist(), self.cfg["deadband"])
        rate = n / span if span > 0 else 0.0
        ok = rate <= self.cfg["max_per_s"]
        detail = "%d reversals of %s in %.0f s = %.3f/s (limit %.3f/s)" % (
            n,
            self.cfg["signal"],
            span,
            rate,
            self.cfg["max_per_s"],
        )
        return self.verdict(ok, detail, rate, "1/s", count=n)


class Std(_OnSignal):
    KIND = "std"
    DOC = "standard deviation of the signal over the window is at most max"
    MODE = "end"
    KEYS = {
        "signal": _SIGNAL,
        "loop": _LOOP,
        "max": Key(float, REQUIRED, "limit, SI", lo=0.0),
    }

    def evaluate(self, rows, events):
        _t, x = self.values(rows)
        q = self.quantity(rows)
        val = float(np.std(x)) if len(x) else math.nan
        ok = len(x) > 0 and val <= self.cfg["max"]
        detail = "standard deviation of %s %s (limit %s)" % (
            self.cfg["signal"],
            signals.display_delta(val, q),
            signals.display_delta(self.cfg["max"], q),
        )
        return self.verdict(ok, detail, val, "K" if "temperature" in q else signals.SI_UNITS[q])


def _fault_names(cfg, where):
    names = cfg["fault"] if isinstance(cfg["fault"], list) else [cfg["fault"]]
    if not names:
        raise ScenarioError("%s: fault is an empty list" % where)
    for n in names:
        if not isinstance(n, str):
            raise ScenarioError("%s: fault = %r; expected fault names" % (where, n))
        _fault_bit(n, where)
    cfg["fault"] = names


def _latched_events(events, bits):
    return [e for e in events if e["kind"] == "latched" and e["code"] in bits]


class FaultLatched(Criterion):
    KIND = "fault_latched"
    DOC = "the named board fault (or any of a list) is latched and reported within the window"
    MODE = "pass_early"
    KEYS = {"fault": Key((str, list), REQUIRED, "board fault name(s) (protocol FAULTS)")}

    @classmethod
    def check(cls, cfg, ctx, where):
        super().check(cfg, ctx, where)
        _fault_names(cfg, where)
        return cfg

    def label(self):
        return "%s %s" % (self.KIND, "|".join(self.cfg["fault"]))

    def evaluate(self, rows, events):
        a, b = self.window(rows)
        bits = {schema.FAULTS[n] for n in self.cfg["fault"]}
        hits = [e for e in _latched_events(events, bits) if a - 1e-9 <= e["t_s"] <= b + 1e-9]
        mask = sum(1 << x for x in bits)
        f = rows["faults"].astype(np.int64)
        seen = np.flatnonzero((f & mask) != 0)
        first_row = float(rows.t[seen[0]]) if len(seen) else None
        ok = bool(hits)
        if hits:
            e = hits[0]
            detail = "%s latched at t=%.1f s and reported" % (e["name"], e["t_s"])
            value = e["t_s"]
        elif first_row is not None:
            detail = "%s in the fault bits at t=%.1f s but no latched event reported" % (
                "|".join(self.cfg["fault"]),
                first_row,
            )
            value = first_row
        else:
            detail = "%s never latched between t=%g and %g s" % (
                "|".join(self.cfg["fault"]),
                a,
                b,
            )
            value = None
        return self.verdict(ok, detail, value, "s")


class LatchLatency(Criterion):
    KIND = "latch_latency"
    DOC = (
        "time from an injected fault (after_fault: its [[faults]] index, 0-based, or its kind) "
        "to the latch of the named board fault (or the first of a list) is at most max_s"
    )
    MODE = "pass_early"
    WINDOW = False
    KEYS = {
        "fault": Key((str, list), REQUIRED, "board fault name(s) (protocol FAULTS)"),
        "after_fault": Key((int, str), 0, "index (0-based) or kind of the [[faults]] entry"),
        "max_s": Key(float, REQUIRED, "allowed latency, simulated s", lo=0.0, unit="s"),
    }

    @classmethod
    def check(cls, cfg, ctx, where):
        _fault_names(cfg, where)
        ref = cfg["after_fault"]
        if isinstance(ref, int):
            if not 0 <= ref < len(ctx.faults):
                raise ScenarioError(
                    "%s: after_fault = %d, but the scenario has %d [[faults]] entries "
                    "(indices from 0)" % (where, ref, len(ctx.faults))
                )
        else:
            kinds = [f["kind"] for f in ctx.faults]
            if ref not in kinds:
                raise ScenarioError(
                    choice_message(where, "after_fault", ref, kinds or ["(no [[faults]])"])
                )
            cfg["after_fault"] = kinds.index(ref)
        return cfg

    def label(self):
        return "%s %s" % (self.KIND, "|".join(self.cfg["fault"]))

    def window(self, rows):
        inj = rows.injection(self.cfg["after_fault"])
        return inj["t_s"], inj["t_s"] + self.cfg["max_s"]

    def evaluate(self, rows, events):
        inj = rows.injection(self.cfg["after_fault"])
        t0 = inj["t_s"]
        bits = {schema.FAULTS[n] for n in self.cfg["fault"]}
        # a latch counts from one tick before the injection: the board may see a fault that
        # starts at t in the frame it ticks on just before (host_silence stops the frames
        # before t)
        tol = rows.dt_s + 1e-6
        hits = [e for e in _latched_events(events, bits) if e["t_s"] >= t0 - tol]
        if not hits:
            return self.verdict(
                False,
                "%s never latched after %s at t=%.1f s (limit %.2f s)"
                % ("|".join(self.cfg["fault"]), inj["label"], t0, self.cfg["max_s"]),
                None,
                "s",
            )
        e = hits[0]
        lat = max(0.0, e["t_s"] - t0)
        ok = lat <= self.cfg["max_s"] + 1e-9
        return self.verdict(
            ok,
            "%s latched %.2f s after %s at t=%.1f s (limit %.2f s)"
            % (e["name"], lat, inj["label"], t0, self.cfg["max_s"]),
            lat,
            "s",
            latched=e["name"],
        )


class NoFault(Criterion):
    KIND = "no_fault"
    DOC = "no fault is latched (fault bits and latched events) within the window"
    KEYS = {}

    def evaluate(self, rows, events):
        a, b = self.window(rows)
        m = self.mask(rows)
        bits = 0
        for v in np.unique(rows["faults"][m].astype(np.int64)):
            bits |= int(v)
        latched = [
            e for e in events if e["kind"] == "latched" and a - 1e-9 <= e["t_s"] <= b + 1e-9
        ]
        names = [FAULT_NAMES.get(x, "bit%d" % x) for x in range(32) if bits >> x & 1]
        for e in latched:
            if e["name"] not in names:
                names.append(e["name"])
        ok = not names
        if ok:
            detail = "no fault"
        else:
            first = latched[0]["t_s"] if latched else None
            detail = "faults: %s%s" % (
                ", ".join(names),
                "" if first is None else " (first latched at t=%.1f s)" % first,
            )
        return self.verdict(ok, detail, names, "")


class ActuatorSafeAtEnd(Criterion):
    KIND = "actuator_safe_at_end"
    DOC = (
        "at the end of the run the actuator (channel, or every board actuator when channel is "
        "left out) is at its board-defined safe value, or at the value (or within the [min, "
        "max]) that safe names for it: the safe sequence a controller declares for this fault"
    )
    MODE = "end"
    WINDOW = False
    KEYS = {
        "channel": Key((int, str), None, "actuator channel or name (default: every one)"),
        "tol": Key(float, 1e-6, "tolerance, the actuator's unit", lo=0.0),
        "safe": Key(
            dict,
            {},
            "actuator name or channel -> its safe value or [min, max], where the controller's "
            "safe sequence for this fault differs from the board's safe values",
        ),
    }

    @classmethod
    def check(cls, cfg, ctx, where):
        if cfg["channel"] is None:
            cfg["channels"] = list(range(len(ctx.board.get("actuators", []))))
        else:
            ch = ctx.actuator_channel(str(cfg["channel"]))
            if ch is None:
                raise ScenarioError(
                    "%s: channel = %r; board %s has actuators %s"
                    % (where, cfg["channel"], ctx.board_name, ", ".join(ctx.actuator_names()))
                )
            cfg["channels"] = [ch]
        bounds = {}
        for ref, v in cfg["safe"].items():
            ch = ctx.actuator_channel(str(ref))
            if ch is None:
                raise ScenarioError(
                    "%s: safe names actuator %r; board %s has actuators %s"
                    % (where, ref, ctx.board_name, ", ".join(ctx.actuator_names()))
                )
            ok_num = isinstance(v, (int, float)) and not isinstance(v, bool)
            ok_pair = (
                isinstance(v, list)
                and len(v) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                and v[0] <= v[1]
            )
            if not (ok_num or ok_pair):
                raise ScenarioError(
                    "%s: safe.%s = %r; expected a number or [min, max] with min <= max"
                    % (where, ref, v)
                )
            bounds[ch] = (float(v), float(v)) if ok_num else (float(v[0]), float(v[1]))
        cfg["bounds"] = bounds
        return cfg

    def label(self):
        if self.cfg["channel"] is None:
            return self.KIND
        return "%s %s" % (self.KIND, self.cfg["channel"])

    def window(self, rows):
        return rows.ctx.duration_s, rows.ctx.duration_s

    def evaluate(self, rows, events):
        acts = rows.ctx.board["actuators"]
        parts = []
        ok = True
        values = []
        tol = self.cfg["tol"]
        for ch in self.cfg["channels"]:
            safe = acts[ch].get("safe", 0.0)
            lo, hi = self.cfg.get("bounds", {}).get(ch, (safe, safe))
            last = float(rows["out.%d" % ch][-1])
            good = lo - tol <= last <= hi + tol
            ok &= good
            values.append(last)
            want = "%.4g" % lo if lo == hi else "%.4g..%.4g" % (lo, hi)
            parts.append(
                "%s (ch %d) at %.4g, safe %s%s"
                % (acts[ch].get("name", "?"), ch, last, want, "" if good else " NOT SAFE")
            )
        return self.verdict(ok, "; ".join(parts), values if len(values) > 1 else values[0], "")


CRITERIA = {
    cls.KIND: cls
    for cls in (
        Between,
        AtMost,
        AtLeast,
        Settles,
        Overshoot,
        Iae,
        Ise,
        Energy,
        Reversals,
        Std,
        FaultLatched,
        LatchLatency,
        NoFault,
        ActuatorSafeAtEnd,
    )
}

#: old kinds that still load: old kind -> (new kind, default keys)
ALIAS_KINDS = {
    "overshoot_max": "overshoot",
    "measurement_between": "between",
    "actuator_below": "at_most",
}


def make(cfg, index):
    return CRITERIA[cfg["kind"]](cfg, index)


def evaluate(criteria, rows, events):
    """Verdicts of ``criteria`` (objects) over ``rows`` and ``events``."""
    return [c.evaluate(rows, events) for c in criteria]


def state(criterion, verdict, rows):
    """'pass', 'fail', 'ok' (holding so far) or 'pending' for a verdict on a partial run."""
    _a, b = criterion.window(rows)
    done = len(rows) and rows.t[-1] >= min(b, rows.ctx.duration_s) - 1e-9
    if done:
        return "pass" if verdict["passed"] else "fail"
    if criterion.MODE == "fail_early":
        return "ok" if verdict["passed"] else "fail"
    if criterion.MODE == "pass_early":
        return "pass" if verdict["passed"] else "pending"
    return "pending"
