"""Sensor layer between the plant physics and the board: lag, noise, quantisation and faults.

A scenario injects faults here, never into the plant. One :class:`Sensor` per measured channel::

    s = Sensor.ntc(seed=1)                # coolant temperature through an NTC front end
    reading_k = s.read(true_k, t_s)
    s.inject("drift", rate_per_s=0.01)    # or "open", "short", "stuck", "delayed"
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

Readings are deterministic for a given ``seed`` and sequence of calls.
"""

import math
import random
from collections import deque

C_TO_K = 273.15

FAULTS = ("open", "short", "stuck", "drift", "delayed")


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
    def pressure(cls, full_scale_pa=45e5, noise_pa=2e3, lag_s=0.05, seed=0):
        """Ratiometric 0.5-4.5 V pressure transducer, 0..``full_scale_pa`` gauge-free (absolute).

        Quantised to full scale / 4096 (12-bit ADC over the 4 V span). Open (0 V) reads
        ``-0.125 * full_scale_pa`` (below range), shorted to 5 V reads ``1.125 * full_scale_pa``.
        """
        return cls(
            noise=noise_pa, quant=full_scale_pa / 4096.0, lag_s=lag_s, lo=0.0, hi=full_scale_pa,
            open_value=-0.125 * full_scale_pa, short_value=1.125 * full_scale_pa, seed=seed,
        )  # fmt: skip

    @classmethod
    def flow(cls, full_scale_lpm=40.0, noise_lpm=0.1, lag_s=0.5, seed=0):
        """Pulse-output flow meter; open and short both read 0 (no pulses)."""
        return cls(
            noise=noise_lpm, quant=0.05, lag_s=lag_s, lo=0.0, hi=full_scale_lpm,
            open_value=0.0, short_value=0.0, seed=seed,
        )  # fmt: skip

    # -------------------------------------------------------------- faults
    def inject(self, kind, **args):
        """Start fault ``kind`` (one of ``FAULTS``) with its arguments.

        ``drift`` takes ``rate_per_s`` (unit/s); ``delayed`` takes ``delay_s`` (> 0).
        The fault takes effect from the next :meth:`read`.
        """
        if kind not in FAULTS:
            raise ValueError(
                "unknown sensor fault %r; expected one of: %s" % (kind, ", ".join(FAULTS))
            )
        allowed = {"drift": {"rate_per_s"}, "delayed": {"delay_s"}}.get(kind, set())
        extra = set(args) - allowed
        if extra:
            raise ValueError(
                "fault %r takes %s, not %s"
                % (kind, ", ".join(sorted(allowed)) or "no arguments", ", ".join(sorted(extra)))
            )
        if kind == "drift" and not math.isfinite(args.get("rate_per_s", 0.0)):
            raise ValueError("drift rate_per_s must be finite")
        if kind == "delayed" and not args.get("delay_s", 0.0) > 0:
            raise ValueError("delayed needs delay_s > 0, got %r" % (args.get("delay_s"),))
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
        if kind is None:
            v = healthy
        elif kind == "open":
            v = self.open_value
        elif kind == "short":
            v = self.short_value
        elif kind == "stuck":
            v = self._last if self._last is not None else healthy
        elif kind == "drift":
            v = healthy + self._fault_args.get("rate_per_s", 0.0) * (t_s - self._t_fault)
        else:  # delayed: the oldest kept reading is the one from delay_s ago
            v = self._history[0][1]
        self._last = v
        return v
