"""Sensor layer between the plant physics and the board: lag, noise, quantisation and faults.

A scenario injects faults here, never into the plant. One :class:`Sensor` per measured channel::

    s = Sensor.ntc(seed=1)                # coolant temperature through an NTC front end
    reading_k = s.read(true_k, t_s)
    s.inject("drift", rate_per_s=0.01)    # or another kind of FAULTS
    s.clear()

Order of effects on a healthy channel: first-order lag (the probe's thermal or the transducer's
time constant) -> Gaussian noise -> quantisation (ADC step) -> clipping to the front end's range.
Faults act on that result:

* ``open``: wire break. The front end reports ``open_value`` (NTC with pull-up: divider at full
  scale -> reads far below range; 0.5-4.5 V pressure transducer with pull-down: 0 V -> below
  range).
* ``short``: short circuit. The front end reports ``short_value`` (NTC: 0 ohm -> far above range;
  pressure transducer shorted to supply: 5 V -> above range).
* ``stuck``: the last reading before the fault, forever.
* ``drift``: reading plus ``rate_per_s * (t - t_fault)``.
* ``delayed``: the healthy reading from ``delay_s`` ago (a stale channel).
* ``offset``: reading plus ``offset``.
* ``gain``: ``about + gain * (reading - about)`` (a span error).
* ``noise``: extra Gaussian noise of standard deviation ``noise`` (a burst of interference).
* ``intermittent``: the channel reads ``open_value`` for ``dropout_s`` every ``period_s`` from the
  start of the fault (a loose contact), healthy in between.
* ``garbage``: a random reading uniform over the healthy range ``[lo, hi]`` every read.

Presets build the front ends a board has: :meth:`Sensor.ntc`, :meth:`Sensor.pressure`,
:meth:`Sensor.flow` and :meth:`Sensor.ideal` (no front end: open and short read just outside
the given range, so the board's range check sees them). :data:`PRESETS` names them for scenarios.

Readings are deterministic for a given ``seed`` and sequence of calls.
"""

import math
import random
from collections import deque

C_TO_K = 273.15

FAULTS = (
    "open",
    "short",
    "stuck",
    "drift",
    "delayed",
    "offset",
    "gain",
    "noise",
    "intermittent",
    "garbage",
)
#: arguments each fault takes (all required except gain's ``about``)
FAULT_ARGS = {
    "drift": ("rate_per_s",),
    "delayed": ("delay_s",),
    "offset": ("offset",),
    "gain": ("gain", "about"),
    "noise": ("noise",),
    "intermittent": ("dropout_s", "period_s"),
}


class Sensor:
    """One measured channel.

    Parameters
    ----------
    noise : float
        Standard deviation of Gaussian noise, in the channel's unit (K, Pa, ...), >= 0.
    quant : float
        Quantisation step (ADC resolution) in the channel's unit, >= 0 (0 = none).
    lag_s : float
        First-order time constant, s, >= 0 (0 = none).
    lo, hi : float
        Range the front end can report on a healthy channel; readings are clipped to it.
    open_value, short_value : float
        What the front end reports on an open or a shorted sensor.
    seed : int
        Seed of the noise generator.
    """

    def __init__(
        self,
        noise=0.0,
        quant=0.0,
        lag_s=0.0,
        lo=-math.inf,
        hi=math.inf,
        open_value=math.nan,
        short_value=math.nan,
        seed=0,
    ):
        for name, v in (("noise", noise), ("quant", quant), ("lag_s", lag_s)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(
                    "sensor %s=%r out of range; expected a finite value >= 0" % (name, v)
                )
        if not lo < hi:
            raise ValueError("sensor range lo=%r hi=%r invalid; expected lo < hi" % (lo, hi))
        self.noise = float(noise)
        self.quant = float(quant)
        self.lag_s = float(lag_s)
        self.lo = lo
        self.hi = hi
        self.open_value = open_value
        self.short_value = short_value
        self.seed = seed
        self._rng = random.Random(seed)
        self._filtered = None
        self._t_last = None
        self._history = deque()
        self._last = None
        self.fault = None
        self._fault_args = {}
        self._t_fault = None

    # ------------------------------------------------------------- presets
    @classmethod
    def ntc(cls, noise_k=0.05, quant_k=0.1, lag_s=2.0, seed=0):
        """Temperature through an NTC thermistor with a pull-up divider and 12-bit ADC.

        Healthy range -40..150 degC. Open NTC reads 223.15 K (-50 degC, below range); shorted
        NTC reads 473.15 K (200 degC, above range), so a plausibility check flags both.
        """
        return cls(
            noise=noise_k, quant=quant_k, lag_s=lag_s, lo=C_TO_K - 40.0, hi=C_TO_K + 150.0,
            open_value=C_TO_K - 50.0, short_value=C_TO_K + 200.0, seed=seed,
        )  # fmt: skip

    @classmethod
    def pressure(
        cls, full_scale_pa=45e5, noise_pa=2e3, lag_s=0.05, seed=0, low_pa=0.0, quant=None
    ):
        """Ratiometric 0.5-4.5 V pressure transducer, ``low_pa``..``full_scale_pa`` (absolute).

        Quantised to the span / 4096 (12-bit ADC over the 4 V span) unless ``quant`` is given.
        Open (0 V) reads ``low - 0.125 * span`` (below range), shorted to 5 V reads
        ``low + 1.125 * span`` (above range).
        """
        span = full_scale_pa - low_pa
        return cls(
            noise=noise_pa, quant=span / 4096.0 if quant is None else quant, lag_s=lag_s,
            lo=low_pa, hi=full_scale_pa, open_value=low_pa - 0.125 * span,
            short_value=low_pa + 1.125 * span, seed=seed,
        )  # fmt: skip

    @classmethod
    def flow(cls, full_scale_lpm=40.0, noise_lpm=0.1, lag_s=0.5, seed=0, quant=0.05):
        """Pulse-output flow meter; open and short both read 0 (no pulses)."""
        return cls(
            noise=noise_lpm, quant=quant, lag_s=lag_s, lo=0.0, hi=full_scale_lpm,
            open_value=0.0, short_value=0.0, seed=seed,
        )  # fmt: skip

    @classmethod
    def ideal(cls, lo, hi, noise=0.0, quant=0.0, lag_s=0.0, seed=0):
        """No front end: the value itself (plus the given noise, quantisation and lag), clipped
        to ``[lo, hi]``; open reads ``lo - 0.125 * span`` and short ``hi + 0.125 * span`` so
        that a board's range check flags them (an ideal channel has no wire to break)."""
        span = hi - lo
        return cls(
            noise=noise, quant=quant, lag_s=lag_s, lo=lo, hi=hi,
            open_value=lo - 0.125 * span, short_value=hi + 0.125 * span, seed=seed,
        )  # fmt: skip

    # -------------------------------------------------------------- faults
    def inject(self, kind, **args):
        """Start fault ``kind`` (one of ``FAULTS``) with its arguments (``FAULT_ARGS``).

        ``drift`` takes ``rate_per_s`` (unit/s); ``delayed`` ``delay_s`` (> 0); ``offset``
        ``offset``; ``gain`` ``gain`` (>= 0) and ``about`` (default 0); ``noise`` ``noise``
        (> 0); ``intermittent`` ``dropout_s`` and ``period_s`` (0 < dropout < period).
        The fault takes effect from the next :meth:`read`.
        """
        if kind not in FAULTS:
            raise ValueError(
                "unknown sensor fault %r; expected one of: %s" % (kind, ", ".join(FAULTS))
            )
        allowed = set(FAULT_ARGS.get(kind, ()))
        extra = set(args) - allowed
        if extra:
            raise ValueError(
                "fault %r takes %s, not %s"
                % (kind, ", ".join(sorted(allowed)) or "no arguments", ", ".join(sorted(extra)))
            )
        for name, v in args.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError("fault %r: %s=%r must be a finite number" % (kind, name, v))
        missing = allowed - set(args) - {"about"}
        if missing:
            raise ValueError("fault %r needs %s" % (kind, ", ".join(sorted(missing))))
        if kind == "delayed" and not args["delay_s"] > 0:
            raise ValueError("delayed needs delay_s > 0, got %r" % (args["delay_s"],))
        if kind == "gain" and not args["gain"] >= 0:
            raise ValueError("gain needs gain >= 0, got %r" % (args["gain"],))
        if kind == "noise" and not args["noise"] > 0:
            raise ValueError("noise needs noise > 0, got %r" % (args["noise"],))
        if kind == "intermittent" and not 0 < args["dropout_s"] < args["period_s"]:
            raise ValueError(
                "intermittent needs 0 < dropout_s < period_s, got %r and %r"
                % (args["dropout_s"], args["period_s"])
            )
        if kind == "garbage" and not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ValueError("garbage needs a sensor with a finite range lo..hi")
        self.fault = kind
        self._fault_args = dict(args)
        self._t_fault = None

    def clear(self):
        """Remove any fault; the channel reads healthy again from the next :meth:`read`."""
        self.fault = None
        self._fault_args = {}
        self._t_fault = None

    # ---------------------------------------------------------------- read
    def _healthy(self, true_value, t_s):
        if self._filtered is None or self.lag_s == 0.0:
            self._filtered = true_value
        else:
            dt = t_s - self._t_last
            if dt > 0:
                self._filtered += (true_value - self._filtered) * (
                    1.0 - math.exp(-dt / self.lag_s)
                )
        self._t_last = t_s
        v = self._filtered
        if self.noise:
            v += self._rng.gauss(0.0, self.noise)
        if self.quant:
            v = round(v / self.quant) * self.quant
        return min(max(v, self.lo), self.hi)

    def read(self, true_value, t_s):
        """Reading of the channel at time ``t_s`` (s, non-decreasing) for the plant's value."""
        if not math.isfinite(true_value):
            raise ValueError("sensor true_value=%r is not finite" % (true_value,))
        if self._t_last is not None and t_s < self._t_last:
            raise ValueError("sensor time went backwards: %r < %r" % (t_s, self._t_last))
        healthy = self._healthy(true_value, t_s)
        self._history.append((t_s, healthy))
        horizon = self._fault_args.get("delay_s", 0.0) if self.fault == "delayed" else 0.0
        while len(self._history) > 1 and self._history[1][0] <= t_s - horizon:
            self._history.popleft()
        if self.fault is not None and self._t_fault is None:
            self._t_fault = t_s
        kind = self.fault
        a = self._fault_args
        if kind is None:
            v = healthy
        elif kind == "open":
            v = self.open_value
        elif kind == "short":
            v = self.short_value
        elif kind == "stuck":
            v = self._last if self._last is not None else healthy
        elif kind == "drift":
            v = healthy + a["rate_per_s"] * (t_s - self._t_fault)
        elif kind == "delayed":  # the oldest kept reading is the one from delay_s ago
            v = self._history[0][1]
        elif kind == "offset":
            v = healthy + a["offset"]
        elif kind == "gain":
            about = a.get("about", 0.0)
            v = about + a["gain"] * (healthy - about)
        elif kind == "noise":
            v = healthy + self._rng.gauss(0.0, a["noise"])
        elif kind == "intermittent":
            phase = (t_s - self._t_fault) % a["period_s"]
            v = self.open_value if phase < a["dropout_s"] else healthy
        else:  # garbage
            v = self._rng.uniform(self.lo, self.hi)
        self._last = v
        return v


#: scenario presets -> board sensor kinds they fit (hil.boardio encodes the result)
PRESETS = {
    "ntc": ("ntc",),
    "pressure": ("ratiometric",),
    "flow": ("linear",),
    "ideal": ("ntc", "ratiometric", "linear"),
}


def default_preset(board_sensor):
    """The preset that matches a board sensor definition's front end."""
    kind = board_sensor.get("kind", "ntc")
    return {"ntc": "ntc", "ratiometric": "pressure"}.get(kind, "ideal")


def for_channel(preset, board_sensor, noise=0.0, quant=0.0, lag_s=0.0, seed=0):
    """The :class:`Sensor` a scenario's [[sensors]] entry describes on a board channel.

    ``preset`` must fit the board sensor's kind (``PRESETS``); the range, open and short values
    come from the board's front end (an NTC's -40..150 degC, a transducer's p_lo..p_hi, a
    linear channel's min..max), noise, quantisation and lag from the scenario (SI units).
    """
    kind = board_sensor.get("kind", "ntc")
    if preset not in PRESETS:
        raise ValueError("unknown preset %r; expected one of: %s" % (preset, ", ".join(PRESETS)))
    if kind not in PRESETS[preset]:
        raise ValueError(
            "preset %r does not fit board sensor %r of kind %s; use %s"
            % (preset, board_sensor.get("name", "?"), kind, default_preset(board_sensor))
        )
    if preset == "ntc":
        return Sensor.ntc(noise_k=noise, quant_k=quant, lag_s=lag_s, seed=seed)
    if preset == "pressure":
        return Sensor.pressure(
            full_scale_pa=board_sensor["p_hi"],
            low_pa=board_sensor.get("p_lo", 0.0),
            noise_pa=noise,
            lag_s=lag_s,
            quant=quant,
            seed=seed,
        )
    if preset == "flow":
        return Sensor.flow(
            full_scale_lpm=board_sensor.get("max", 40.0),
            noise_lpm=noise,
            lag_s=lag_s,
            quant=quant,
            seed=seed,
        )
    lo = board_sensor.get("min")
    hi = board_sensor.get("max")
    if kind == "ratiometric":
        lo, hi = board_sensor.get("p_lo", 0.0), board_sensor["p_hi"]
    elif kind == "ntc" and (lo is None or hi is None):
        lo, hi = C_TO_K - 40.0, C_TO_K + 150.0
    if lo is None or hi is None or not lo < hi:
        lo, hi = -1e9, 1e9
    return Sensor.ideal(lo, hi, noise=noise, quant=quant, lag_s=lag_s, seed=seed)
